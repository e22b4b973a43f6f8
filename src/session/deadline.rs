//! When the session's one timer must fire next, and what a firing means.
//!
//! One timer serves three deadlines: the idle timeout (`idle_timeout` after
//! the last inbound data frame), the token's expiry, and parking
//! (`park_after` after the last inbound data frame). The timer is not moved
//! for every frame: it fires at a deadline that may have passed its time,
//! and is then set again from what happened since. Durations are read from
//! the config at each use, so an idle session holds only its instants.
//!
//! Owns the arithmetic; it must never touch the timer or the wire itself.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;

/// Idle timer target when idle_timeout is disabled: never reached.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `at + d`, or `FAR_FUTURE` after `at` when the sum is past what an
/// instant can hold: a configured duration of a billion years must not
/// panic every session (std's `Instant + Duration` does on overflow).
fn after(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(FAR_FUTURE))
        .unwrap_or(at)
}

pub(super) struct Deadlines {
    /// When the last inbound data frame arrived.
    last_in: Instant,
    /// The token's expiry. Moves when a refresh extends it; None while a
    /// refresh is asked (the answer decides).
    pub expires_at: Option<Instant>,
    /// The timer's deadline includes the moment to park.
    park_armed: bool,
    /// Quiet for `park_after`: the wire parks the next time it is found with
    /// nothing to read.
    pub park_due: bool,
}

impl Deadlines {
    pub fn new(expires_at: Option<Instant>, config: &Config) -> Deadlines {
        Deadlines {
            last_in: Instant::now(),
            expires_at,
            park_armed: !config.park_after.is_zero(),
            park_due: false,
        }
    }

    /// The timer's next deadline.
    pub fn next(&self, config: &Config) -> Instant {
        let idle = if config.idle_timeout.is_zero() {
            FAR_FUTURE
        } else {
            config.idle_timeout
        };
        let mut at = after(self.last_in, idle);
        if let Some(expires) = self.expires_at {
            at = at.min(expires);
        }
        if self.park_armed {
            at = at.min(after(self.last_in, config.park_after));
        }
        at
    }

    /// An inbound message (`data`: text or binary; pings do not count as
    /// activity). Some: the timer must be set to this deadline, because
    /// parking is to be timed again (after an unpark, or a due park that the
    /// data cancelled).
    pub fn inbound(&mut self, data: bool, config: &Config) -> Option<Instant> {
        if data {
            self.last_in = Instant::now();
            self.park_due = false;
        }
        if config.park_after.is_zero() || self.park_armed || self.park_due {
            return None;
        }
        self.park_armed = true;
        Some(self.next(config))
    }

    /// The token expired by `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|e| now >= e)
    }

    /// Nothing came for `idle_timeout` by `now`.
    pub fn idle(&self, now: Instant, config: &Config) -> bool {
        !config.idle_timeout.is_zero() && now >= after(self.last_in, config.idle_timeout)
    }

    /// The timer fired at `now`: true when a park became due.
    pub fn park_due_now(&mut self, now: Instant, config: &Config) -> bool {
        if self.park_armed && now >= after(self.last_in, config.park_after) {
            self.park_armed = false;
            self.park_due = true;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(idle: u64, park_ms: u64) -> Config {
        Config {
            idle_timeout: Duration::from_secs(idle),
            park_after: Duration::from_millis(park_ms),
            ..Config::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_earliest_of_idle_expiry_and_parking_comes_first() {
        let c = config(60, 1000);
        let t0 = Instant::now();
        let mut d = Deadlines::new(Some(t0 + Duration::from_secs(30)), &c);
        assert_eq!(d.next(&c), t0 + Duration::from_secs(1), "parking first");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(d.park_due_now(Instant::now(), &c));
        assert!(d.park_due);
        assert_eq!(d.next(&c), t0 + Duration::from_secs(30), "then the expiry");
        d.expires_at = None;
        assert_eq!(d.next(&c), t0 + Duration::from_secs(60), "then idle");
        assert!(!d.idle(Instant::now(), &c));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(d.idle(Instant::now(), &c));
    }

    #[tokio::test(start_paused = true)]
    async fn data_after_a_park_times_the_next_park_and_pings_do_not_count() {
        let c = config(60, 1000);
        let mut d = Deadlines::new(None, &c);
        assert_eq!(d.inbound(true, &c), None, "armed already: the timer stands");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(d.park_due_now(Instant::now(), &c));
        d.park_due = false; // parked
        tokio::time::advance(Duration::from_secs(5)).await;
        let t = Instant::now();
        assert_eq!(d.inbound(true, &c), Some(t + Duration::from_secs(1)));
        assert_eq!(d.inbound(true, &c), None);
        // A ping after the next park: due again at once (last data is old).
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(d.park_due_now(Instant::now(), &c));
        d.park_due = false;
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(d.inbound(false, &c), Some(t + Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn durations_past_what_an_instant_holds_do_not_panic() {
        let c = Config {
            idle_timeout: Duration::MAX,
            park_after: Duration::MAX,
            ..Config::default()
        };
        let t0 = Instant::now();
        let mut d = Deadlines::new(None, &c);
        assert!(d.next(&c) > t0 + Duration::from_secs(365 * 24 * 3600));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(!d.idle(Instant::now(), &c));
        assert!(!d.park_due_now(Instant::now(), &c));
        assert_eq!(d.inbound(true, &c), None);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_disables_idle_and_parking() {
        let c = config(0, 0);
        let t0 = Instant::now();
        let mut d = Deadlines::new(None, &c);
        assert!(d.next(&c) > t0 + Duration::from_secs(365 * 24 * 3600));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(!d.idle(Instant::now(), &c));
        assert!(!d.park_due_now(Instant::now(), &c));
        assert_eq!(d.inbound(false, &c), None);
    }
}
