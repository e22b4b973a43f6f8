//! Topics, subscribers and fan-out.
//!
//! [`hub::Hub`] holds this node's subscribers per topic and delivers an
//! already-encoded frame to their mailboxes. A [`Broker`] is the seam where
//! publishes leave the node: the in-process [`broker::local::LocalBroker`] hands
//! them straight to the hub; the cluster broker (`broker::cluster`, with the
//! `redis` and `nats` links) also forwards them to other nodes and feeds
//! remote publishes into the hub.
//!
//! Nothing here encodes frames or touches sockets; a publish never waits on a
//! subscriber.

pub mod broker;
pub mod hub;
pub mod topics;

pub use broker::Broker;
pub use hub::{FanOut, Hub};
pub use topics::{Published, Topics};

/// Identifies a session on this node; unique for the life of the process.
pub type SessionId = u64;
