//! The node: the one owner of this process's topics. It holds the hub (who is
//! subscribed where), the history rings, presence, the topic routing and the
//! cluster membership, and it is the only way to reach them:
//! [`Node::join`], [`Node::leave`], [`Node::publish`] for sessions and the
//! API, and the `BrokerHandler` methods (in `cluster`) for what other nodes
//! send.
//!
//! Every delivery to local mailboxes goes through one fan-out
//! (`Node::deliver`) that records the fan-out metrics. The broker is only a
//! transport: the node decides what leaves (publications, history to be
//! sequenced, presence and membership control messages) and what comes in.
//! Never awaits a session or a backend, never touches a socket.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::broker::wire::{Control, NodeFigures};
use super::broker::{Broker, Envelope, HistoryAck};
use super::history::{Entry, History, Position, Recovery, RingLimits};
use super::hub::{FanOut, Hub, Skip};
use super::mailbox::{Mailbox, Outbound, SessionId};
use super::membership::{ClusterTiming, Membership};
use super::presence::{Joined, Presence, Snapshot};
use crate::config::webhooks::WebhookEvent;
use crate::config::{Config, NamespaceConfig, Namespaces, PresenceMode, Route};
use crate::metrics::Metrics;
use crate::protocol::{binary, encode, RefSlotFrame};
use crate::revocation::{Revocation, Revocations};
use crate::webhooks::Webhooks;

/// How long the HTTP API waits for the cluster to assign a history offset
/// (one broker round trip; past this the answer carries no offset, the
/// publish itself still goes through).
const HISTORY_ACK_WAIT: Duration = Duration::from_secs(2);

/// What one publish did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// The history offset, on namespaces that keep history (None when the
    /// cluster sequences it and the offset is not known here).
    pub offset: Option<u64>,
    pub fanout: FanOut,
}

/// One broadcast: raw JSON `payload` as `event` on `topic`, from a session
/// (`exclude` it under `broadcast_from`) or the API.
#[derive(Debug, Clone, Copy)]
pub struct Publication<'a> {
    pub namespace: &'a NamespaceConfig,
    pub topic: &'a str,
    pub event: &'a str,
    pub payload: &'a str,
    pub exclude: Option<SessionId>,
}

/// Where a joining session wants to start on a history topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    /// Live messages only.
    Now,
    /// Everything after this position (recovery).
    Position(Position),
    /// Every stored message (`history: true`).
    Stored,
}

/// One session joining one topic.
pub struct JoinRequest<'a> {
    pub topic: &'a str,
    pub namespace: &'a NamespaceConfig,
    /// The join's ref: the `presence_state` push carries it.
    pub join_ref: Option<&'a str>,
    pub session: SessionId,
    pub mailbox: Arc<Mailbox>,
    pub since: Since,
    /// Presence key and meta, tracked when the namespace has presence.
    pub presence: Option<(&'a str, Map<String, Value>)>,
}

/// What a join got. The frames the joiner is owed (missed history, then
/// `presence_state`) are already in its mailbox, under the same bounds as
/// every other frame it receives, and ahead of any later broadcast.
#[derive(Debug)]
pub struct JoinOutcome {
    /// On history namespaces: the recovery answer (its frames are queued).
    pub recovery: Option<Recovery>,
    /// On presence namespaces: whether the session is tracked (false past
    /// `presence_max_members`: the join works, the member is not listed).
    pub tracked: Option<bool>,
}

mod cluster;
mod diffs;
mod sync;
#[cfg(test)]
mod tests;

/// Bounds on what other nodes send, from this node's own config: a peer (or
/// anyone publishing on the broker) gets no more than a local client would.
#[derive(Debug, Clone, Copy)]
struct RemoteBounds {
    /// `max_topic_length`.
    topic: usize,
    /// `presence_max_meta_bytes`.
    meta: usize,
    /// `revocation_ttl`, seconds: the longest revocation accepted.
    revocation_ttl: u64,
}

/// Closes the local sessions of a revoked user; returns how many.
type RevokedHook = Box<dyn Fn(&str) -> usize + Send + Sync>;
type FiguresHook = Box<dyn Fn() -> NodeFigures + Send + Sync>;

pub struct Node {
    routes: Arc<Namespaces>,
    hub: Hub,
    history: History,
    presence: Presence,
    membership: Membership,
    broker: Arc<dyn Broker>,
    metrics: Arc<Metrics>,
    /// `presence_max_members`: sessions tracked per topic on this node (and
    /// per topic from each other node).
    presence_max_members: usize,
    /// What another node's presence and revocations may carry.
    remote: RemoteBounds,
    /// Revoked users, shared with the authenticator.
    revocations: Arc<Revocations>,
    /// Closes this node's sessions of a revoked user (set by the server, which
    /// owns the session registry).
    on_revoked: OnceLock<RevokedHook>,
    /// Where channel, member and archived-broadcast events go (set once at
    /// start when `[webhooks]` is on).
    webhooks: OnceLock<Arc<Webhooks>>,
    /// This node's public URL as the others should use it (long-poll
    /// forwarding); set once the listener is bound.
    advertise: OnceLock<String>,
    /// Other nodes' advertised URLs (only nodes in `membership`).
    peer_urls: parking_lot::Mutex<std::collections::HashMap<String, String>>,
    /// This node's figures for the others (set by the server, which owns the
    /// session registry), and the others' as they last reported them (only
    /// nodes in `membership`).
    figures: OnceLock<FiguresHook>,
    peer_figures: parking_lot::Mutex<std::collections::HashMap<String, NodeFigures>>,
    /// Heartbeats since the last advertisement.
    ticks: std::sync::atomic::AtomicU32,
    /// Presence state in parts, paced, and anti-entropy digests.
    sync: sync::Sync,
    /// Big topics' presence diffs, merged per `presence_batch_interval`.
    diffs: diffs::Coalescer,
    /// Whether other nodes' messages are authenticated (`cluster_secret`):
    /// only then is an advertised URL trusted (requests carrying client
    /// tokens are forwarded to it).
    authenticated_peers: bool,
}

/// Heartbeats between presence digests (0: never).
fn digest_every(config: &Config) -> u32 {
    if config.presence_digest_interval.is_zero() {
        return 0;
    }
    let beat = config.cluster_heartbeat.as_secs_f64().max(0.001);
    (config.presence_digest_interval.as_secs_f64() / beat)
        .round()
        .clamp(1.0, f64::from(u32::MAX)) as u32
}

impl Node {
    pub fn new(config: &Config, metrics: Arc<Metrics>, broker: Arc<dyn Broker>) -> Node {
        let routes = Arc::new(config.routes());
        let limits_routes = Arc::clone(&routes);
        let history = History::new(
            config.history_max_bytes,
            config.history_max_topics,
            move |topic| {
                let ns = &limits_routes.route(topic)?.namespace;
                Some(RingLimits {
                    size: ns.history_size,
                    ttl: ns.history_ttl,
                })
            },
        );
        Node {
            routes,
            hub: Hub::new(),
            history,
            presence: Presence::new(),
            membership: Membership::new(ClusterTiming {
                heartbeat: config.cluster_heartbeat,
                node_timeout: config.cluster_node_timeout,
            }),
            broker,
            metrics,
            presence_max_members: config.presence_max_members,
            remote: RemoteBounds {
                topic: config.max_topic_length,
                meta: config.presence_max_meta_bytes,
                revocation_ttl: config.revocation_ttl.as_secs(),
            },
            revocations: Arc::new(Revocations::new()),
            on_revoked: OnceLock::new(),
            webhooks: OnceLock::new(),
            advertise: OnceLock::new(),
            peer_urls: parking_lot::Mutex::new(std::collections::HashMap::new()),
            figures: OnceLock::new(),
            diffs: diffs::Coalescer::new(config.presence_batch_members),
            peer_figures: parking_lot::Mutex::new(std::collections::HashMap::new()),
            ticks: std::sync::atomic::AtomicU32::new(0),
            authenticated_peers: config.cluster_secret.is_some(),
            sync: sync::Sync::new(sync::SyncLimits {
                chunk_bytes: config.presence_sync_chunk_bytes,
                rate: config.presence_sync_rate,
                digest_every: digest_every(config),
            }),
        }
    }

    /// Tell the other nodes where this node's public listener is.
    pub fn set_advertise(&self, url: String) {
        let _ = self.advertise.set(url);
    }

    /// Where another node's public listener is, as it advertised.
    pub fn peer_url(&self, node: &str) -> Option<String> {
        self.peer_urls.lock().get(node).cloned()
    }

    /// `topic` got its first member or lost its last: on this node, or (for
    /// brokers that track occupancy) in the whole cluster.
    pub(super) fn occupancy_changed(&self, topic: &str, occupied: bool) {
        let event = if occupied {
            WebhookEvent::ChannelOccupied
        } else {
            WebhookEvent::ChannelVacated
        };
        self.emit(event, || serde_json::json!({"topic": topic}));
    }

    /// Report channel, member and broadcast events to `webhooks`; set once.
    pub fn set_webhooks(&self, webhooks: Arc<Webhooks>) {
        let _ = self.webhooks.set(webhooks);
    }

    fn emit(&self, event: WebhookEvent, data: impl FnOnce() -> Value) {
        if let Some(w) = self.webhooks.get() {
            w.emit(event, data);
        }
    }

    /// An archived namespace's broadcast, reported where it was published
    /// (once per cluster).
    fn archive(&self, p: &Publication<'_>) {
        let Some(w) = self.webhooks.get() else {
            return;
        };
        if w.archives(&p.namespace.pattern) {
            let payload: Value = serde_json::from_str(p.payload).unwrap_or(Value::Null);
            w.emit(
                WebhookEvent::Broadcast,
                || serde_json::json!({"topic": p.topic, "event": p.event, "payload": payload}),
            );
        }
    }

    /// The revoked users this node knows (the authenticator reads them).
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// What closes this node's sessions of a revoked user; set once at start.
    pub fn set_on_revoked(&self, close: impl Fn(&str) -> usize + Send + Sync + 'static) {
        let _ = self.on_revoked.set(Box::new(close));
    }

    /// How this node's own figures are read (sessions live in the server's
    /// registry); sent to the other nodes every few heartbeats.
    pub fn set_figures(&self, read: impl Fn() -> NodeFigures + Send + Sync + 'static) {
        let _ = self.figures.set(Box::new(read));
    }

    /// This node's figures, when the server has said how to read them.
    pub fn own_figures(&self) -> Option<NodeFigures> {
        self.figures.get().map(|read| read())
    }

    /// The other live nodes and the figures each last reported (none yet: a
    /// default), sorted by node id.
    pub fn peer_figures(&self) -> Vec<(String, NodeFigures)> {
        let known = self.peer_figures.lock();
        let mut out: Vec<(String, NodeFigures)> = self
            .membership
            .nodes()
            .into_iter()
            .map(|n| {
                let f = known.get(&n).cloned().unwrap_or_default();
                (n, f)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// This node's id in the cluster (none on a single node).
    pub fn node_id(&self) -> Option<String> {
        self.broker.node_id().map(str::to_owned)
    }

    /// The `n` topics with the most subscribers here.
    pub fn busiest_topics(&self, n: usize) -> Vec<super::hub::TopicFigures> {
        self.hub.busiest(n)
    }

    /// Broadcasts delivered to this node's subscribers so far, all topics.
    pub fn broadcasts_delivered(&self) -> u64 {
        self.hub.broadcasts_total()
    }

    /// Fan-outs shared across the runtime's workers (big topics).
    pub fn fanout_splits(&self) -> u64 {
        self.hub.splits()
    }

    /// Revoke `user` here and on every other node: tokens issued at or before
    /// `r.before` are refused until `r.until`, and its sessions close.
    /// Returns the sessions closed on this node.
    pub fn revoke(&self, user: &str, r: Revocation) -> usize {
        let closed = self.apply_revocation(user, r);
        if self.broker.node_id().is_some() {
            let _ = self.broker.send(Envelope::Control(Control::Revoke {
                user: user.to_owned(),
                before: r.before,
                until: r.until,
            }));
        }
        closed
    }

    fn apply_revocation(&self, user: &str, r: Revocation) -> usize {
        self.revocations.revoke(user, r);
        self.on_revoked.get().map_or(0, |close| close(user))
    }

    /// The namespace serving `topic`.
    pub fn route(&self, topic: &str) -> Option<&Route> {
        self.routes.route(topic)
    }

    /// This node's id in the cluster (None on a single node): it qualifies
    /// names that must not collide across nodes, such as anonymous presence
    /// keys built from node-local session ids.
    pub fn id(&self) -> Option<&str> {
        self.broker.node_id()
    }

    /// Whether the broker is reachable (`/readyz` with `broker_required`).
    pub fn is_ready(&self) -> bool {
        self.broker.is_ready()
    }

    /// Subscribe the session (on history namespaces atomically with queueing
    /// what it missed) and track its presence.
    pub fn join(&self, req: JoinRequest<'_>) -> JoinOutcome {
        let JoinRequest {
            topic,
            namespace: ns,
            join_ref,
            session,
            mailbox,
            since,
            presence,
        } = req;
        let on_join = |missed: &[Outbound]| {
            self.subscribe(topic, session, Arc::clone(&mailbox));
            let bytes = missed.iter().map(Outbound::len).sum();
            if !mailbox.fits(missed.len(), bytes) {
                // Replayed whole or not at all: the client is told
                // recovered: false and fetches what it needs another way.
                self.metrics.replays_refused.increment(1);
                return false;
            }
            for frame in missed {
                mailbox.push(frame.clone());
            }
            true
        };
        let recovery = if ns.history_size > 0 {
            Some(match since {
                Since::Position(p) => self.history.join_as(topic, Some(&p), session, on_join),
                Since::Stored => self.history.join_with_stored(topic, on_join),
                Since::Now => self.history.join(topic, None, on_join),
            })
        } else {
            let _ = on_join(&[]);
            None
        };
        // Only kept when someone is told about members.
        let member_key = self
            .webhooks
            .get()
            .and(presence.as_ref())
            .map(|(key, _)| key.to_string());
        let tracked = match presence {
            Some((key, meta)) if ns.presence => Some(self.presence.track_as(
                topic,
                session,
                (key, meta),
                self.presence_max_members,
                match ns.presence_mode {
                    PresenceMode::Full => Snapshot::Full,
                    PresenceMode::Count => Snapshot::Count,
                },
                |joined| match joined {
                    Joined::State(state) => {
                        let push = encode::push(join_ref, topic, "presence_state", &state);
                        mailbox.push(Outbound::Text(push.into()));
                    }
                    // Phoenix's Presence starts from an empty state and
                    // follows the diffs; the count says how many are there.
                    Joined::Count(n) => {
                        let empty = encode::push(join_ref, topic, "presence_state", "{}");
                        mailbox.push(Outbound::Text(empty.into()));
                        let count = format!("{{\"count\":{n}}}");
                        let push = encode::push(join_ref, topic, "presence_count", &count);
                        mailbox.push(Outbound::Text(push.into()));
                    }
                },
                |diff| self.presence_changed(topic, &diff),
            )),
            _ => None,
        };
        match tracked {
            Some(false) => self.metrics.presence_untracked.increment(1),
            Some(true) => self.emit(
                WebhookEvent::MemberAdded,
                || serde_json::json!({"topic": topic, "user": member_key, "session": session}),
            ),
            None => {}
        }
        JoinOutcome { recovery, tracked }
    }

    /// Stop delivering `topic` to `session` and remove its presence.
    pub fn leave(&self, topic: &str, ns: &NamespaceConfig, session: SessionId) {
        self.hub.unsubscribe(topic, session);
        if ns.history_size > 0 {
            self.history.forget(topic, session);
        }
        if ns.presence {
            let gone = self
                .presence
                .untrack(topic, session, |diff| self.presence_changed(topic, &diff));
            if let Some(key) = gone {
                self.emit(
                    WebhookEvent::MemberRemoved,
                    || serde_json::json!({"topic": topic, "user": key, "session": session}),
                );
            }
        }
        if self.hub.subscriber_count(topic) == 0 {
            self.broker.unsubscribe_topic(topic);
            if !self.broker.tracks_occupancy() {
                self.occupancy_changed(topic, false);
            }
        }
    }

    fn subscribe(&self, topic: &str, session: SessionId, mailbox: Arc<Mailbox>) {
        let first = self.hub.subscriber_count(topic) == 0;
        self.hub.subscribe(topic, session, mailbox);
        if first {
            self.broker.subscribe_topic(topic);
            if !self.broker.tracks_occupancy() {
                self.occupancy_changed(topic, true);
            }
        }
    }

    /// Broadcast `event` with raw JSON `payload` on `topic`, encoded once; on a
    /// history namespace the frame's ref slot carries `"<offset>:<epoch>"`.
    ///
    /// When the cluster sequences history (Redis), delivery happens when the
    /// sequenced frame comes back: the offset is not known here (see
    /// `publish_acked`).
    pub fn publish(&self, p: Publication<'_>) -> Published {
        self.archive(&p);
        if p.namespace.history_size > 0 && self.sequence_in_cluster(&p, None, false) {
            return Published::default();
        }
        self.publish_here(&p)
    }

    /// `publish` for callers that may wait (the HTTP API): when the cluster
    /// sequences the publish, wait up to `HISTORY_ACK_WAIT` for the offset it
    /// assigned. `None` when it does not come (an outage lost the publish, or
    /// the broker is slower than that).
    pub async fn publish_acked(&self, p: Publication<'_>) -> Published {
        self.archive(&p);
        if p.namespace.history_size > 0 {
            let (ack, offset) = tokio::sync::oneshot::channel();
            if self.sequence_in_cluster(&p, Some(ack), false) {
                let offset = tokio::time::timeout(HISTORY_ACK_WAIT, offset)
                    .await
                    .ok()
                    .and_then(Result::ok);
                return Published {
                    offset,
                    fanout: FanOut::default(),
                };
            }
        }
        self.publish_here(&p)
    }

    /// Hand a history publish to the cluster to be sequenced; false when the
    /// broker does not sequence, is down, or its queue is full (the node then
    /// sequences locally and the ring forks its epoch). `binary`: `p.payload`
    /// is the JSON form of a V2 binary broadcast.
    fn sequence_in_cluster(
        &self,
        p: &Publication<'_>,
        ack: Option<HistoryAck>,
        binary: bool,
    ) -> bool {
        if !self.broker.sequences_history() || !self.broker.is_ready() {
            return false;
        }
        self.broker
            .send(Envelope::History {
                topic: Arc::from(p.topic),
                frame: RefSlotFrame::new(p.topic, p.event, p.payload),
                size: p.namespace.history_size,
                ttl: p.namespace.history_ttl,
                exclude: p.exclude,
                ack,
                binary,
            })
            .is_ok()
    }

    /// Sequence (on a history namespace) and fan out on this node, then send
    /// the frame to the other nodes.
    fn publish_here(&self, p: &Publication<'_>) -> Published {
        let Publication {
            namespace: ns,
            topic,
            event,
            payload,
            exclude,
        } = *p;
        let mut published = Published::default();
        if ns.history_size > 0 {
            published.offset = self.history.publish(topic, event, payload, None, |frame| {
                published.fanout = self.broadcast_here(topic, &frame, exclude);
            });
        } else {
            let frame = encode::broadcast(topic, event, payload);
            published.fanout = self.broadcast_here(topic, &Outbound::Text(frame.clone()), exclude);
            self.to_peers(topic, Outbound::Text(frame));
            return published;
        }
        // The other nodes get it without this node's offset: a broker that
        // does not sequence history leaves each node to sequence (and keep)
        // what it delivers (`BrokerHandler::on_publication`). A single node
        // encodes nothing more.
        if self.broker.node_id().is_some() {
            self.to_peers(
                topic,
                Outbound::Text(encode::broadcast(topic, event, payload)),
            );
        }
        published
    }

    /// A V2 binary broadcast (`protocol::binary`) of `payload` as `event` on
    /// `topic`: local members, then the other nodes. On a history namespace it
    /// takes the next offset and is stored like a JSON broadcast (in its JSON
    /// form beside the binary frame, docs/protocol.md §2.2). None when the
    /// names do not fit the binary layout (255 bytes each).
    pub fn publish_binary(
        &self,
        ns: &NamespaceConfig,
        topic: &str,
        event: &str,
        payload: &[u8],
        exclude: Option<SessionId>,
    ) -> Option<Published> {
        let frame = binary::encode_broadcast(topic, event, payload)?;
        let mut published = Published::default();
        if ns.history_size == 0 {
            published.fanout =
                self.broadcast_here(topic, &Outbound::Binary(frame.clone()), exclude);
            self.to_peers(topic, Outbound::Binary(frame));
            return Some(published);
        }
        let json = binary::json_payload(payload);
        let p = Publication {
            namespace: ns,
            topic,
            event,
            payload: &json,
            exclude,
        };
        if self.sequence_in_cluster(&p, None, true) {
            return Some(published);
        }
        published.offset = self
            .history
            .publish(topic, event, &json, Some(frame.clone()), |out| {
                published.fanout = self.broadcast_here(topic, &out, exclude);
            });
        self.to_peers(topic, Outbound::Binary(frame));
        Some(published)
    }

    /// A broadcast published on this node, to its local members.
    fn broadcast_here(&self, topic: &str, frame: &Outbound, exclude: Option<SessionId>) -> FanOut {
        self.metrics.broadcasts.increment(1);
        self.deliver(topic, frame, exclude)
    }

    /// A broadcast published on this node, to the other nodes (a full broker
    /// queue drops only the remote copy, counted).
    fn to_peers(&self, topic: &str, frame: Outbound) {
        if self.broker.node_id().is_none() {
            return;
        }
        let topic = Arc::from(topic);
        let _ = self.broker.send(match frame {
            Outbound::Text(frame) => Envelope::Publication { topic, frame },
            Outbound::Binary(frame) => Envelope::BinaryPublication { topic, frame },
        });
    }

    /// The one fan-out to local mailboxes, and its metrics.
    fn deliver(&self, topic: &str, frame: &Outbound, exclude: Option<SessionId>) -> FanOut {
        let skip = Skip {
            publisher: exclude,
            have_it: &[],
        };
        self.deliver_skipping(topic, frame, skip)
    }

    /// `deliver`, passing over every member `skip` names.
    fn deliver_skipping(&self, topic: &str, frame: &Outbound, skip: Skip<'_>) -> FanOut {
        let started = std::time::Instant::now();
        let out = self.hub.fan_out_skipping(topic, frame, skip);
        self.metrics
            .fanout_done(out.delivered, out.dropped, started.elapsed());
        out
    }

    /// A local presence change: members here get the `presence_diff`; other
    /// nodes learn it on the control channel (replica + their members' diff).
    fn presence_changed(&self, topic: &str, diff: &str) {
        self.presence_diff_here(topic, diff);
        // Other nodes build the presence_diff frame themselves from the control
        // message: a topic channel never carries a reserved event, so one
        // arriving there is refused as forged.
        if self.broker.node_id().is_none() {
            return;
        }
        if let Ok(diff) = RawValue::from_string(diff.to_owned()) {
            let _ = self.broker.send(Envelope::Control(Control::Diff {
                topic: topic.to_owned(),
                diff,
            }));
        }
    }

    /// A presence diff for this node's members of `topic`: at once, or
    /// merged with the others of a big topic until the next
    /// `flush_presence_diffs` (`diffs`).
    pub(super) fn presence_diff_here(&self, topic: &str, diff: &str) {
        match self
            .diffs
            .offer(topic, self.hub.subscriber_count(topic), diff)
        {
            diffs::Offer::Now => self.send_presence_diff(topic, diff),
            diffs::Offer::Kept => self.metrics.presence_diffs_coalesced.increment(1),
            diffs::Offer::Full(merged) => {
                self.metrics.presence_diffs_coalesced.increment(1);
                self.send_presence_diff(topic, &merged);
            }
        }
    }

    /// Deliver every big topic's merged presence diff (every
    /// `presence_batch_interval`).
    pub fn flush_presence_diffs(&self) {
        for (topic, diff) in self.diffs.take() {
            self.send_presence_diff(&topic, &diff);
        }
    }

    /// One `presence_diff` frame to this node's members of `topic`.
    fn send_presence_diff(&self, topic: &str, diff: &str) {
        self.metrics.broadcasts.increment(1);
        let frame = Outbound::Text(encode::broadcast(topic, "presence_diff", diff));
        self.deliver(topic, &frame, None);
    }

    /// The `presence_state` payload of `topic` (every node's members).
    pub fn presence_state(&self, topic: &str) -> String {
        self.presence.state(topic)
    }

    /// Stored history of `topic` after `since` (all of it when None).
    pub fn history(&self, topic: &str, since: Option<u64>) -> Option<(Position, Vec<Entry>)> {
        self.history.read(topic, since)
    }

    /// Topics with local subscribers.
    pub fn topic_count(&self) -> usize {
        self.hub.topic_count()
    }

    /// Topics with a history ring.
    pub fn history_topic_count(&self) -> usize {
        self.history.topic_count()
    }

    /// Bytes of history stored on this node (frames and ring overhead).
    pub fn history_bytes(&self) -> usize {
        self.history.bytes()
    }

    /// History publishes delivered without an offset: no room for their ring.
    pub fn history_unstored(&self) -> u64 {
        self.history.refused()
    }

    /// Gaps in cluster-sequenced history offsets this node saw.
    pub fn history_gaps(&self) -> u64 {
        self.history.gaps()
    }

    /// Drop expired history (called periodically).
    pub fn sweep_history(&self) {
        self.history.sweep();
    }
}
