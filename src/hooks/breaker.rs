//! One endpoint's circuit breaker: after `breaker_failures` failures in a
//! row the endpoint is considered down and calls fail at once for
//! `breaker_cooldown`; then one trial call is let through (half-open), and
//! its outcome closes the breaker or opens it for another cool-down.
//!
//! A refusal from the backend is a success here: the backend answered.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The trial call is out; every other call fails fast until it returns.
    HalfOpen,
}

pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

/// What a state change means for the "breaker open" gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    Opened,
    Closed,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// May a call go out now?
    pub fn allow(&self, now: Instant) -> bool {
        let mut state = self.state.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                *state = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        }
    }

    pub fn success(&self) -> Change {
        let mut state = self.state.lock();
        let was_open = !matches!(*state, State::Closed { .. });
        *state = State::Closed { failures: 0 };
        if was_open {
            Change::Closed
        } else {
            Change::None
        }
    }

    pub fn failure(&self, now: Instant) -> Change {
        let mut state = self.state.lock();
        match *state {
            State::Closed { failures } if failures + 1 < self.threshold => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                Change::None
            }
            State::Closed { .. } => {
                *state = State::Open {
                    until: now + self.cooldown,
                };
                Change::Opened
            }
            // The trial failed: another cool-down (the gauge already counts it).
            State::HalfOpen | State::Open { .. } => {
                *state = State::Open {
                    until: now + self.cooldown,
                };
                Change::None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_lets_one_trial_through_after_the_cooldown() {
        let b = Breaker::new(3, Duration::from_secs(5));
        let t0 = Instant::now();
        assert_eq!(b.failure(t0), Change::None);
        assert_eq!(b.failure(t0), Change::None);
        assert!(b.allow(t0));
        assert_eq!(b.failure(t0), Change::Opened);
        assert!(!b.allow(t0 + Duration::from_secs(4)));
        // Cool-down over: one trial, the rest fail fast while it is out.
        let later = t0 + Duration::from_secs(5);
        assert!(b.allow(later));
        assert!(!b.allow(later));
        // The trial fails: open again.
        assert_eq!(b.failure(later), Change::None);
        assert!(!b.allow(later + Duration::from_secs(1)));
        let again = later + Duration::from_secs(5);
        assert!(b.allow(again));
        assert_eq!(b.success(), Change::Closed);
        assert!(b.allow(again));
        // A success resets the count.
        assert_eq!(b.failure(again), Change::None);
        assert_eq!(b.success(), Change::None);
        assert_eq!(b.failure(again), Change::None);
        assert_eq!(b.failure(again), Change::None);
        assert!(b.allow(again));
    }
}
