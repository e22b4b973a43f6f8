//! The `Broker` seam: a transport between this node and the others, nothing
//! more. The node ([`crate::pubsub::Node`]) decides what to send; a broker
//! carries it ([`Broker::send`]), keeps the backend subscribed to the topics
//! the node asks for, and pushes what other nodes sent to the node's
//! [`BrokerHandler`].
//!
//! - `local`: a single node; sends nothing, is always ready.
//! - `link`: what the cross-node brokers share (the bounded queue to the link
//!   task, health, the coalesced topic subscriptions, dispatch of inbound
//!   traffic); `redis` and `nats` are the link tasks, transport code only.
//! - `wire`: the typed, versioned envelopes that cross the process boundary.
//! - `names`: every Redis key, channel and NATS subject name.
//! - `backoff`: jittered reconnect back-off.
//! - `security`: TLS roots, client certificates and NATS logins, read at start.
//! - `sign`, `replay`: node-to-node authentication and replay protection
//!   (`cluster_secret`).
//!
//! A broker must never block the caller: publishes from sessions happen inline
//! in their task, so a slow backend is queued behind a bounded buffer, never
//! awaited.

pub mod backoff;
pub mod link;
pub mod local;
pub mod names;
pub mod nats;
pub mod occupancy;
pub mod reach;
pub mod redis;
pub mod replay;
pub mod security;
pub mod sentinel;
pub mod sign;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::mailbox::SessionId;
use crate::protocol::RefSlotFrame;

/// Where a cluster-sequenced history publish reports its offset.
pub type HistoryAck = tokio::sync::oneshot::Sender<u64>;

/// Something on its way to other nodes.
#[derive(Debug)]
pub enum Envelope {
    /// A broadcast frame for `topic`'s channel.
    Publication { topic: Arc<str>, frame: Utf8Bytes },
    /// A V2 binary broadcast frame for `topic`'s channel.
    BinaryPublication {
        topic: Arc<str>,
        frame: bytes::Bytes,
    },
    /// A history-namespace publish for the backend to sequence: it fills the
    /// frame's ref slot with the offset it assigns.
    History {
        topic: Arc<str>,
        frame: RefSlotFrame,
        /// Entries the backend keeps for the topic.
        size: usize,
        /// How long the topic's history lives in the backend once idle.
        ttl: Duration,
        /// The publishing session under `broadcast_from` (the origin node
        /// skips it when the sequenced frame comes back).
        exclude: Option<SessionId>,
        /// Told the assigned offset (the HTTP API's answer).
        ack: Option<HistoryAck>,
        /// The frame is the JSON form of a V2 binary broadcast: members get
        /// it as binary (`protocol::binary`).
        binary: bool,
    },
    /// Membership and presence replication, for the control channel.
    Control(wire::Control),
    /// Another node was declared dead: release its channel occupancy
    /// (brokers that track occupancy only).
    PeerGone(String),
}

/// Why an envelope did not leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The queue to the link task is full (counted).
    #[error("broker queue full")]
    QueueFull,
    /// This broker has no other nodes to send to.
    #[error("no cluster")]
    NoCluster,
}

/// A transport to the other nodes.
pub trait Broker: Send + Sync + 'static {
    /// Queue `envelope` for the other nodes; never waits.
    fn send(&self, envelope: Envelope) -> Result<(), SendError>;
    /// The node now has local members on `topic`: receive its publications.
    fn subscribe_topic(&self, topic: &str);
    /// The node's last local member of `topic` left.
    fn unsubscribe_topic(&self, topic: &str);
    /// Whether the backend is reachable (always true for `local`).
    fn is_ready(&self) -> bool;
    /// This node's id among the cluster's nodes; None on a single node.
    fn node_id(&self) -> Option<&str>;
    /// Whether the backend assigns history offsets (Redis); the node then
    /// sends history publishes as [`Envelope::History`] while it is ready.
    fn sequences_history(&self) -> bool {
        false
    }
    /// Whether the backend tracks which nodes occupy each topic and reports
    /// occupied/vacated once per cluster (`BrokerHandler::on_occupancy`);
    /// otherwise the node reports its own.
    fn tracks_occupancy(&self) -> bool {
        false
    }
}

/// What a broker's link task calls back into: implemented by the node.
pub trait BrokerHandler: Send + Sync + 'static {
    /// Another node's broadcast on `topic` (own echoes already dropped).
    fn on_publication(&self, topic: &str, frame: Utf8Bytes);
    /// Another node's V2 binary broadcast on `topic`.
    fn on_binary_publication(&self, _topic: &str, _frame: bytes::Bytes) {}
    /// A history frame the backend sequenced (every node gets every one, its
    /// own included); `exclude` is set only on the node that published it;
    /// `binary`: the frame is the JSON form of a V2 binary broadcast.
    fn on_sequenced(&self, topic: &str, frame: &str, exclude: Option<SessionId>, binary: bool);
    /// A stored history frame read back from the backend after (re)connecting.
    fn on_stored_history(&self, topic: &str, frame: &str, binary: bool);
    /// A control message from another node.
    fn on_control(&self, origin: &str, control: wire::Control);
    /// The link is (again) up: time to ask the others for their members.
    fn on_connected(&self);
    /// Topics with local members (what to subscribe to after a reconnect).
    fn local_topics(&self) -> Vec<Arc<str>>;
    /// Whether `topic` has local members now.
    fn has_local_members(&self, topic: &str) -> bool;
    /// Entries a history topic keeps; 0 for topics without history.
    fn history_size(&self, topic: &str) -> usize;
    /// `topic` became occupied (its first member anywhere) or vacated (its
    /// last member anywhere left), as the backend decided.
    fn on_occupancy(&self, _topic: &str, _occupied: bool) {}
}
