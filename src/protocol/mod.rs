//! Phoenix Channels V2 frames: decoding what clients send, encoding what the
//! server sends, and the one table of close codes and reply errors.
//!
//! This module owns the wire format and nothing else: it never does I/O, never
//! touches a socket or a session, and never allocates per subscriber (broadcasts
//! are encoded once into shared bytes by [`encode::broadcast`]).

pub mod binary;
pub mod close;
pub mod decode;
pub mod encode;
pub mod limits;
pub mod ref_slot;

pub use close::{
    BrokerRefusal, ClientRefusal, CloseReason, HandshakeRejection, HookKind, HookResult,
    HttpRejection, JoinRefusal, JwksFetch, MalformedKind, ReplyError, TlsReload, WebhookOutcome,
    WebhookPost,
};
pub use decode::{decode, DecodeError, InFrame};
pub use ref_slot::{
    broadcast_fields, broadcast_parts, check_broadcast, history_position, history_ref,
    RefSlotFrame, SlotKind,
};

/// Which protocol a session speaks (the `endpoint` label of session metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Phoenix Channels V2 on `/socket/websocket`.
    Phoenix,
    /// Raw echo on `/ws/echo`.
    Echo,
    /// Server-Sent Events on `/sse`.
    Sse,
    /// Phoenix long-poll on `/socket/longpoll`.
    Longpoll,
}

impl Endpoint {
    pub const ALL: [Endpoint; 4] = [
        Endpoint::Phoenix,
        Endpoint::Echo,
        Endpoint::Sse,
        Endpoint::Longpoll,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Phoenix => "phoenix",
            Endpoint::Echo => "echo",
            Endpoint::Sse => "sse",
            Endpoint::Longpoll => "longpoll",
        }
    }
}

/// The topic reserved for heartbeats.
pub const PHOENIX_TOPIC: &str = "phoenix";

/// Control events (docs/protocol.md §3.1).
pub mod event {
    pub const HEARTBEAT: &str = "heartbeat";
    pub const JOIN: &str = "phx_join";
    pub const LEAVE: &str = "phx_leave";
    pub const REPLY: &str = "phx_reply";
    pub const ERROR: &str = "phx_error";
    pub const CLOSE: &str = "phx_close";
}

/// Protocol versions this server speaks on `/socket/websocket`; `vsn` must match
/// one of these by major.minor (Phoenix accepts any `2.0.x` for V2).
pub const SUPPORTED_VSN: &[&str] = &["2.0.0"];

/// Whether a `vsn` query value selects the V2 JSON serializer.
pub fn vsn_supported(vsn: &str) -> bool {
    let mut parts = vsn.split('.');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("2"), Some("0"), Some(patch), None) if !patch.is_empty() && patch.bytes().all(|b| b.is_ascii_digit())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vsn_matching_follows_phoenix_tilde_2_0() {
        assert!(vsn_supported("2.0.0"));
        assert!(vsn_supported("2.0.7"));
        assert!(!vsn_supported("1.0.0"));
        assert!(!vsn_supported("2.1.0"));
        assert!(!vsn_supported("2.0"));
        assert!(!vsn_supported("2.0.x"));
        assert!(!vsn_supported("123.1.1"));
        assert!(!vsn_supported(""));
    }
}
