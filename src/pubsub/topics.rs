//! The node's topic services in one place: routing (namespaces), the broker,
//! history and presence. `publish` is the one way a broadcast is made, for
//! client pushes and the server API alike, so history offsets and fan-out
//! always agree.

use std::sync::Arc;
use std::time::Duration;

use super::{Broker, FanOut, SessionId};
use crate::channel::ChannelRouter;
use crate::config::NamespaceConfig;
use crate::history::History;
use crate::presence::Presence;
use crate::protocol::encode;
use crate::session::mailbox::Outbound;

/// How long the HTTP API waits for the cluster to assign a history offset
/// (one broker round trip; past this the answer carries no offset, the
/// publish itself still goes through).
const HISTORY_ACK_WAIT: Duration = Duration::from_secs(2);

pub struct Topics {
    pub router: ChannelRouter,
    pub broker: Arc<dyn Broker>,
    pub history: Arc<History>,
    pub presence: Arc<Presence>,
}

/// What one publish did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// The history offset, on namespaces that keep history.
    pub offset: Option<u64>,
    pub fanout: FanOut,
}

impl Topics {
    pub fn new(
        router: ChannelRouter,
        broker: Arc<dyn Broker>,
        presence: Arc<Presence>,
        history: Arc<History>,
    ) -> Topics {
        Topics {
            router,
            broker,
            history,
            presence,
        }
    }

    /// Broadcast `event` with raw JSON `payload` on `topic`, encoded once; on a
    /// history namespace the frame's ref slot carries `"<offset>:<epoch>"`.
    ///
    /// In a Redis cluster the broker sequences history publishes (one offset
    /// order for every node) and delivery happens when the sequenced frame
    /// comes back: the offset is not known here (see `publish_acked`).
    pub fn publish(
        &self,
        ns: &NamespaceConfig,
        topic: &str,
        event: &str,
        payload: &str,
        exclude: Option<SessionId>,
    ) -> Published {
        if ns.history_size > 0
            && self
                .broker
                .sequence_history(topic, event, payload, ns, exclude, None)
        {
            return Published::default();
        }
        self.publish_here(ns, topic, event, payload, exclude)
    }

    /// `publish` for callers that may wait (the HTTP API): when the cluster
    /// sequences the publish, wait up to `HISTORY_ACK_WAIT` for the offset it
    /// assigned. `None` when it does not come (an outage lost the publish, or
    /// the broker is slower than that).
    pub async fn publish_acked(
        &self,
        ns: &NamespaceConfig,
        topic: &str,
        event: &str,
        payload: &str,
        exclude: Option<SessionId>,
    ) -> Published {
        if ns.history_size > 0 {
            let (ack, offset) = tokio::sync::oneshot::channel();
            if self
                .broker
                .sequence_history(topic, event, payload, ns, exclude, Some(ack))
            {
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
        self.publish_here(ns, topic, event, payload, exclude)
    }

    /// Sequence (on a history namespace) and fan out on this node.
    fn publish_here(
        &self,
        ns: &NamespaceConfig,
        topic: &str,
        event: &str,
        payload: &str,
        exclude: Option<SessionId>,
    ) -> Published {
        if ns.history_size > 0 {
            let mut fanout = FanOut::default();
            let offset = self.history.publish(
                topic,
                event,
                payload,
                ns.history_size,
                ns.history_ttl,
                |frame| {
                    fanout = self.broker.publish(topic, Outbound::Text(frame), exclude);
                },
            );
            Published {
                offset: Some(offset),
                fanout,
            }
        } else {
            let frame = Outbound::Text(encode::broadcast(topic, event, payload));
            Published {
                offset: None,
                fanout: self.broker.publish(topic, frame, exclude),
            }
        }
    }

    /// Broadcast a `presence_diff` (never stored in history).
    pub fn presence_diff(&self, topic: &str, diff: &str) {
        let frame = Outbound::Text(encode::broadcast(topic, "presence_diff", diff));
        self.broker.publish(topic, frame, None);
        self.broker.presence_changed(topic, diff);
    }

    /// Drop expired history (called periodically).
    pub fn sweep_history(&self) {
        self.history
            .sweep(|topic| self.router.route(topic).map(|r| r.namespace.history_ttl));
    }
}
