//! Running a scenario end to end. In the parent: split the run over workers
//! (in-process when one process can hold it, child processes otherwise),
//! probe the server, show live progress, publish (fan-out scenarios), merge
//! the results and build the report. In a worker process: run the worker's
//! share and hand the stats back over stdout.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::{Cli, Command};
use crate::client::Target;
use crate::control::{Control, Live, LiveSnapshot, WorkerLine};
use crate::payload::now_us;
use crate::probe::{self, ServerProcess};
use crate::recorder::Recorder;
use crate::report::Report;
use crate::scenario::fanout::Publisher;
use crate::scenario::{self, WorkerCtx};
use crate::stats::{Stats, StatsWire};
use crate::workers::{self, WorkerHandle};

fn scenario_name(command: &Command) -> &'static str {
    match command {
        Command::Connect(_) => "connect",
        Command::Chat(_) => "chat",
        Command::Fanout(_) => "fanout",
        Command::Slow(_) => "slow",
        Command::Storm(_) => "storm",
        Command::Churn(_) => "churn",
        Command::BaselineServer(_) => "baseline-server",
        Command::Backend(_) => "backend",
    }
}

/// Every `--url` (comma-separated); the first is the publisher's.
fn targets(cli: &Cli) -> anyhow::Result<Vec<Target>> {
    let c = &cli.common;
    let mut out = Vec::new();
    for url in c.url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        out.push(Target::new(
            url,
            c.protocol,
            c.token.as_deref(),
            c.connect_timeout,
            c.tls_ca.as_deref(),
        )?);
    }
    if out.is_empty() {
        bail!("--url: no server given");
    }
    Ok(out)
}

/// Validate what clap cannot.
fn check(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Chat(a) => {
            if a.msg_rate <= 0.0 {
                bail!("--msg-rate must be > 0");
            }
            if a.rooms == 0 || a.members == 0 {
                bail!("--rooms and --members must be at least 1");
            }
            if cli.common.protocol == crate::client::Protocol::Raw && a.rooms > 1 {
                bail!("--protocol raw has no rooms (the server broadcasts to everyone): use --rooms 1");
            }
        }
        Command::Slow(a) if !(0.0..=1.0).contains(&a.slow_share) => {
            bail!("--slow-share must be within 0..1")
        }
        Command::Churn(a) if a.rooms == 0 => bail!("--rooms must be at least 1"),
        Command::Fanout(a) if a.side_room_size > 0 => {
            if !(a.side_rate > 0.0 && a.side_rate.is_finite()) {
                bail!("--side-rate must be > 0");
            }
            if cli.common.protocol != crate::client::Protocol::Phoenix
                || cli.common.transport != crate::cli::Transport::Websocket
            {
                bail!("--side-room-size needs Phoenix over WebSockets (members push into their rooms)");
            }
        }
        Command::Slow(a) if a.fanout.side_room_size > 0 => {
            bail!("--side-room-size is a fanout option")
        }
        Command::Storm(a) => {
            if a.fanout.side_room_size > 0 {
                bail!("--side-room-size is a fanout option");
            }
            let urls = cli
                .common
                .url
                .split(',')
                .filter(|u| !u.trim().is_empty())
                .count();
            if urls < 2 {
                bail!("storm needs at least two nodes in --url (one is stopped, the others take its clients)");
            }
            if a.victim >= urls {
                bail!(
                    "--victim {} but --url lists {urls} nodes (0-based)",
                    a.victim
                );
            }
            if a.reconnect_ms.is_empty() {
                bail!("--reconnect-ms needs at least one delay");
            }
            if cli.common.protocol != crate::client::Protocol::Phoenix {
                bail!("storm needs --protocol phoenix (it rejoins with `since`)");
            }
        }
        _ => {}
    }
    if cli.common.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if cli.common.transport != crate::cli::Transport::Websocket {
        // SSE is read-only and long-poll readers here only subscribe: the
        // scenarios that push from clients need WebSockets.
        if !matches!(cli.command, Command::Connect(_) | Command::Fanout(_)) {
            // (storm included: its clients rejoin over WebSockets)
            bail!("--transport sse|longpoll drives the connect and fanout scenarios only");
        }
        if cli.common.protocol != crate::client::Protocol::Phoenix {
            bail!("--transport sse|longpoll needs --protocol phoenix (myriad's /sse, Phoenix long-poll)");
        }
    }
    Ok(())
}

/// A worker's share: record, run, sample, finish.
async fn worker_body(
    cli: Arc<Cli>,
    index: u64,
    count: u64,
    t0_us: u64,
    live: Arc<Live>,
    control: Control,
) -> anyhow::Result<Stats> {
    let targets = targets(&cli)?;
    let sources = workers::sources_for(&cli.common, index, count, targets[0].addr.ip())?;
    let rec = Arc::new(Recorder::new(t0_us, live));
    let sampler_rec = Arc::clone(&rec);
    let sampler = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            sampler_rec.sample();
        }
    });
    let ctx = WorkerCtx {
        index,
        count,
        common: cli.common.clone(),
        targets,
        sources,
        rec: Arc::clone(&rec),
        control,
    };
    scenario::run_worker(&cli.command, ctx).await;
    sampler.abort();
    let _ = sampler.await;
    rec.sample();
    match Arc::try_unwrap(rec) {
        Ok(rec) => Ok(rec.finish()),
        Err(_) => bail!("a connection task outlived its scenario (bug)"),
    }
}

/// Entry point of a worker process (hidden --worker-index flags).
pub async fn as_worker(cli: Cli) -> i32 {
    let index = cli.common.worker_index.unwrap_or(0);
    let count = cli.common.worker_count.unwrap_or(1);
    let t0 = cli.common.t0_us.unwrap_or_else(now_us);
    let live = Arc::new(Live::default());
    let live_out = Arc::clone(&live);
    let reporter = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            WorkerLine::Live(live_out.snapshot()).emit();
        }
    });
    let result = worker_body(Arc::new(cli), index, count, t0, live, Control::over_stdio()).await;
    reporter.abort();
    match result {
        Ok(stats) => {
            WorkerLine::Result(Box::new(StatsWire::from(&stats))).emit();
            0
        }
        Err(e) => {
            WorkerLine::Failed(format!("{e:#}")).emit();
            2
        }
    }
}

fn progress_bar(quiet: bool) -> ProgressBar {
    let target = if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let bar = ProgressBar::with_draw_target(None, target);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar
}

fn progress_line(s: LiveSnapshot, delivered_rate: f64) -> String {
    format!(
        "conns {} | sent {} | delivered {} ({:.0}/s) | errors {} | p99 {:.2} ms",
        s.connections,
        s.sent,
        s.delivered,
        delivered_rate,
        s.errors,
        s.p99_us as f64 / 1000.0
    )
}

/// Stop the storm's victim node `signal_after` after the start.
async fn storm_signal(a: crate::cli::StormArgs) -> anyhow::Result<()> {
    tokio::time::sleep(a.signal_after).await;
    let sig = match a.signal {
        crate::cli::StormSignal::Term => "-TERM",
        crate::cli::StormSignal::Kill => "-KILL",
    };
    let status = tokio::process::Command::new("kill")
        .args([sig, &a.victim_pid.to_string()])
        .status()
        .await
        .context("running kill")?;
    if !status.success() {
        bail!(
            "kill {sig} {} failed (is --victim-pid right?)",
            a.victim_pid
        );
    }
    Ok(())
}

/// Run a scenario from the parent's side and build its report.
pub async fn coordinate(cli: Cli) -> anyhow::Result<Report> {
    check(&cli)?;
    let cli = Arc::new(cli);
    let c = &cli.common;
    let targets = targets(&cli)?;
    let target = &targets[0];
    let storm_fanout = match &cli.command {
        Command::Storm(a) => Some(crate::scenario::storm::fanout_args(a)),
        _ => None,
    };
    let is_fanout = matches!(
        cli.command,
        Command::Fanout(_) | Command::Slow(_) | Command::Storm(_)
    );
    let limit = workers::open_file_limit();
    let sockets = scenario::sockets_needed(&cli.command) + u64::from(is_fanout);
    let count = workers::workers_needed(sockets, c.workers, limit)?;
    let t0 = now_us();
    let started_unix_s = t0 / 1_000_000;

    let mut server = c.server_pid.map(|pid| ServerProcess {
        pid,
        ..Default::default()
    });
    if let Some(p) = &mut server {
        p.before = probe::sample(p.pid)
            .with_context(|| format!("reading /proc/{} (is --server-pid right?)", p.pid))?;
        p.peak_rss_kib = p.before.rss_kib;
    }
    let metrics_before = match &c.metrics_url {
        Some(url) => Some(
            probe::scrape(url)
                .await
                .with_context(|| format!("scraping {url}"))?,
        ),
        None => None,
    };

    let mut handles = Vec::new();
    if count == 1 {
        let live = Arc::new(Live::default());
        let (control, ready, start) = Control::in_process();
        let result = tokio::spawn(worker_body(
            Arc::clone(&cli),
            0,
            1,
            t0,
            Arc::clone(&live),
            control,
        ));
        handles.push(WorkerHandle::in_process(live, ready, start, result));
    } else {
        for w in 0..count {
            handles.push(WorkerHandle::spawn_child(w, count, t0)?);
        }
    }
    let parent_live = Arc::new(Live::default());
    let parent_rec = Recorder::new(t0, Arc::clone(&parent_live));

    let bar = progress_bar(c.quiet);
    let live_view: Vec<_> = handles.iter().map(|h| h.live_view()).collect();
    let pid = server.as_ref().map(|p| p.pid);
    let body = async {
        let publisher = match &cli.command {
            Command::Fanout(a) => Some((Publisher::connect(c, a, target).await?, a)),
            Command::Slow(a) => Some((Publisher::connect(c, &a.fanout, target).await?, &a.fanout)),
            Command::Storm(a) => {
                // Through a node that stays up (another URL than the victim's).
                let victim_url = &targets[a.victim].url;
                let Some(through) = targets.iter().find(|t| t.url != *victim_url) else {
                    bail!("storm: every --url is the victim's; list the other nodes too");
                };
                let args = storm_fanout.as_ref().unwrap_or(&a.fanout);
                Some((Publisher::connect(c, args, through).await?, args))
            }
            _ => None,
        };
        let overflows_before = crate::probe::listen_overflows();
        for (i, h) in handles.iter_mut().enumerate() {
            (&mut h.ready)
                .await
                .map_err(|_| anyhow::anyhow!("worker {i} ended before its connections were up"))?;
        }
        if let Some(p) = &mut server {
            if let Some(s) = probe::sample(p.pid) {
                p.loaded = s;
                p.peak_rss_kib = p.peak_rss_kib.max(s.rss_kib);
            }
        }
        for h in handles.iter_mut() {
            h.start().await;
        }
        let signal = match &cli.command {
            Command::Storm(a) => Some(tokio::spawn(storm_signal(a.clone()))),
            _ => None,
        };
        if let Some((publisher, args)) = publisher {
            let give_up = tokio::time::Instant::now() + c.duration;
            let delivered = || {
                live_view
                    .iter()
                    .map(|v| v.snapshot().delivered)
                    .sum::<u64>()
            };
            publisher.run(args, &parent_rec, give_up, &delivered).await;
        }
        if let Some(signal) = signal {
            signal.await.context("storm signal task")??;
        }
        if let (Some(before), Some(after)) = (overflows_before, crate::probe::listen_overflows()) {
            parent_rec.with(0, |s| s.listen_overflows = after.saturating_sub(before));
        }
        let mut merged = Stats::default();
        for (i, h) in handles.iter_mut().enumerate() {
            let stats = (&mut h.result)
                .await
                .with_context(|| format!("worker {i} task"))??;
            merged.merge(&stats);
        }
        anyhow::Ok(merged)
    };
    // Progress display and server sampling run beside the body.
    let monitor = async {
        let mut last = (std::time::Instant::now(), 0u64);
        let mut rate = 0.0;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let snap = LiveSnapshot::combine(
                live_view
                    .iter()
                    .map(|v| v.snapshot())
                    .chain([parent_live.snapshot()]),
            );
            let dt = last.0.elapsed().as_secs_f64();
            if dt >= 1.0 {
                rate = (snap.delivered - last.1.min(snap.delivered)) as f64 / dt;
                last = (std::time::Instant::now(), snap.delivered);
            }
            bar.set_message(progress_line(snap, rate));
            bar.tick();
        }
    };
    let peak = std::sync::atomic::AtomicU64::new(0);
    let sampler = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Some(s) = pid.and_then(probe::sample) {
                peak.fetch_max(s.rss_kib, std::sync::atomic::Ordering::Relaxed);
            }
        }
    };
    let outcome = tokio::time::timeout(c.max_run_time, async {
        tokio::select! {
            r = body => r,
            _ = monitor => unreachable!("the monitor loops forever"),
            _ = sampler => unreachable!("the sampler loops forever"),
        }
    })
    .await;
    bar.finish_and_clear();
    let mut stats = match outcome {
        Ok(r) => r?,
        Err(_) => {
            for h in handles.iter_mut() {
                h.kill().await;
            }
            bail!(
                "the run exceeded --max-run-time {:?} and was abandoned",
                c.max_run_time
            );
        }
    };
    stats.merge(&parent_rec.finish());
    if let Some(p) = &mut server {
        if let Some(s) = probe::sample(p.pid) {
            p.after = s;
        }
        p.peak_rss_kib = p.peak_rss_kib.max(peak.into_inner()).max(p.loaded.rss_kib);
    }
    let metrics = match (&c.metrics_url, metrics_before) {
        (Some(url), Some(before)) => match probe::scrape(url).await {
            Ok(after) => Some(probe::changes(&before, &after)),
            Err(e) => {
                eprintln!("warning: scraping {url} after the run: {e:#}");
                None
            }
        },
        _ => None,
    };
    let violations = c.slo.as_ref().map(|s| s.check(&stats)).unwrap_or_default();
    Ok(Report {
        scenario: scenario_name(&cli.command).to_string(),
        command_line: std::env::args().collect::<Vec<_>>().join(" "),
        target: c.url.clone(),
        protocol: format!("{:?}", c.protocol).to_lowercase(),
        workers: count,
        started_unix_s,
        stats,
        server,
        metrics,
        violations,
    })
}
