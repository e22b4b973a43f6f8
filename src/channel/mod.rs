//! The `Channel` trait (join / handle_in / terminate), the context a handler
//! sees, and the router that picks a channel for a topic.
//!
//! A channel handler is plain synchronous code called from its session's task;
//! the session wraps every call in panic capture, so a handler may panic
//! without harming anything but its own channel. Handlers never touch the
//! socket: they answer with a [`Reply`], push to their own client through
//! [`ChannelCtx::push`], and reach other sessions only through
//! [`ChannelCtx::broadcast`].

mod broadcast;
mod crash;
pub mod router;

pub use broadcast::BroadcastChannel;
pub use crash::CrashChannel;
pub use router::ChannelRouter;

use serde_json::value::RawValue;

use crate::protocol::encode;
use crate::pubsub::{Broker, SessionId};
use crate::session::mailbox::Outbound;

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
    broker: &'a dyn Broker,
    out: &'a mut Vec<Outbound>,
}

impl<'a> ChannelCtx<'a> {
    pub fn new(
        topic: &'a str,
        join_ref: Option<&'a str>,
        session: SessionId,
        broker: &'a dyn Broker,
        out: &'a mut Vec<Outbound>,
    ) -> ChannelCtx<'a> {
        ChannelCtx {
            topic,
            join_ref,
            session,
            broker,
            out,
        }
    }

    /// Broadcast to every member of this topic (sender included), encoded once.
    /// Returns how many local mailboxes received it.
    pub fn broadcast(&mut self, event: &str, payload: &RawValue) -> usize {
        let frame = Outbound::Text(encode::broadcast(self.topic, event, payload.get()));
        self.broker.publish(self.topic, frame, None).delivered
    }

    /// Broadcast to every member except this session (`broadcast_from`).
    pub fn broadcast_from(&mut self, event: &str, payload: &RawValue) -> usize {
        let frame = Outbound::Text(encode::broadcast(self.topic, event, payload.get()));
        self.broker
            .publish(self.topic, frame, Some(self.session))
            .delivered
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
