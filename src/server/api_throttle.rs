//! Throttling API key guesses: an address that keeps sending wrong keys is
//! answered 429 for a while, before its key is even compared. Keyed by client
//! address (IPv6 /64), bounded (entries are swept by the upkeep task).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

/// Wrong keys allowed per address: a burst of 10, then one per second.
const FAILURES_PER_SECOND: u32 = 1;
const FAILURE_BURST: u32 = 10;
/// How long an address over that budget gets 429 without a key check.
pub const BLOCK_FOR: Duration = Duration::from_secs(10);
/// Blocked addresses remembered at most (a flood of addresses is shed by the
/// HTTP layers' concurrency limit anyway).
const MAX_BLOCKED: usize = 65_536;

pub struct ApiThrottle {
    failures: DefaultKeyedRateLimiter<IpAddr>,
    blocked: DashMap<IpAddr, Instant>,
}

impl Default for ApiThrottle {
    fn default() -> ApiThrottle {
        let rate = NonZeroU32::new(FAILURES_PER_SECOND).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(FAILURE_BURST).unwrap_or(NonZeroU32::MIN);
        ApiThrottle {
            failures: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            blocked: DashMap::new(),
        }
    }
}

impl ApiThrottle {
    /// Whether `ip` is blocked now.
    pub fn is_blocked(&self, ip: IpAddr) -> bool {
        self.blocked
            .get(&ip)
            .is_some_and(|until| Instant::now() < *until)
    }

    /// A wrong or missing key from `ip`; true when that exhausted its budget
    /// (it is blocked from now on).
    pub fn failed(&self, ip: IpAddr) -> bool {
        if self.failures.check_key(&ip).is_ok() {
            return false;
        }
        if self.blocked.len() < MAX_BLOCKED {
            self.blocked.insert(ip, Instant::now() + BLOCK_FOR);
        }
        true
    }

    /// Forget expired blocks and refilled budgets.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.blocked.retain(|_, until| now < *until);
        self.failures.retain_recent();
        self.failures.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn repeated_failures_block_an_address_for_a_while() {
        let t = ApiThrottle::default();
        let ip: IpAddr = "203.0.113.1".parse().unwrap();
        let other: IpAddr = "203.0.113.2".parse().unwrap();
        let blocked_at = (0..20).position(|_| t.failed(ip)).unwrap();
        assert!(blocked_at >= FAILURE_BURST as usize - 1, "{blocked_at}");
        assert!(t.is_blocked(ip));
        assert!(!t.is_blocked(other));
        tokio::time::advance(BLOCK_FOR).await;
        assert!(!t.is_blocked(ip));
        t.sweep();
    }
}
