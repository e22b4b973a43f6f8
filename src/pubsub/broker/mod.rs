//! The `Broker` seam: where a publish leaves this node and where other nodes'
//! publishes come in. `local` (default) delivers on this node only;
//! `cluster` adds the bounded queue, origin tagging and health that the
//! `redis` and `nats` links share.
//!
//! A broker must never block the caller: publishes from sessions happen inline
//! in their task, so a slow backend is queued behind a bounded buffer, never
//! awaited.

pub mod cluster;
pub mod local;
pub mod nats;
pub mod redis;

use std::sync::Arc;

use super::{FanOut, SessionId};
use crate::config::NamespaceConfig;
use crate::session::mailbox::{Mailbox, Outbound};

/// Where a cluster-sequenced history publish reports its offset.
pub type HistoryAck = tokio::sync::oneshot::Sender<u64>;

pub trait Broker: Send + Sync + 'static {
    /// `session` receives every later publish on `topic` in `mailbox`.
    fn subscribe(&self, topic: &str, session: SessionId, mailbox: Arc<Mailbox>);
    /// Stop delivering `topic` to `session`. Unknown pairs are ignored.
    fn unsubscribe(&self, topic: &str, session: SessionId);
    /// Deliver an encoded frame to every subscriber of `topic` (on every node),
    /// except `exclude`. Returns what happened on this node.
    fn publish(&self, topic: &str, frame: Outbound, exclude: Option<SessionId>) -> FanOut;
    /// Topics with local subscribers.
    fn topic_count(&self) -> usize;
    /// A local presence change (`presence_diff` payload) other nodes' replicas
    /// must learn about. Nothing to do on a single node.
    fn presence_changed(&self, _topic: &str, _diff: &str) {}
    /// Hand a history-namespace publish to the cluster to be sequenced;
    /// false when this broker does not (or cannot now), and the node
    /// sequences it locally. `ack`, when given, receives the offset the
    /// cluster assigned (it is dropped if the publish is lost to an outage).
    fn sequence_history(
        &self,
        _topic: &str,
        _event: &str,
        _payload: &str,
        _namespace: &NamespaceConfig,
        _exclude: Option<SessionId>,
        _ack: Option<HistoryAck>,
    ) -> bool {
        false
    }
    /// This node's id among the cluster's nodes (None on a single node): it
    /// qualifies names that must not collide across nodes, such as anonymous
    /// presence keys built from node-local session ids.
    fn node(&self) -> Option<&str> {
        None
    }
    /// Whether the backend is reachable (always true for `local`).
    fn is_ready(&self) -> bool {
        true
    }
}
