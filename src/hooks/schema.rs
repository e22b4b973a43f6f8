//! What myriad sends each hook and what it reads back (README "Your
//! backend"; the OpenAPI document lists them under `components`).
//!
//! Every request has `id` (unique; send it back as an idempotency key),
//! `node` and `hook`. The backend answers HTTP 200 with either
//! `{"result": {...}}` (allowed) or `{"error": {"reason": "...", ...}}`
//! (refused); any other status, a body that is not one of those, or one over
//! `max_response_bytes` is a failure, not a refusal.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Sent before an upgrade completes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConnectRequest {
    pub id: String,
    pub node: String,
    /// Always `"connect"`.
    pub hook: &'static str,
    /// The client's address (through `trusted_proxies`).
    pub remote_addr: String,
    /// The socket's query parameters (phoenix.js `params`), minus `token` and `vsn`.
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    /// The verified connect token's claims, when the client sent one.
    #[schema(value_type = Option<Object>)]
    pub claims: Option<Value>,
    /// The request headers named in `[hooks] forward_headers`.
    pub headers: BTreeMap<String, String>,
}

/// The connect hook's `result`: who this is, for how long, and what it may join.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectResult {
    /// The user id (presence key, API disconnects); defaults to the token's
    /// `sub`. At most 1024 bytes (what other nodes accept as a presence key).
    #[serde(default, deserialize_with = "bounded_user")]
    pub user: Option<String>,
    /// Seconds until the connection expires (then: the refresh hook, or 4001).
    #[serde(default)]
    pub expires_in: Option<u64>,
    /// Topic patterns the connection may join (`room:*`); default: the
    /// token's, or all. At most 1024 patterns of at most 1024 bytes.
    #[serde(default, deserialize_with = "bounded_topics")]
    pub topics: Option<Vec<String>>,
    /// Anything: sent back with every later hook call of this connection.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub info: Option<Value>,
}

/// Longest user id, topic pattern, and most patterns a connect answer may
/// carry: an answer past them is garbage (counted), not an identity.
pub const MAX_USER_BYTES: usize = 1024;
const MAX_TOPIC_PATTERNS: usize = 1024;

fn bounded_user<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let user = Option::<String>::deserialize(d)?;
    if user.as_ref().is_some_and(|u| u.len() > MAX_USER_BYTES) {
        return Err(serde::de::Error::custom("user longer than 1024 bytes"));
    }
    Ok(user)
}

fn bounded_topics<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let topics = Option::<Vec<String>>::deserialize(d)?;
    let too_many = topics.as_ref().is_some_and(|t| {
        t.len() > MAX_TOPIC_PATTERNS || t.iter().any(|p| p.len() > MAX_USER_BYTES)
    });
    if too_many {
        return Err(serde::de::Error::custom(
            "too many or too long topic patterns",
        ));
    }
    Ok(topics)
}

/// Sent when a connection's expiry passes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RefreshRequest {
    pub id: String,
    pub node: String,
    /// Always `"refresh"`.
    pub hook: &'static str,
    pub session: u64,
    pub user: String,
    #[schema(value_type = Option<Object>)]
    pub info: Option<Value>,
}

/// The refresh hook's `result`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshResult {
    /// Seconds from now until the next refresh.
    pub expires_in: u64,
}

/// Sent on `phx_join` to a namespace with a `join_hook`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JoinRequest {
    pub id: String,
    pub node: String,
    /// Always `"join"`.
    pub hook: &'static str,
    pub session: u64,
    pub user: String,
    /// The connect hook's `info`.
    #[schema(value_type = Option<Object>)]
    pub info: Option<Value>,
    pub topic: String,
    /// The join's payload (phoenix.js `channel(topic, params)`).
    #[schema(value_type = Object)]
    pub params: Value,
}

/// The join hook's `result`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinResult {
    /// The `ok` reply's payload (default `{}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub response: Option<Map<String, Value>>,
    /// The presence meta to track (default: from the join params).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub meta: Option<Map<String, Value>>,
    /// Anything: sent back with this channel's publish and rpc calls.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub info: Option<Value>,
}

/// Sent for a client push on a namespace with a `publish_hook` or `rpc_hook`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PushRequest {
    pub id: String,
    pub node: String,
    /// `"publish"` or `"rpc"`.
    pub hook: &'static str,
    pub session: u64,
    pub user: String,
    #[schema(value_type = Option<Object>)]
    pub info: Option<Value>,
    /// The join hook's `info` for this channel.
    #[schema(value_type = Option<Object>)]
    pub channel_info: Option<Value>,
    pub topic: String,
    pub event: String,
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// The publish hook's `result`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishResult {
    /// Broadcast (and store) this instead of the client's payload.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<Map<String, Value>>,
    /// The pusher's `ok` reply payload (default `{}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub response: Option<Map<String, Value>>,
}

/// The rpc hook's `result`: the pusher's reply, nothing broadcast.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RpcResult {
    /// The `ok` reply's payload (default `{}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub response: Option<Map<String, Value>>,
}

/// A refusal: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Deserialize, ToSchema)]
pub struct Denial {
    /// What the client sees (`{"reason": ...}` in the error reply; the HTTP
    /// body of a refused connect).
    pub reason: String,
    /// Connect only: the HTTP status the client gets (400–499; default 403).
    #[serde(default)]
    pub status: Option<u16>,
}

/// A hook's answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Answer<T> {
    Result(T),
    Error(Denial),
}
