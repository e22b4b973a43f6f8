//! The connect hook: before an upgrade completes, the backend sees the
//! client's params, its token's claims (when it sent one), its address and
//! the headers named in `[hooks] forward_headers`, and decides who this is,
//! for how long and what it may join, or refuses with a status and reason.
//!
//! It runs after admission and the token check (a refused client costs the
//! backend nothing), while the client waits for the 101. A backend that does
//! not answer gets the client a 503 with Retry-After, never a hung upgrade.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::{Map, Value};

use crate::auth::{Identity, MAX_TOKEN_LIFETIME};
use crate::config::Pattern;
use crate::hooks::schema::{ConnectRequest, ConnectResult};
use crate::hooks::{Endpoint, HookError, Hooks};
use crate::protocol::HookKind;

/// Query parameters passed on, at most (the rest are dropped).
const MAX_PARAMS: usize = 64;

/// Why the backend did not let the client in.
#[derive(Debug)]
pub enum Refused {
    /// Its answer: an HTTP status (400–499) and the reason the client reads.
    Denied {
        status: u16,
        reason: String,
    },
    Unavailable,
}

pub async fn ask(
    hooks: &Hooks,
    ep: &Arc<Endpoint>,
    peer: SocketAddr,
    headers: &HeaderMap,
    query: Option<&str>,
    identity: Identity,
) -> Result<Identity, Refused> {
    let params: Map<String, Value> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k != "token" && k != "vsn")
        .take(MAX_PARAMS)
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    let forwarded: BTreeMap<String, String> = hooks
        .forward_headers()
        .iter()
        .filter_map(|name| {
            let value = headers.get(name.as_str())?.to_str().ok()?;
            Some((name.clone(), value.to_owned()))
        })
        .collect();
    let Some(slot) = hooks.admit(HookKind::Connect) else {
        return Err(Refused::Unavailable);
    };
    let id = hooks.next_id();
    let request = ConnectRequest {
        id: id.clone(),
        node: hooks.node().to_owned(),
        hook: "connect",
        remote_addr: peer.ip().to_string(),
        params,
        claims: identity.claims.clone(),
        headers: forwarded,
    };
    match hooks.call::<ConnectResult>(ep, slot, &id, &request).await {
        Ok(result) => Ok(apply(identity, result)),
        Err(HookError::Denied(d)) => Err(Refused::Denied {
            status: d.status.filter(|s| (400..500).contains(s)).unwrap_or(403),
            reason: d.reason,
        }),
        Err(HookError::Unavailable(_)) => Err(Refused::Unavailable),
    }
}

/// The backend's answer over what the token said: its user, topics and info
/// win; the expiry is the earlier of the two.
fn apply(mut identity: Identity, result: ConnectResult) -> Identity {
    if let Some(user) = result.user.filter(|u| !u.is_empty()) {
        identity.user = Some(user);
    }
    if let Some(topics) = result.topics {
        identity.topics = Some(topics.iter().map(|t| Pattern::parse(t)).collect());
    }
    if let Some(secs) = result.expires_in {
        let by = Duration::from_secs(secs).min(MAX_TOKEN_LIFETIME);
        identity.expires_in = Some(identity.expires_in.map_or(by, |t| t.min(by)));
    }
    identity.info = result.info;
    // Claims were for the backend; the session does not keep them.
    identity.claims = None;
    identity
}
