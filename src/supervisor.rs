//! Spawning sessions, containing their panics, restart intensity, and drain.
//!
//! Every session task is spawned here, tracked (so shutdown can wait for it),
//! and wrapped in panic capture so a panic anywhere in a session ends that
//! session only. The supervisor never reads or writes a socket; sessions learn
//! about shutdown from the tokens it hands out.

use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::pubsub::mailbox::SessionId;

pub struct Supervisor {
    tracker: TaskTracker,
    /// Cancelled when the node starts draining: sessions send close 1001.
    drain: CancellationToken,
    /// Cancelled when the drain deadline passes: sessions stop at once.
    hard_stop: CancellationToken,
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
        self.drain.is_cancelled()
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

    /// Ask every session to close (1001) and wait up to `timeout` for them to
    /// finish; past the deadline, stop the rest at once. Returns whether all
    /// sessions finished within the deadline.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.drain.cancel();
        self.tracker.close();
        let graceful = tokio::time::timeout(timeout, self.tracker.wait())
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
        assert!(sup.drain(Duration::from_secs(5)).await);
        assert!(metrics.render().contains("myriad_session_panics_total 1"));
    }
}
