//! Loss, duplicate and reorder detection for one receiver's view of one
//! sender's stream (sequence numbers 1, 2, 3, ...).
//!
//! A gap opens "missing" entries; a later arrival of a missing number is a
//! reorder (not a loss), an arrival of a number already seen is a duplicate.
//! Whatever is still missing when the sender's final count is known is lost.
//! This module owns the arithmetic only: no clocks, no sockets.

use std::collections::BTreeSet;

/// How many missing numbers one stream remembers individually; past this a
/// gap is counted as lost at once (a stream that far behind is not "late").
const MAX_MISSING: usize = 65_536;

/// One receiver's accounting for one sender's stream.
#[derive(Debug, Default, Clone)]
pub struct StreamTracker {
    /// The next sequence number expected in order.
    next: u64,
    missing: BTreeSet<u64>,
    /// Messages seen for the first time.
    pub received: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Gaps given up on because `missing` was full.
    overflow_lost: u64,
}

/// The verdict on one arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    InOrder,
    /// Arrived after a higher number (it had been missing).
    Late,
    Duplicate,
}

impl StreamTracker {
    pub fn new() -> StreamTracker {
        StreamTracker {
            next: 1,
            ..StreamTracker::default()
        }
    }

    /// Record the arrival of `seq` (1-based).
    pub fn observe(&mut self, seq: u64) -> Arrival {
        if seq == self.next {
            self.next += 1;
            self.received += 1;
            Arrival::InOrder
        } else if seq > self.next {
            for gap in self.next..seq {
                if self.missing.len() < MAX_MISSING {
                    self.missing.insert(gap);
                } else {
                    self.overflow_lost += 1;
                }
            }
            self.next = seq + 1;
            self.received += 1;
            Arrival::InOrder
        } else if self.missing.remove(&seq) {
            self.received += 1;
            self.reordered += 1;
            Arrival::Late
        } else {
            self.duplicated += 1;
            Arrival::Duplicate
        }
    }

    /// Messages lost out of a stream whose sender sent `sent` messages.
    pub fn lost(&self, sent: u64) -> u64 {
        let seen_up_to = self.next.saturating_sub(1);
        let tail = sent.saturating_sub(seen_up_to);
        let missing_below_sent = self.missing.range(..=sent).count() as u64;
        missing_below_sent + tail + self.overflow_lost
    }

    /// True once every message of a stream of `sent` messages has arrived.
    pub fn complete(&self, sent: u64) -> bool {
        self.next > sent && self.missing.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(seqs: &[u64]) -> StreamTracker {
        let mut t = StreamTracker::new();
        for &s in seqs {
            t.observe(s);
        }
        t
    }

    #[test]
    fn clean_stream_has_no_loss() {
        let t = feed(&[1, 2, 3, 4, 5]);
        assert_eq!(
            (t.received, t.lost(5), t.duplicated, t.reordered),
            (5, 0, 0, 0)
        );
        assert!(t.complete(5));
    }

    #[test]
    fn gap_is_loss_and_tail_is_loss() {
        let t = feed(&[1, 2, 5, 6]);
        assert_eq!(t.received, 4);
        assert_eq!(
            t.lost(8),
            2 + 2,
            "3,4 missing in the middle, 7,8 never came"
        );
        assert!(!t.complete(8));
    }

    #[test]
    fn late_arrival_is_reorder_not_loss() {
        let mut t = StreamTracker::new();
        assert_eq!(t.observe(1), Arrival::InOrder);
        assert_eq!(t.observe(3), Arrival::InOrder);
        assert_eq!(t.observe(2), Arrival::Late);
        assert_eq!((t.received, t.reordered, t.lost(3)), (3, 1, 0));
        assert!(t.complete(3));
    }

    #[test]
    fn repeats_are_duplicates() {
        let mut t = feed(&[1, 2, 3]);
        assert_eq!(t.observe(2), Arrival::Duplicate);
        assert_eq!(t.observe(3), Arrival::Duplicate);
        assert_eq!((t.received, t.duplicated, t.lost(3)), (3, 2, 0));
        // A late message that arrives twice: one reorder, one duplicate.
        let mut t = feed(&[1, 3]);
        t.observe(2);
        t.observe(2);
        assert_eq!((t.reordered, t.duplicated), (1, 1));
    }

    #[test]
    fn nothing_received_loses_everything() {
        assert_eq!(StreamTracker::new().lost(10), 10);
        assert!(StreamTracker::new().complete(0));
    }
}
