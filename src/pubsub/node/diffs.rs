//! Coalesced `presence_diff`s for big topics. A join into a topic with N
//! members here is one frame to each of them: at 100 000 members a storm of
//! joins would be O(joins × members) frames. From `presence_batch_members`
//! subscribers on, a topic's diffs (local and from other nodes) are merged
//! and delivered once per `presence_batch_interval` as one diff.
//!
//! The merged diff lists every join and every leave of the window; phoenix.js
//! applies a diff's joins before its leaves, so a meta that joined and left
//! in the same window ends up gone, as it would after two diffs, and every
//! meta carries its own `phx_ref`. Once a topic has diffs waiting, later ones
//! wait too (even if the topic shrank meanwhile), so members never see them
//! out of order.
//!
//! Owns the pending diffs only; delivers nothing itself (the node does).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Map, Value};

/// Metas one topic's waiting diff holds before it is sent early.
const MAX_PENDING_METAS: usize = 10_000;

#[derive(Default)]
struct Pending {
    joins: Map<String, Value>,
    leaves: Map<String, Value>,
    metas: usize,
}

impl Pending {
    fn merge(&mut self, diff: &Value) {
        for (side, into) in [("joins", &mut self.joins), ("leaves", &mut self.leaves)] {
            let Some(entries) = diff.get(side).and_then(Value::as_object) else {
                continue;
            };
            for (key, entry) in entries {
                let Some(metas) = entry.get("metas").and_then(Value::as_array) else {
                    continue;
                };
                self.metas += metas.len();
                let slot = into
                    .entry(key.clone())
                    .or_insert_with(|| serde_json::json!({ "metas": [] }));
                if let Some(list) = slot.get_mut("metas").and_then(Value::as_array_mut) {
                    list.extend(metas.iter().cloned());
                }
            }
        }
    }

    fn render(self) -> String {
        serde_json::json!({ "joins": self.joins, "leaves": self.leaves }).to_string()
    }
}

pub(super) struct Coalescer {
    /// Topics with at least this many subscribers here are coalesced; 0: never.
    threshold: usize,
    pending: parking_lot::Mutex<HashMap<String, Pending>>,
    /// Topics in `pending`: a small topic's diff goes out without taking the
    /// lock while nothing waits anywhere (the common case).
    waiting: AtomicUsize,
}

/// What `offer` decided.
pub(super) enum Offer {
    /// Deliver this diff now (a small topic with nothing waiting).
    Now,
    /// Merged; goes out with the next `take`.
    Kept,
    /// Merged, and the topic's waiting diff is full: deliver this at once.
    Full(String),
}

impl Coalescer {
    pub(super) fn new(threshold: usize) -> Coalescer {
        Coalescer {
            threshold,
            pending: parking_lot::Mutex::new(HashMap::new()),
            waiting: AtomicUsize::new(0),
        }
    }

    /// A diff for `topic`, which has `members` subscribers here.
    pub(super) fn offer(&self, topic: &str, members: usize, diff: &str) -> Offer {
        if self.threshold == 0
            || (members < self.threshold && self.waiting.load(Ordering::Acquire) == 0)
        {
            return Offer::Now;
        }
        let mut pending = self.pending.lock();
        if members < self.threshold && !pending.contains_key(topic) {
            return Offer::Now;
        }
        let Ok(parsed) = serde_json::from_str::<Value>(diff) else {
            // Diffs are built by this node or rebuilt from checked remote
            // entries: unparseable means a bug; do not hold it back.
            return Offer::Now;
        };
        let slot = pending.entry(topic.to_owned()).or_default();
        slot.merge(&parsed);
        if slot.metas >= MAX_PENDING_METAS {
            let full = pending.remove(topic).unwrap_or_default();
            self.waiting.store(pending.len(), Ordering::Release);
            return Offer::Full(full.render());
        }
        self.waiting.store(pending.len(), Ordering::Release);
        Offer::Kept
    }

    /// Every waiting diff, merged per topic.
    pub(super) fn take(&self) -> Vec<(String, String)> {
        let taken = {
            let mut pending = self.pending.lock();
            self.waiting.store(0, Ordering::Release);
            std::mem::take(&mut *pending)
        };
        taken.into_iter().map(|(t, p)| (t, p.render())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(joins: &[(&str, &str)], leaves: &[(&str, &str)]) -> String {
        let side = |list: &[(&str, &str)]| {
            let mut m = Map::new();
            for (key, r) in list {
                m.insert(
                    (*key).into(),
                    serde_json::json!({"metas": [{"phx_ref": r}]}),
                );
            }
            Value::Object(m)
        };
        serde_json::json!({"joins": side(joins), "leaves": side(leaves)}).to_string()
    }

    #[test]
    fn big_topics_wait_and_merge_small_ones_go_at_once() {
        let c = Coalescer::new(100);
        assert!(matches!(
            c.offer("small", 99, &diff(&[("a", "1")], &[])),
            Offer::Now
        ));
        assert!(matches!(
            c.offer("big", 100, &diff(&[("a", "1")], &[])),
            Offer::Kept
        ));
        assert!(matches!(
            c.offer("big", 100, &diff(&[("b", "2")], &[])),
            Offer::Kept
        ));
        assert!(matches!(
            c.offer("big", 100, &diff(&[], &[("a", "1")])),
            Offer::Kept
        ));
        // Shrunk below the threshold but diffs are waiting: this one waits too.
        assert!(matches!(
            c.offer("big", 5, &diff(&[("a", "3")], &[])),
            Offer::Kept
        ));
        let taken = c.take();
        assert_eq!(taken.len(), 1);
        let merged: Value = serde_json::from_str(&taken[0].1).unwrap();
        assert_eq!(merged["joins"]["a"]["metas"].as_array().unwrap().len(), 2);
        assert_eq!(merged["joins"]["b"]["metas"][0]["phx_ref"], "2");
        assert_eq!(merged["leaves"]["a"]["metas"][0]["phx_ref"], "1");
        assert!(c.take().is_empty());
        // Nothing waiting any more: small again means at once.
        assert!(matches!(
            c.offer("big", 5, &diff(&[("c", "4")], &[])),
            Offer::Now
        ));
    }

    #[test]
    fn a_full_window_goes_early_and_zero_turns_coalescing_off() {
        let c = Coalescer::new(1);
        let mut full = None;
        for i in 0..MAX_PENDING_METAS {
            if let Offer::Full(d) = c.offer("t", 1, &diff(&[(&i.to_string(), "r")], &[])) {
                full = Some(d);
            }
        }
        let full: Value = serde_json::from_str(&full.expect("sent early")).unwrap();
        assert_eq!(full["joins"].as_object().unwrap().len(), MAX_PENDING_METAS);
        assert!(c.take().is_empty());
        let off = Coalescer::new(0);
        assert!(matches!(
            off.offer("t", 1_000_000, &diff(&[("a", "1")], &[])),
            Offer::Now
        ));
    }
}
