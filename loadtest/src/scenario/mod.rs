//! The scenarios and what they share: the worker context, the connect phase
//! (`establish`: paced by --rate / --ramp, capped by --concurrency, spread over
//! source addresses), and the dispatch from subcommand to worker function.
//! Each scenario module owns one workload and its accounting.

pub mod chat;
pub mod churn;
pub mod connect;
pub mod fanout;
pub mod storm;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::{Command, Common};
use crate::client::{self, Conn, Target};
use crate::control::Control;
use crate::http_reader::{Clients, HttpReader};
use crate::ramp::Schedule;
use crate::recorder::Recorder;

/// Everything one worker needs.
pub struct WorkerCtx {
    pub index: u64,
    pub count: u64,
    pub common: Common,
    /// One or more servers; connection `i` goes to `targets[i % len]`.
    pub targets: Vec<Target>,
    pub sources: Vec<IpAddr>,
    pub rec: Arc<Recorder>,
    pub control: Control,
}

impl WorkerCtx {
    /// The indices of `0..total` this worker owns.
    pub fn share(&self, total: u64) -> Vec<u64> {
        (0..total)
            .filter(|i| i % self.count == self.index)
            .collect()
    }

    /// The server connection `index` goes to (round robin over `--url`).
    pub fn target(&self, index: u64) -> &Target {
        &self.targets[(index % self.targets.len() as u64) as usize]
    }

    pub fn schedule(&self) -> Schedule {
        schedule(&self.common)
    }

    pub fn source(&self, ordinal: u64) -> Option<IpAddr> {
        if self.sources.is_empty() {
            None
        } else {
            Some(self.sources[(ordinal % self.sources.len() as u64) as usize])
        }
    }

    pub fn topic(&self, n: u64) -> String {
        format!("{}{n}", self.common.topic_prefix)
    }
}

pub fn schedule(common: &Common) -> Schedule {
    match (common.rate, common.ramp) {
        (_, Some(ramp)) => Schedule::Ramp(ramp),
        (Some(rate), None) => Schedule::Rate(rate),
        (None, None) => Schedule::Unpaced,
    }
}

/// What `establish` should do for one connection.
pub struct Want {
    pub index: u64,
    pub topic: Option<String>,
    /// A second topic joined after `topic` (fanout's side room).
    pub also: Option<String>,
    pub recv_buffer: Option<u32>,
}

/// Open (and join) every wanted connection on the schedule; returns those
/// that made it, with their index. Failures are recorded, not returned.
pub async fn establish(ctx: &WorkerCtx, wants: Vec<Want>) -> Vec<(u64, Conn)> {
    let window = ConnectWindow::open();
    let schedule = ctx.schedule();
    let began = Instant::now();
    let permits = Arc::new(Semaphore::new(ctx.common.concurrency.max(1)));
    let mut set = JoinSet::new();
    for (ordinal, want) in wants.into_iter().enumerate() {
        let due = began + schedule.due(want.index).min(Duration::from_secs(86_400));
        let permits = Arc::clone(&permits);
        let target = ctx.target(want.index).clone();
        let source = ctx.source(ordinal as u64);
        let rec = Arc::clone(&ctx.rec);
        let timeout = ctx.common.connect_timeout;
        set.spawn(async move {
            tokio::time::sleep_until(due).await;
            let _permit = permits.acquire().await.ok()?;
            let mut conn = match client::connect(&target, source, want.recv_buffer).await {
                Ok((conn, took)) => {
                    rec.connected(want.index, took);
                    conn
                }
                Err(e) => {
                    rec.connect_error(want.index, e.kind());
                    return None;
                }
            };
            for topic in want.topic.iter().chain(want.also.iter()) {
                match conn.join(topic, timeout).await {
                    Ok(took) => rec.joined(want.index, took),
                    Err(e) => {
                        rec.error(want.index, format!("join: {}", e.kind()));
                        rec.disconnected();
                        conn.close().await;
                        return None;
                    }
                }
            }
            Some((want.index, conn))
        });
    }
    let mut out = Vec::new();
    while let Some(done) = set.join_next().await {
        if let Ok(Some(pair)) = done {
            out.push(pair);
        }
    }
    out.sort_by_key(|(i, _)| *i);
    window.close(ctx);
    out
}

/// Wait for the run to start, heartbeating every held connection meanwhile:
/// the other workers may still be connecting, and a server closes sessions
/// that stay silent past its idle timeout (myriad: 60 s) as phoenix.js never
/// would (it heartbeats every 30 s from the moment it connects).
pub async fn ready_keeping_alive(control: &mut Control, conns: &mut [(u64, Conn)]) {
    // At once, whatever the start signal does: the earliest connections have
    // been silent for the whole connect phase already.
    for (_, conn) in conns.iter_mut() {
        let _ = conn.heartbeat().await;
    }
    let ready = control.ready_and_wait();
    tokio::pin!(ready);
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    loop {
        tokio::select! {
            _ = &mut ready => return,
            _ = beat.tick() => {
                for (_, conn) in conns.iter_mut() {
                    let _ = conn.heartbeat().await;
                }
            }
        }
    }
}

/// The connect phase's start, recorded with its end when it is over.
struct ConnectWindow(u64);

impl ConnectWindow {
    fn open() -> ConnectWindow {
        ConnectWindow(crate::payload::now_us())
    }

    fn close(self, ctx: &WorkerCtx) {
        let end = crate::payload::now_us();
        ctx.rec.with(0, |s| s.connect_window(self.0, end));
    }
}

/// `establish` for `--transport sse|longpoll`: open a reader of each wanted
/// topic on the same schedule and under the same --concurrency cap (an open
/// is one request for SSE, three for long-poll). Failures are recorded.
pub async fn establish_http(ctx: &WorkerCtx, wants: Vec<(u64, String)>) -> Vec<(u64, HttpReader)> {
    let window = ConnectWindow::open();
    let schedule = ctx.schedule();
    let began = Instant::now();
    let permits = Arc::new(Semaphore::new(ctx.common.concurrency.max(1)));
    let clients = Arc::new(Clients::default());
    let mut set = JoinSet::new();
    for (ordinal, (index, topic)) in wants.into_iter().enumerate() {
        let due = began + schedule.due(index).min(Duration::from_secs(86_400));
        let permits = Arc::clone(&permits);
        let clients = Arc::clone(&clients);
        let target = ctx.target(index).clone();
        let source = ctx.source(ordinal as u64);
        let rec = Arc::clone(&ctx.rec);
        let timeout = ctx.common.connect_timeout;
        let transport = ctx.common.transport;
        let token = ctx.common.token.clone();
        set.spawn(async move {
            tokio::time::sleep_until(due).await;
            let _permit = permits.acquire().await.ok()?;
            let opened = HttpReader::open(
                transport,
                &clients,
                &target,
                &topic,
                token.as_deref(),
                source,
                timeout,
            )
            .await;
            match opened {
                Ok((reader, took)) => {
                    rec.connected(index, took);
                    rec.joined(index, took);
                    Some((index, reader))
                }
                Err(e) => {
                    rec.connect_error(index, e);
                    None
                }
            }
        });
    }
    let mut out = Vec::new();
    while let Some(done) = set.join_next().await {
        if let Ok(Some(pair)) = done {
            out.push(pair);
        }
    }
    out.sort_by_key(|(i, _)| *i);
    window.close(ctx);
    out
}

/// Run this worker's part of the scenario; the stats are in `ctx.rec`.
pub async fn run_worker(command: &Command, ctx: WorkerCtx) {
    match command {
        Command::Connect(a) => connect::worker(a, ctx).await,
        Command::Chat(a) => chat::worker(a, ctx).await,
        Command::Fanout(a) => fanout::worker(a, None, ctx).await,
        Command::Slow(a) => fanout::worker(&a.fanout, Some(a), ctx).await,
        Command::Churn(a) => churn::worker(a, ctx).await,
        Command::Storm(a) => storm::worker(a, ctx).await,
        Command::BaselineServer(_) | Command::Backend(_) => {}
    }
}

/// Concurrent sockets the scenario holds (for the worker split).
pub fn sockets_needed(command: &Command) -> u64 {
    match command {
        Command::Connect(a) => a.connections,
        Command::Chat(a) => a.rooms * a.members,
        Command::Fanout(a) => a.subscribers,
        Command::Slow(a) => a.fanout.subscribers,
        Command::Storm(a) => a.fanout.subscribers,
        // Cycles are short; the concurrency cap bounds them.
        Command::Churn(_) => 0,
        Command::BaselineServer(_) | Command::Backend(_) => 0,
    }
}

/// Heartbeat interval for held connections (Phoenix closes idle ones).
pub const HEARTBEAT: Duration = Duration::from_secs(30);
