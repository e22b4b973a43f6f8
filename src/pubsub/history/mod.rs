//! Per-topic history for recovery: a ring of recent broadcasts, each with a
//! monotonically increasing offset, and an epoch naming the ring's lifetime.
//!
//! Owns ordering for history topics: a publish appends and fans out while
//! holding the topic's ring lock, and a join reads what it missed and
//! subscribes under the same lock, so a recovering client sees every offset
//! exactly once, in order. Never holds a lock across topics, never touches a
//! socket. Bounded by `history_size` entries per topic and `history_ttl`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::mailbox::{Outbound, SessionId};
use crate::protocol::{encode, history_ref};

/// One stored broadcast. `frame` is its JSON text with the offset in the ref
/// slot: the exact text subscribers got, or for a V2 binary broadcast its
/// JSON form (`protocol::binary::json_payload`, what the API and SSE show),
/// with `binary` the frame Phoenix members get and recover instead.
#[derive(Debug, Clone)]
pub struct Entry {
    pub offset: u64,
    pub frame: Utf8Bytes,
    pub binary: Option<Bytes>,
    at: Instant,
}

impl Entry {
    /// What a member is sent for this entry.
    pub fn outbound(&self) -> Outbound {
        match &self.binary {
            Some(b) => Outbound::Binary(b.clone()),
            None => Outbound::Text(self.frame.clone()),
        }
    }

    /// Bytes it holds (both forms of a binary broadcast count).
    fn size(&self) -> usize {
        self.frame.len() + self.binary.as_ref().map_or(0, Bytes::len)
    }
}

/// A ring's bounds, fixed when the ring is created (from its namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLimits {
    /// Entries kept (`history_size`).
    pub size: usize,
    /// How long an entry is kept, and an idle ring lives (`history_ttl`).
    pub ttl: Duration,
}

/// Which topics keep history, and with what bounds; None: not a history topic.
type LimitsOf = Box<dyn Fn(&str) -> Option<RingLimits> + Send + Sync>;

/// What a ring costs besides its frames (the map entry, the ring, its lock
/// and epoch), counted in `history_max_bytes` with its topic's length.
pub const RING_OVERHEAD: usize = 192;

struct Ring {
    limits: RingLimits,
    /// `RING_OVERHEAD` + the topic's length, freed with the ring.
    overhead: usize,
    epoch: String,
    /// Offsets and epoch come from the cluster broker (Redis sequences every
    /// node's publishes); a node-local publish must fork first.
    cluster: bool,
    /// The newest cluster-sequenced offset this node delivered, and its
    /// epoch: kept across a local fork, so frames read back from the
    /// cluster after an outage are stored but not delivered twice.
    cluster_seen: Option<(String, u64)>,
    /// Bytes of the stored frames (counted in `History::bytes` too).
    bytes: usize,
    /// Offset of the newest broadcast; 0 before the first.
    last: u64,
    /// Members that joined with a position of this epoch ahead of `last`
    /// (this node lags the cluster; the client came from a node that did
    /// not), with the offset they already have: the frames up to it reach
    /// this node later and are not delivered to them again. Sorted by
    /// session, one entry each, dropped once it has caught up, when it
    /// leaves, or when the epoch changes: bounded by the topic's members
    /// here. Only positions at most `history_size` ahead are kept: a node
    /// further behind cannot replay that far anyway, and a client naming an
    /// offset far in the future would otherwise skip every frame until then.
    ahead: Vec<(SessionId, u64)>,
    entries: VecDeque<Entry>,
    last_publish: Instant,
}

impl Ring {
    fn new(limits: RingLimits, overhead: usize, epoch: String) -> Ring {
        Ring {
            limits,
            overhead,
            epoch,
            cluster: false,
            cluster_seen: None,
            bytes: 0,
            last: 0,
            ahead: Vec::new(),
            entries: VecDeque::new(),
            last_publish: Instant::now(),
        }
    }

    /// Drop the oldest entry; returns its size.
    fn pop_oldest(&mut self) -> Option<usize> {
        let e = self.entries.pop_front()?;
        self.bytes -= e.size();
        Some(e.size())
    }

    /// Drop entries older than the ring's ttl; returns the bytes freed.
    fn prune(&mut self, now: Instant) -> usize {
        let ttl = self.limits.ttl;
        let mut freed = 0;
        while let Some(front) = self.entries.front() {
            if now.duration_since(front.at) < ttl {
                break;
            }
            freed += self.pop_oldest().unwrap_or(0);
        }
        freed
    }
}

/// A client's position: `{"offset": N, "epoch": "E"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
}

/// What a join with (or without) `since` gets.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// True when every broadcast after `since` is replayed below.
    pub recovered: bool,
    /// The topic's current position (newest offset and epoch).
    pub position: Position,
    /// Missed frames in offset order (empty unless recovered).
    pub frames: Vec<Outbound>,
}

pub struct History {
    rings: DashMap<Arc<str>, Arc<Mutex<Ring>>>,
    epoch_counter: AtomicU64,
    /// Bytes stored across all topics (frames and ring overhead), bounded by
    /// `max_bytes`.
    bytes: AtomicUsize,
    max_bytes: usize,
    /// Rings this node keeps at most (`history_max_topics`).
    max_topics: usize,
    limits_of: LimitsOf,
    /// Random per process: with `generation`, names the epoch a topic's ring
    /// will get before the ring exists (rings are created on first publish).
    boot: u64,
    /// Moves whenever a ring is dropped or could not be created, so an epoch
    /// handed out for a ring-less topic never matches a later ring's by chance.
    generation: AtomicU64,
    /// Publishes that found no room for a new ring (at `max_topics` or the
    /// byte bound): delivered without an offset.
    refused: AtomicU64,
    /// Cluster-sequenced frames that arrived after a missing offset: the
    /// frames kept before them were dropped (recovery across answers
    /// `recovered: false`).
    gaps: AtomicU64,
}

/// No room for a new ring.
struct NoRoom;

impl History {
    /// `max_bytes`: the node-wide bound on stored frames (`history_max_bytes`);
    /// `limits_of`: each history topic's ring bounds (its namespace's), None
    /// for topics that keep no history.
    pub fn new(
        max_bytes: usize,
        max_topics: usize,
        limits_of: impl Fn(&str) -> Option<RingLimits> + Send + Sync + 'static,
    ) -> History {
        // From the OS's random source: containers started together share
        // their PID (1) and nearly their clock.
        let boot = getrandom::u64().unwrap_or_else(|_| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ u64::from(std::process::id()).rotate_left(32)
        });
        History {
            rings: DashMap::new(),
            epoch_counter: AtomicU64::new(0),
            bytes: AtomicUsize::new(0),
            max_bytes,
            max_topics,
            limits_of: Box::new(limits_of),
            boot,
            generation: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
        }
    }

    /// Gaps seen in cluster-sequenced offsets (see `append_sequenced`).
    pub fn gaps(&self) -> u64 {
        self.gaps.load(Ordering::Relaxed)
    }

    /// Publishes delivered without an offset because no ring could be made.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The epoch `topic`'s ring gets when it is created now.
    fn pending_epoch(&self, topic: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.boot.to_le_bytes());
        h.update(self.generation.load(Ordering::Relaxed).to_le_bytes());
        h.update(topic.as_bytes());
        h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Bytes of history currently stored on this node.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn freed(&self, n: usize) {
        if n > 0 {
            self.bytes.fetch_sub(n, Ordering::Relaxed);
        }
    }

    fn new_epoch(&self) -> String {
        // Unique per ring lifetime in this process and across restarts and
        // nodes: random, with a counter for the (unlikely) failing source.
        let random = getrandom::u64().unwrap_or_else(|_| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        let n = self.epoch_counter.fetch_add(1, Ordering::Relaxed);
        format!("{:x}", random ^ n.rotate_left(48))
    }

    /// The topic's ring if it has one (joins and reads never create one).
    fn existing(&self, topic: &str) -> Option<Arc<Mutex<Ring>>> {
        self.rings.get(topic).map(|r| Arc::clone(r.value()))
    }

    /// The topic's ring, created on first publish with its namespace's limits
    /// and the epoch joins were told; Ok(None) for a topic that keeps no
    /// history, Err when this node has no room for another ring.
    fn ring(&self, topic: &str) -> Result<Option<Arc<Mutex<Ring>>>, NoRoom> {
        if let Some(ring) = self.existing(topic) {
            return Ok(Some(ring));
        }
        let Some(limits) = (self.limits_of)(topic).filter(|l| l.size > 0) else {
            return Ok(None);
        };
        let overhead = RING_OVERHEAD + topic.len();
        if self.rings.len() >= self.max_topics || self.bytes() + overhead > self.max_bytes {
            self.refused.fetch_add(1, Ordering::Relaxed);
            // Clients told this topic's pending epoch must not take the
            // unstored publish for "nothing happened".
            self.generation.fetch_add(1, Ordering::Relaxed);
            return Err(NoRoom);
        }
        let ring = match self.rings.entry(Arc::from(topic)) {
            dashmap::Entry::Occupied(e) => Arc::clone(e.get()),
            dashmap::Entry::Vacant(v) => {
                self.bytes.fetch_add(overhead, Ordering::Relaxed);
                let ring = Ring::new(limits, overhead, self.pending_epoch(topic));
                Arc::clone(v.insert(Arc::new(Mutex::new(ring))).value())
            }
        };
        Ok(Some(ring))
    }

    /// Encode a broadcast with its offset in the ref slot, store it, and hand it
    /// to `deliver` while the topic is locked (so deliveries keep offset order).
    /// Returns the offset. A topic without history, or one this node has no
    /// room to keep (`history_max_topics`, `history_max_bytes`), is delivered
    /// as a plain broadcast and gets None.
    ///
    /// `binary`: the V2 binary broadcast members get instead of the JSON
    /// frame (`payload` is then its JSON form); it takes the next offset like
    /// any other broadcast.
    pub fn publish(
        &self,
        topic: &str,
        event: &str,
        payload: &str,
        binary: Option<Bytes>,
        deliver: impl FnOnce(Outbound),
    ) -> Option<u64> {
        let Ok(Some(ring)) = self.ring(topic) else {
            deliver(match binary {
                Some(b) => Outbound::Binary(b),
                None => Outbound::Text(encode::broadcast(topic, event, payload)),
            });
            return None;
        };
        let mut ring = ring.lock();
        // This node numbers the frame itself: nobody can already have it.
        ring.ahead.clear();
        if ring.cluster {
            // The cluster is unreachable and this node publishes on its own:
            // a fresh epoch, so local offsets can never be mistaken for the
            // cluster's (a client recovering across this answers recovered:false).
            self.reset(&mut ring, self.new_epoch());
        }
        ring.last += 1;
        let offset = ring.last;
        let frame = Utf8Bytes::from(encode::frame_with_ref(
            &history_ref(offset, &ring.epoch),
            topic,
            event,
            payload,
        ));
        let entry = self.store(&mut ring, offset, frame, binary);
        deliver(entry);
        Some(offset)
    }

    /// A broadcast the cluster sequenced (Redis assigned offset and epoch):
    /// store it and hand it to `deliver` under the topic's lock. A new epoch
    /// starts the ring over; an offset at or below the ring's last is a repeat
    /// and is dropped, as is a frame for a topic without history (returns false).
    /// After a local fork (an outage), frames of the cluster's epoch this
    /// node delivered before the outage are stored again but not delivered:
    /// members already have them (only what was sequenced while away is new).
    pub fn append_sequenced(
        &self,
        topic: &str,
        offset: u64,
        epoch: &str,
        frame: Utf8Bytes,
        binary: Option<Bytes>,
        deliver: impl FnOnce(Outbound, &[SessionId]),
    ) -> bool {
        let ring = match self.ring(topic) {
            Ok(Some(ring)) => ring,
            Ok(None) => return false,
            // No room to keep it: still delivered (no repeat check possible).
            Err(NoRoom) => {
                let frame = match binary {
                    Some(b) => Outbound::Binary(b),
                    None => Outbound::Text(frame),
                };
                deliver(frame, &[]);
                return true;
            }
        };
        let mut ring = ring.lock();
        if ring.epoch != epoch || !ring.cluster {
            self.reset(&mut ring, epoch.to_owned());
            ring.cluster = true;
            // Offsets before this one were published before this node
            // listened: recovery to them answers recovered:false.
            ring.last = offset.saturating_sub(1);
        }
        if offset <= ring.last {
            return false;
        }
        if offset > ring.last + 1 && !ring.entries.is_empty() {
            // A frame between never arrived (a broker connection that blinked
            // without the link noticing, a frame refused on the way): what is
            // kept cannot be replayed across the hole, so a client from
            // before it is told recovered:false instead of skipping silently.
            ring.entries.clear();
            self.freed(std::mem::take(&mut ring.bytes));
            self.gaps.fetch_add(1, Ordering::Relaxed);
        }
        ring.last = offset;
        let delivered_before = ring
            .cluster_seen
            .as_ref()
            .is_some_and(|(e, seen)| e == epoch && offset <= *seen);
        let entry = self.store(&mut ring, offset, frame, binary);
        if !delivered_before {
            ring.cluster_seen = Some((epoch.to_owned(), offset));
            // Members that joined ahead and already have this offset skip
            // it; the ones past their offset have caught up.
            ring.ahead.retain(|&(_, has)| has >= offset);
            // Sorted, as `ahead` is (the fan-out binary-searches it).
            let skip: Vec<SessionId> = ring.ahead.iter().map(|&(s, _)| s).collect();
            deliver(entry, &skip);
        }
        true
    }

    /// `session` left `topic`: it no longer waits to catch up there.
    pub fn forget(&self, topic: &str, session: SessionId) {
        if let Some(ring) = self.existing(topic) {
            let mut ring = ring.lock();
            if let Ok(i) = ring.ahead.binary_search_by_key(&session, |&(s, _)| s) {
                ring.ahead.remove(i);
            }
        }
    }

    fn reset(&self, ring: &mut Ring, epoch: String) {
        ring.ahead.clear();
        ring.entries.clear();
        self.freed(std::mem::take(&mut ring.bytes));
        ring.epoch = epoch;
        ring.cluster = false;
        ring.last = 0;
    }

    /// Store one frame within the ring's and the node's bounds; returns what
    /// members get for it.
    fn store(
        &self,
        ring: &mut Ring,
        offset: u64,
        frame: Utf8Bytes,
        binary: Option<Bytes>,
    ) -> Outbound {
        let entry = Entry {
            offset,
            frame,
            binary,
            at: Instant::now(),
        };
        let out = entry.outbound();
        self.keep(ring, entry);
        out
    }

    fn keep(&self, ring: &mut Ring, entry: Entry) {
        let now = entry.at;
        let pruned = ring.prune(now);
        self.freed(pruned);
        // Node-wide byte bound: make room from this topic's own oldest entries;
        // a topic with nothing left to give up stores nothing, and recovery past
        // this offset then answers recovered:false (never a silent gap).
        let len = entry.size();
        while self.bytes() + len > self.max_bytes {
            match ring.pop_oldest() {
                Some(n) => self.freed(n),
                None => break,
            }
        }
        if self.bytes() + len <= self.max_bytes {
            ring.entries.push_back(entry);
            ring.bytes += len;
            self.bytes.fetch_add(len, Ordering::Relaxed);
        } else {
            ring.entries.clear();
            self.freed(std::mem::take(&mut ring.bytes));
        }
        while ring.entries.len() > ring.limits.size {
            if let Some(n) = ring.pop_oldest() {
                self.freed(n);
            }
        }
        ring.last_publish = now;
    }

    /// Collect what a client at `since` missed and hand it to `on_join`
    /// (which subscribes the client and queues the frames), atomically with
    /// respect to publishes on `topic`: no publish can come between the missed
    /// frames and the live ones. `on_join` answers whether it took the frames;
    /// when it did not (they do not fit the client's mailbox), the answer is
    /// `recovered: false` with no frames, never a partial replay. A topic
    /// without history only calls `on_join` (position 0, no epoch).
    pub fn join(
        &self,
        topic: &str,
        since: Option<&Position>,
        on_join: impl FnOnce(&[Outbound]) -> bool,
    ) -> Recovery {
        self.join_at(topic, since, None, false, on_join)
    }

    /// `join` for `session`: when its position is of this ring's epoch but
    /// ahead of it (this node has not received those frames yet), the answer
    /// is still `recovered: false`, and the frames up to that position are
    /// not delivered to the session when they arrive.
    pub fn join_as(
        &self,
        topic: &str,
        since: Option<&Position>,
        session: SessionId,
        on_join: impl FnOnce(&[Outbound]) -> bool,
    ) -> Recovery {
        self.join_at(topic, since, Some(session), false, on_join)
    }

    /// Like `join` without `since`, but replays every stored broadcast (a new
    /// client asking for the recent past, e.g. the chat page's `history: true`).
    pub fn join_with_stored(
        &self,
        topic: &str,
        on_join: impl FnOnce(&[Outbound]) -> bool,
    ) -> Recovery {
        self.join_at(topic, None, None, true, on_join)
    }

    fn join_at(
        &self,
        topic: &str,
        since: Option<&Position>,
        session: Option<SessionId>,
        replay_all: bool,
        on_join: impl FnOnce(&[Outbound]) -> bool,
    ) -> Recovery {
        let Some(ring) = self.existing(topic) else {
            // Nothing published yet (or nothing kept): the position is the
            // start of the ring a first publish will create. A client already
            // there has missed nothing.
            let _ = on_join(&[]);
            let position = Position {
                offset: 0,
                epoch: self.pending_epoch(topic),
            };
            return Recovery {
                recovered: since == Some(&position),
                position,
                frames: Vec::new(),
            };
        };
        let mut ring = ring.lock();
        let pruned = ring.prune(Instant::now());
        self.freed(pruned);
        if let Some(session) = session {
            let window = ring.last.saturating_add(ring.limits.size as u64);
            let ahead = since
                .filter(|p| p.epoch == ring.epoch && p.offset > ring.last && p.offset <= window);
            let at = ring.ahead.binary_search_by_key(&session, |&(s, _)| s);
            match (at, ahead) {
                (Ok(i), Some(p)) => ring.ahead[i].1 = p.offset,
                (Ok(i), None) => {
                    ring.ahead.remove(i);
                }
                (Err(i), Some(p)) => ring.ahead.insert(i, (session, p.offset)),
                (Err(_), None) => {}
            }
        }
        let position = Position {
            offset: ring.last,
            epoch: ring.epoch.clone(),
        };
        let (recovered, frames) = match since {
            // `replay_all`: a fresh client asks for whatever history is kept.
            None if replay_all => (false, ring.entries.iter().map(Entry::outbound).collect()),
            None => (false, Vec::new()),
            Some(since) => {
                let first_kept = ring.entries.front().map_or(ring.last + 1, |e| e.offset);
                let recoverable = since.epoch == ring.epoch
                    && since.offset <= ring.last
                    && since.offset + 1 >= first_kept;
                let frames = if recoverable {
                    ring.entries
                        .iter()
                        .filter(|e| e.offset > since.offset)
                        .map(Entry::outbound)
                        .collect()
                } else {
                    Vec::new()
                };
                (recoverable, frames)
            }
        };
        if !on_join(&frames) {
            return Recovery {
                recovered: false,
                position,
                frames: Vec::new(),
            };
        }
        Recovery {
            recovered,
            position,
            frames,
        }
    }

    /// Stored entries after `since` (all kept entries when None), for the API.
    pub fn read(&self, topic: &str, since: Option<u64>) -> Option<(Position, Vec<Entry>)> {
        let ring = Arc::clone(self.rings.get(topic)?.value());
        let mut ring = ring.lock();
        let pruned = ring.prune(Instant::now());
        self.freed(pruned);
        let entries = ring
            .entries
            .iter()
            .filter(|e| since.is_none_or(|s| e.offset > s))
            .cloned()
            .collect();
        Some((
            Position {
                offset: ring.last,
                epoch: ring.epoch.clone(),
            },
            entries,
        ))
    }

    /// Drop expired entries, and rings with nothing left to recover that
    /// nobody published to for their ttl. A ring created again later gets a
    /// new epoch, so clients that recover from the old one are told
    /// `recovered: false`.
    pub fn sweep(&self) {
        self.sweep_at(Instant::now());
    }

    fn sweep_at(&self, now: Instant) {
        let mut dropped = false;
        self.rings.retain(|_, ring| {
            let mut ring = ring.lock();
            let pruned = ring.prune(now);
            self.freed(pruned);
            let keep = !(ring.entries.is_empty()
                && now.duration_since(ring.last_publish) >= ring.limits.ttl);
            if !keep {
                self.freed(ring.overhead);
                dropped = true;
            }
            keep
        });
        if dropped {
            // A topic's next ring must not get the epoch the old one had.
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Topics with a history ring.
    pub fn topic_count(&self) -> usize {
        self.rings.len()
    }
}

#[cfg(test)]
mod tests;
