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

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::broker::wire::Control;
use super::broker::{Broker, Envelope, HistoryAck};
use super::history::{Entry, History, Position, Recovery, RingLimits};
use super::hub::{FanOut, Hub};
use super::mailbox::{Mailbox, Outbound, SessionId};
use super::membership::{ClusterTiming, Membership};
use super::presence::Presence;
use crate::config::{Config, NamespaceConfig, Namespaces, Route};
use crate::metrics::Metrics;
use crate::protocol::{encode, RefSlotFrame};

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
    pub session: SessionId,
    pub mailbox: Arc<Mailbox>,
    pub since: Since,
    /// Presence key and meta, tracked when the namespace has presence.
    pub presence: Option<(&'a str, Map<String, Value>)>,
}

/// What a join got.
#[derive(Debug)]
pub struct JoinOutcome {
    /// On history namespaces: the recovery answer and the frames to replay.
    pub recovery: Option<Recovery>,
    /// On presence namespaces: the `presence_state` payload for the joiner.
    pub presence_state: Option<String>,
}

mod cluster;
#[cfg(test)]
mod tests;

pub struct Node {
    routes: Arc<Namespaces>,
    hub: Hub,
    history: History,
    presence: Presence,
    membership: Membership,
    broker: Arc<dyn Broker>,
    metrics: Arc<Metrics>,
}

impl Node {
    pub fn new(config: &Config, metrics: Arc<Metrics>, broker: Arc<dyn Broker>) -> Node {
        let routes = Arc::new(config.routes());
        let limits_routes = Arc::clone(&routes);
        let history = History::new(config.history_max_bytes, move |topic| {
            let ns = &limits_routes.route(topic)?.namespace;
            Some(RingLimits {
                size: ns.history_size,
                ttl: ns.history_ttl,
            })
        });
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
        }
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

    /// Subscribe the session (on history namespaces atomically with reading
    /// what it missed) and track its presence.
    pub fn join(&self, req: JoinRequest<'_>) -> JoinOutcome {
        let JoinRequest {
            topic,
            namespace: ns,
            session,
            mailbox,
            since,
            presence,
        } = req;
        let subscribe = || self.subscribe(topic, session, mailbox);
        let recovery = if ns.history_size > 0 {
            Some(match since {
                Since::Position(p) => self.history.join(topic, Some(&p), subscribe),
                Since::Stored => self.history.join_with_stored(topic, subscribe),
                Since::Now => self.history.join(topic, None, subscribe),
            })
        } else {
            subscribe();
            None
        };
        let presence_state = match presence {
            Some((key, meta)) if ns.presence => {
                self.presence.track(topic, session, key, meta, |diff| {
                    self.presence_changed(topic, &diff)
                });
                Some(self.presence.state(topic))
            }
            _ => None,
        };
        JoinOutcome {
            recovery,
            presence_state,
        }
    }

    /// Stop delivering `topic` to `session` and remove its presence.
    pub fn leave(&self, topic: &str, ns: &NamespaceConfig, session: SessionId) {
        self.hub.unsubscribe(topic, session);
        if self.hub.subscriber_count(topic) == 0 {
            self.broker.unsubscribe_topic(topic);
        }
        if ns.presence {
            self.presence
                .untrack(topic, session, |diff| self.presence_changed(topic, &diff));
        }
    }

    fn subscribe(&self, topic: &str, session: SessionId, mailbox: Arc<Mailbox>) {
        let first = self.hub.subscriber_count(topic) == 0;
        self.hub.subscribe(topic, session, mailbox);
        if first {
            self.broker.subscribe_topic(topic);
        }
    }

    /// Broadcast `event` with raw JSON `payload` on `topic`, encoded once; on a
    /// history namespace the frame's ref slot carries `"<offset>:<epoch>"`.
    ///
    /// When the cluster sequences history (Redis), delivery happens when the
    /// sequenced frame comes back: the offset is not known here (see
    /// `publish_acked`).
    pub fn publish(&self, p: Publication<'_>) -> Published {
        if p.namespace.history_size > 0 && self.sequence_in_cluster(&p, None) {
            return Published::default();
        }
        self.publish_here(&p)
    }

    /// `publish` for callers that may wait (the HTTP API): when the cluster
    /// sequences the publish, wait up to `HISTORY_ACK_WAIT` for the offset it
    /// assigned. `None` when it does not come (an outage lost the publish, or
    /// the broker is slower than that).
    pub async fn publish_acked(&self, p: Publication<'_>) -> Published {
        if p.namespace.history_size > 0 {
            let (ack, offset) = tokio::sync::oneshot::channel();
            if self.sequence_in_cluster(&p, Some(ack)) {
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
    /// sequences locally and the ring forks its epoch).
    fn sequence_in_cluster(&self, p: &Publication<'_>, ack: Option<HistoryAck>) -> bool {
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
            published.offset = self.history.publish(topic, event, payload, |frame| {
                published.fanout = self.broadcast_frame(topic, frame, exclude);
            });
        } else {
            published.fanout =
                self.broadcast_frame(topic, encode::broadcast(topic, event, payload), exclude);
        }
        published
    }

    /// A frame published on this node: local members first, then the other
    /// nodes (a full broker queue drops only the remote copy, counted).
    fn broadcast_frame(&self, topic: &str, frame: Utf8Bytes, exclude: Option<SessionId>) -> FanOut {
        self.metrics.broadcasts.increment(1);
        let out = self.deliver(topic, &Outbound::Text(frame.clone()), exclude);
        if self.broker.node_id().is_some() {
            let _ = self.broker.send(Envelope::Publication {
                topic: Arc::from(topic),
                frame,
            });
        }
        out
    }

    /// The one fan-out to local mailboxes, and its metrics.
    fn deliver(&self, topic: &str, frame: &Outbound, exclude: Option<SessionId>) -> FanOut {
        let started = std::time::Instant::now();
        let out = self.hub.fan_out(topic, frame, exclude);
        self.metrics
            .fanout_done(out.delivered, out.dropped, started.elapsed());
        out
    }

    /// A local presence change: members here and on other nodes see the
    /// `presence_diff` broadcast; other nodes' replicas learn it.
    fn presence_changed(&self, topic: &str, diff: &str) {
        self.broadcast_frame(topic, encode::broadcast(topic, "presence_diff", diff), None);
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

    /// Bytes of history stored on this node.
    pub fn history_bytes(&self) -> usize {
        self.history.bytes()
    }

    /// Drop expired history (called periodically).
    pub fn sweep_history(&self) {
        self.history.sweep();
    }
}
