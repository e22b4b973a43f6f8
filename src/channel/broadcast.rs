//! The default channel: every client event on a joined topic is broadcast to
//! all members (sender included unless `broadcast_from`) and the pusher gets
//! `{"status":"ok"}` (with `{"offset": N}` on history namespaces). On
//! `publish = "server"` namespaces clients may not publish.

use serde_json::value::RawValue;

use super::{Channel, ChannelCtx, Reply};
use crate::config::Publish;
use crate::protocol::{encode, ReplyError};

#[derive(Debug, Default, Clone, Copy)]
pub struct BroadcastChannel;

impl Channel for BroadcastChannel {
    fn handle_in(&mut self, ctx: &mut ChannelCtx<'_>, event: &str, payload: &RawValue) -> Reply {
        // Server-to-client payloads must be objects (docs/protocol.md §2.1), so a
        // non-object is refused here rather than relayed to every member.
        if ctx.namespace.publish == Publish::Server {
            return Reply::Error(encode::reason(ReplyError::PublishNotAllowed.reason()));
        }
        if !payload.get().trim_start().starts_with('{') {
            return Reply::Error(encode::reason(ReplyError::PayloadNotObject.reason()));
        }
        match ctx.broadcast(event, payload) {
            Some(offset) => Reply::Ok(format!("{{\"offset\":{offset}}}")),
            None => Reply::Ok(String::from("{}")),
        }
    }
}
