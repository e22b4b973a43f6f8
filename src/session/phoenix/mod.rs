//! A Phoenix Channels V2 connection: the topic → joined-channel map and the
//! dispatch rules of docs/protocol.md §3.2, applied strictly in frame order.
//!
//! Owns the channels of one connection and their subscriptions. Every channel
//! callback runs under panic capture: a panic ends that channel only
//! (`phx_error`, counted, logged), and more than `max_restarts` crashes within
//! `max_seconds` closes the session with 1011. Dropping the handler (on any
//! exit path, unwinding included) terminates every channel and unsubscribes
//! every topic.

use channels::Channels;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{Expiry, FrameHandler};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::auth::Identity;
use crate::channel::{self, Channel, ChannelCtx, Reply, Terminate};
use crate::config::{Config, NamespaceConfig, Pattern, Publish};
use crate::hooks::schema::{JoinResult, PublishResult};
use crate::hooks::Hooks;
use crate::metrics::Metrics;
use crate::protocol::limits::{is_reserved_event, json_deeper_than, truncated};
use crate::protocol::{
    decode, encode, event, ClientRefusal, CloseReason, InFrame, JoinRefusal, MalformedKind,
    ReplyError, PHOENIX_TOPIC,
};

use crate::pubsub::mailbox::{Mailbox, Outbound, SessionId};
use crate::pubsub::{JoinRequest, Node};
use crate::supervisor::{panic_message, RestartIntensity};
use params::{anonymous_key, meta_len, presence_meta, since_of, with_fields};
use rate::{ClientRate, Verdict};

mod answers;
mod binary;
mod channels;
mod hooked;
mod params;
mod rate;

pub use hooked::Done;
use hooked::{Ask, HookState};

/// Fault-injection event that panics in the session itself, outside any
/// channel handler (only on `crash:*` topics with fault injection enabled).
pub const PANIC_SESSION_EVENT: &str = "panic_session";

/// A joined channel. Every idle session holds one per topic, so the
/// strings are boxed slices and the rare hook `info` is behind a pointer:
/// 64 bytes an entry instead of 104.
struct Joined {
    join_ref: Option<Box<str>>,
    channel: Box<dyn Channel>,
    namespace: Arc<NamespaceConfig>,
    /// The join hook's `info`, sent with this channel's publish/rpc calls.
    info: Option<Box<Value>>,
}

pub struct PhoenixHandler {
    session: SessionId,
    /// Presence key: the token's `sub`, or `anon-<session id>`.
    user: Box<str>,
    /// Topic patterns the token allows (None: all).
    allowed: Option<Box<[Pattern]>>,
    mailbox: Arc<Mailbox>,
    node: Arc<Node>,
    metrics: Arc<Metrics>,
    channels: Channels<Joined>,
    /// Made at the first channel crash: most sessions never have one.
    intensity: Option<Box<RestartIntensity>>,
    /// `client_rate`; None when unlimited.
    rate: Option<ClientRate>,
    /// The limits (`max_topics_per_session`, `max_*_length`, ...) are read
    /// from the shared config: one pointer per session, not a copy of each.
    config: Arc<Config>,
    /// Calls to the backend; None (one pointer's worth) without hooks.
    hooked: Option<Box<HookState>>,
}

/// What a channel callback did, with panics turned into a value.
enum Called<T> {
    Returned(T),
    Panicked(String),
}

impl PhoenixHandler {
    pub fn new(
        session: SessionId,
        identity: Identity,
        mailbox: Arc<Mailbox>,
        node: Arc<Node>,
        metrics: Arc<Metrics>,
        config: &Arc<Config>,
        hooks: Option<Arc<Hooks>>,
    ) -> PhoenixHandler {
        let hooked = hooks.map(|h| Box::new(HookState::new(h, identity.info.clone())));
        PhoenixHandler {
            hooked,
            session,
            user: identity
                .user
                .unwrap_or_else(|| anonymous_key(node.id(), session))
                .into_boxed_str(),
            allowed: identity.topics.map(Vec::into_boxed_slice),
            mailbox,
            node,
            metrics,
            channels: Channels::default(),
            intensity: None,
            rate: ClientRate::new(config.client_rate, config.client_burst),
            config: Arc::clone(config),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn call<T>(
        &self,
        channel: &mut dyn Channel,
        namespace: &NamespaceConfig,
        topic: &str,
        join_ref: Option<&str>,
        out: &mut Vec<Outbound>,
        f: impl FnOnce(&mut dyn Channel, &mut ChannelCtx<'_>) -> T,
    ) -> Called<T> {
        let mut ctx = ChannelCtx::new(topic, join_ref, self.session, namespace, &self.node, out);
        match std::panic::catch_unwind(AssertUnwindSafe(|| f(channel, &mut ctx))) {
            Ok(value) => Called::Returned(value),
            Err(panic) => Called::Panicked(panic_message(&panic)),
        }
    }

    /// Count and log a panic in a channel callback.
    fn channel_panicked(&self, topic: &str, panic: &str, callback: &'static str) {
        self.metrics.channel_crashes.increment(1);
        tracing::warn!(
            session = self.session,
            topic = topic,
            panic = panic,
            callback,
            "channel crashed"
        );
    }

    /// Count and log a channel crash; Err when restart intensity is exceeded.
    fn crashed(&mut self, topic: &str, panic: &str) -> Result<(), CloseReason> {
        self.channel_panicked(topic, panic, "join/handle_in");
        let config = &self.config;
        let intensity = self.intensity.get_or_insert_with(|| {
            Box::new(RestartIntensity::new(
                config.max_restarts,
                config.restart_window(),
            ))
        });
        if intensity.record(Instant::now()) {
            tracing::warn!(
                session = self.session,
                "restart intensity exceeded; closing session with 1011"
            );
            return Err(CloseReason::RestartIntensity);
        }
        Ok(())
    }

    fn reply(
        out: &mut Vec<Outbound>,
        frame: &InFrame<'_>,
        join_ref: Option<&str>,
        status: &str,
        response: &str,
    ) {
        let text = encode::reply(
            join_ref,
            frame.ref_.as_deref(),
            &frame.topic,
            status,
            response,
        );
        out.push(Outbound::Text(text.into()));
    }

    /// The checks every frame passes first, JSON or binary: refs are echoed
    /// in replies, and phoenix.js sends short counters, so a long one is not a
    /// client (never reflected: closed); then the client rate. Ok(false): over
    /// the rate, answer `rate_limited`.
    fn admitted(
        &mut self,
        join_ref: Option<&str>,
        ref_: Option<&str>,
    ) -> Result<bool, CloseReason> {
        let len = |r: Option<&str>| r.map_or(0, str::len);
        if len(ref_).max(len(join_ref)) > self.config.max_ref_length {
            self.metrics.malformed.increment(MalformedKind::RefTooLong);
            return Err(CloseReason::MalformedFrame);
        }
        let window = self.config.abuse_window;
        let verdict = self
            .rate
            .as_mut()
            .map_or(Verdict::Allowed, |r| r.check(window));
        if verdict == Verdict::Allowed {
            return Ok(true);
        }
        self.metrics.rate_limited.increment(1);
        if verdict == Verdict::Abusive {
            return Err(CloseReason::RateLimitAbuse);
        }
        Ok(false)
    }

    /// Why a frame's content is refused (with an error reply), if it is.
    fn refusal(&self, frame: &InFrame<'_>) -> Option<ClientRefusal> {
        if frame.topic.len() > self.config.max_topic_length {
            return Some(ClientRefusal::TopicTooLong);
        }
        if frame.event.len() > self.config.max_event_length {
            return Some(ClientRefusal::EventTooLong);
        }
        if json_deeper_than(frame.payload.get(), self.config.max_payload_depth) {
            return Some(ClientRefusal::PayloadTooDeep);
        }
        None
    }

    fn refuse_frame(&self, out: &mut Vec<Outbound>, frame: &InFrame<'_>, why: ClientRefusal) {
        self.metrics.client_refusals.increment(why);
        let reason = encode::reason(why.reply().reason());
        // An over-long topic is never open: answer like an unmatched one.
        let join_ref = match why {
            ClientRefusal::TopicTooLong => None,
            _ => frame.join_ref.as_deref(),
        };
        Self::reply(out, frame, join_ref, "error", &reason);
    }

    fn dispatch(
        &mut self,
        frame: InFrame<'_>,
        text: &Utf8Bytes,
        out: &mut Vec<Outbound>,
    ) -> Result<(), CloseReason> {
        let topic = frame.topic.as_ref();
        let ev = frame.event.as_ref();

        // Refs are echoed in replies (heartbeats included): phoenix.js sends
        // short counters, so a long one is not a client, and never reflected.
        // Heartbeats count against client_rate like any frame (a flood of
        // them costs a reply each). A refused heartbeat still gets a reply with
        // its ref, which is all phoenix.js needs to count it answered.
        if !self.admitted(frame.join_ref.as_deref(), frame.ref_.as_deref())? {
            let reason = encode::reason(ReplyError::RateLimited.reason());
            Self::reply(out, &frame, frame.join_ref.as_deref(), "error", &reason);
            return Ok(());
        }
        // Rule 1: heartbeat, whatever channels exist.
        if topic == PHOENIX_TOPIC && ev == event::HEARTBEAT {
            Self::reply(out, &frame, None, "ok", "{}");
            return Ok(());
        }
        if self.config.enable_fault_injection
            && ev == PANIC_SESSION_EVENT
            && topic.starts_with("crash:")
        {
            panic!("fault injection: session panic");
        }
        if let Some(why) = self.refusal(&frame) {
            self.refuse_frame(out, &frame, why);
            return Ok(());
        }
        // A topic with a backend call out: its frames wait, in order.
        if let Some(h) = self.hooked.as_deref_mut() {
            if h.is_busy(topic) {
                if !h.wait(topic, text) {
                    self.refuse_frame(out, &frame, ClientRefusal::TooManyPending);
                }
                return Ok(());
            }
        }
        self.route_frame(&frame, text, out)
    }

    /// The dispatch rules for a frame that was admitted (rate, size, names)
    /// and whose topic has no backend call out.
    fn route_frame(
        &mut self,
        frame: &InFrame<'_>,
        text: &Utf8Bytes,
        out: &mut Vec<Outbound>,
    ) -> Result<(), CloseReason> {
        let topic = frame.topic.as_ref();
        let ev = frame.event.as_ref();
        let open = self.channels.get(topic).map(|j| j.join_ref.clone());
        let join_hook = if ev == event::JOIN {
            self.join_hook(topic)
        } else {
            None
        };
        match (ev, open) {
            // The backend decides first; rules 2 and 3 apply to its answer.
            (event::JOIN, _) if join_hook.is_some() => {
                let ep = join_hook;
                let params = serde_json::from_str(frame.payload.get()).unwrap_or(Value::Null);
                let ask = Ask::Join {
                    topic: topic.to_owned(),
                    params,
                };
                self.start_hook(ep, ask, frame, text, out);
                Ok(())
            }
            // Rule 3: duplicate join replaces the old channel; its close follows the new reply.
            (event::JOIN, Some(old_ref)) => {
                self.end_channel(topic, Terminate::Replaced, out);
                let result = self.join(frame, out, None);
                out.push(Outbound::Text(
                    encode::close(old_ref.as_deref(), topic).into(),
                ));
                result
            }
            // Rule 2.
            (event::JOIN, None) => self.join(frame, out, None),
            // Rule 4: leave an open channel (stale join_ref is dropped silently).
            (event::LEAVE, Some(current)) => {
                if !ref_matches(frame, current.as_deref()) {
                    return Ok(());
                }
                self.metrics.leaves.increment(1);
                self.end_channel(topic, Terminate::Leave, out);
                Self::reply(out, frame, frame.join_ref.as_deref(), "ok", "{}");
                out.push(Outbound::Text(
                    encode::close(current.as_deref(), topic).into(),
                ));
                Ok(())
            }
            // Rule 6: leave of a topic not open.
            (event::LEAVE, None) => {
                Self::reply(out, frame, frame.join_ref.as_deref(), "ok", "{}");
                Ok(())
            }
            // Rule 5: event for an open channel. Names phoenix.js interprets
            // (phx_close, presence_diff, ...) would act on every member.
            (_, Some(current)) => {
                if !ref_matches(frame, current.as_deref()) {
                    return Ok(());
                }
                if is_reserved_event(ev) {
                    self.refuse_frame(out, frame, ClientRefusal::ReservedEvent);
                    return Ok(());
                }
                if let Some((ep, kind)) = self.push_hook(topic, ev) {
                    let ask = Ask::Push {
                        kind,
                        topic: topic.to_owned(),
                        event: ev.to_owned(),
                        payload: serde_json::from_str(frame.payload.get()).unwrap_or(Value::Null),
                        channel_info: self
                            .channels
                            .get(topic)
                            .and_then(|j| j.info.as_deref().cloned()),
                    };
                    self.start_hook(Some(ep), ask, frame, text, out);
                    return Ok(());
                }
                self.handle_in(frame, current.as_deref(), None, out)
            }
            // Rule 7: event for a topic not open.
            (_, None) => {
                let reason = encode::reason(ReplyError::UnmatchedTopic.reason());
                Self::reply(out, frame, None, "error", &reason);
                Ok(())
            }
        }
    }

    /// Refuse a join: count it and answer with the reason's error reply.
    fn refuse(
        &self,
        out: &mut Vec<Outbound>,
        frame: &InFrame<'_>,
        refusal: JoinRefusal,
        reply: ReplyError,
    ) {
        self.metrics.join_refused(refusal);
        // An unmatched topic has no channel, so no join_ref (Phoenix's shape).
        let join_ref = match refusal {
            JoinRefusal::UnmatchedTopic => None,
            _ => frame.join_ref.as_deref(),
        };
        Self::reply(
            out,
            frame,
            join_ref,
            "error",
            &encode::reason(reply.reason()),
        );
    }

    /// Route → authorize → the channel's join → `Node::join` → reply.
    /// `hooked`: the join hook's answer, when the namespace has one.
    fn join(
        &mut self,
        frame: &InFrame<'_>,
        out: &mut Vec<Outbound>,
        hooked: Option<JoinResult>,
    ) -> Result<(), CloseReason> {
        let topic = frame.topic.as_ref();
        let join_ref = frame.join_ref.as_deref();
        let Some(route) = self.node.route(topic).cloned() else {
            // Client input: debug level, and never more than a line's worth.
            tracing::debug!(
                session = self.session,
                topic = truncated(topic, 64),
                "join refused: unmatched topic"
            );
            self.refuse(
                out,
                frame,
                JoinRefusal::UnmatchedTopic,
                ReplyError::UnmatchedTopic,
            );
            return Ok(());
        };
        if let Some(allowed) = &self.allowed {
            if !allowed.iter().any(|p| p.matches(topic)) {
                self.refuse(
                    out,
                    frame,
                    JoinRefusal::Unauthorized,
                    ReplyError::Unauthorized,
                );
                return Ok(());
            }
        }
        if self.channels.len() >= self.config.max_topics_per_session {
            self.refuse(
                out,
                frame,
                JoinRefusal::TooManyChannels,
                ReplyError::TooManyChannels,
            );
            return Ok(());
        }
        let ns = route.namespace;
        let params = frame.payload;
        let join_params: Option<Value> = serde_json::from_str(params.get()).ok();
        let (hook_response, hook_meta, hook_info) = match hooked {
            Some(h) => (h.response, h.meta, h.info),
            None => (None, None, None),
        };
        // The backend's meta replaces the client's (and is bounded the same).
        let meta_params = hook_meta.map(|m| serde_json::json!({ "meta": m }));
        let meta_source = meta_params.as_ref().or(join_params.as_ref());
        if ns.presence && meta_len(meta_source) > self.config.presence_max_meta_bytes {
            self.refuse(
                out,
                frame,
                JoinRefusal::MetaTooLarge,
                ReplyError::PresenceMetaTooLarge,
            );
            return Ok(());
        }
        let mut channel = channel::instantiate(route.kind);
        let response = match self.call(channel.as_mut(), &ns, topic, join_ref, out, |ch, ctx| {
            ch.join(ctx, params)
        }) {
            Called::Returned(channel::JoinResult::Ok(response)) => match &hook_response {
                Some(r) => Value::Object(r.clone()).to_string(),
                None => response,
            },
            Called::Returned(channel::JoinResult::Error(response)) => {
                self.metrics.join_refused(JoinRefusal::Refused);
                Self::reply(out, frame, join_ref, "error", &response);
                return Ok(());
            }
            Called::Panicked(panic) => {
                self.refuse(out, frame, JoinRefusal::Crashed, ReplyError::JoinCrashed);
                return self.crashed(topic, &panic);
            }
        };
        // Subscribed before the reply is written, so no broadcast that follows
        // the ok reply is missed.
        let joined = self.node.join(JoinRequest {
            topic,
            namespace: &ns,
            join_ref,
            session: self.session,
            mailbox: Arc::clone(&self.mailbox),
            since: since_of(join_params.as_ref()),
            presence: ns.presence.then(|| {
                // On server-published namespaces subscribers do not speak to
                // each other: their own metas would be exactly that channel.
                let client_meta = match (&meta_params, ns.publish) {
                    (Some(m), _) => Some(m),
                    (None, Publish::Members) => join_params.as_ref(),
                    (None, Publish::Server) => None,
                };
                (&*self.user, presence_meta(client_meta))
            }),
        });
        let response = match joined.recovery {
            Some(recovery) => with_fields(
                &response,
                [
                    ("recovered", Value::Bool(recovery.recovered)),
                    ("offset", Value::from(recovery.position.offset)),
                    ("epoch", Value::String(recovery.position.epoch)),
                ],
            ),
            None => response,
        };
        self.metrics.joins_ok.increment(1);
        // Missed history and presence_state are already in the mailbox, which
        // the session writes right after this reply.
        Self::reply(out, frame, join_ref, "ok", &response);
        self.channels.insert(
            Box::from(topic),
            Joined {
                join_ref: join_ref.map(Box::from),
                channel,
                namespace: ns,
                info: hook_info.map(Box::new),
            },
        );
        Ok(())
    }

    /// Stop delivering `topic` to this session and remove its presence.
    fn release(&self, topic: &str, ns: &NamespaceConfig) {
        self.node.leave(topic, ns, self.session);
    }

    /// A push for an open channel; `hooked`: the publish hook's answer (a
    /// replacement payload, the reply's payload).
    fn handle_in(
        &mut self,
        frame: &InFrame<'_>,
        join_ref: Option<&str>,
        hooked: Option<PublishResult>,
        out: &mut Vec<Outbound>,
    ) -> Result<(), CloseReason> {
        let topic = frame.topic.as_ref();
        let Some((name, mut joined)) = self.channels.remove(topic) else {
            return Ok(());
        };
        let (replacement, hook_response) = match hooked {
            Some(h) => (
                h.payload
                    .and_then(|p| RawValue::from_string(Value::Object(p).to_string()).ok()),
                h.response,
            ),
            None => (None, None),
        };
        let ev = frame.event.as_ref();
        let payload: &RawValue = replacement.as_deref().unwrap_or(frame.payload);
        let ns = Arc::clone(&joined.namespace);
        match self.call(
            joined.channel.as_mut(),
            &ns,
            topic,
            join_ref,
            out,
            |ch, ctx| ch.handle_in(ctx, ev, payload),
        ) {
            Called::Returned(reply) => {
                self.channels.insert(name, joined);
                match reply {
                    Reply::Ok(response) => {
                        let response = match &hook_response {
                            Some(r) => Value::Object(r.clone()).to_string(),
                            None => response,
                        };
                        Self::reply(out, frame, join_ref, "ok", &response)
                    }
                    Reply::Error(response) => Self::reply(out, frame, join_ref, "error", &response),
                    Reply::NoReply => {}
                }
                Ok(())
            }
            Called::Panicked(panic) => {
                // The channel is gone: no reply for this push, phx_error instead,
                // and the client rejoins by itself.
                self.release(topic, &ns);
                drop(joined);
                out.push(Outbound::Text(encode::error(join_ref, topic).into()));
                self.crashed(topic, &panic)
            }
        }
    }

    /// Remove a channel, unsubscribe it, and run its terminate callback (a
    /// panic there is logged and counted but changes nothing else).
    fn end_channel(&mut self, topic: &str, reason: Terminate, out: &mut Vec<Outbound>) {
        if let Some((_, joined)) = self.channels.remove(topic) {
            self.end_joined(topic, joined, reason, out);
        }
    }

    /// Leave `topic` (already out of `channels`) and run its terminate.
    fn end_joined(
        &mut self,
        topic: &str,
        mut joined: Joined,
        reason: Terminate,
        out: &mut Vec<Outbound>,
    ) {
        let ns = Arc::clone(&joined.namespace);
        self.release(topic, &ns);
        if let Called::Panicked(panic) = self.call(
            joined.channel.as_mut(),
            &ns,
            topic,
            joined.join_ref.as_deref(),
            out,
            |ch, ctx| ch.terminate(ctx, reason),
        ) {
            self.channel_panicked(topic, &panic, "terminate");
        }
    }
}

/// A frame addresses the current channel when its join_ref is null or equal.
fn ref_matches(frame: &InFrame<'_>, current: Option<&str>) -> bool {
    ref_matches_str(frame.join_ref.as_deref(), current)
}

fn ref_matches_str(join_ref: Option<&str>, current: Option<&str>) -> bool {
    match join_ref {
        None => true,
        Some(r) => Some(r) == current,
    }
}

impl FrameHandler for PhoenixHandler {
    type Completion = Box<Done>;

    fn on_text(&mut self, text: &Utf8Bytes, out: &mut Vec<Outbound>) -> Result<(), CloseReason> {
        match decode(text.as_str()) {
            Ok(frame) => self.dispatch(frame, text, out),
            Err(err) => {
                self.metrics.malformed.increment(err.kind());
                tracing::debug!(session = self.session, error = %err, "malformed frame");
                Err(CloseReason::MalformedFrame)
            }
        }
    }

    fn on_binary(&mut self, data: Bytes, out: &mut Vec<Outbound>) -> Result<(), CloseReason> {
        self.binary(&data, out)
    }

    fn completions(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Box<Done>>> {
        self.hooked
            .as_deref_mut()
            .and_then(HookState::take_receiver)
    }

    fn on_completion(
        &mut self,
        done: Box<Done>,
        out: &mut Vec<Outbound>,
    ) -> Result<Expiry, CloseReason> {
        self.completed(*done, out)
    }

    fn on_expiry(&mut self) -> bool {
        let (session, user) = (self.session, self.user.clone());
        self.hooked
            .as_deref_mut()
            .is_some_and(|h| h.refresh(session, &user))
    }
}

impl Drop for PhoenixHandler {
    fn drop(&mut self) {
        // The channels are taken whole: ending each needs no copy of its
        // name, and a session's last moments allocate nothing.
        let channels = self.channels.take_all();
        let mut discard = Vec::new();
        for (topic, joined) in channels {
            self.end_joined(&topic, joined, Terminate::Closed, &mut discard);
        }
    }
}

#[cfg(test)]
mod tests;
