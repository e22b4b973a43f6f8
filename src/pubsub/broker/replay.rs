//! Replay protection for signed node-to-node messages: with `cluster_secret`
//! set, every live message carries a stamp (the sender's message counter and
//! its clock), covered by the signature. A receiver accepts a stamp once: its
//! time must lie within `cluster_replay_window` of the receiver's clock, and
//! its counter must be new for that origin (a sliding window of the last
//! [`WINDOW_SEQS`] counters, as IPsec does, so messages that overtake each
//! other between channels are still accepted once).
//!
//! A captured message sent again is therefore dropped: within the window by
//! its counter, after it by its time. What remains: a receiver that restarts
//! forgets the counters it saw, so a message captured less than the window
//! before the restart can be replayed to it once.
//!
//! It must never track an origin before its signature was checked (anyone
//! could otherwise fill the table), and holds at most [`MAX_ORIGINS`].

use std::collections::HashMap;
use std::time::Duration;

/// How far back a counter may lag the highest seen from its origin.
pub const WINDOW_SEQS: u64 = 4096;

/// Origins tracked at once (the cluster's node limit).
pub const MAX_ORIGINS: usize = crate::pubsub::membership::MAX_PEERS;

const WORDS: usize = (WINDOW_SEQS / 64) as usize;

/// What a sender puts on a message: its counter and its clock (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub seq: u64,
    pub ts: u64,
}

/// Why a stamp was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    #[error("message stamp is missing")]
    Missing,
    #[error("message time is outside cluster_replay_window")]
    Stale,
    #[error("message counter was already seen (a replay)")]
    Repeat,
    #[error("too many origins tracked")]
    Full,
}

/// The counters seen from one origin.
struct Seen {
    highest: u64,
    /// Bit `i` of the window: counter `highest - i` was seen.
    bits: [u64; WORDS],
    last_ts: u64,
}

impl Seen {
    fn new(seq: u64, ts: u64) -> Seen {
        let mut bits = [0u64; WORDS];
        bits[0] = 1;
        Seen {
            highest: seq,
            bits,
            last_ts: ts,
        }
    }

    fn bit(&self, back: u64) -> bool {
        let (w, b) = ((back / 64) as usize, back % 64);
        self.bits.get(w).is_some_and(|word| word & (1 << b) != 0)
    }

    fn set(&mut self, back: u64) {
        let (w, b) = ((back / 64) as usize, back % 64);
        if let Some(word) = self.bits.get_mut(w) {
            *word |= 1 << b;
        }
    }

    /// Move the window so `seq` is its newest counter.
    fn advance(&mut self, seq: u64) {
        let shift = seq - self.highest;
        if shift >= WINDOW_SEQS {
            self.bits = [0; WORDS];
        } else {
            let (words, bits) = ((shift / 64) as usize, (shift % 64) as u32);
            for i in (0..WORDS).rev() {
                let from = i.checked_sub(words);
                let lo = from.and_then(|f| self.bits.get(f)).copied().unwrap_or(0);
                let carry = from
                    .and_then(|f| f.checked_sub(1))
                    .and_then(|f| self.bits.get(f))
                    .copied()
                    .unwrap_or(0);
                self.bits[i] = if bits == 0 {
                    lo
                } else {
                    (lo << bits) | (carry >> (64 - bits))
                };
            }
        }
        self.highest = seq;
    }

    fn accept(&mut self, seq: u64, ts: u64) -> Result<(), Replay> {
        if seq > self.highest {
            self.advance(seq);
            self.set(0);
        } else {
            let back = self.highest - seq;
            if back >= WINDOW_SEQS || self.bit(back) {
                return Err(Replay::Repeat);
            }
            self.set(back);
        }
        self.last_ts = self.last_ts.max(ts);
        Ok(())
    }
}

/// The counters seen from every origin, for one receiving node.
pub struct ReplayGuard {
    window_ms: u64,
    origins: HashMap<Box<str>, Seen>,
}

impl ReplayGuard {
    pub fn new(window: Duration) -> ReplayGuard {
        ReplayGuard {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            origins: HashMap::new(),
        }
    }

    /// Accept `stamp` from `origin` (already authenticated) once, at `now`
    /// (Unix ms).
    pub fn check(&mut self, origin: &str, stamp: Option<Stamp>, now: u64) -> Result<(), Replay> {
        let Stamp { seq, ts } = stamp.ok_or(Replay::Missing)?;
        if ts.saturating_add(self.window_ms) < now || ts > now.saturating_add(self.window_ms) {
            return Err(Replay::Stale);
        }
        if let Some(seen) = self.origins.get_mut(origin) {
            return seen.accept(seq, ts);
        }
        if self.origins.len() >= MAX_ORIGINS {
            // Origins silent for longer than the window can be forgotten:
            // anything they sent before is refused by its time anyway.
            let horizon = now.saturating_sub(self.window_ms);
            self.origins.retain(|_, seen| seen.last_ts >= horizon);
            if self.origins.len() >= MAX_ORIGINS {
                return Err(Replay::Full);
            }
        }
        self.origins.insert(Box::from(origin), Seen::new(seq, ts));
        Ok(())
    }

    pub fn tracked(&self) -> usize {
        self.origins.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn guard() -> ReplayGuard {
        ReplayGuard::new(Duration::from_secs(60))
    }

    fn at(seq: u64) -> Option<Stamp> {
        Some(Stamp { seq, ts: NOW })
    }

    #[test]
    fn a_stamp_is_accepted_once() {
        let mut g = guard();
        assert_eq!(g.check("n1", at(1), NOW), Ok(()));
        assert_eq!(g.check("n1", at(1), NOW), Err(Replay::Repeat));
        // Another origin's counters are its own.
        assert_eq!(g.check("n2", at(1), NOW), Ok(()));
    }

    #[test]
    fn messages_that_overtake_each_other_are_each_accepted_once() {
        let mut g = guard();
        for seq in [5, 3, 4, 1, 2, 10, 7] {
            assert_eq!(g.check("n1", at(seq), NOW), Ok(()), "seq {seq}");
        }
        for seq in [1, 2, 3, 4, 5, 7, 10] {
            assert_eq!(
                g.check("n1", at(seq), NOW),
                Err(Replay::Repeat),
                "seq {seq}"
            );
        }
        assert_eq!(g.check("n1", at(6), NOW), Ok(()));
    }

    #[test]
    fn the_window_slides_across_words_and_forgets_only_what_is_behind_it() {
        let mut g = guard();
        for seq in 1..=200 {
            assert_eq!(g.check("n1", at(seq), NOW), Ok(()));
        }
        // A jump of 70 shifts by more than a word: everything seen stays seen.
        assert_eq!(g.check("n1", at(270), NOW), Ok(()));
        for seq in [1, 64, 65, 128, 199, 200, 270] {
            assert_eq!(
                g.check("n1", at(seq), NOW),
                Err(Replay::Repeat),
                "seq {seq}"
            );
        }
        assert_eq!(g.check("n1", at(250), NOW), Ok(()));
        // Far ahead: what fell behind the window is refused, never accepted again.
        assert_eq!(g.check("n1", at(270 + WINDOW_SEQS + 5), NOW), Ok(()));
        assert_eq!(g.check("n1", at(260), NOW), Err(Replay::Repeat));
        assert_eq!(g.check("n1", at(271), NOW), Err(Replay::Repeat));
        assert_eq!(g.check("n1", at(270 + WINDOW_SEQS + 4), NOW), Ok(()));
    }

    #[test]
    fn a_stamp_outside_the_time_window_is_stale() {
        let mut g = guard();
        let old = Some(Stamp {
            seq: 1,
            ts: NOW - 61_000,
        });
        let future = Some(Stamp {
            seq: 2,
            ts: NOW + 61_000,
        });
        assert_eq!(g.check("n1", old, NOW), Err(Replay::Stale));
        assert_eq!(g.check("n1", future, NOW), Err(Replay::Stale));
        assert_eq!(g.check("n1", None, NOW), Err(Replay::Missing));
        assert_eq!(g.tracked(), 0);
    }

    #[test]
    fn origins_are_bounded_and_silent_ones_are_forgotten() {
        let mut g = guard();
        for i in 0..MAX_ORIGINS {
            let stamp = Some(Stamp {
                seq: 1,
                ts: NOW - 30_000,
            });
            assert_eq!(g.check(&format!("n{i}"), stamp, NOW), Ok(()));
        }
        assert_eq!(g.check("extra", at(1), NOW), Err(Replay::Full));
        // Later, every one of them has been silent for longer than the window.
        let later = NOW + 31_000;
        let stamp = Some(Stamp { seq: 1, ts: later });
        assert_eq!(g.check("extra", stamp, later), Ok(()));
        assert_eq!(g.tracked(), 1);
    }
}
