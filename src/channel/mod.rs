//! The `Channel` trait (join / handle_in / terminate), the context a handler
//! sees, and the router that picks a channel for a topic.
//!
//! A channel handler is plain synchronous code called from its session's task;
//! the session wraps every call in panic capture, so a handler may panic
//! without harming anything but its own channel. Handlers never touch the
//! socket: they answer with a [`Reply`], push to their own client through
//! [`ChannelCtx::push`], and reach other sessions only through
//! [`ChannelCtx::broadcast`]. Which channel serves a topic is the config's
//! routing ([`crate::config::Namespaces`]); [`instantiate`] turns its
//! [`ChannelKind`] into code.

mod broadcast;
mod crash;

pub use broadcast::BroadcastChannel;
pub use crash::CrashChannel;

use serde_json::value::RawValue;

use crate::config::{ChannelKind, NamespaceConfig};
use crate::protocol::encode;
use crate::pubsub::mailbox::{Outbound, SessionId};
use crate::pubsub::{Node, Publication};

/// A fresh channel of `kind` for one (session, topic).
pub fn instantiate(kind: ChannelKind) -> Box<dyn Channel> {
    match kind {
        ChannelKind::Broadcast => Box::new(BroadcastChannel),
        ChannelKind::Crash => Box::new(CrashChannel),
    }
}

/// What a handler answers to a client event. Payloads are raw JSON objects.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Ok(String),
    Error(String),
    /// No `phx_reply`: the client's push times out, as in Phoenix.
    NoReply,
}

/// Outcome of a join. `Ok` carries the join reply (`response`), `Error` the
/// refusal payload.
#[derive(Debug, PartialEq, Eq)]
pub enum JoinResult {
    Ok(String),
    Error(String),
}

/// Why a channel ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminate {
    /// The client sent `phx_leave`.
    Leave,
    /// A new `phx_join` for the same topic replaced it.
    Replaced,
    /// The connection ended.
    Closed,
}

/// What a handler may do besides replying.
pub struct ChannelCtx<'a> {
    pub topic: &'a str,
    pub join_ref: Option<&'a str>,
    pub session: SessionId,
    pub namespace: &'a NamespaceConfig,
    node: &'a Node,
    out: &'a mut Vec<Outbound>,
}

impl<'a> ChannelCtx<'a> {
    pub fn new(
        topic: &'a str,
        join_ref: Option<&'a str>,
        session: SessionId,
        namespace: &'a NamespaceConfig,
        node: &'a Node,
        out: &'a mut Vec<Outbound>,
    ) -> ChannelCtx<'a> {
        ChannelCtx {
            topic,
            join_ref,
            session,
            namespace,
            node,
            out,
        }
    }

    /// Broadcast to the topic's members, encoded once: the sender included,
    /// unless the namespace says `broadcast_from`. Returns the history offset on
    /// history namespaces.
    pub fn broadcast(&mut self, event: &str, payload: &RawValue) -> Option<u64> {
        let exclude = self.namespace.broadcast_from.then_some(self.session);
        self.node
            .publish(Publication {
                namespace: self.namespace,
                topic: self.topic,
                event,
                payload: payload.get(),
                exclude,
            })
            .offset
    }

    /// Push an event to this client only: `[join_ref, null, topic, event, payload]`.
    pub fn push(&mut self, event: &str, payload: &RawValue) {
        let frame = encode::push(self.join_ref, self.topic, event, payload.get());
        self.out.push(Outbound::Text(frame.into()));
    }
}

/// A joined topic's behaviour. One value per (session, topic); zero-sized
/// channels cost no allocation per join.
pub trait Channel: Send {
    fn join(&mut self, _ctx: &mut ChannelCtx<'_>, _params: &RawValue) -> JoinResult {
        JoinResult::Ok(String::from("{}"))
    }

    fn handle_in(&mut self, ctx: &mut ChannelCtx<'_>, event: &str, payload: &RawValue) -> Reply;

    fn terminate(&mut self, _ctx: &mut ChannelCtx<'_>, _reason: Terminate) {}
}
