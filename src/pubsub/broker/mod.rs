//! The `Broker` seam: where a publish leaves this node and where other nodes'
//! publishes come in. `local` is the only backend today; `redis` and `nats`
//! will sit beside it.
//!
//! A broker must never block the caller: publishes from sessions happen inline
//! in their task, so a slow backend is queued behind a bounded buffer, never
//! awaited.

pub mod local;

use std::sync::Arc;

use super::{FanOut, SessionId};
use crate::session::mailbox::{Mailbox, Outbound};

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
}
