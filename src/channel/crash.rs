//! Fault injection (`--enable-fault-injection`, namespace `crash:*`): a
//! broadcast channel that panics on demand, for supervision tests and demos.
//!
//! - event `panic`: the handler panics (channel crash → `phx_error`);
//! - join params `{"crash_on_join": true}`: the join handler panics
//!   (reply `join crashed`).
//!
//! Never routed unless fault injection is enabled.

use serde_json::value::RawValue;

use super::{BroadcastChannel, Channel, ChannelCtx, JoinResult, Reply};

#[derive(Debug, Default, Clone, Copy)]
pub struct CrashChannel;

/// Event that makes the handler panic.
pub const PANIC_EVENT: &str = "panic";

impl Channel for CrashChannel {
    fn join(&mut self, _ctx: &mut ChannelCtx<'_>, params: &RawValue) -> JoinResult {
        let wants_crash = serde_json::from_str::<serde_json::Value>(params.get())
            .ok()
            .and_then(|v| v.get("crash_on_join").and_then(|c| c.as_bool()))
            .unwrap_or(false);
        if wants_crash {
            panic!("fault injection: crash_on_join");
        }
        JoinResult::Ok(String::from("{}"))
    }

    fn handle_in(&mut self, ctx: &mut ChannelCtx<'_>, event: &str, payload: &RawValue) -> Reply {
        if event == PANIC_EVENT {
            panic!(
                "fault injection: channel handler panic on topic {}",
                ctx.topic
            );
        }
        BroadcastChannel.handle_in(ctx, event, payload)
    }
}
