//! The one table of how a session ends and which reply errors exist, with the
//! client's expected reaction next to each (docs/protocol.md §4.3: phoenix.js before
//! 1.8.16 does not reconnect after 1000, so a close the client should come back
//! from never uses 1000).

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Why a session ended. Each variant is a `reason` label of
/// `myriad_sessions_closed_total` and maps to one close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The client sent a close frame or the connection ended cleanly. No frame is
    /// sent back beyond the close echo.
    ClientClosed,
    /// The TCP connection failed (reset, broken pipe). Nothing can be sent.
    ConnectionLost,
    /// No frame for `idle_timeout`. 1001: a live client reconnects.
    IdleTimeout,
    /// Graceful drain on SIGTERM/SIGINT. 1001: the client reconnects elsewhere.
    Shutdown,
    /// Mailbox overflow under `slow_consumer = "disconnect"`. 1013 (try again later).
    SlowConsumer,
    /// A batch could not be written within `write_timeout`. No frame can be sent.
    WriteTimeout,
    /// More than `max_restarts` channel crashes in `max_seconds`. 1011.
    RestartIntensity,
    /// A panic outside a channel handler. 1011.
    SessionPanic,
    /// A text frame that is not a V2 frame. 1007 (inconsistent data); the client
    /// reconnects, which is what Phoenix's crash of the transport amounts to.
    MalformedFrame,
    /// A text frame whose payload is not UTF-8. 1007.
    InvalidUtf8,
    /// A message over `max_message_size` or frame over `max_frame_size`. 1009.
    MessageTooBig,
    /// A WebSocket protocol violation (bad opcode, unmasked frame, ...). 1002.
    ProtocolViolation,
    /// The server API disconnected the user (`POST /api/disconnect`). 1001, as
    /// Phoenix's socket-id disconnect: the client reconnects (and a revoked
    /// token then gets 403).
    Disconnected,
    /// Over `client_rate` for `abuse_window`. 1008 (policy violation).
    RateLimitAbuse,
    /// The connect token's `exp` passed. 4001: the client reconnects, and must
    /// bring a fresh token (phoenix.js re-evaluates `params` given as a function).
    TokenExpired,
    /// An SSE stream reached `sse_max_age`: the reader reconnects (anywhere,
    /// spreading readers over the nodes) and resumes from its last id. 1001.
    Rotated,
}

impl CloseReason {
    pub const ALL: [CloseReason; 16] = [
        CloseReason::ClientClosed,
        CloseReason::ConnectionLost,
        CloseReason::IdleTimeout,
        CloseReason::Shutdown,
        CloseReason::SlowConsumer,
        CloseReason::WriteTimeout,
        CloseReason::RestartIntensity,
        CloseReason::SessionPanic,
        CloseReason::MalformedFrame,
        CloseReason::InvalidUtf8,
        CloseReason::MessageTooBig,
        CloseReason::ProtocolViolation,
        CloseReason::TokenExpired,
        CloseReason::Disconnected,
        CloseReason::RateLimitAbuse,
        CloseReason::Rotated,
    ];

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::ConnectionLost => "connection_lost",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Shutdown => "shutdown",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::WriteTimeout => "write_timeout",
            CloseReason::RestartIntensity => "restart_intensity",
            CloseReason::SessionPanic => "session_panic",
            CloseReason::MalformedFrame => "malformed_frame",
            CloseReason::InvalidUtf8 => "invalid_utf8",
            CloseReason::MessageTooBig => "message_too_big",
            CloseReason::ProtocolViolation => "protocol_violation",
            CloseReason::TokenExpired => "token_expired",
            CloseReason::Disconnected => "disconnected",
            CloseReason::Rotated => "rotated",
            CloseReason::RateLimitAbuse => "rate_limit_abuse",
        }
    }

    /// The close frame the server sends, or `None` when the connection is
    /// already unusable or the client started the close.
    pub fn close_code(self) -> Option<CloseCode> {
        match self {
            CloseReason::ClientClosed | CloseReason::ConnectionLost | CloseReason::WriteTimeout => {
                None
            }
            CloseReason::IdleTimeout | CloseReason::Shutdown | CloseReason::Rotated => {
                Some(CloseCode::Away)
            }
            // Not 1001: a revoked client must not just come back (phoenix.js
            // reconnects on anything but its own closes); the app should
            // watch for 4003 and fetch a new token or sign the user out.
            CloseReason::Disconnected => Some(CloseCode::Library(4003)),
            CloseReason::SlowConsumer => Some(CloseCode::Again),
            CloseReason::RestartIntensity | CloseReason::SessionPanic => Some(CloseCode::Error),
            CloseReason::MalformedFrame | CloseReason::InvalidUtf8 => Some(CloseCode::Invalid),
            CloseReason::MessageTooBig => Some(CloseCode::Size),
            CloseReason::ProtocolViolation => Some(CloseCode::Protocol),
            CloseReason::TokenExpired => Some(CloseCode::Library(4001)),
            CloseReason::RateLimitAbuse => Some(CloseCode::Policy),
        }
    }

    /// Human-readable close reason text sent in the close frame.
    pub fn text(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client closed",
            CloseReason::ConnectionLost => "connection lost",
            CloseReason::IdleTimeout => "idle timeout",
            CloseReason::Shutdown => "server shutting down",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::WriteTimeout => "write timeout",
            CloseReason::RestartIntensity => "too many channel crashes",
            CloseReason::SessionPanic => "internal error",
            CloseReason::MalformedFrame => "malformed frame",
            CloseReason::InvalidUtf8 => "invalid UTF-8",
            CloseReason::MessageTooBig => "message too big",
            CloseReason::ProtocolViolation => "protocol violation",
            CloseReason::TokenExpired => "token expired",
            CloseReason::Disconnected => "revoked: get a new token",
            CloseReason::RateLimitAbuse => "rate limit exceeded",
            CloseReason::Rotated => "stream rotated: reconnect",
        }
    }
}

/// Error replies (`phx_reply` with `status: "error"`); the string is the
/// `reason` field the client sees. The client retries a refused join forever
/// (docs/protocol.md §4.4) and treats a push error as final for that push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    /// Join of a topic no namespace routes, or push to a topic not joined.
    /// Sent with a null join_ref.
    UnmatchedTopic,
    /// The join handler panicked; the connection lives on.
    JoinCrashed,
    /// A client event whose payload is not a JSON object cannot be broadcast.
    PayloadNotObject,
    /// A client push on a `publish = "server"` namespace.
    PublishNotAllowed,
    /// The connect token's `topics` claim does not cover the topic.
    Unauthorized,
    /// Over `client_rate`: the frame was not processed.
    RateLimited,
    /// A join beyond `max_topics_per_session` (Phoenix main's wording).
    TooManyChannels,
    /// A push of an event only the server may send (`phx_*`, `presence_*`, ...).
    ReservedEvent,
    /// A topic longer than `max_topic_length`.
    TopicTooLong,
    /// An event name longer than `max_event_length`.
    EventTooLong,
    /// A payload nested deeper than `max_payload_depth`.
    PayloadTooDeep,
    /// A join whose presence meta is over `presence_max_meta_bytes`.
    PresenceMetaTooLarge,
    /// A hook call failed (timeout, error, breaker open, overloaded).
    BackendUnavailable,
    /// More than `[hooks] max_pending_per_session` frames wait on hooks.
    TooManyPending,
    /// A binary push where binary payloads cannot go (history or hooks).
    BinaryNotAccepted,
}

impl ReplyError {
    pub fn reason(self) -> &'static str {
        match self {
            ReplyError::UnmatchedTopic => "unmatched topic",
            ReplyError::JoinCrashed => "join crashed",
            ReplyError::PayloadNotObject => "payload must be a JSON object",
            ReplyError::PublishNotAllowed => "publish not allowed",
            ReplyError::Unauthorized => "unauthorized",
            ReplyError::RateLimited => "rate_limited",
            ReplyError::TooManyChannels => "too many channels joined",
            ReplyError::ReservedEvent => "reserved event",
            ReplyError::TopicTooLong => "topic too long",
            ReplyError::EventTooLong => "event too long",
            ReplyError::PayloadTooDeep => "payload too deeply nested",
            ReplyError::PresenceMetaTooLarge => "presence meta too large",
            ReplyError::BackendUnavailable => "backend unavailable",
            ReplyError::TooManyPending => "too many pending",
            ReplyError::BinaryNotAccepted => "binary payloads are not accepted on this topic",
        }
    }
}

/// Why a join was refused (the `reason` label of `myriad_join_refusals_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    /// No namespace serves the topic.
    UnmatchedTopic,
    /// The connect token's `topics` claim does not allow it.
    Unauthorized,
    /// `max_topics_per_session` reached.
    TooManyChannels,
    /// The channel's join callback said no.
    Refused,
    /// The channel's join callback panicked.
    Crashed,
    /// The presence meta is over `presence_max_meta_bytes`.
    MetaTooLarge,
    /// The join hook refused.
    BackendDenied,
    /// The join hook failed (timeout, error, breaker open, overloaded).
    BackendUnavailable,
}

impl JoinRefusal {
    pub const ALL: [JoinRefusal; 8] = [
        JoinRefusal::UnmatchedTopic,
        JoinRefusal::Unauthorized,
        JoinRefusal::TooManyChannels,
        JoinRefusal::Refused,
        JoinRefusal::Crashed,
        JoinRefusal::MetaTooLarge,
        JoinRefusal::BackendDenied,
        JoinRefusal::BackendUnavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            JoinRefusal::UnmatchedTopic => "unmatched_topic",
            JoinRefusal::Unauthorized => "unauthorized",
            JoinRefusal::TooManyChannels => "too_many_channels",
            JoinRefusal::Refused => "refused",
            JoinRefusal::Crashed => "crashed",
            JoinRefusal::MetaTooLarge => "meta_too_large",
            JoinRefusal::BackendDenied => "backend_denied",
            JoinRefusal::BackendUnavailable => "backend_unavailable",
        }
    }
}

/// Why an upgrade request was answered with an HTTP error instead of 101 (the
/// `reason` label of `myriad_handshakes_rejected_total`; admission's 503s are
/// counted as `Shed` instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeRejection {
    /// `vsn` missing or not 2.0.x (400).
    UnsupportedVsn,
    /// Not an RFC 6455 upgrade (400 / 426).
    NotWebSocket,
    /// `/ws/echo` without `enable_echo` (404).
    EndpointDisabled,
    /// The request head did not arrive within `handshake_timeout`.
    HandshakeTimeout,
    /// The node is draining (503).
    Draining,
    /// Missing, invalid or expired connect token (403).
    Unauthorized,
    /// Origin not in `allowed_origins` (403).
    OriginNotAllowed,
    /// A token issued before its user was revoked (403).
    Revoked,
    /// No or a malformed PROXY protocol header (`proxy_protocol`): closed.
    ProxyProtocol,
    /// The connect hook refused (its status, default 403).
    BackendDenied,
    /// The connect hook failed (503 + Retry-After).
    BackendUnavailable,
    /// The TLS handshake failed (no HTTP answer is possible).
    Tls,
}

impl HandshakeRejection {
    pub const ALL: [HandshakeRejection; 12] = [
        HandshakeRejection::UnsupportedVsn,
        HandshakeRejection::NotWebSocket,
        HandshakeRejection::EndpointDisabled,
        HandshakeRejection::HandshakeTimeout,
        HandshakeRejection::Draining,
        HandshakeRejection::Unauthorized,
        HandshakeRejection::OriginNotAllowed,
        HandshakeRejection::Revoked,
        HandshakeRejection::ProxyProtocol,
        HandshakeRejection::BackendDenied,
        HandshakeRejection::BackendUnavailable,
        HandshakeRejection::Tls,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HandshakeRejection::UnsupportedVsn => "unsupported_vsn",
            HandshakeRejection::NotWebSocket => "not_websocket",
            HandshakeRejection::EndpointDisabled => "endpoint_disabled",
            HandshakeRejection::HandshakeTimeout => "handshake_timeout",
            HandshakeRejection::Draining => "draining",
            HandshakeRejection::Unauthorized => "unauthorized",
            HandshakeRejection::OriginNotAllowed => "origin_not_allowed",
            HandshakeRejection::Revoked => "revoked",
            HandshakeRejection::ProxyProtocol => "proxy_protocol",
            HandshakeRejection::BackendDenied => "backend_denied",
            HandshakeRejection::BackendUnavailable => "backend_unavailable",
            HandshakeRejection::Tls => "tls",
        }
    }
}

/// Why an `/api` or admin request was refused by the protective layers (the
/// `reason` label of `myriad_http_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRejection {
    /// `http_concurrency_limit` reached: 503 + Retry-After.
    Overloaded,
    /// `http_timeout` passed: 504.
    Timeout,
    /// Any other layer error: 500.
    Error,
    /// Too many wrong API keys from one address: 429.
    Throttled,
    /// A request body over its bound (`longpoll_max_body`): 413.
    TooLarge,
}

impl HttpRejection {
    pub const ALL: [HttpRejection; 5] = [
        HttpRejection::Overloaded,
        HttpRejection::Timeout,
        HttpRejection::Error,
        HttpRejection::Throttled,
        HttpRejection::TooLarge,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HttpRejection::Overloaded => "overloaded",
            HttpRejection::Timeout => "timeout",
            HttpRejection::Error => "error",
            HttpRejection::Throttled => "throttled",
            HttpRejection::TooLarge => "too_large",
        }
    }
}

/// Why an inbound frame was refused as malformed (the `kind` label of
/// `myriad_malformed_frames_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedKind {
    BadJson,
    NotArray,
    WrongArity,
    BadField,
    InvalidUtf8,
    /// Over `max_message_size` / `max_frame_size`.
    TooBig,
    /// A `ref` or `join_ref` over `max_ref_length`.
    RefTooLong,
    /// A binary frame that is not a V2 binary push.
    BadBinary,
}

impl MalformedKind {
    pub const ALL: [MalformedKind; 8] = [
        MalformedKind::BadJson,
        MalformedKind::NotArray,
        MalformedKind::WrongArity,
        MalformedKind::BadField,
        MalformedKind::InvalidUtf8,
        MalformedKind::TooBig,
        MalformedKind::RefTooLong,
        MalformedKind::BadBinary,
    ];

    pub fn label(self) -> &'static str {
        match self {
            MalformedKind::BadJson => "bad_json",
            MalformedKind::NotArray => "not_array",
            MalformedKind::WrongArity => "wrong_arity",
            MalformedKind::BadField => "bad_field",
            MalformedKind::InvalidUtf8 => "invalid_utf8",
            MalformedKind::TooBig => "too_big",
            MalformedKind::RefTooLong => "ref_too_long",
            MalformedKind::BadBinary => "bad_binary",
        }
    }
}

/// A client frame refused with an error reply because of what it carries (the
/// `reason` label of `myriad_client_refusals_total`); the session lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRefusal {
    ReservedEvent,
    TopicTooLong,
    EventTooLong,
    PayloadTooDeep,
    /// More than `[hooks] max_pending_per_session` frames wait on hooks.
    TooManyPending,
    /// A binary push on a history or hooked namespace.
    BinaryNotAccepted,
}

impl ClientRefusal {
    pub const ALL: [ClientRefusal; 6] = [
        ClientRefusal::ReservedEvent,
        ClientRefusal::TopicTooLong,
        ClientRefusal::EventTooLong,
        ClientRefusal::PayloadTooDeep,
        ClientRefusal::TooManyPending,
        ClientRefusal::BinaryNotAccepted,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ClientRefusal::ReservedEvent => "reserved_event",
            ClientRefusal::TopicTooLong => "topic_too_long",
            ClientRefusal::EventTooLong => "event_too_long",
            ClientRefusal::PayloadTooDeep => "payload_too_deep",
            ClientRefusal::TooManyPending => "too_many_pending",
            ClientRefusal::BinaryNotAccepted => "binary_not_accepted",
        }
    }

    /// The error reply the client gets.
    pub fn reply(self) -> ReplyError {
        match self {
            ClientRefusal::ReservedEvent => ReplyError::ReservedEvent,
            ClientRefusal::TopicTooLong => ReplyError::TopicTooLong,
            ClientRefusal::EventTooLong => ReplyError::EventTooLong,
            ClientRefusal::PayloadTooDeep => ReplyError::PayloadTooDeep,
            ClientRefusal::TooManyPending => ReplyError::TooManyPending,
            ClientRefusal::BinaryNotAccepted => ReplyError::BinaryNotAccepted,
        }
    }
}

/// Which backend hook a call is (the `hook` label of the hook metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookKind {
    Connect,
    Refresh,
    Join,
    Publish,
    Rpc,
}

impl HookKind {
    pub const ALL: [HookKind; 5] = [
        HookKind::Connect,
        HookKind::Refresh,
        HookKind::Join,
        HookKind::Publish,
        HookKind::Rpc,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HookKind::Connect => "connect",
            HookKind::Refresh => "refresh",
            HookKind::Join => "join",
            HookKind::Publish => "publish",
            HookKind::Rpc => "rpc",
        }
    }

    /// Whether a call may be sent again after a failure (it changes nothing
    /// at the backend, or the backend can tell by the request id).
    pub fn is_repeatable(self) -> bool {
        matches!(self, HookKind::Connect | HookKind::Refresh | HookKind::Join)
    }
}

/// How a hook call ended (the `result` label of `myriad_hook_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookResult {
    /// The backend allowed.
    Ok,
    /// The backend refused (an `error` answer).
    Denied,
    /// No answer within the hook's timeout.
    Timeout,
    /// Connection failed or a non-2xx status.
    Error,
    /// A 2xx answer that is not the documented JSON (or too large).
    Garbage,
    /// The endpoint's breaker is open: failed at once.
    BreakerOpen,
    /// `max_in_flight` or `max_pending_per_session` reached: failed at once.
    Overloaded,
}

impl HookResult {
    pub const ALL: [HookResult; 7] = [
        HookResult::Ok,
        HookResult::Denied,
        HookResult::Timeout,
        HookResult::Error,
        HookResult::Garbage,
        HookResult::BreakerOpen,
        HookResult::Overloaded,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HookResult::Ok => "ok",
            HookResult::Denied => "denied",
            HookResult::Timeout => "timeout",
            HookResult::Error => "error",
            HookResult::Garbage => "garbage",
            HookResult::BreakerOpen => "breaker_open",
            HookResult::Overloaded => "overloaded",
        }
    }
}

/// What became of webhook events (the `outcome` label of
/// `myriad_webhook_events_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// Taken into the spool.
    Queued,
    /// Acknowledged (2xx) by the receiver.
    Delivered,
    /// Dropped: the queue to the spool was full.
    QueueFull,
    /// Dropped: the spool was over `spool_max_bytes` (oldest first).
    SpoolFull,
    /// Dropped: `max_attempts` failed.
    RetriesExhausted,
}

impl WebhookOutcome {
    pub const ALL: [WebhookOutcome; 5] = [
        WebhookOutcome::Queued,
        WebhookOutcome::Delivered,
        WebhookOutcome::QueueFull,
        WebhookOutcome::SpoolFull,
        WebhookOutcome::RetriesExhausted,
    ];

    pub fn label(self) -> &'static str {
        match self {
            WebhookOutcome::Queued => "queued",
            WebhookOutcome::Delivered => "delivered",
            WebhookOutcome::QueueFull => "queue_full",
            WebhookOutcome::SpoolFull => "spool_full",
            WebhookOutcome::RetriesExhausted => "retries_exhausted",
        }
    }
}

/// How one webhook POST ended (the `result` label of `myriad_webhook_posts_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookPost {
    Ok,
    Failed,
}

impl WebhookPost {
    pub const ALL: [WebhookPost; 2] = [WebhookPost::Ok, WebhookPost::Failed];

    pub fn label(self) -> &'static str {
        match self {
            WebhookPost::Ok => "ok",
            WebhookPost::Failed => "failed",
        }
    }
}

/// How a reload of the listener's TLS certificate ended (the `result` label
/// of `myriad_tls_reloads_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsReload {
    Ok,
    Error,
}

impl TlsReload {
    pub const ALL: [TlsReload; 2] = [TlsReload::Ok, TlsReload::Error];

    pub fn label(self) -> &'static str {
        match self {
            TlsReload::Ok => "ok",
            TlsReload::Error => "error",
        }
    }
}

/// How a fetch of the identity provider's keys ended (the `result` label
/// of `myriad_jwks_refreshes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksFetch {
    Ok,
    Error,
}

impl JwksFetch {
    pub const ALL: [JwksFetch; 2] = [JwksFetch::Ok, JwksFetch::Error];

    pub fn label(self) -> &'static str {
        match self {
            JwksFetch::Ok => "ok",
            JwksFetch::Error => "error",
        }
    }
}

/// Why a message from the broker was dropped (the `reason` label of
/// `myriad_broker_refused_total`): other nodes are checked like clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerRefusal {
    /// Not the wire format (bad JSON, missing fields).
    Malformed,
    /// A wire version newer than this node reads.
    Version,
    /// An empty or over-long origin node id.
    Origin,
    /// The frame inside is not a broadcast this topic could carry (shape,
    /// topic, a reserved event, a ref slot where none belongs).
    Frame,
    /// Unsigned or badly signed while `cluster_secret` is set.
    Signature,
    /// Sync requests from one node faster than one per heartbeat.
    SyncRate,
    /// A signed message seen before, outside `cluster_replay_window`, or
    /// without a stamp.
    Replay,
}

impl BrokerRefusal {
    pub const ALL: [BrokerRefusal; 7] = [
        BrokerRefusal::Malformed,
        BrokerRefusal::Version,
        BrokerRefusal::Origin,
        BrokerRefusal::Frame,
        BrokerRefusal::Signature,
        BrokerRefusal::SyncRate,
        BrokerRefusal::Replay,
    ];

    pub fn label(self) -> &'static str {
        match self {
            BrokerRefusal::Malformed => "malformed",
            BrokerRefusal::Version => "version",
            BrokerRefusal::Origin => "origin",
            BrokerRefusal::Frame => "frame",
            BrokerRefusal::Signature => "signature",
            BrokerRefusal::SyncRate => "sync_rate",
            BrokerRefusal::Replay => "replay",
        }
    }
}
