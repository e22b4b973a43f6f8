//! The node's cluster side: what other nodes send (the [`BrokerHandler`] the
//! broker's link task calls), the heartbeat that keeps this node known, and
//! the presence replica's upkeep when a node joins, resyncs or goes silent.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::Node;
use crate::protocol::{check_broadcast, encode, history_position, BrokerRefusal, SlotKind};
use crate::pubsub::broker::wire::{Control, Member};
use crate::pubsub::broker::{BrokerHandler, Envelope};
use crate::pubsub::mailbox::{Outbound, SessionId};
use crate::pubsub::membership::Heard;
use crate::revocation::Revocation;

/// Longest user id a revocation from another node may name.
const MAX_USER_LEN: usize = 1024;
use crate::pubsub::presence::RemoteMember;

impl Node {
    /// A presence change other nodes' members caused (sync or a dead node):
    /// local members only, their nodes told their own.
    fn deliver_presence_diff(&self, topic: &str, diff: &str) {
        let frame = Outbound::Text(encode::broadcast(topic, "presence_diff", diff));
        self.deliver(topic, &frame, None);
    }

    /// One cluster heartbeat: tell the others this node is alive, and let
    /// nodes silent past `cluster_node_timeout` go (their members leave).
    pub fn cluster_tick(&self) {
        if self.broker.node_id().is_none() {
            return;
        }
        if self.broker.is_ready() {
            let _ = self.broker.send(Envelope::Control(Control::Heartbeat));
        }
        for node in self.membership.sweep() {
            tracing::warn!(peer = %node, "cluster node silent past cluster_node_timeout; its presence entries leave");
            self.metrics.broker_peers_lost.increment(1);
            for (topic, diff) in self.presence.drop_node(&node) {
                self.deliver_presence_diff(&topic, &diff);
            }
        }
        self.metrics.broker_peers.set(self.membership.len() as f64);
    }

    /// How often `cluster_tick` should run.
    pub fn heartbeat_interval(&self) -> Duration {
        self.membership.timing().heartbeat
    }

    fn send_control(&self, control: Control) {
        let _ = self.broker.send(Envelope::Control(control));
    }

    /// Store a cluster-sequenced frame in its ring and deliver it to local
    /// members if it is new; false when the frame has no history ref slot.
    fn append_sequenced(&self, topic: &str, frame: &str, exclude: Option<SessionId>) -> bool {
        let Some((offset, epoch)) = history_position(frame) else {
            return false;
        };
        let frame = Utf8Bytes::from(frame.to_owned());
        // Namespaces can differ between nodes (a rolling config change): a topic
        // no namespace routes here is not ours; one routed to a namespace that
        // keeps no history here is delivered without being stored.
        match self.route(topic) {
            None => {}
            Some(route) if route.namespace.history_size == 0 => {
                self.deliver(topic, &Outbound::Text(frame), exclude);
            }
            Some(_) => {
                self.history
                    .append_sequenced(topic, offset, epoch, frame, |f| {
                        self.deliver(topic, &Outbound::Text(f), exclude);
                    });
            }
        }
        true
    }
}

impl BrokerHandler for Node {
    fn on_publication(&self, topic: &str, frame: Utf8Bytes) {
        // Another node's frame reaches clients only as the broadcast it claims
        // to be: on this topic, no ref, no reserved event, an object payload.
        if !check_broadcast(frame.as_str(), topic, SlotKind::Null) {
            self.metrics.broker_refused.increment(BrokerRefusal::Frame);
            return;
        }
        self.deliver(topic, &Outbound::Text(frame), None);
    }

    fn on_sequenced(&self, topic: &str, frame: &str, exclude: Option<SessionId>) {
        if !check_broadcast(frame, topic, SlotKind::History) {
            self.metrics.broker_refused.increment(BrokerRefusal::Frame);
            return;
        }
        if !self.append_sequenced(topic, frame, exclude) {
            self.metrics.broker_errors.increment(1);
        }
    }

    fn on_stored_history(&self, topic: &str, frame: &str) {
        if !check_broadcast(frame, topic, SlotKind::History) {
            self.metrics.broker_refused.increment(BrokerRefusal::Frame);
            return;
        }
        if !self.append_sequenced(topic, frame, None) {
            self.metrics.broker_errors.increment(1);
        }
    }

    fn on_control(&self, origin: &str, control: Control) {
        match self.membership.heard_from(origin) {
            Heard::Known => {}
            Heard::New => {
                tracing::info!(peer = origin, "cluster node joined");
                self.send_control(Control::SyncRequest);
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
            Control::SyncRequest => {
                let members = self
                    .presence
                    .local_members()
                    .into_iter()
                    .map(|m| Member {
                        topic: m.topic,
                        key: m.key,
                        meta: m.meta,
                    })
                    .collect();
                self.send_control(Control::State { members });
            }
            Control::State { members } => {
                let members = members
                    .into_iter()
                    .map(|m| RemoteMember {
                        topic: m.topic,
                        key: m.key,
                        meta: m.meta,
                    })
                    .collect();
                for (topic, diff) in self.presence.replace_remote(origin, members) {
                    self.deliver_presence_diff(&topic, &diff);
                }
            }
            Control::Diff { topic, diff } => {
                let parsed = serde_json::from_str::<Value>(diff.get()).ok().filter(|d| {
                    d.get("joins").is_some_and(Value::is_object)
                        && d.get("leaves").is_some_and(Value::is_object)
                });
                let routed = self.route(&topic).is_some_and(|r| r.namespace.presence);
                match parsed {
                    Some(parsed) if routed => {
                        self.presence.apply_remote_diff(origin, &topic, &parsed);
                        self.deliver_presence_diff(&topic, diff.get());
                    }
                    // A topic that has no presence here: nothing to track.
                    Some(_) => {}
                    None => self
                        .metrics
                        .broker_refused
                        .increment(BrokerRefusal::Malformed),
                }
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
                self.apply_revocation(&user, Revocation { before, until });
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
        self.route(topic).map_or(0, |r| r.namespace.history_size)
    }
}
