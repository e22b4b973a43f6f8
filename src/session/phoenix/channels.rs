//! The channels one connection has joined, by topic.
//!
//! A sorted vector with exactly the room it needs: a session joins a few
//! topics and keeps them for hours, and a hash map's spare buckets and control
//! bytes were the largest part of an idle session's heap after its task
//! (BENCHMARKS.md, memory per idle session). Lookups are binary searches;
//! a join or leave moves at most `max_topics_per_session` entries. Topic names
//! come from the client, so no hashing also means nothing to flood.

/// Topic → state, sorted by topic.
pub(super) struct Channels<V> {
    entries: Vec<(Box<str>, V)>,
}

impl<V> Default for Channels<V> {
    fn default() -> Self {
        Channels {
            entries: Vec::new(),
        }
    }
}

impl<V> Channels<V> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn find(&self, topic: &str) -> Result<usize, usize> {
        self.entries.binary_search_by(|(t, _)| (**t).cmp(topic))
    }

    pub fn get(&self, topic: &str) -> Option<&V> {
        self.find(topic).ok().map(|i| &self.entries[i].1)
    }

    /// Add or replace `topic`'s state; the replaced state is returned.
    pub fn insert(&mut self, topic: Box<str>, value: V) -> Option<V> {
        match self.find(&topic) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                // Exact growth: a vector's doubling would leave room for
                // channels most sessions never join.
                self.entries.reserve_exact(1);
                self.entries.insert(i, (topic, value));
                None
            }
        }
    }

    /// Take `topic` out, with its name (putting it back costs no copy). The
    /// room stays: a push takes its channel out and puts it back.
    pub fn remove(&mut self, topic: &str) -> Option<(Box<str>, V)> {
        self.find(topic).ok().map(|i| self.entries.remove(i))
    }

    /// Every channel, in topic order, leaving none.
    pub fn take_all(&mut self) -> Vec<(Box<str>, V)> {
        std::mem::take(&mut self.entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_stay_sorted_and_findable_through_joins_and_leaves() {
        let mut c = Channels::default();
        for t in ["room:b", "room:a", "room:c", "a", "room:aa"] {
            assert_eq!(c.insert(Box::from(t), t.len()), None);
        }
        assert_eq!(
            c.insert(Box::from("room:a"), 99),
            Some(6),
            "a rejoin replaces"
        );
        assert_eq!(c.len(), 5);
        assert_eq!(c.get("room:a"), Some(&99));
        assert_eq!(c.get("room:"), None);
        let (name, v) = c.remove("room:b").unwrap();
        assert_eq!((&*name, v), ("room:b", 6));
        assert_eq!(c.remove("room:b"), None);
        assert_eq!(c.insert(name, 7), None, "a name taken out goes back");
        let all: Vec<String> = c.take_all().into_iter().map(|(t, _)| t.into()).collect();
        assert_eq!(all, ["a", "room:a", "room:aa", "room:b", "room:c"]);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn memory_is_exactly_what_the_joined_channels_need() {
        let mut c = Channels::default();
        c.insert(Box::from("room:1"), 0u64);
        c.insert(Box::from("room:all"), 0u64);
        assert_eq!(c.entries.capacity(), 2, "no spare room after two joins");
        // A push takes its channel out and puts it back without reallocating.
        let before = c.entries.as_ptr();
        let (name, v) = c.remove("room:1").unwrap();
        c.insert(name, v);
        assert_eq!(c.entries.as_ptr(), before);
    }
}
