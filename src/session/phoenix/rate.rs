//! A connection's `client_rate`: a token bucket (governor) for frames other
//! than heartbeats, and the abuse streak that turns staying over the limit
//! for `abuse_window` into a 1008 close.

use std::time::Duration;

use tokio::time::Instant;

/// Refusals closer together than this belong to one abuse streak.
const ABUSE_GAP: Duration = Duration::from_secs(1);

/// What the limiter says about one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the rate: answer `rate_limited`, do not process.
    Refused,
    /// Over the rate for `abuse_window`: close the session.
    Abusive,
}

pub struct ClientRate {
    bucket: governor::DefaultDirectRateLimiter,
    /// Start of the current abuse streak and the latest refusal in it.
    over_limit_since: Option<(Instant, Instant)>,
}

impl ClientRate {
    /// None when `rate` is 0 (unlimited); `burst` 0 means `rate`.
    pub fn new(rate: u32, burst: u32) -> Option<ClientRate> {
        let rate = std::num::NonZeroU32::new(rate)?;
        let burst = std::num::NonZeroU32::new(burst).unwrap_or(rate);
        Some(ClientRate {
            bucket: governor::RateLimiter::direct(
                governor::Quota::per_second(rate).allow_burst(burst),
            ),
            over_limit_since: None,
        })
    }

    /// One frame; `abuse_window` (the config's, read per call so every
    /// session does not hold a copy) turns a streak into abuse.
    pub fn check(&mut self, abuse_window: Duration) -> Verdict {
        if self.bucket.check().is_ok() {
            return Verdict::Allowed;
        }
        let now = Instant::now();
        // An abuse streak lasts while refusals keep coming less than a second
        // apart; frames that slip through the bucket in between do not end it
        // (a token bucket lets an abuser at 4x the rate through every fourth frame).
        let since = match self.over_limit_since {
            Some((since, last)) if now.duration_since(last) <= ABUSE_GAP => since,
            _ => now,
        };
        self.over_limit_since = Some((since, now));
        if now.duration_since(since) >= abuse_window {
            Verdict::Abusive
        } else {
            Verdict::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_streak_of_refusals_becomes_abuse_after_the_window() {
        let w = Duration::from_secs(3);
        let mut r = ClientRate::new(1, 1).unwrap();
        assert_eq!(r.check(w), Verdict::Allowed);
        assert_eq!(r.check(w), Verdict::Refused);
        for _ in 0..5 {
            tokio::time::advance(Duration::from_millis(500)).await;
            let _ = r.check(w);
        }
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(r.check(w), Verdict::Abusive, "over the limit for 3 s");
    }

    // governor's bucket runs on the real clock, which does not move in these
    // tests: once empty it stays empty, so only the streak's timing is driven.
    #[tokio::test(start_paused = true)]
    async fn a_pause_longer_than_the_gap_ends_the_streak() {
        let w = Duration::from_secs(2);
        let mut r = ClientRate::new(1, 1).unwrap();
        r.check(w);
        assert_eq!(r.check(w), Verdict::Refused);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(
            r.check(w),
            Verdict::Refused,
            "a new streak starts after the gap"
        );
        tokio::time::advance(Duration::from_millis(900)).await;
        r.check(w);
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(r.check(w), Verdict::Refused, "1.8 s into the new streak");
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(r.check(w), Verdict::Abusive, "2.1 s into it");
        assert!(ClientRate::new(0, 5).is_none(), "0 = unlimited");
    }
}
