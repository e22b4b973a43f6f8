//! A node's topics: who is subscribed, what was said, who is present, and how
//! it reaches the other nodes.
//!
//! - `node`: [`Node`], the one owner of everything below; sessions, channels
//!   and the API reach topics only through it.
//! - `hub`: topic → subscribers on this node; the fan-out loop.
//! - `mailbox`: a session's bounded outbound queue, the hub's delivery target,
//!   and the [`SessionId`] it is filed under.
//! - `history`: per-topic rings with offsets and epochs; recovery on join.
//! - `presence`: per-topic members in Phoenix Presence's format, and the
//!   replica of other nodes' members.
//! - `membership`: which other nodes are alive.
//! - `prefetch`: cache hints for the fan-out loop (the crate's only `unsafe`).
//! - `broker`: the transport to other nodes (`local`, `redis`, `nats`), the
//!   wire format and backend names.
//!
//! Nothing here touches a socket; a publish never waits on a subscriber or a
//! backend.

pub mod broker;
pub mod history;
pub mod hub;
pub mod mailbox;
pub mod membership;
pub mod node;
mod prefetch;
pub mod presence;

pub use broker::Broker;
pub use hub::{FanOut, Hub, TopicFigures};
pub use mailbox::SessionId;
pub use node::{JoinOutcome, JoinRequest, Node, Publication, Published, Since};
