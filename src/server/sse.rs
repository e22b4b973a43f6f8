//! `GET /sse?topics=a,b`: Server-Sent Events for readers of event streams
//! (browsers' `EventSource`, curl, server-side consumers). The same door as
//! a WebSocket: admission, Origin and token (query `token`), the connect
//! hook; then only topics the caller may join, each within the bounds a
//! join has. `Last-Event-ID` (header, or `last_event_id` in the query for
//! clients that cannot set headers) resumes from a cursor. The stream itself
//! is `session::sse`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};

use super::client_addr::client_addr;
use super::upgrade::{admit, ask_backend, query_param, session_spec};
use super::AppState;
use crate::protocol::{Endpoint, HandshakeRejection};
use crate::pubsub::history::Position;
use crate::pubsub::{JoinRequest, Since};
use crate::session;
use crate::session::sse::{self, Cursor, SseStream};

/// How often an idle stream sends a comment line.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// The `retry:` hint: this, plus up to as much again of jitter.
const RETRY_BASE_MS: u64 = 2000;

fn refuse(state: &AppState, status: StatusCode, why: String) -> Response {
    state
        .metrics
        .handshakes_rejected
        .increment(HandshakeRejection::Unauthorized);
    (status, format!("{why}\n")).into_response()
}

pub async fn sse(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    let peer = client_addr(peer, req.headers(), &state.trusted_proxies);
    let query = req.uri().query();
    let checked = admit(&state, peer).and_then(|permit| {
        let token = query_param(query, "token");
        let identity = state.auth.authenticate(req.headers(), token.as_deref())?;
        Ok((permit, identity))
    });
    let (permit, identity) = match checked {
        Ok(c) => c,
        Err(err) => return err.into_response(&state),
    };
    let identity = match ask_backend(&state, peer, req.headers(), query, identity).await {
        Ok(identity) => identity,
        Err(err) => return err.into_response(&state),
    };
    let config = &state.config;
    let wanted: Vec<String> = query_param(query, "topics")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if wanted.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "topics: name at least one, comma-separated\n",
        )
            .into_response();
    }
    if wanted.len() > config.max_topics_per_session {
        return (
            StatusCode::BAD_REQUEST,
            "topics: more than max_topics_per_session\n",
        )
            .into_response();
    }
    let mut routed = Vec::with_capacity(wanted.len());
    for topic in wanted {
        if topic.len() > config.max_topic_length {
            return (
                StatusCode::BAD_REQUEST,
                "topics: a name is longer than max_topic_length\n",
            )
                .into_response();
        }
        let Some(route) = state.node.route(&topic) else {
            return (
                StatusCode::NOT_FOUND,
                "topics: no namespace serves one of them\n",
            )
                .into_response();
        };
        if !identity.may_join(&topic) {
            return refuse(
                &state,
                StatusCode::FORBIDDEN,
                String::from("topics: not allowed by the connect token"),
            );
        }
        routed.push((topic, Arc::clone(&route.namespace)));
    }
    let last_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query_param(query, "last_event_id").map(|v| v.into_owned()));
    let asked = last_id
        .map(|id| Cursor::parse(&id, config.max_topics_per_session))
        .unwrap_or_default();

    let id = state.supervisor.next_session_id();
    let mailbox = session::new_mailbox(config);
    let mut cursor = Cursor::default();
    let mut gaps = Vec::new();
    for (topic, ns) in &routed {
        let since = match asked.get(topic) {
            Some((offset, epoch)) => Since::Position(Position {
                offset: *offset,
                epoch: epoch.clone(),
            }),
            None => Since::Now,
        };
        let resuming = matches!(since, Since::Position(_));
        let outcome = state.node.join(JoinRequest {
            topic,
            namespace: ns,
            join_ref: None,
            session: id,
            mailbox: Arc::clone(&mailbox),
            since,
            presence: None,
        });
        if let Some(recovery) = outcome.recovery {
            if resuming && !recovery.recovered {
                gaps.push(topic.clone());
            }
            // Replayed frames move the cursor on as they are sent; without a
            // replay the stream starts at the topic's current position.
            let start = match asked.get(topic) {
                Some((offset, epoch)) if recovery.recovered => (*offset, epoch.clone()),
                _ => (recovery.position.offset, recovery.position.epoch.clone()),
            };
            cursor.set(topic, start.0, &start.1);
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let stream = SseStream {
        spec: session_spec(&state, id, peer, Endpoint::Sse, mailbox, &identity),
        node: Arc::clone(&state.node),
        topics: routed,
        cursor,
        gaps,
        retry_ms: RETRY_BASE_MS + nanos % RETRY_BASE_MS,
        keepalive: KEEPALIVE,
        rotate_at: (!config.sse_max_age.is_zero()).then(|| {
            // ±10 %, from the same clock bits as the retry jitter.
            let jitter = 0.9 + f64::from((nanos % 1000) as u32) / 5000.0;
            tokio::time::Instant::now() + config.sse_max_age.mul_f64(jitter)
        }),
    };
    // The admission slot lives as long as the stream.
    let body = futures_util::StreamExt::map(sse::body(stream), move |chunk| {
        let _held = &permit;
        chunk
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx: do not buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
