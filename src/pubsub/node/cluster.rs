//! The node's cluster side: what other nodes send (the [`BrokerHandler`] the
//! broker's link task calls), the heartbeat that keeps this node known, and
//! the presence replica's upkeep when a node joins, resyncs or goes silent.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::Node;
use crate::protocol::{
    binary, broadcast_fields, check_broadcast, history_position, BrokerRefusal, SlotKind,
};
use crate::pubsub::broker::wire::Control;
use crate::pubsub::broker::{BrokerHandler, Envelope};
use crate::pubsub::hub::Skip;
use crate::pubsub::mailbox::{Outbound, SessionId};
use crate::pubsub::membership::Heard;
use crate::pubsub::presence::filter_diff;
use crate::revocation::{unix_now, Revocation};

/// Longest user id (presence key, revoked user) another node may name.
const MAX_USER_LEN: usize = 1024;
/// What a tracked meta holds beyond the client's own (`phx_ref`, `online_at`).
const META_OVERHEAD: usize = 128;

/// Heartbeats between two advertisements of this node's URL.
const ADVERTISE_EVERY: u32 = 5;
/// Longest URL another node may advertise.
const MAX_ADVERTISED_URL: usize = 256;

impl Node {
    /// A presence change other nodes' members caused (sync or a dead node):
    /// local members only, their nodes told their own.
    pub(super) fn deliver_presence_diff(&self, topic: &str, diff: &str) {
        self.presence_diff_here(topic, diff);
    }

    /// One cluster heartbeat: tell the others this node is alive, and let
    /// nodes silent past `cluster_node_timeout` go (their members leave).
    pub fn cluster_tick(&self) {
        if self.broker.node_id().is_none() {
            return;
        }
        if self.broker.is_ready() {
            let _ = self.broker.send(Envelope::Control(Control::Heartbeat));
            let n = self
                .ticks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n % ADVERTISE_EVERY == 0 {
                self.advertise();
                if let Some(figures) = self.own_figures() {
                    self.send_control(Control::Figures(figures));
                }
            }
            let every = self.sync.digest_every();
            if every > 0 && n % every == every - 1 {
                self.send_digest();
            }
            self.pump_sync();
        }
        for node in self.membership.sweep() {
            self.peer_urls.lock().remove(&node);
            self.peer_figures.lock().remove(&node);
            tracing::warn!(peer = %node, "cluster node silent past cluster_node_timeout; its presence entries leave");
            self.metrics.broker_peers_lost.increment(1);
            for (topic, diff) in self.presence.drop_node(&node) {
                self.deliver_presence_diff(&topic, &diff);
            }
            if self.broker.tracks_occupancy() {
                let _ = self.broker.send(Envelope::PeerGone(node.clone()));
            }
        }
        self.metrics.broker_peers.set(self.membership.len() as f64);
    }

    fn advertise(&self) {
        if !self.authenticated_peers {
            return;
        }
        if let Some(url) = self.advertise.get() {
            self.send_control(Control::Advertise { url: url.clone() });
        }
    }

    /// How often `cluster_tick` should run.
    pub fn heartbeat_interval(&self) -> Duration {
        self.membership.timing().heartbeat
    }

    /// A topic name from the broker within what a local client may use
    /// (`max_topic_length`): none longer becomes a ring, a map key or a log line.
    pub(super) fn topic_ok(&self, topic: &str) -> bool {
        topic.len() <= self.remote.topic
    }

    /// Whether another node's member may enter the replica (and so reach
    /// local clients): a topic with presence here, within the bounds a local
    /// join has.
    pub(super) fn admissible_member(&self, topic: &str, key: &str, meta: &Value) -> bool {
        self.topic_ok(topic)
            && self.route(topic).is_some_and(|r| r.namespace.presence)
            && !key.is_empty()
            && key.len() <= MAX_USER_LEN
            && meta.is_object()
            && meta.to_string().len() <= self.remote.meta + META_OVERHEAD
    }

    pub(super) fn send_control(&self, control: Control) {
        let _ = self.broker.send(Envelope::Control(control));
    }

    /// Store a cluster-sequenced frame in its ring and deliver it to local
    /// members if it is new; false when the frame has no history ref slot
    /// (or, `binary`, is not the JSON form of a binary broadcast).
    fn append_sequenced(
        &self,
        topic: &str,
        frame: &str,
        exclude: Option<SessionId>,
        binary: bool,
    ) -> bool {
        let Some((offset, epoch)) = history_position(frame) else {
            return false;
        };
        let bin = if binary {
            let Some(b) = binary_of_json(frame) else {
                return false;
            };
            Some(b)
        } else {
            None
        };
        let frame = Utf8Bytes::from(frame.to_owned());
        // Namespaces can differ between nodes (a rolling config change): a topic
        // no namespace routes here is not ours; one routed to a namespace that
        // keeps no history here is delivered without being stored.
        match self.route(topic) {
            None => {}
            Some(route) if route.namespace.history_size == 0 => {
                let out = match bin {
                    Some(b) => Outbound::Binary(b),
                    None => Outbound::Text(frame),
                };
                self.deliver(topic, &out, exclude);
            }
            Some(_) => {
                self.history
                    .append_sequenced(topic, offset, epoch, frame, bin, |f, have_it| {
                        let skip = Skip {
                            publisher: exclude,
                            have_it,
                        };
                        self.deliver_skipping(topic, &f, skip);
                    });
            }
        }
        true
    }

    /// Whether this node sequences `topic`'s broadcasts itself: a history
    /// topic on a broker that keeps no history (NATS), where every node
    /// numbers and keeps what it delivers.
    fn sequences_here(&self, topic: &str) -> bool {
        !self.broker.sequences_history()
            && self
                .route(topic)
                .is_some_and(|r| r.namespace.history_size > 0)
    }
}

/// The V2 binary broadcast a sequenced JSON form stands for.
fn binary_of_json(frame: &str) -> Option<bytes::Bytes> {
    let (topic, event, payload) = broadcast_fields(frame)?;
    let bytes = binary::from_json_payload(payload.get())?;
    binary::encode_broadcast(&topic, &event, &bytes)
}

impl BrokerHandler for Node {
    fn on_publication(&self, topic: &str, frame: Utf8Bytes) {
        // Another node's frame reaches clients only as the broadcast it claims
        // to be: on this topic, no ref, no reserved event, an object payload.
        if !self.topic_ok(topic) || !check_broadcast(frame.as_str(), topic, SlotKind::Null) {
            self.metrics.broker_refused.increment(BrokerRefusal::Frame);
            return;
        }
        if self.sequences_here(topic) {
            if let Some((_, event, payload)) = broadcast_fields(frame.as_str()) {
                self.history
                    .publish(topic, &event, payload.get(), None, |out| {
                        self.deliver(topic, &out, None);
                    });
                return;
            }
        }
        self.deliver(topic, &Outbound::Text(frame), None);
    }

    fn on_binary_publication(&self, topic: &str, frame: bytes::Bytes) {
        // The V2 binary broadcast it claims to be, on this topic, no reserved event.
        if !self.topic_ok(topic)
            || crate::protocol::binary::check_broadcast(&frame, topic).is_none()
        {
            self.metrics.broker_refused.increment(BrokerRefusal::Frame);
            return;
        }
        if self.sequences_here(topic) {
            if let Some((_, event, payload)) = binary::decode_broadcast(&frame) {
                let json = binary::json_payload(payload);
                let event = event.to_owned();
                self.history
                    .publish(topic, &event, &json, Some(frame.clone()), |out| {
                        self.deliver(topic, &out, None);
                    });
                return;
            }
        }
        self.deliver(topic, &Outbound::Binary(frame), None);
    }

    fn on_sequenced(&self, topic: &str, frame: &str, exclude: Option<SessionId>, binary: bool) {
        // The history channel is pattern-subscribed: its topic names come
        // from the broker, and may be anything.
        if !self.topic_ok(topic) || !check_broadcast(frame, topic, SlotKind::History) {
            self.metrics.broker_refused.increment(BrokerRefusal::Frame);
            return;
        }
        if !self.append_sequenced(topic, frame, exclude, binary) {
            self.metrics.broker_errors.increment(1);
        }
    }

    fn on_stored_history(&self, topic: &str, frame: &str, binary: bool) {
        if !self.topic_ok(topic) || !check_broadcast(frame, topic, SlotKind::History) {
            self.metrics.broker_refused.increment(BrokerRefusal::Frame);
            return;
        }
        if !self.append_sequenced(topic, frame, None, binary) {
            self.metrics.broker_errors.increment(1);
        }
    }

    fn on_occupancy(&self, topic: &str, occupied: bool) {
        // Names come from Redis: bounded like every broker-supplied topic.
        if self.topic_ok(topic) {
            self.occupancy_changed(topic, occupied);
        }
    }

    fn on_control(&self, origin: &str, control: Control) {
        match self.membership.heard_from(origin) {
            Heard::Known => {}
            Heard::New => {
                tracing::info!(peer = origin, "cluster node joined");
                self.send_control(Control::SyncRequest);
                self.advertise();
            }
            Heard::Full => {
                self.metrics.broker_refused.increment(BrokerRefusal::Origin);
                return;
            }
        }
        match control {
            Control::SyncRequest if !self.membership.may_answer_sync(origin) => {
                self.metrics
                    .broker_refused
                    .increment(BrokerRefusal::SyncRate);
            }
            Control::SyncRequest => self.send_state(None),
            Control::State {
                members,
                topics,
                id,
                part,
                parts,
            } => self.receive_state(origin, members, topics, (id, part, parts)),
            Control::Digest { topics, complete } => self.receive_digest(origin, topics, complete),
            Control::TopicSync { to, topics } => self.receive_topic_sync(origin, &to, topics),
            Control::Advertise { url } => {
                // Without cluster_secret anyone on the broker could name a
                // URL and receive clients' long-poll tokens (and have this
                // node send requests wherever it likes): not trusted.
                let ok = self.authenticated_peers
                    && url.len() <= MAX_ADVERTISED_URL
                    && (url.starts_with("http://") || url.starts_with("https://"))
                    && !url
                        .bytes()
                        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control());
                if ok {
                    self.peer_urls.lock().insert(origin.to_owned(), url);
                } else {
                    self.metrics.broker_refused.increment(BrokerRefusal::Frame);
                }
            }
            Control::Figures(figures) => {
                // Only nodes in membership get here (bounded by it).
                self.peer_figures.lock().insert(origin.to_owned(), figures);
            }
            Control::Diff { topic, diff } => {
                // Rebuilt from the admissible entries: nothing else the peer
                // put in the message reaches a client.
                let clean = serde_json::from_str::<Value>(diff.get())
                    .ok()
                    .and_then(|d| {
                        filter_diff(&d, |key, meta| self.admissible_member(&topic, key, meta))
                    });
                let Some(clean) = clean else {
                    self.metrics.broker_refused.increment(BrokerRefusal::Frame);
                    return;
                };
                let max = self.presence_max_members;
                if self.presence.apply_remote_diff(origin, &topic, &clean, max) > 0 {
                    self.metrics.presence_untracked.increment(1);
                }
                self.deliver_presence_diff(&topic, &clean.to_string());
            }
            Control::Revoke {
                user,
                before,
                until,
            } => {
                // A user id is a token's `sub`: bounded like a topic.
                if user.is_empty() || user.len() > MAX_USER_LEN {
                    self.metrics
                        .broker_refused
                        .increment(BrokerRefusal::Malformed);
                    return;
                }
                // No further back or forward than a local disconnect reaches:
                // a forged `until` of u64::MAX must not ban a user for ever.
                let now = unix_now();
                let r = Revocation {
                    before: before.min(now),
                    until: until.min(now.saturating_add(self.remote.revocation_ttl)),
                };
                self.apply_revocation(&user, r);
            }
            Control::Heartbeat | Control::Unknown => {}
        }
    }

    fn on_connected(&self) {
        // Whatever happened while away, ask the other nodes for their members.
        self.send_control(Control::SyncRequest);
    }

    fn local_topics(&self) -> Vec<Arc<str>> {
        self.hub.topic_names()
    }

    fn has_local_members(&self, topic: &str) -> bool {
        self.hub.subscriber_count(topic) > 0
    }

    fn history_size(&self, topic: &str) -> usize {
        if !self.topic_ok(topic) {
            return 0;
        }
        self.route(topic).map_or(0, |r| r.namespace.history_size)
    }
}
