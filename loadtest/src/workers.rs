//! Scaling past one process: reads the open-file limit, decides how many
//! worker processes a run needs, assigns source addresses, spawns the workers
//! (this binary again, with hidden worker flags) and collects their live lines
//! and results. Owns process plumbing only; scenarios run in `scenario`.

use std::net::IpAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::cli::{parse_source_ips, Common};
use crate::control::{Live, LiveSnapshot, WorkerLine};
use crate::stats::Stats;

/// File descriptors a process keeps for itself (stdio, runtime, HTTP probes).
const FD_RESERVE: u64 = 64;

/// Raise the soft open-file limit to the hard one (allowed without privileges)
/// and return the soft limit now in force.
pub fn open_file_limit() -> u64 {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

/// Sockets one process can hold.
pub fn sockets_per_process(limit: u64) -> u64 {
    limit.saturating_sub(FD_RESERVE).max(1)
}

/// How many workers a run of `sockets` concurrent sockets needs.
pub fn workers_needed(sockets: u64, requested: Option<usize>, limit: u64) -> anyhow::Result<u64> {
    let per = sockets_per_process(limit);
    let needed = sockets.div_ceil(per).max(1);
    match requested {
        Some(0) => bail!("--workers must be at least 1"),
        Some(n) if (n as u64) < needed => bail!(
            "--workers {n} cannot hold {sockets} sockets: the open-file limit is {limit} per process, so at least {needed} workers are needed"
        ),
        Some(n) => Ok(n as u64),
        None => Ok(needed),
    }
}

/// Source addresses for one worker.
pub fn sources_for(
    common: &Common,
    index: u64,
    count: u64,
    target: IpAddr,
) -> anyhow::Result<Vec<IpAddr>> {
    if let Some(spec) = &common.source_ips {
        let all = parse_source_ips(spec).map_err(|e| anyhow::anyhow!("--source-ips: {e}"))?;
        if (all.len() as u64) < count {
            return Ok(all);
        }
        return Ok(all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i as u64 % count == index)
            .map(|(_, ip)| ip)
            .collect());
    }
    match target {
        // Each worker its own loopback source: 28k ephemeral ports apiece.
        IpAddr::V4(v4) if count > 1 && v4.is_loopback() && index < 250 => Ok(vec![IpAddr::V4(
            std::net::Ipv4Addr::new(127, 0, 0, 2 + index as u8),
        )]),
        _ => Ok(Vec::new()),
    }
}

/// Where a worker's live counters come from.
#[derive(Clone)]
pub enum LiveSource {
    InProcess(Arc<Live>),
    Child(Arc<Mutex<LiveSnapshot>>),
}

impl LiveSource {
    pub fn snapshot(&self) -> LiveSnapshot {
        match self {
            LiveSource::InProcess(live) => live.snapshot(),
            LiveSource::Child(s) => *s.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }
}

enum Start {
    InProcess(watch::Sender<bool>),
    Child(ChildStdin),
}

/// The parent's handle on one worker.
pub struct WorkerHandle {
    pub live: LiveSource,
    pub ready: oneshot::Receiver<()>,
    start: Start,
    pub result: JoinHandle<anyhow::Result<Stats>>,
    child: Option<Child>,
}

impl WorkerHandle {
    pub fn in_process(
        live: Arc<Live>,
        ready: oneshot::Receiver<()>,
        start: watch::Sender<bool>,
        result: JoinHandle<anyhow::Result<Stats>>,
    ) -> WorkerHandle {
        WorkerHandle {
            live: LiveSource::InProcess(live),
            ready,
            start: Start::InProcess(start),
            result,
            child: None,
        }
    }

    /// Spawn this binary as worker `index` of `count`.
    pub fn spawn_child(index: u64, count: u64, t0_us: u64) -> anyhow::Result<WorkerHandle> {
        let exe = std::env::current_exe().context("locating myriad-load to spawn workers")?;
        let mut cmd = Command::new(exe);
        cmd.args(std::env::args_os().skip(1))
            .args(["--worker-index", &index.to_string()])
            .args(["--worker-count", &count.to_string()])
            .args(["--t0-us", &t0_us.to_string()])
            .arg("--quiet")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("spawning a worker process")?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let live = Arc::new(Mutex::new(LiveSnapshot::default()));
        let (ready_tx, ready_rx) = oneshot::channel();
        let live_w = Arc::clone(&live);
        let result = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut lines = BufReader::new(stdout).lines();
            while let Some(line) = lines
                .next_line()
                .await
                .context("reading a worker's output")?
            {
                match serde_json::from_str::<WorkerLine>(&line) {
                    Ok(WorkerLine::Live(s)) => {
                        *live_w.lock().unwrap_or_else(|p| p.into_inner()) = s
                    }
                    Ok(WorkerLine::Ready) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(WorkerLine::Result(wire)) => return Stats::try_from(wire.as_ref()),
                    Ok(WorkerLine::Failed(why)) => bail!("worker {index} failed: {why}"),
                    Err(_) => eprintln!("worker {index}: {line}"),
                }
            }
            bail!("worker {index} exited without a result")
        });
        Ok(WorkerHandle {
            live: LiveSource::Child(live),
            ready: ready_rx,
            start: Start::Child(stdin),
            result,
            child: Some(child),
        })
    }

    pub fn live_view(&self) -> LiveSource {
        self.live.clone()
    }

    pub async fn start(&mut self) {
        match &mut self.start {
            Start::InProcess(tx) => {
                let _ = tx.send(true);
            }
            Start::Child(stdin) => {
                let _ = stdin.write_all(b"start\n").await;
                let _ = stdin.flush().await;
            }
        }
    }

    /// Stop a child that is still running (the run was abandoned).
    pub async fn kill(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill().await;
        }
        self.result.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_by_the_open_file_limit() {
        assert_eq!(workers_needed(100, None, 20_000).unwrap(), 1);
        assert_eq!(workers_needed(19_000, None, 20_000).unwrap(), 1);
        assert_eq!(workers_needed(19_937, None, 20_000).unwrap(), 2);
        assert_eq!(workers_needed(50_000, None, 1024).unwrap(), 53);
        assert_eq!(workers_needed(10, Some(3), 1024).unwrap(), 3);
        assert!(workers_needed(50_000, Some(1), 20_000).is_err());
        assert!(workers_needed(1, Some(0), 20_000).is_err());
    }
}
