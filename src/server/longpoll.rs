//! `/socket/longpoll`: phoenix.js's long-poll transport (`transport:
//! LongPoll`, or `longPollFallbackMs` when WebSockets are blocked).
//!
//! - `GET` without a session token: the same door as a WebSocket upgrade
//!   (vsn, admission, Origin, the JWT in `token` or `X-Phoenix-AuthToken`, the
//!   connect hook), then a new session and `{"status":410,"token":T}`.
//! - `GET` with `T`: a poll, held up to `longpoll_hold` for the session's
//!   mailbox: `{"status":200,"token":T,"messages":[...]}` or
//!   `{"status":204,"token":T}`; `{"status":410}` once the session is gone
//!   (phoenix.js then reconnects and rejoins).
//! - `POST` with `T`: frames, one per line (`application/x-ndjson`; a line
//!   that is not JSON is a base64 binary frame), handled in order before the
//!   answer `{"status":200}`.
//!
//! Session tokens are `lp1.<node>.<session>.<HMAC>`: unguessable, and naming
//! the node that holds the session. Behind a load balancer a request may land
//! on another node: that node forwards it, as it is, to the holder's
//! advertised URL (`advertise_url`, learned through the broker), once (a
//! forwarded request is never forwarded again). The token is the only
//! authority a request carries, and only its holder can check it. The session
//! itself is `session::longpoll`. Must never hand one client's session to
//! another.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::client_addr::client_addr;
use super::upgrade::{admit, ask_backend, query_param, session_spec, UpgradeError};
use super::AppState;
use crate::protocol::limits::truncated;
use crate::protocol::{binary, vsn_supported, CloseReason, Endpoint, HttpRejection, MalformedKind};
use crate::pubsub::mailbox::{Outbound, SessionId};
use crate::session;
use crate::session::longpoll::{self, Batch, Frame, Poller};
use crate::session::phoenix::PhoenixHandler;

/// Longest poll hold accepted (`longpoll_hold` is below it): bounds how long
/// a forwarded request may take.
const MAX_HOLD: Duration = Duration::from_secs(20);
/// Batches queued for one session at once (phoenix.js sends one at a time).
const INBOX: usize = 4;

/// This node's long-poll sessions, by id, and the key their tokens are
/// signed with.
pub struct Sessions {
    by_id: DashMap<SessionId, Arc<Poller>>,
    key: [u8; 32],
    node: String,
    /// Forwards requests for other nodes' sessions.
    client: reqwest::Client,
}

/// Header on a request another node forwarded (never forwarded again).
const FORWARDED: &str = "x-myriad-forwarded";

impl Sessions {
    /// Err without OS randomness: tokens would be guessable, so the server
    /// does not start.
    pub fn new(node: &str) -> Result<Sessions, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(Sessions {
            by_id: DashMap::new(),
            key,
            node: node.to_owned(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(MAX_HOLD + Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        })
    }

    fn mac(&self, body: &str) -> Option<Hmac<Sha256>> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).ok()?;
        mac.update(body.as_bytes());
        Some(mac)
    }

    fn token(&self, id: SessionId) -> String {
        let body = format!("lp1.{}.{id}", self.node);
        let sig = self.mac(&body).map_or_else(String::new, |m| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
        });
        format!("{body}.{sig}")
    }

    /// The session a token names, if it is this node's and still alive.
    fn session(&self, token: &str) -> Option<(SessionId, Arc<Poller>)> {
        let (body, sig) = token.rsplit_once('.')?;
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .ok()?;
        // Constant time.
        self.mac(body)?.verify_slice(&sig).ok()?;
        let id: SessionId = body.rsplit_once('.')?.1.parse().ok()?;
        let poller = self.by_id.get(&id)?.clone();
        (!poller.ended()).then_some((id, poller))
    }

    /// The node a token names (checked by that node, not here).
    fn node_of(token: &str) -> Option<&str> {
        let rest = token.strip_prefix("lp1.")?;
        Some(rest.split_once('.')?.0)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// A session token among `token` query values (the socket's own params may
/// carry a `token` too: the connect JWT).
fn session_token(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .filter(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .find(|v| v.starts_with("lp1."))
}

/// The connect JWT: a `token` query value that is not a session token, or
/// phoenix.js's `authToken` header.
fn connect_token(query: Option<&str>, headers: &HeaderMap) -> Option<String> {
    let from_query = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .find(|v| !v.starts_with("lp1."));
    from_query.or_else(|| {
        headers
            .get("x-phoenix-authtoken")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    })
}

fn answer(body: Value) -> Response {
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    let query = req.uri().query();
    match session_token(query) {
        Some(token) => {
            let (parts, _) = req.into_parts();
            if let Some(forwarded) = forward(&state, &token, Head::of(&parts), None).await {
                return forwarded;
            }
            match state.longpoll.session(&token) {
                Some((_, poller)) => poll(&state, &poller, &token).await,
                None => answer(json!({"status": 410})),
            }
        }
        None => open(state, peer, req).await,
    }
}

/// What forwarding needs of a request (owned: a request body is not `Sync`).
struct Head {
    method: axum::http::Method,
    query: String,
    content_type: Option<HeaderValue>,
    forwarded: bool,
}

impl Head {
    fn of(parts: &axum::http::request::Parts) -> Head {
        Head {
            method: parts.method.clone(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
            forwarded: parts.headers.contains_key(FORWARDED),
        }
    }
}

/// A request for a session on another node: its answer from there. None
/// when the session is this node's (or the request was forwarded already).
async fn forward(
    state: &AppState,
    token: &str,
    req: Head,
    body: Option<Bytes>,
) -> Option<Response> {
    let node = Sessions::node_of(token)?;
    if node == state.longpoll.node || req.forwarded {
        return None;
    }
    let Some(base) = state.node.peer_url(node) else {
        // Unknown or gone: the client starts over (and rejoins).
        return Some(answer(json!({"status": 410})));
    };
    let url = format!("{base}/socket/longpoll?{}", req.query);
    let mut out = state
        .longpoll
        .client
        .request(req.method, url)
        .header(FORWARDED, "1");
    if let Some(ct) = req.content_type {
        out = out.header(header::CONTENT_TYPE, ct);
    }
    if let Some(body) = body {
        out = out.body(body);
    }
    state.metrics.longpoll_forwarded.increment(1);
    match out.send().await {
        Ok(resp) => {
            let status = resp.status();
            let bytes = resp.bytes().await.unwrap_or_default();
            let mut r = (status, bytes).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Some(r)
        }
        Err(err) => {
            tracing::debug!(node = truncated(node, 64), error = %err.without_url(), "long-poll forward failed");
            Some(answer(json!({"status": 410})))
        }
    }
}

/// A new session, behind the same checks as a WebSocket upgrade.
async fn open(state: Arc<AppState>, peer: SocketAddr, req: Request<Body>) -> Response {
    let peer = client_addr(peer, req.headers(), &state.trusted_proxies);
    let query = req.uri().query();
    let checked = match query_param(query, "vsn") {
        None => Err(UpgradeError::MissingVsn),
        Some(v) if !vsn_supported(&v) => Err(UpgradeError::UnsupportedVsn(v.into_owned())),
        Some(_) => admit(&state, peer).and_then(|permit| {
            let token = connect_token(query, req.headers());
            let identity = state.auth.authenticate(req.headers(), token.as_deref())?;
            Ok((permit, identity))
        }),
    };
    let (permit, identity) = match checked {
        Ok(c) => c,
        Err(err) => return longpoll_refusal(&state, err),
    };
    let identity = match ask_backend(&state, peer, req.headers(), query, identity).await {
        Ok(identity) => identity,
        Err(err) => return longpoll_refusal(&state, err),
    };
    let id = state.supervisor.next_session_id();
    let config = Arc::clone(&state.config);
    let mailbox = session::new_mailbox(&config);
    let (poller, inbox) = longpoll::open(Arc::clone(&mailbox), INBOX);
    let spec = session_spec(
        &state,
        id,
        peer,
        Endpoint::Longpoll,
        Arc::clone(&mailbox),
        &identity,
    );
    let handler = PhoenixHandler::new(
        id,
        identity,
        mailbox,
        Arc::clone(&state.node),
        Arc::clone(&state.metrics),
        &config,
        state.hooks.clone(),
    );
    state.longpoll.by_id.insert(id, Arc::clone(&poller));
    let sessions = Arc::clone(&state);
    state.supervisor.spawn(id, async move {
        let _permit = permit;
        longpoll::run(handler, spec, poller, inbox, config.longpoll_window).await;
        sessions.longpoll.by_id.remove(&id);
    });
    answer(json!({"status": 410, "token": state.longpoll.token(id)}))
}

/// phoenix.js reads long-poll refusals from the JSON body: 403 for a refused
/// connect (it stops), 500 for anything else (it retries).
fn longpoll_refusal(state: &AppState, err: UpgradeError) -> Response {
    let forbidden = matches!(
        err,
        UpgradeError::Auth(_) | UpgradeError::BackendDenied { .. }
    );
    let mut response = err.into_response(state);
    if forbidden {
        let status = response.status();
        response = answer(json!({"status": 403}));
        *response.status_mut() = status;
    }
    response
}

/// Wait (up to `HOLD`) for frames, then answer with what there is.
async fn poll(state: &AppState, poller: &Arc<Poller>, token: &str) -> Response {
    if !poller.poll_started() {
        // Another poll of this session is waiting: this one answers at once.
        return answer(json!({"status": 204, "token": token}));
    }
    let deadline = tokio::time::Instant::now() + state.config.longpoll_hold;
    let mailbox = &poller.mailbox;
    let mut batch = std::collections::VecDeque::new();
    let response = loop {
        let drained = mailbox.drain(&mut batch);
        if drained.overflowed {
            poller.end(crate::protocol::CloseReason::SlowConsumer);
            break answer(json!({"status": 410}));
        }
        if let Some(reason) = drained.close_requested {
            poller.end(reason);
            break answer(json!({"status": 410}));
        }
        // phoenix.js's long-poll takes strings only: a binary broadcast goes
        // as its JSON form (docs/protocol.md §2.2).
        let texts: Vec<Utf8Bytes> = batch
            .iter()
            .filter_map(|f| match f {
                Outbound::Text(t) => Some(t.clone()),
                Outbound::Binary(b) => {
                    let text = binary::as_text_broadcast(b);
                    if text.is_none() {
                        state.metrics.mailbox_dropped.increment(1);
                    }
                    text
                }
            })
            .collect();
        let messages: Vec<&str> = texts.iter().map(Utf8Bytes::as_str).collect();
        if !messages.is_empty() {
            break answer(json!({"status": 200, "token": token, "messages": messages}));
        }
        batch.clear();
        tokio::select! {
            _ = mailbox.ready() => {}
            _ = tokio::time::sleep_until(deadline) => break answer(json!({"status": 204, "token": token})),
        }
    };
    poller.poll_ended();
    response
}

pub async fn post(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let query = req.uri().query().map(str::to_owned);
    let Some(token) = session_token(query.as_deref()) else {
        return answer(json!({"status": 410}));
    };
    let (parts, body) = req.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, state.config.longpoll_max_body).await {
        Ok(b) => b,
        Err(_) => {
            state
                .metrics
                .http_rejected
                .increment(HttpRejection::TooLarge);
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body over longpoll_max_body\n",
            )
                .into_response();
        }
    };
    if let Some(forwarded) = forward(&state, &token, Head::of(&parts), Some(body.clone())).await {
        return forwarded;
    }
    let Some((_, poller)) = state.longpoll.session(&token) else {
        return answer(json!({"status": 410}));
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "body is not UTF-8\n").into_response();
    };
    // Each frame within max_message_size, as on a WebSocket (1009 there):
    // a larger one ends the session.
    let max = state.config.max_message_size;
    let mut frames = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let frame = if line.starts_with('[') {
            Frame::Text(Utf8Bytes::from(line.to_owned()))
        } else {
            // phoenix.js sends ArrayBuffer pushes base64-encoded here.
            match base64::engine::general_purpose::STANDARD.decode(line) {
                Ok(bin) => Frame::Binary(bin.into()),
                Err(_) => Frame::Text(Utf8Bytes::from(line.to_owned())),
            }
        };
        let len = match &frame {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
        };
        if len > max {
            state.metrics.malformed.increment(MalformedKind::TooBig);
            poller.end(CloseReason::MessageTooBig);
            return answer(json!({"status": 410}));
        }
        frames.push(frame);
    }
    let (done, handled) = tokio::sync::oneshot::channel();
    if poller.inbox.send(Batch { frames, done }).await.is_err() {
        return answer(json!({"status": 410}));
    }
    match handled.await {
        Ok(()) => answer(json!({"status": 200})),
        Err(_) => answer(json!({"status": 410})),
    }
}
