//! Binary pushes (V2 binary frames, phoenix.js's `ArrayBuffer` payloads):
//! the same admission as a JSON push (ref bounds, client rate, name bounds,
//! reserved events, an open channel with the right `join_ref`), then a binary
//! broadcast to the members and a JSON `ok` reply to the pusher.
//!
//! On history namespaces a binary broadcast takes the next offset like a JSON
//! one and is replayed as binary (its position is not in the frame: the
//! layout has no ref slot; docs/protocol.md §2.2 says how a client counts).
//! Binary payloads never go to hooks (their requests are JSON): hooked
//! namespaces refuse them with a reason.

use bytes::Bytes;

use super::{ref_matches_str, PhoenixHandler};
use crate::config::Publish;
use crate::protocol::binary::{decode_push, BinaryPush};
use crate::protocol::limits::is_reserved_event;
use crate::protocol::{encode, ClientRefusal, CloseReason, MalformedKind, ReplyError};
use crate::pubsub::mailbox::Outbound;

impl PhoenixHandler {
    fn binary_reply(
        out: &mut Vec<Outbound>,
        p: &BinaryPush<'_>,
        join_ref: Option<&str>,
        status: &str,
        response: &str,
    ) {
        let text = encode::reply(join_ref, p.ref_, p.topic, status, response);
        out.push(Outbound::Text(text.into()));
    }

    fn binary_refused(&self, out: &mut Vec<Outbound>, p: &BinaryPush<'_>, why: ClientRefusal) {
        self.metrics.client_refusals.increment(why);
        let reason = encode::reason(why.reply().reason());
        Self::binary_reply(out, p, p.join_ref, "error", &reason);
    }

    pub(super) fn binary(
        &mut self,
        data: &Bytes,
        out: &mut Vec<Outbound>,
    ) -> Result<(), CloseReason> {
        let p = match decode_push(data) {
            Ok(p) => p,
            Err(err) => {
                self.metrics.malformed.increment(MalformedKind::BadBinary);
                tracing::debug!(session = self.session, error = %err, "malformed binary frame");
                return Err(CloseReason::MalformedFrame);
            }
        };
        if !self.admitted(p.join_ref, p.ref_)? {
            let reason = encode::reason(ReplyError::RateLimited.reason());
            Self::binary_reply(out, &p, p.join_ref, "error", &reason);
            return Ok(());
        }
        if p.topic.len() > self.config.max_topic_length {
            self.metrics
                .client_refusals
                .increment(ClientRefusal::TopicTooLong);
            let reason = encode::reason(ReplyError::TopicTooLong.reason());
            Self::binary_reply(out, &p, None, "error", &reason);
            return Ok(());
        }
        if p.event.len() > self.config.max_event_length {
            self.binary_refused(out, &p, ClientRefusal::EventTooLong);
            return Ok(());
        }
        let Some(joined) = self.channels.get(p.topic) else {
            let reason = encode::reason(ReplyError::UnmatchedTopic.reason());
            Self::binary_reply(out, &p, None, "error", &reason);
            return Ok(());
        };
        if !ref_matches_str(p.join_ref, joined.join_ref.as_deref()) {
            return Ok(());
        }
        if is_reserved_event(p.event) {
            self.binary_refused(out, &p, ClientRefusal::ReservedEvent);
            return Ok(());
        }
        let ns = &joined.namespace;
        if ns.publish == Publish::Server {
            let reason = encode::reason(ReplyError::PublishNotAllowed.reason());
            Self::binary_reply(out, &p, p.join_ref, "error", &reason);
            return Ok(());
        }
        let hooked = ns.join_hook.is_some() || ns.publish_hook.is_some() || ns.rpc_hook.is_some();
        if hooked {
            self.binary_refused(out, &p, ClientRefusal::BinaryNotAccepted);
            return Ok(());
        }
        let exclude = ns.broadcast_from.then_some(self.session);
        let ns = std::sync::Arc::clone(ns);
        // Names are bounded far below the layout's 255 bytes.
        let Some(published) = self
            .node
            .publish_binary(&ns, p.topic, p.event, p.payload, exclude)
        else {
            self.binary_refused(out, &p, ClientRefusal::TopicTooLong);
            return Ok(());
        };
        // As for a JSON push: the offset when this node assigned it.
        let response = published
            .offset
            .map_or_else(|| String::from("{}"), |o| format!("{{\"offset\":{o}}}"));
        Self::binary_reply(out, &p, p.join_ref, "ok", &response);
        Ok(())
    }
}
