//! How a worker (an in-process task or a child process) and the parent
//! coordinate: the worker says "ready" once its connections are up, waits for
//! "start", streams live counters while it runs and hands back its stats.
//! Child processes speak one JSON object per line on stdout; the parent writes
//! `start` to their stdin. This module owns that protocol and the live
//! counters; it knows nothing about scenarios.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{oneshot, watch};

use crate::stats::StatsWire;

/// Counters the progress display reads while a run goes on.
#[derive(Debug, Default)]
pub struct Live {
    pub connections: AtomicU64,
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    pub errors: AtomicU64,
    /// Worst p99 latency seen so far, µs (updated by the sampler).
    pub p99_us: AtomicU64,
}

impl Live {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LiveSnapshot {
        LiveSnapshot {
            connections: self.connections.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            p99_us: self.p99_us.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct LiveSnapshot {
    pub connections: u64,
    pub sent: u64,
    pub delivered: u64,
    pub errors: u64,
    pub p99_us: u64,
}

impl LiveSnapshot {
    /// Sum over workers (p99: the worst worker's, an upper bound).
    pub fn combine(items: impl IntoIterator<Item = LiveSnapshot>) -> LiveSnapshot {
        items
            .into_iter()
            .fold(LiveSnapshot::default(), |a, b| LiveSnapshot {
                connections: a.connections + b.connections,
                sent: a.sent + b.sent,
                delivered: a.delivered + b.delivered,
                errors: a.errors + b.errors,
                p99_us: a.p99_us.max(b.p99_us),
            })
    }
}

/// One line a worker process writes on stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerLine {
    Live(LiveSnapshot),
    Ready,
    Result(Box<StatsWire>),
    Failed(String),
}

impl WorkerLine {
    /// Write the line to stdout (worker processes only).
    pub fn emit(&self) {
        if let Ok(text) = serde_json::to_string(self) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }
}

/// The worker's side: report ready, then wait for the start signal.
pub struct Control {
    ready: Option<Box<dyn FnOnce() + Send + Sync>>,
    start: watch::Receiver<bool>,
}

impl Control {
    /// For a worker task inside the parent process.
    pub fn in_process() -> (Control, oneshot::Receiver<()>, watch::Sender<bool>) {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (start_tx, start_rx) = watch::channel(false);
        let control = Control {
            ready: Some(Box::new(move || {
                let _ = ready_tx.send(());
            })),
            start: start_rx,
        };
        (control, ready_rx, start_tx)
    }

    /// For a worker process: ready goes to stdout, start comes on stdin.
    pub fn over_stdio() -> Control {
        let (start_tx, start_rx) = watch::channel(false);
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim() == "start" {
                    let _ = start_tx.send(true);
                }
            }
            // The parent went away: start anyway so the worker runs to its
            // bounded end instead of hanging.
            let _ = start_tx.send(true);
        });
        Control {
            ready: Some(Box::new(|| WorkerLine::Ready.emit())),
            start: start_rx,
        }
    }

    /// Say ready (once) and wait for the parent's start.
    pub async fn ready_and_wait(&mut self) {
        if let Some(ready) = self.ready.take() {
            ready();
        }
        let _ = self.start.wait_for(|go| *go).await;
    }
}

/// Shared handle the scenario code records into.
pub type LiveRef = Arc<Live>;
