//! What a frame needs from the backend, and what the backend's answer means
//! for the connection: a join goes on (with the backend's reply, presence
//! meta and channel info) or is refused; a push is broadcast (maybe with the
//! backend's payload) or refused; an rpc is answered to the pusher only.
//! After each answer, the frames that waited behind it are replayed.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::hooked::{Ask, Done, NotStarted};
use super::{ref_matches, PhoenixHandler};
use crate::channel::Terminate;
use crate::config::Publish;
use crate::hooks::{Endpoint, HookError};
use crate::protocol::limits::json_deeper_than;
use crate::protocol::{
    decode, encode, event, ClientRefusal, CloseReason, HookKind, InFrame, JoinRefusal, ReplyError,
};
use crate::pubsub::mailbox::Outbound;
use crate::session::Expiry;

impl PhoenixHandler {
    /// The join hook for `topic`, when a namespace routes it, the connection
    /// may join it, and the namespace has one (otherwise the join is refused
    /// or accepted without asking).
    pub(super) fn join_hook(&self, topic: &str) -> Option<Arc<Endpoint>> {
        let hooks = self.hooked.as_deref()?.hooks();
        let route = self.node.route(topic)?;
        if let Some(allowed) = &self.allowed {
            if !allowed.iter().any(|p| p.matches(topic)) {
                return None;
            }
        }
        hooks.endpoint(&route.namespace, HookKind::Join)
    }

    /// The hook a push of `ev` on open `topic` goes to: rpc for its
    /// `rpc_events` (all when empty), else publish.
    pub(super) fn push_hook(&self, topic: &str, ev: &str) -> Option<(Arc<Endpoint>, HookKind)> {
        let hooks = self.hooked.as_deref()?.hooks();
        let ns = &self.channels.get(topic)?.namespace;
        if ns.rpc_hook.is_some()
            && (ns.rpc_events.is_empty() || ns.rpc_events.iter().any(|e| e == ev))
        {
            return hooks
                .endpoint(ns, HookKind::Rpc)
                .map(|ep| (ep, HookKind::Rpc));
        }
        if ns.publish == Publish::Members {
            return hooks
                .endpoint(ns, HookKind::Publish)
                .map(|ep| (ep, HookKind::Publish));
        }
        None
    }

    /// Send `ask` to the backend, or answer at once when it cannot go.
    pub(super) fn start_hook(
        &mut self,
        ep: Option<Arc<Endpoint>>,
        ask: Ask,
        frame: &InFrame<'_>,
        text: &Utf8Bytes,
        out: &mut Vec<Outbound>,
    ) {
        let (session, user) = (self.session, self.user.clone());
        let is_join = matches!(ask, Ask::Join { .. });
        let started = match (self.hooked.as_deref_mut(), ep) {
            (Some(h), Some(ep)) => h.start(ep, ask, text.clone(), session, &user),
            _ => Err(NotStarted::Overloaded),
        };
        match started {
            Ok(()) => {}
            Err(NotStarted::TooManyPending) => {
                self.refuse_frame(out, frame, ClientRefusal::TooManyPending);
            }
            Err(NotStarted::Overloaded) => {
                if is_join {
                    self.metrics.join_refused(JoinRefusal::BackendUnavailable);
                }
                let reason = encode::reason(ReplyError::BackendUnavailable.reason());
                Self::reply(out, frame, frame.join_ref.as_deref(), "error", &reason);
            }
        }
    }

    /// A backend answer: apply it, then replay what waited behind it.
    pub(super) fn completed(
        &mut self,
        done: Done,
        out: &mut Vec<Outbound>,
    ) -> Result<Expiry, CloseReason> {
        let Some(h) = self.hooked.as_deref_mut() else {
            return Ok(Expiry::Unchanged);
        };
        let text = match done {
            Done::Refresh { result } => {
                return Ok(match h.refreshed(result) {
                    Some(at) => Expiry::Extend(at),
                    None => Expiry::Expired,
                });
            }
            Done::Join { ref text, .. }
            | Done::Publish { ref text, .. }
            | Done::Rpc { ref text, .. } => text.clone(),
        };
        h.answered();
        // Our own earlier decode of this text succeeded; it cannot fail now.
        let Ok(frame) = decode(text.as_str()) else {
            return Ok(Expiry::Unchanged);
        };
        let topic = frame.topic.to_string();
        match done {
            Done::Join { result, .. } => self.finish_join(&frame, result, out)?,
            Done::Publish { result, .. } => self.finish_publish(&frame, result, out)?,
            Done::Rpc { result, .. } => self.finish_rpc(&frame, result, out),
            Done::Refresh { .. } => {}
        }
        self.resume(&topic, out)?;
        Ok(Expiry::Unchanged)
    }

    /// Replay the frames that waited for `topic`, until one of them starts
    /// another call (the rest wait behind that one).
    fn resume(&mut self, topic: &str, out: &mut Vec<Outbound>) -> Result<(), CloseReason> {
        let Some(h) = self.hooked.as_deref_mut() else {
            return Ok(());
        };
        let mut queue = h.take_waiting(topic);
        while let Some(text) = queue.pop_front() {
            if let Ok(frame) = decode(text.as_str()) {
                self.route_frame(&frame, &text, out)?;
            }
            if let Some(h) = self.hooked.as_deref_mut() {
                if h.is_busy(topic) {
                    h.requeue(topic, std::mem::take(&mut queue));
                    break;
                }
            }
        }
        Ok(())
    }

    fn refused_by_backend(out: &mut Vec<Outbound>, frame: &InFrame<'_>, err: &HookError) {
        let reason = match err {
            HookError::Denied(d) => encode::reason(&d.reason),
            HookError::Unavailable(_) => encode::reason(ReplyError::BackendUnavailable.reason()),
        };
        Self::reply(out, frame, frame.join_ref.as_deref(), "error", &reason);
    }

    fn finish_join(
        &mut self,
        frame: &InFrame<'_>,
        result: Result<crate::hooks::schema::JoinResult, HookError>,
        out: &mut Vec<Outbound>,
    ) -> Result<(), CloseReason> {
        let answer = match result {
            Ok(answer) => answer,
            Err(err) => {
                self.metrics.join_refused(match err {
                    HookError::Denied(_) => JoinRefusal::BackendDenied,
                    HookError::Unavailable(_) => JoinRefusal::BackendUnavailable,
                });
                Self::refused_by_backend(out, frame, &err);
                return Ok(());
            }
        };
        let topic = frame.topic.as_ref();
        // Rules 2 and 3, now that the backend said yes.
        match self.channels.get(topic).map(|j| j.join_ref.clone()) {
            Some(old_ref) => {
                self.end_channel(topic, Terminate::Replaced, out);
                let result = self.join(frame, out, Some(answer));
                out.push(Outbound::Text(
                    encode::close(old_ref.as_deref(), topic).into(),
                ));
                result
            }
            None => self.join(frame, out, Some(answer)),
        }
    }

    /// The channel the push was for, if it is still the one open.
    fn still_open(&self, frame: &InFrame<'_>) -> Option<Option<Box<str>>> {
        let current = self.channels.get(frame.topic.as_ref())?.join_ref.clone();
        ref_matches(frame, current.as_deref()).then_some(current)
    }

    fn finish_publish(
        &mut self,
        frame: &InFrame<'_>,
        result: Result<crate::hooks::schema::PublishResult, HookError>,
        out: &mut Vec<Outbound>,
    ) -> Result<(), CloseReason> {
        let Some(current) = self.still_open(frame) else {
            return Ok(());
        };
        // The backend's payload is broadcast and stored like a client's: the
        // same depth bound holds for it.
        let too_deep = result.as_ref().is_ok_and(|a| {
            a.payload.as_ref().is_some_and(|p| {
                json_deeper_than(
                    &serde_json::Value::Object(p.clone()).to_string(),
                    self.config.max_payload_depth,
                )
            })
        });
        match result {
            Ok(_) if too_deep => {
                Self::refused_by_backend(
                    out,
                    frame,
                    &HookError::Unavailable(crate::protocol::HookResult::Garbage),
                );
                Ok(())
            }
            Ok(answer) => self.handle_in(frame, current.as_deref(), Some(answer), out),
            Err(err) => {
                Self::refused_by_backend(out, frame, &err);
                Ok(())
            }
        }
    }

    fn finish_rpc(
        &mut self,
        frame: &InFrame<'_>,
        result: Result<crate::hooks::schema::RpcResult, HookError>,
        out: &mut Vec<Outbound>,
    ) {
        if frame.event.as_ref() == event::JOIN || self.still_open(frame).is_none() {
            return;
        }
        match result {
            Ok(answer) => {
                let response = answer.response.map_or_else(
                    || String::from("{}"),
                    |r| serde_json::Value::Object(r).to_string(),
                );
                Self::reply(out, frame, frame.join_ref.as_deref(), "ok", &response);
            }
            Err(err) => Self::refused_by_backend(out, frame, &err),
        }
    }
}
