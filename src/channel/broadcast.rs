//! The default channel: every client event on a joined topic is broadcast to
//! all members (sender included) and the pusher gets `{"status":"ok"}`.

use serde_json::value::RawValue;

use super::{Channel, ChannelCtx, Reply};
use crate::protocol::{encode, ReplyError};

#[derive(Debug, Default, Clone, Copy)]
pub struct BroadcastChannel;

impl Channel for BroadcastChannel {
    fn handle_in(&mut self, ctx: &mut ChannelCtx<'_>, event: &str, payload: &RawValue) -> Reply {
        // Server-to-client payloads must be objects (PROTOCOL.md §2.1), so a
        // non-object is refused here rather than relayed to every member.
        if !payload.get().trim_start().starts_with('{') {
            return Reply::Error(encode::reason(ReplyError::PayloadNotObject.reason()));
        }
        ctx.broadcast(event, payload);
        Reply::Ok(String::from("{}"))
    }
}
