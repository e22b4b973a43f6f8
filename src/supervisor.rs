//! Spawning sessions, containing their panics, restart intensity, and drain.
//!
//! Every session task is spawned here, tracked (so shutdown can wait for it),
//! and wrapped in panic capture so a panic anywhere in a session ends that
//! session only. The supervisor never reads or writes a socket; sessions learn
//! about shutdown from the tokens it hands out, or, while draining in waves,
//! from a close request in their mailbox (through the registry), so their
//! clients reconnect to the other nodes spread over time instead of all in
//! the same second.

use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::protocol::CloseReason;
use crate::pubsub::mailbox::SessionId;
use crate::registry::Registry;

/// How a drain closes sessions (`drain_timeout`, `drain_batch_size`,
/// `drain_batch_interval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainPlan {
    pub timeout: Duration,
    /// Sessions per wave; 0 closes every session at once.
    pub batch_size: usize,
    pub batch_interval: Duration,
}

impl DrainPlan {
    /// The pause before each wave after the first: the configured interval,
    /// shortened so all `waves` start within the first three quarters of the
    /// timeout (the last wave's clients still get time to close cleanly).
    pub fn pause(&self, waves: usize) -> Duration {
        if waves <= 1 {
            return Duration::ZERO;
        }
        let gaps = u32::try_from(waves - 1).unwrap_or(u32::MAX);
        self.batch_interval.min(self.timeout.mul_f64(0.75) / gaps)
    }
}

/// `pause` ±25 %, so nodes drained together do not wave in step.
fn jittered(pause: Duration) -> Duration {
    let r = getrandom::u64().unwrap_or(0) % 1000;
    pause.mul_f64(0.75 + r as f64 / 2000.0)
}

pub struct Supervisor {
    tracker: TaskTracker,
    /// Cancelled when the node starts draining: sessions send close 1001.
    drain: CancellationToken,
    /// Cancelled when the drain deadline passes: sessions stop at once.
    hard_stop: CancellationToken,
    /// Set when the node starts draining (before the first wave).
    draining: AtomicBool,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
}

/// The tokens a session watches; cloned into each session.
#[derive(Clone)]
pub struct ShutdownSignals {
    /// Also cancelled by a hard stop.
    pub drain: CancellationToken,
    pub hard_stop: CancellationToken,
}

impl Supervisor {
    pub fn new(metrics: Arc<Metrics>) -> Supervisor {
        // A hard stop implies a drain, so an idle session watches the drain
        // token alone (one cancellation future fewer in every session).
        let hard_stop = CancellationToken::new();
        Supervisor {
            tracker: TaskTracker::new(),
            drain: hard_stop.child_token(),
            hard_stop,
            draining: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            metrics,
        }
    }

    pub fn next_session_id(&self) -> SessionId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn signals(&self) -> ShutdownSignals {
        ShutdownSignals {
            drain: self.drain.clone(),
            hard_stop: self.hard_stop.clone(),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed) || self.drain.is_cancelled()
    }

    /// Run a session under supervision. A panic that escapes the session's own
    /// capture (one inside socket I/O, say) is contained here: counted, logged
    /// with the session id, and the task ends; the session's drop guards have
    /// already cleaned up during unwinding.
    pub fn spawn<F>(&self, session: SessionId, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let metrics = Arc::clone(&self.metrics);
        // A combinator, not an `async move` block: a block would keep `fut`
        // as a captured variable *and* the catch_unwind future awaiting it,
        // doubling every idle session's task (BENCHMARKS.md, million sessions).
        self.tracker
            .spawn(AssertUnwindSafe(fut).catch_unwind().map(move |outcome| {
                if let Err(panic) = outcome {
                    metrics.session_panics.increment(1);
                    tracing::error!(
                        session = session,
                        panic = %panic_message(&panic),
                        "session task panicked; session closed"
                    );
                }
            }));
    }

    /// Sessions currently running.
    pub fn live_sessions(&self) -> usize {
        self.tracker.len()
    }

    /// Ask every session to close (1001), in waves of `plan.batch_size`
    /// (the sessions `registry` knows, in its order) `plan.pause` apart with
    /// jitter, then any left at once; wait up to `plan.timeout` in all for
    /// them to finish; past the deadline, stop the rest at once. Returns
    /// whether all sessions finished within the deadline.
    pub async fn drain(&self, registry: &Registry, plan: DrainPlan) -> bool {
        let deadline = Instant::now() + plan.timeout;
        self.draining.store(true, Ordering::Relaxed);
        self.tracker.close();
        let ids = registry.ids();
        let waves = if plan.batch_size == 0 {
            1
        } else {
            ids.len().div_ceil(plan.batch_size).max(1)
        };
        if waves > 1 {
            let pause = plan.pause(waves);
            tracing::info!(sessions = ids.len(), waves, ?pause, "draining in waves");
            for (i, wave) in ids.chunks(plan.batch_size).enumerate() {
                if i > 0 {
                    tokio::time::sleep_until(deadline.min(Instant::now() + jittered(pause))).await;
                }
                let asked = registry.request_close(wave, CloseReason::Shutdown);
                self.metrics.drain_waves.increment(1);
                self.metrics.drain_closed.increment(asked as u64);
            }
        } else {
            self.metrics.drain_waves.increment(1);
            self.metrics.drain_closed.increment(ids.len() as u64);
        }
        // The rest at once: a single wave, and sessions no registry lists.
        self.drain.cancel();
        let graceful = tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_ok();
        if !graceful {
            self.hard_stop.cancel();
            // Sessions stop at their next poll once hard_stop fires.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.tracker.wait()).await;
        }
        graceful
    }
}

/// The text of a panic payload.
pub fn panic_message(panic: &Box<dyn Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("non-string panic payload")
    }
}

/// OTP-style restart intensity: more than `max_restarts` crashes within
/// `window` means the session is unhealthy and must be closed.
#[derive(Debug, Clone)]
pub struct RestartIntensity {
    max_restarts: u32,
    window: Duration,
    crashes: VecDeque<Instant>,
}

impl RestartIntensity {
    pub fn new(max_restarts: u32, window: Duration) -> RestartIntensity {
        RestartIntensity {
            max_restarts,
            window,
            crashes: VecDeque::new(),
        }
    }

    /// Record a crash at `now`; true when the limit is now exceeded.
    pub fn record(&mut self, now: Instant) -> bool {
        while let Some(&first) = self.crashes.front() {
            if now.duration_since(first) >= self.window {
                self.crashes.pop_front();
            } else {
                break;
            }
        }
        self.crashes.push_back(now);
        self.crashes.len() > self.max_restarts as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intensity_escalates_on_the_crash_past_the_limit() {
        let t0 = Instant::now();
        let mut i = RestartIntensity::new(3, Duration::from_secs(5));
        assert!(!i.record(t0));
        assert!(!i.record(t0 + Duration::from_secs(1)));
        assert!(!i.record(t0 + Duration::from_secs(2)));
        assert!(i.record(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn intensity_forgets_crashes_outside_the_window() {
        let t0 = Instant::now();
        let mut i = RestartIntensity::new(1, Duration::from_secs(5));
        assert!(!i.record(t0));
        assert!(!i.record(t0 + Duration::from_secs(5)));
        assert!(!i.record(t0 + Duration::from_secs(10)));
        assert!(i.record(t0 + Duration::from_secs(11)));
    }

    #[test]
    fn zero_restarts_escalates_at_once() {
        let mut i = RestartIntensity::new(0, Duration::from_secs(5));
        assert!(i.record(Instant::now()));
    }

    #[test]
    fn a_hard_stop_is_also_a_drain() {
        let sup = Supervisor::new(Metrics::new());
        let signals = sup.signals();
        sup.hard_stop.cancel();
        assert!(
            signals.drain.is_cancelled(),
            "sessions watch the drain token alone"
        );
        assert!(sup.is_draining());
    }

    #[tokio::test]
    async fn a_panicking_session_is_contained_and_counted() {
        let metrics = Metrics::new();
        let sup = Supervisor::new(metrics.clone());
        sup.spawn(1, async { panic!("boom") });
        sup.spawn(2, async {});
        assert!(sup.drain(&Registry::new(), plan(5, 0, 0)).await);
        assert!(metrics.render().contains("myriad_session_panics_total 1"));
    }

    fn plan(timeout_s: u64, batch_size: usize, interval_ms: u64) -> DrainPlan {
        DrainPlan {
            timeout: Duration::from_secs(timeout_s),
            batch_size,
            batch_interval: Duration::from_millis(interval_ms),
        }
    }

    #[test]
    fn waves_fit_in_three_quarters_of_the_timeout() {
        let p = plan(10, 100, 2000);
        assert_eq!(p.pause(1), Duration::ZERO);
        assert_eq!(p.pause(3), Duration::from_secs(2));
        // 31 waves 2 s apart would take 60 s: 7.5 s / 30 gaps instead.
        assert_eq!(p.pause(31), Duration::from_millis(250));
        for _ in 0..100 {
            let j = jittered(Duration::from_secs(1));
            assert!(j >= Duration::from_millis(750) && j <= Duration::from_millis(1250));
        }
    }

    /// Sessions that close when asked (by their mailbox or the drain token),
    /// recording when.
    fn sessions(
        sup: &Supervisor,
        registry: &Registry,
        n: u64,
    ) -> Arc<parking_lot::Mutex<Vec<Duration>>> {
        use crate::config::SlowConsumerPolicy;
        use crate::pubsub::mailbox::{Mailbox, MailboxLimits};
        let closed = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let t0 = Instant::now();
        for id in 0..n {
            let mailbox = Arc::new(Mailbox::new(MailboxLimits {
                capacity: 8,
                max_bytes: 1 << 16,
                policy: SlowConsumerPolicy::Disconnect,
            }));
            registry.insert(
                id,
                crate::registry::SessionEntry {
                    peer: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
                    endpoint: crate::protocol::Endpoint::Phoenix,
                    user: None,
                    mailbox: Arc::clone(&mailbox),
                },
            );
            let drain = sup.signals().drain;
            let closed = Arc::clone(&closed);
            sup.spawn(id, async move {
                let mut q = VecDeque::new();
                loop {
                    tokio::select! {
                        _ = drain.cancelled() => break,
                        _ = mailbox.ready() => {
                            if mailbox.drain(&mut q).close_requested.is_some() {
                                break;
                            }
                        }
                    }
                }
                closed.lock().push(t0.elapsed());
            });
        }
        closed
    }

    #[tokio::test(start_paused = true)]
    async fn drain_closes_sessions_in_spaced_waves() {
        let metrics = Metrics::new();
        let sup = Supervisor::new(metrics.clone());
        let registry = Registry::new();
        let closed = sessions(&sup, &registry, 10);
        assert!(sup.drain(&registry, plan(10, 3, 1000)).await);
        let mut at = closed.lock().clone();
        at.sort();
        assert_eq!(at.len(), 10);
        // Four waves (3, 3, 3, 1), each 0.75..1.25 s after the one before.
        let waves: Vec<Duration> = at.iter().step_by(3).copied().collect();
        for w in waves.windows(2) {
            let gap = w[1] - w[0];
            assert!(
                gap >= Duration::from_millis(740) && gap <= Duration::from_millis(1260),
                "{at:?}"
            );
        }
        assert!(
            at[2] < Duration::from_millis(10),
            "the first wave at once: {at:?}"
        );
        let text = metrics.render();
        assert!(text.contains("myriad_drain_waves_total 4"), "{text}");
        assert!(
            text.contains("myriad_drain_sessions_closed_total 10"),
            "{text}"
        );
        assert!(sup.is_draining());
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_size_of_zero_closes_everyone_at_once() {
        let sup = Supervisor::new(Metrics::new());
        let registry = Registry::new();
        let closed = sessions(&sup, &registry, 5);
        assert!(sup.drain(&registry, plan(10, 0, 1000)).await);
        assert!(closed.lock().iter().all(|t| *t < Duration::from_millis(10)));
    }
}
