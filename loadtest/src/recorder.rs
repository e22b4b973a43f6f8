//! Where connection tasks record what they see: sharded, lock-protected
//! `Stats` (so thousands of tasks do not queue on one lock), the per-second
//! series keyed on the run's shared clock, and the live counters the progress
//! display reads. `finish` folds the shards into one `Stats`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::control::Live;
use crate::payload::now_us;
use crate::stats::{histogram, record, SharedStats, Stats};

const SHARDS: usize = 16;

pub struct Recorder {
    shards: Vec<SharedStats>,
    /// Shared run clock origin (µs since the Unix epoch).
    pub t0_us: u64,
    pub live: Arc<Live>,
    /// Latest delivery that counts toward the delivery rate (µs since epoch).
    last_delivered_us: AtomicU64,
}

impl Recorder {
    pub fn new(t0_us: u64, live: Arc<Live>) -> Recorder {
        Recorder {
            shards: (0..SHARDS).map(|_| SharedStats::default()).collect(),
            t0_us,
            live,
            last_delivered_us: AtomicU64::new(0),
        }
    }

    fn second_of(&self, at_us: u64) -> usize {
        (at_us.saturating_sub(self.t0_us) / 1_000_000) as usize
    }

    /// Run `f` on the shard for connection `key`.
    pub fn with<R>(&self, key: u64, f: impl FnOnce(&mut Stats) -> R) -> R {
        self.shards[key as usize % SHARDS].with(f)
    }

    pub fn connected(&self, key: u64, handshake: Duration) {
        self.live.connections.fetch_add(1, Ordering::Relaxed);
        self.with(key, |s| {
            s.connects_ok += 1;
            record(&mut s.handshake, handshake.as_micros() as u64);
        });
    }

    pub fn disconnected(&self) {
        self.live.connections.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn joined(&self, key: u64, took: Duration) {
        self.with(key, |s| {
            s.joins_ok += 1;
            record(&mut s.join, took.as_micros() as u64);
        });
    }

    pub fn error(&self, key: u64, kind: String) {
        self.live.errors.fetch_add(1, Ordering::Relaxed);
        self.with(key, |s| s.error(kind));
    }

    pub fn connect_error(&self, key: u64, kind: String) {
        self.live.errors.fetch_add(1, Ordering::Relaxed);
        self.with(key, |s| {
            s.connect_errors += 1;
            s.error(kind);
        });
    }

    pub fn close_code(&self, key: u64, code: u16) {
        self.with(key, |s| *s.close_codes.entry(code).or_default() += 1);
    }

    pub fn sent(&self, key: u64, n: u64) {
        self.live.sent.fetch_add(n, Ordering::Relaxed);
        let sec = self.second_of(now_us());
        self.with(key, |s| {
            s.sent += n;
            s.second(sec).sent += n;
        });
    }

    /// A first-time delivery sent at `sent_us` (µs since the epoch); `msg`
    /// keys the publish-to-last-delivery figure of fan-out runs. `timed`
    /// deliveries end the measured phase (slow readers' late drains do not).
    pub fn delivered(&self, key: u64, sent_us: u64, msg: Option<u64>, timed: bool) {
        let now = now_us();
        if timed {
            self.last_delivered_us.fetch_max(now, Ordering::Relaxed);
        }
        let latency = now.saturating_sub(sent_us);
        let sec = self.second_of(now);
        self.live.delivered.fetch_add(1, Ordering::Relaxed);
        self.with(key, |s| {
            s.delivered += 1;
            record(&mut s.latency, latency);
            let second = s.second(sec);
            second.delivered += 1;
            record(&mut second.latency, latency);
            if let Some(m) = msg {
                let slot = s.last_delivery.entry(m).or_default();
                *slot = (*slot).max(latency);
            }
        });
    }

    /// A side-room chat push left (fan-out with --side-room-size).
    pub fn side_sent(&self, key: u64) {
        self.with(key, |s| s.side_sent += 1);
    }

    /// A side-room chat message arrived; it stays out of the fan-out's
    /// delivery counts, latency and series.
    pub fn side_delivered(&self, key: u64, sent_us: u64) {
        let latency = now_us().saturating_sub(sent_us);
        self.with(key, |s| {
            s.side_delivered += 1;
            record(&mut s.side_latency, latency);
        });
    }

    /// Once a second: connection gauge into the series, p99 so far into the
    /// live counters.
    pub fn sample(&self) {
        let conns = self.live.connections.load(Ordering::Relaxed);
        let sec = self.second_of(now_us());
        let mut lat = histogram();
        self.shards[0].with(|s| {
            let slot = &mut s.second(sec).connections;
            *slot = (*slot).max(conns);
            s.peak_connections = s.peak_connections.max(conns);
        });
        for shard in &self.shards {
            shard.with(|s| {
                let _ = lat.add(&s.latency);
            });
        }
        if !lat.is_empty() {
            self.live
                .p99_us
                .store(lat.value_at_quantile(0.99), Ordering::Relaxed);
        }
    }

    pub fn finish(self) -> Stats {
        let mut out = Stats {
            phase_end_us: self.last_delivered_us.load(Ordering::Relaxed),
            ..Stats::default()
        };
        for shard in self.shards {
            let s = shard.into_inner();
            let peak = s.peak_connections;
            out.merge(&s);
            out.peak_connections = out.peak_connections.max(peak);
        }
        // merge() sums peaks (right across workers); within one worker only
        // shard 0 holds the gauge, so take it as is.
        out
    }
}
