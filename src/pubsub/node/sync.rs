//! Presence between nodes at scale. A node's members travel in parts of at
//! most `presence_sync_chunk_bytes` (a 100 000-member topic is megabytes,
//! past NATS's 1 MiB payload limit and Redis's pub/sub output buffers),
//! paced at `presence_sync_rate` bytes per second, and a receiver applies a
//! state only once every part of it arrived. Every
//! `presence_digest_interval` a node publishes per-topic digests of its
//! members; a peer whose replica disagrees (a diff was lost) asks for just
//! those topics again (anti-entropy).
//!
//! Owns the outbox of parts and the states being reassembled. Never awaits:
//! parts leave through the broker queue like every control message.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Node;
use crate::protocol::BrokerRefusal;
use crate::pubsub::broker::wire::{Control, Member, TopicDigest};
use crate::pubsub::presence::RemoteMember;

/// Parts one state may have (with the 4 KiB minimum chunk: 256 MiB).
const MAX_PARTS: u32 = 65_536;
/// A state whose parts stop coming is dropped after this long.
const PENDING_TTL: Duration = Duration::from_secs(30);
/// Topics one `TopicSync` asks for (more wait for the next digest).
const MAX_TOPICS_PER_ASK: usize = 1024;

/// The settings, from the node's config.
#[derive(Debug, Clone, Copy)]
pub(super) struct SyncLimits {
    pub chunk_bytes: usize,
    pub rate: usize,
    /// Heartbeats between digests; 0: never.
    pub digest_every: u32,
}

pub(super) struct Sync {
    limits: SyncLimits,
    next_id: AtomicU64,
    outbox: Mutex<Outbox>,
    /// Per origin node: the state being reassembled.
    inbox: Mutex<HashMap<String, Pending>>,
}

struct Outbox {
    queue: VecDeque<(Control, usize)>,
    queued_bytes: usize,
    budget: f64,
    refilled: Instant,
}

struct Pending {
    id: u64,
    topics: Option<Vec<String>>,
    /// How many parts the answer has; only those that arrived are held (a
    /// peer naming 65 536 parts costs nothing until it sends them).
    parts: u32,
    got: BTreeMap<u32, Vec<Member>>,
    started: Instant,
}

/// Re-syncs of some topics wait behind at most this many seconds' worth of
/// `presence_sync_rate`; past it one is dropped (the next digest asks again).
const QUEUED_SECONDS: usize = 4;

impl Sync {
    pub fn new(limits: SyncLimits) -> Sync {
        Sync {
            limits,
            next_id: AtomicU64::new(1),
            outbox: Mutex::new(Outbox {
                queue: VecDeque::new(),
                queued_bytes: 0,
                budget: limits.rate as f64,
                refilled: Instant::now(),
            }),
            inbox: Mutex::new(HashMap::new()),
        }
    }

    pub fn digest_every(&self) -> u32 {
        self.limits.digest_every
    }

    /// The answer being reassembled from `origin`: parts named, parts held.
    #[cfg(test)]
    pub fn pending(&self, origin: &str) -> Option<(u32, usize)> {
        self.inbox
            .lock()
            .get(origin)
            .map(|p| (p.parts, p.got.len()))
    }

    /// Bytes of state parts waiting for the rate budget.
    #[cfg(test)]
    pub fn queued_bytes(&self) -> usize {
        self.outbox.lock().queued_bytes
    }
}

/// What one member costs in a state message (its JSON and a comma).
fn member_bytes(m: &Member) -> usize {
    serde_json::to_string(m).map_or(0, |s| s.len()) + 1
}

/// `members` cut into parts of at most `max` bytes each (a member larger
/// than that travels alone); at least one part, so an empty state still says
/// "nothing here".
pub(super) fn cut(members: Vec<Member>, max: usize) -> Vec<(Vec<Member>, usize)> {
    let mut parts = Vec::new();
    let mut part = Vec::new();
    // The message around the members: header, kind, ids, signature.
    let overhead = 256;
    let mut bytes = overhead;
    for m in members {
        let size = member_bytes(&m);
        if !part.is_empty() && bytes + size > max {
            parts.push((std::mem::take(&mut part), bytes));
            bytes = overhead;
        }
        bytes += size;
        part.push(m);
    }
    parts.push((part, bytes));
    parts
}

impl Node {
    /// Queue this node's members (of `topics`, or all) for the other nodes,
    /// in parts, and send what the rate allows now.
    pub(super) fn send_state(&self, topics: Option<Vec<String>>) {
        let members: Vec<Member> = self
            .presence
            .local_members_of(topics.as_deref())
            .into_iter()
            .map(|m| Member {
                topic: m.topic,
                key: m.key,
                meta: m.meta,
            })
            .collect();
        let parts = cut(members, self.sync.limits.chunk_bytes);
        let id = self.sync.next_id.fetch_add(1, Ordering::Relaxed);
        let total = u32::try_from(parts.len()).unwrap_or(u32::MAX);
        {
            let mut out = self.sync.outbox.lock();
            if topics.is_none() {
                // Every node receives every answer: a full state still
                // queued is superseded by this one (receivers drop an
                // unfinished answer when a newer id arrives).
                let before = out.queued_bytes;
                out.queue
                    .retain(|(c, _)| !matches!(c, Control::State { topics: None, .. }));
                out.queued_bytes = out.queue.iter().map(|(_, b)| b).sum();
                if out.queued_bytes < before {
                    tracing::debug!("a newer full presence state supersedes the queued one");
                }
            } else if out.queued_bytes > QUEUED_SECONDS * self.sync.limits.rate {
                self.metrics
                    .broker_refused
                    .increment(BrokerRefusal::SyncRate);
                return;
            }
            for (i, (members, bytes)) in parts.into_iter().enumerate() {
                let control = Control::State {
                    members,
                    topics: topics.clone(),
                    id,
                    part: u32::try_from(i).unwrap_or(u32::MAX),
                    parts: total,
                };
                out.queue.push_back((control, bytes));
                out.queued_bytes += bytes;
            }
        }
        self.pump_sync();
    }

    /// Send queued state parts within the `presence_sync_rate` budget (one
    /// second's worth at most is saved up; a part larger than that goes when
    /// the budget is full).
    pub(super) fn pump_sync(&self) {
        let rate = self.sync.limits.rate as f64;
        let mut out = self.sync.outbox.lock();
        let now = Instant::now();
        let elapsed = now.duration_since(out.refilled).as_secs_f64();
        out.refilled = now;
        out.budget = (out.budget + elapsed * rate).min(rate.max(1.0));
        while let Some((_, bytes)) = out.queue.front() {
            let bytes = *bytes;
            if (bytes as f64) > out.budget && out.budget < rate {
                break;
            }
            let Some((control, _)) = out.queue.pop_front() else {
                break;
            };
            out.budget -= bytes as f64;
            out.queued_bytes = out.queued_bytes.saturating_sub(bytes);
            self.send_control(control);
            self.metrics.presence_sync_parts.increment(1);
        }
        self.metrics
            .presence_sync_queue
            .set(out.queued_bytes as f64);
    }

    /// One part of another node's state; applied when it completes.
    pub(super) fn receive_state(
        &self,
        origin: &str,
        members: Vec<Member>,
        topics: Option<Vec<String>>,
        (id, part, parts): (u64, u32, u32),
    ) {
        if parts == 0 || parts > MAX_PARTS || part >= parts {
            self.metrics.broker_refused.increment(BrokerRefusal::Frame);
            return;
        }
        let complete = if parts == 1 {
            Some((topics, members))
        } else {
            let mut inbox = self.sync.inbox.lock();
            let now = Instant::now();
            inbox.retain(|_, p| now.duration_since(p.started) < PENDING_TTL);
            let fresh = || Pending {
                id,
                topics: topics.clone(),
                parts,
                got: BTreeMap::new(),
                started: now,
            };
            let p = inbox.entry(origin.to_owned()).or_insert_with(fresh);
            if p.id != id || p.parts != parts {
                // A newer answer replaces one still arriving.
                *p = fresh();
            }
            p.got.entry(part).or_insert(members);
            if p.got.len() < parts as usize {
                return;
            }
            inbox.remove(origin).map(|p| {
                let members = p.got.into_values().flatten().collect();
                (p.topics, members)
            })
        };
        if let Some((topics, members)) = complete {
            self.apply_state(origin, topics, members);
        }
    }

    fn apply_state(&self, origin: &str, topics: Option<Vec<String>>, members: Vec<Member>) {
        let sent = members.len();
        let topics: Option<Vec<String>> =
            topics.map(|ts| ts.into_iter().filter(|t| self.topic_ok(t)).collect());
        let members: Vec<RemoteMember> = members
            .into_iter()
            .filter(|m| self.admissible_member(&m.topic, &m.key, &m.meta))
            .map(|m| RemoteMember {
                topic: m.topic,
                key: m.key,
                meta: m.meta,
            })
            .collect();
        if members.len() < sent {
            self.metrics.broker_refused.increment(BrokerRefusal::Frame);
        }
        let max = self.presence_max_members;
        let diffs = self
            .presence
            .replace_remote_topics(origin, topics.as_deref(), members, max);
        for (topic, diff) in diffs {
            self.deliver_presence_diff(&topic, &diff);
        }
    }

    /// Publish this node's per-topic digests (in parts within the chunk size;
    /// only a digest that fits one message is `complete`).
    pub(super) fn send_digest(&self) {
        let digest: Vec<TopicDigest> = self
            .presence
            .local_digest()
            .into_iter()
            .map(|(topic, hash, count)| TopicDigest { topic, hash, count })
            .collect();
        let max = self.sync.limits.chunk_bytes;
        let mut parts: Vec<Vec<TopicDigest>> = vec![Vec::new()];
        let mut bytes = 256;
        for d in digest {
            let size = d.topic.len() + 64;
            if bytes + size > max {
                parts.push(Vec::new());
                bytes = 256;
            }
            bytes += size;
            if let Some(last) = parts.last_mut() {
                last.push(d);
            }
        }
        let complete = parts.len() == 1;
        for topics in parts {
            self.send_control(Control::Digest { topics, complete });
        }
    }

    /// Compare another node's digest with the replica of it; ask it for the
    /// topics that disagree.
    pub(super) fn receive_digest(&self, origin: &str, topics: Vec<TopicDigest>, complete: bool) {
        let mut ask = Vec::new();
        let mut listed = HashSet::new();
        for d in topics {
            if !self.topic_ok(&d.topic)
                || !self.route(&d.topic).is_some_and(|r| r.namespace.presence)
            {
                continue;
            }
            let (hash, count) = self.presence.remote_digest(origin, &d.topic);
            // Past `presence_max_members` this node keeps fewer than the
            // origin tracks: that is a cap, not a disagreement.
            let capped = count as usize >= self.presence_max_members;
            if (hash != d.hash || count != d.count) && !capped {
                ask.push(d.topic.clone());
            }
            listed.insert(d.topic);
        }
        if complete {
            // Topics the replica still has that the origin no longer lists.
            ask.extend(
                self.presence
                    .remote_topics(origin)
                    .into_iter()
                    .filter(|t| !listed.contains(t)),
            );
        }
        if ask.is_empty() {
            return;
        }
        self.metrics
            .presence_digest_mismatches
            .increment(ask.len() as u64);
        ask.truncate(MAX_TOPICS_PER_ASK);
        tracing::debug!(
            peer = origin,
            topics = ask.len(),
            "presence replica disagrees with its digest"
        );
        self.send_control(Control::TopicSync {
            to: origin.to_owned(),
            topics: ask,
        });
    }

    /// Another node asks this one for some topics' members again.
    pub(super) fn receive_topic_sync(&self, origin: &str, to: &str, topics: Vec<String>) {
        if Some(to) != self.broker.node_id() {
            return;
        }
        if !self.membership.may_answer_sync(origin) {
            self.metrics
                .broker_refused
                .increment(BrokerRefusal::SyncRate);
            return;
        }
        let topics: Vec<String> = topics
            .into_iter()
            .filter(|t| self.topic_ok(t))
            .take(MAX_TOPICS_PER_ASK)
            .collect();
        self.send_state(Some(topics));
    }
}
