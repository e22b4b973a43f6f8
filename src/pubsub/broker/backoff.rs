//! Exponential back-off with jitter between reconnect attempts: 100 ms
//! doubling to 5 s, each wait drawn from [50 %, 100 %] of the step so a fleet
//! of nodes does not reconnect in lockstep after the broker returns.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct Backoff {
    attempt: u32,
    seed: u64,
}

pub const BACKOFF_START: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Default for Backoff {
    fn default() -> Backoff {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            | 1;
        Backoff { attempt: 0, seed }
    }
}

impl Backoff {
    /// The wait after a link failed: a link that had come up starts over from
    /// the shortest step, one that never came up keeps growing it.
    pub fn after_failure(&mut self, was_connected: bool) -> Duration {
        if was_connected {
            self.attempt = 0;
        }
        self.next_wait()
    }

    /// The next wait.
    pub fn next_wait(&mut self) -> Duration {
        let step = BACKOFF_START
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64: jitter only, no need for a CSPRNG.
        let mut x = self.seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed = x;
        let frac = 0.5 + (x % 1000) as f64 / 2000.0;
        step.mul_f64(frac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let mut b = Backoff::default();
        let waits: Vec<Duration> = (0..10).map(|_| b.next_wait()).collect();
        assert!(waits[0] >= BACKOFF_START / 2 && waits[0] <= BACKOFF_START);
        assert!(waits[9] >= BACKOFF_MAX / 2 && waits[9] <= BACKOFF_MAX);
        assert!(
            b.after_failure(false) >= BACKOFF_MAX / 2,
            "a link that never came up"
        );
        assert!(
            b.after_failure(true) <= BACKOFF_START,
            "a link that was up starts over"
        );
    }
}
