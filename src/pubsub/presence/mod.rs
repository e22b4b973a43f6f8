//! Who is in a topic, in Phoenix Presence's wire format.
//!
//! Owns: per topic, key (user id) → metas, one meta per (session, topic), each
//! stamped with a fresh `phx_ref`; the `presence_state` snapshot a joining
//! client gets; the `presence_diff` every change broadcasts. Diffs for a topic
//! are produced and handed to `deliver` under the topic's lock, so members see
//! changes in the order they happened. A leave reports the meta exactly as its
//! join did (same `phx_ref`), which the JS client needs to remove it.
//! In a cluster it also holds a replica of the members other nodes reported
//! (per node, so a dead node's members can be dropped at once); `state`
//! merges both. Never touches sockets or the network: the broker link feeds
//! the replica and delivers the diffs it returns.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use parking_lot::Mutex;
use serde_json::{Map, Value};

use super::mailbox::SessionId;

struct Tracked {
    key: String,
    /// The meta as sent on the wire, `phx_ref` included.
    meta: Value,
}

#[derive(Default)]
struct TopicPresence {
    /// By session: a leave is one O(log n) removal, and iteration keeps the
    /// (monotonic) session-id order, so `presence_state` is deterministic.
    tracked: BTreeMap<SessionId, Tracked>,
}

/// What a joiner is told about who is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snapshot {
    Full,
    Count,
}

/// The joiner's view: the `presence_state` payload, or the session count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    State(String),
    Count(usize),
}

/// A member another node reported.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteMember {
    pub topic: String,
    pub key: String,
    pub meta: Value,
}

impl RemoteMember {
    fn phx_ref(&self) -> Option<&str> {
        self.meta.get("phx_ref").and_then(Value::as_str)
    }

    /// What tells two reports of a member apart: its key and `phx_ref` (every
    /// tracked meta has a fresh one), or the whole meta if it has none.
    fn identity(&self) -> (&str, Cow<'_, str>) {
        let r = match self.phx_ref() {
            Some(r) => Cow::Borrowed(r),
            None => Cow::Owned(self.meta.to_string()),
        };
        (self.key.as_str(), r)
    }
}

/// The members of `a` (by topic) whose identity `b` lacks.
fn missing_from<'a>(a: &'a NodeMembers, b: &NodeMembers) -> Vec<&'a RemoteMember> {
    let mut out = Vec::new();
    for (topic, members) in a {
        let theirs: HashSet<_> = b
            .get(topic)
            .into_iter()
            .flatten()
            .map(RemoteMember::identity)
            .collect();
        out.extend(members.iter().filter(|m| !theirs.contains(&m.identity())));
    }
    out
}

#[derive(Default)]
pub struct Presence {
    topics: DashMap<Arc<str>, Arc<Mutex<TopicPresence>>>,
    counter: AtomicU16,
    /// node id → topic → the members it reported there. Presence changes are
    /// rare next to messages, so one lock is enough; grouping by topic keeps a
    /// join's `state` and a diff's update proportional to that topic's members.
    remote: Mutex<HashMap<String, NodeMembers>>,
}

/// A diff being built: (joins, leaves), each `{key: {"metas": [..]}}`.
type DiffSides = (Map<String, Value>, Map<String, Value>);

/// One node's reported members, by topic.
type NodeMembers = HashMap<String, Vec<RemoteMember>>;

impl Presence {
    pub fn new() -> Presence {
        Presence::default()
    }

    /// A `phx_ref` like Phoenix's: base64url of 12 bytes (time in ns, a node
    /// tag, a counter), 16 characters, new for every track.
    fn new_ref(&self, session: SessionId) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut bytes = [0u8; 12];
        bytes[..8].copy_from_slice(&nanos.to_be_bytes());
        bytes[8..10].copy_from_slice(&(session as u16).to_be_bytes());
        bytes[10..].copy_from_slice(&self.counter.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn topic(&self, topic: &str) -> Arc<Mutex<TopicPresence>> {
        if let Some(t) = self.topics.get(topic) {
            return Arc::clone(t.value());
        }
        Arc::clone(self.topics.entry(Arc::from(topic)).or_default().value())
    }

    /// Track `session` as `key` on `topic` with the caller's `meta` (an object)
    /// unless the topic already tracks `max_members` sessions on this node.
    /// Under the topic's lock, in this order: `joined` gets the
    /// `presence_state` payload for the joiner (whether tracked or not), then
    /// `deliver` the `presence_diff` to broadcast (only when tracked). Returns
    /// whether the session was tracked.
    #[allow(clippy::too_many_arguments)]
    pub fn track(
        &self,
        topic: &str,
        session: SessionId,
        key: &str,
        meta: Map<String, Value>,
        max_members: usize,
        joined: impl FnOnce(String),
        deliver: impl FnOnce(String),
    ) -> bool {
        self.track_as(
            topic,
            session,
            (key, meta),
            max_members,
            Snapshot::Full,
            |s| {
                if let Joined::State(state) = s {
                    joined(state);
                }
            },
            deliver,
        )
    }

    /// `track`, telling the joiner what `snapshot` asks for: the whole state,
    /// or only how many sessions are present (no O(members) rendering).
    #[allow(clippy::too_many_arguments)]
    pub fn track_as(
        &self,
        topic: &str,
        session: SessionId,
        (key, meta): (&str, Map<String, Value>),
        max_members: usize,
        snapshot: Snapshot,
        joined: impl FnOnce(Joined),
        deliver: impl FnOnce(String),
    ) -> bool {
        let snap = |p: &Presence, t: &TopicPresence| match snapshot {
            Snapshot::Full => Joined::State(p.state_of(topic, t)),
            Snapshot::Count => Joined::Count(p.count_of(topic, t)),
        };
        let t = self.topic(topic);
        let mut t = t.lock();
        if t.tracked.len() >= max_members && !t.tracked.contains_key(&session) {
            joined(snap(self, &t));
            return false;
        }
        let mut meta = meta;
        meta.insert(
            String::from("phx_ref"),
            Value::String(self.new_ref(session)),
        );
        let meta = Value::Object(meta);
        let diff = diff_json(Some((key, &meta)), None);
        t.tracked.insert(
            session,
            Tracked {
                key: key.to_owned(),
                meta,
            },
        );
        joined(snap(self, &t));
        deliver(diff);
        true
    }

    /// `track` without building the joiner's state or the diff: tests that
    /// fill a topic with 100 000 members (each `track` renders the state).
    #[cfg(test)]
    pub fn track_silently(
        &self,
        topic: &str,
        session: SessionId,
        key: &str,
        meta: Map<String, Value>,
    ) {
        let t = self.topic(topic);
        let mut t = t.lock();
        let mut meta = meta;
        meta.insert(
            String::from("phx_ref"),
            Value::String(self.new_ref(session)),
        );
        t.tracked.insert(
            session,
            Tracked {
                key: key.to_owned(),
                meta: Value::Object(meta),
            },
        );
    }

    /// Remove `session` from `topic`; `deliver` gets the leave diff. No-op when
    /// the session was not tracked there.
    /// Remove `session` from `topic`; returns its presence key if it was
    /// tracked.
    pub fn untrack(
        &self,
        topic: &str,
        session: SessionId,
        deliver: impl FnOnce(String),
    ) -> Option<String> {
        let t = self.topics.get(topic).map(|t| Arc::clone(t.value()))?;
        let mut t = t.lock();
        let gone = t.tracked.remove(&session)?;
        let empty = t.tracked.is_empty();
        deliver(diff_json(None, Some((&gone.key, &gone.meta))));
        drop(t);
        if empty {
            self.topics
                .remove_if(topic, |_, t| t.lock().tracked.is_empty());
        }
        Some(gone.key)
    }

    /// `{"key": {"metas": [...]}, ...}`, keys sorted.
    pub fn state(&self, topic: &str) -> String {
        let local = self.topics.get(topic).map(|t| Arc::clone(t.value()));
        match local {
            Some(t) => self.state_of(topic, &t.lock()),
            None => self.state_of(topic, &TopicPresence::default()),
        }
    }

    /// Sessions present on `topic` (here and as other nodes reported), with
    /// the topic's lock held: O(nodes), not O(members).
    fn count_of(&self, topic: &str, t: &TopicPresence) -> usize {
        let remote = self.remote.lock();
        t.tracked.len()
            + remote
                .values()
                .filter_map(|n| n.get(topic))
                .map(Vec::len)
                .sum::<usize>()
    }

    /// `state` with the topic's lock already held.
    fn state_of(&self, topic: &str, t: &TopicPresence) -> String {
        let mut by_key: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        for tr in t.tracked.values() {
            by_key.entry(tr.key.as_str()).or_default().push(&tr.meta);
        }
        let remote = self.remote.lock();
        for m in remote.values().filter_map(|n| n.get(topic)).flatten() {
            by_key.entry(m.key.as_str()).or_default().push(&m.meta);
        }
        if by_key.is_empty() {
            return String::from("{}");
        }
        let state: Map<String, Value> = by_key
            .into_iter()
            .map(|(k, metas)| {
                let mut entry = Map::new();
                entry.insert(
                    String::from("metas"),
                    Value::Array(metas.into_iter().cloned().collect()),
                );
                (k.to_owned(), Value::Object(entry))
            })
            .collect();
        Value::Object(state).to_string()
    }
}

impl Presence {
    /// Every member tracked on this node, for a cluster state sync.
    pub fn local_members(&self) -> Vec<RemoteMember> {
        self.local_members_of(None)
    }

    /// The members tracked on this node in `topics` (every topic: None).
    pub fn local_members_of(&self, topics: Option<&[String]>) -> Vec<RemoteMember> {
        let mut out = Vec::new();
        for entry in self.topics.iter() {
            if topics.is_some_and(|ts| !ts.iter().any(|t| **t == **entry.key())) {
                continue;
            }
            let t = entry.value().lock();
            out.extend(t.tracked.values().map(|tr| RemoteMember {
                topic: entry.key().to_string(),
                key: tr.key.clone(),
                meta: tr.meta.clone(),
            }));
        }
        out
    }

    /// Per topic with members here: an order-independent hash of them and
    /// their count (what peers compare their replica of this node against).
    pub fn local_digest(&self) -> Vec<(String, u64, u32)> {
        let mut out = Vec::new();
        for entry in self.topics.iter() {
            let t = entry.value().lock();
            if t.tracked.is_empty() {
                continue;
            }
            let hash = t
                .tracked
                .values()
                .map(|tr| member_hash(&tr.key, &tr.meta))
                .fold(0u64, u64::wrapping_add);
            out.push((entry.key().to_string(), hash, t.tracked.len() as u32));
        }
        out
    }

    /// The same digest of what `node` reported on `topic` here.
    pub fn remote_digest(&self, node: &str, topic: &str) -> (u64, u32) {
        let remote = self.remote.lock();
        let members = remote.get(node).and_then(|n| n.get(topic));
        members.map_or((0, 0), |ms| {
            let hash = ms
                .iter()
                .map(|m| member_hash(&m.key, &m.meta))
                .fold(0u64, u64::wrapping_add);
            (hash, ms.len() as u32)
        })
    }

    /// The topics `node` reported members on.
    pub fn remote_topics(&self, node: &str) -> Vec<String> {
        self.remote
            .lock()
            .get(node)
            .map(|n| n.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Apply a presence diff (Phoenix shape) that `node` broadcast. Its
    /// clients got the diff frame itself through the broker, so nothing is
    /// returned to deliver.
    /// At most `max_members` of `node`'s members are kept per topic (what a
    /// node may track itself): joins past it are ignored, counted in the
    /// returned number.
    pub fn apply_remote_diff(
        &self,
        node: &str,
        topic: &str,
        diff: &Value,
        max_members: usize,
    ) -> usize {
        let mut ignored = 0;
        let mut remote = self.remote.lock();
        let node_members = remote.entry(node.to_owned()).or_default();
        let members = node_members.entry(topic.to_owned()).or_default();
        for (key, meta) in diff_side(diff, "leaves") {
            let r = meta.get("phx_ref").and_then(Value::as_str);
            members.retain(|m| !(&m.key == key && m.phx_ref() == r));
        }
        for (key, meta) in diff_side(diff, "joins") {
            if members.len() >= max_members {
                ignored += 1;
                continue;
            }
            members.push(RemoteMember {
                topic: topic.to_owned(),
                key: key.clone(),
                meta: meta.clone(),
            });
        }
        if members.is_empty() {
            node_members.remove(topic);
        }
        ignored
    }

    /// Replace what `node` reported with a full snapshot; returns the diffs
    /// (topic, `presence_diff` payload) local members have not seen yet.
    /// At most `max_members` per topic are kept (the rest ignored).
    pub fn replace_remote(
        &self,
        node: &str,
        members: Vec<RemoteMember>,
        max_members: usize,
    ) -> Vec<(String, String)> {
        self.replace_remote_topics(node, None, members, max_members)
    }

    /// `replace_remote` for `topics` only (every topic: None): what `node`
    /// reported on other topics stays. One diff per changed topic.
    pub fn replace_remote_topics(
        &self,
        node: &str,
        topics: Option<&[String]>,
        members: Vec<RemoteMember>,
        max_members: usize,
    ) -> Vec<(String, String)> {
        let mut new = NodeMembers::new();
        for m in members {
            if topics.is_some_and(|ts| !ts.contains(&m.topic)) {
                continue;
            }
            let topic = new.entry(m.topic.clone()).or_default();
            if topic.len() < max_members {
                topic.push(m);
            }
        }
        let mut remote = self.remote.lock();
        let node_members = remote.entry(node.to_owned()).or_default();
        let old: NodeMembers = match topics {
            None => std::mem::take(node_members),
            Some(ts) => ts
                .iter()
                .filter_map(|t| node_members.remove_entry(t))
                .collect(),
        };
        let mut diffs: BTreeMap<String, DiffSides> = BTreeMap::new();
        for m in missing_from(&old, &new) {
            push_meta(
                &mut diffs.entry(m.topic.clone()).or_default().1,
                &m.key,
                &m.meta,
            );
        }
        for m in missing_from(&new, &old) {
            push_meta(
                &mut diffs.entry(m.topic.clone()).or_default().0,
                &m.key,
                &m.meta,
            );
        }
        node_members.extend(new);
        if node_members.is_empty() {
            remote.remove(node);
        }
        diffs
            .into_iter()
            .map(|(topic, (joins, leaves))| {
                let mut diff = Map::new();
                diff.insert(String::from("joins"), Value::Object(joins));
                diff.insert(String::from("leaves"), Value::Object(leaves));
                (topic, Value::Object(diff).to_string())
            })
            .collect()
    }

    /// Forget a node that stopped answering; returns the leave diffs to
    /// deliver to local members.
    pub fn drop_node(&self, node: &str) -> Vec<(String, String)> {
        let gone = self.remote.lock().remove(node).unwrap_or_default();
        gone.values()
            .flatten()
            .map(|m| (m.topic.clone(), diff_json(None, Some((&m.key, &m.meta)))))
            .collect()
    }
}

/// `diff` rebuilt from the (key, meta) entries `keep` accepts, in Phoenix's
/// shape and nothing else; None when no entry is left. What another node sent
/// reaches local clients only through this.
pub fn filter_diff(diff: &Value, keep: impl Fn(&str, &Value) -> bool) -> Option<Value> {
    let mut any = false;
    let mut side = |name: &str| {
        let mut out = Map::new();
        for (key, meta) in diff_side(diff, name) {
            if !keep(key, meta) {
                continue;
            }
            any = true;
            let entry = out
                .entry(key.clone())
                .or_insert_with(|| serde_json::json!({"metas": []}));
            if let Some(metas) = entry.get_mut("metas").and_then(Value::as_array_mut) {
                metas.push(meta.clone());
            }
        }
        Value::Object(out)
    };
    let joins = side("joins");
    let leaves = side("leaves");
    if !any {
        return None;
    }
    let mut out = Map::new();
    out.insert(String::from("joins"), joins);
    out.insert(String::from("leaves"), leaves);
    Some(Value::Object(out))
}

/// Every (key, meta) of one side (`joins` or `leaves`) of a Phoenix diff.
fn diff_side<'a>(diff: &'a Value, side: &str) -> impl Iterator<Item = (&'a String, &'a Value)> {
    diff.get(side)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .flat_map(|(key, entry)| {
            entry
                .get("metas")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(move |meta| (key, meta))
        })
}

/// Add `meta` under `key` to one side of a diff (`{key: {"metas": [..]}}`).
fn push_meta(side: &mut Map<String, Value>, key: &str, meta: &Value) {
    let entry = side
        .entry(key.to_owned())
        .or_insert_with(|| serde_json::json!({"metas": []}));
    if let Some(metas) = entry.get_mut("metas").and_then(Value::as_array_mut) {
        metas.push(meta.clone());
    }
}

/// One member's share of a digest: the first 8 bytes of SHA-256 over its key
/// and `phx_ref` (the whole meta when it has none), the same on every node
/// and version; a topic's digest is the wrapping sum, so order does not matter.
fn member_hash(key: &str, meta: &Value) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update([0]);
    match meta.get("phx_ref").and_then(Value::as_str) {
        Some(r) => h.update(r.as_bytes()),
        None => h.update(meta.to_string().as_bytes()),
    }
    let d = h.finalize();
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

fn diff_json(join: Option<(&str, &Value)>, leave: Option<(&str, &Value)>) -> String {
    let side = |entry: Option<(&str, &Value)>| {
        let mut map = Map::new();
        if let Some((key, meta)) = entry {
            let mut metas = Map::new();
            metas.insert(String::from("metas"), Value::Array(vec![meta.clone()]));
            map.insert(key.to_owned(), Value::Object(metas));
        }
        Value::Object(map)
    };
    let mut diff = Map::new();
    diff.insert(String::from("joins"), side(join));
    diff.insert(String::from("leaves"), side(leave));
    Value::Object(diff).to_string()
}

#[cfg(test)]
mod tests;
