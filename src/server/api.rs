//! The server HTTP API under `/api` on the public listener: publish, disconnect,
//! presence, history, stats, and its OpenAPI document.
//!
//! Every route but `/api/openapi.json` needs `Authorization: Bearer <api key>`
//! (`api_keys`); with no keys configured the API is off (404). Bodies are
//! checked field by field so a 400 names the field at fault. The API never
//! touches a socket: it publishes through the `Node` and reaches sessions through
//! the registry.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::api_body::{self, BodyError};
use super::api_throttle;
use super::client_addr::client_addr;
use super::AppState;
use crate::config::Route;
use crate::hooks::schema as hook;
use crate::protocol::broadcast_parts;
use crate::pubsub;
use crate::revocation::{unix_now, Revocation};

#[derive(OpenApi)]
#[openapi(
    info(title = "myriad server API", description = "Publish to topics, disconnect users, read presence and history. The components also describe what myriad sends the application's backend: hook requests (ConnectRequest, RefreshRequest, JoinRequest, PushRequest), their results (ConnectResult, RefreshResult, JoinResult, PublishResult, RpcResult; or Denial as {\"error\": ...}), and webhook batches (WebhookBatch)."),
    paths(broadcast, disconnect, presence, history, stats),
    components(schemas(BroadcastRequest, BroadcastResponse, DisconnectRequest, DisconnectResponse, ApiError, HistoryResponse, Publication, PresenceResponse, StatsResponse,
        hook::ConnectRequest, hook::ConnectResult, hook::RefreshRequest, hook::RefreshResult, hook::JoinRequest, hook::JoinResult, hook::PushRequest, hook::PublishResult, hook::RpcResult, hook::Denial,
        crate::webhooks::schema::WebhookBatch, crate::webhooks::schema::WebhookEventBody)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            Http, HttpAuthScheme, SecurityRequirement, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        openapi.security = Some(vec![SecurityRequirement::new(
            "api_key",
            Vec::<String>::new(),
        )]);
    }
}

/// The OpenAPI document as JSON.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|_| String::from("{}"))
}

pub fn router(state: Arc<AppState>) -> Router {
    let keyed = Router::new()
        .route("/api/broadcast", post(broadcast))
        .route("/api/disconnect", post(disconnect))
        .route("/api/presence", get(presence))
        .route("/api/history", get(history))
        .route("/api/stats", get(stats))
        // The key is checked from the headers before any body is read: an
        // unauthenticated client gets its 401 at once instead of holding a
        // concurrency slot while it trickles up to 2 MiB of body.
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            require_key,
        ));
    Router::new()
        .route(
            "/api/openapi.json",
            get(|| async { ([("content-type", "application/json")], openapi_json()) }),
        )
        .merge(keyed)
        .with_state(state)
}

pub(super) async fn require_key(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let ip = peer.map(|p| {
        crate::admission::client_key(client_addr(p, request.headers(), &state.trusted_proxies).ip())
    });
    if ip.is_some_and(|ip| state.api_throttle.is_blocked(ip)) {
        return too_many_failures(&state);
    }
    match authorize(&state, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(failure) if failure.status == StatusCode::UNAUTHORIZED => {
            if ip.is_some_and(|ip| state.api_throttle.failed(ip)) {
                return too_many_failures(&state);
            }
            failure.into_response()
        }
        Err(failure) => failure.into_response(),
    }
}

/// 429 for an address that sent too many wrong keys: checked before the key,
/// so guessing costs the guesser, not the node.
fn too_many_failures(state: &AppState) -> Response {
    state
        .metrics
        .http_rejected
        .increment(crate::protocol::HttpRejection::Throttled);
    let mut response = error(
        StatusCode::TOO_MANY_REQUESTS,
        "too many requests with a wrong API key from your address; wait",
        None,
    )
    .into_response();
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from(api_throttle::BLOCK_FOR.as_secs()),
    );
    response
}

/// Every error answer: `{"error": "...", "field": "topic"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'static str>,
}

/// A refused API call: one status and one `ApiError` body.
#[derive(Debug)]
pub struct ApiFailure {
    status: StatusCode,
    body: ApiError,
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

fn error(status: StatusCode, error: impl Into<String>, field: Option<&'static str>) -> ApiFailure {
    ApiFailure {
        status,
        body: ApiError {
            error: error.into(),
            field,
        },
    }
}

fn bad(field: &'static str, why: &str) -> ApiFailure {
    error(
        StatusCode::BAD_REQUEST,
        format!("{field}: {why}"),
        Some(field),
    )
}

pub(super) fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiFailure> {
    if !state.auth.api_enabled() {
        return Err(error(
            StatusCode::NOT_FOUND,
            "the HTTP API is disabled: configure api_keys",
            None,
        ));
    }
    if !state.auth.api_key_ok(headers) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API key (Authorization: Bearer <key>)",
            None,
        ));
    }
    Ok(())
}

impl From<BodyError> for ApiFailure {
    fn from(e: BodyError) -> ApiFailure {
        error(StatusCode::BAD_REQUEST, e.why, e.field)
    }
}

// Request types document the bodies in the OpenAPI document; the handlers check
// bodies field by field instead of deserializing them, to name the bad field.
#[allow(dead_code)]
#[derive(Debug, ToSchema)]
pub struct BroadcastRequest {
    /// A topic some namespace routes, e.g. `room:lobby`.
    topic: String,
    /// The event name clients receive; must not start with `phx_`.
    event: String,
    /// A JSON object.
    payload: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BroadcastResponse {
    /// Local mailboxes the broadcast was queued in (0 for a history publish
    /// the Redis cluster sequences: it is delivered when it comes back).
    delivered: usize,
    /// The history offset, on namespaces that keep history (cluster-wide with
    /// the Redis broker; null if the cluster did not answer within 2 s).
    offset: Option<u64>,
}

/// Publish an event to a topic (server-side publish; works on `publish = "server"` namespaces).
#[utoipa::path(post, path = "/api/broadcast", request_body = BroadcastRequest,
    responses((status = 200, body = BroadcastResponse), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn broadcast(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiFailure> {
    authorize(&state, &headers)?;
    let api_body::Broadcast {
        topic,
        event,
        payload,
    } = api_body::broadcast(&body, &state.config)?;
    let (topic, event) = (topic.as_str(), event.as_str());
    let route = route_of(&state, topic)?;
    let published = state
        .node
        .publish_acked(pubsub::Publication {
            namespace: &route.namespace,
            topic,
            event,
            payload: &payload,
            exclude: None,
        })
        .await;
    Ok(Json(BroadcastResponse {
        delivered: published.fanout.delivered,
        offset: published.offset,
    })
    .into_response())
}

#[allow(dead_code)]
#[derive(Debug, ToSchema)]
pub struct DisconnectRequest {
    /// The `sub` of the user's connect tokens.
    user: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DisconnectResponse {
    /// Sessions on this node asked to close (with 4003); other nodes close
    /// theirs when the revocation reaches them.
    disconnected: usize,
}

/// Revoke a user: close its sessions with 4003 on every node, and refuse its
/// tokens issued until now (403) for `revocation_ttl`.
#[utoipa::path(post, path = "/api/disconnect", request_body = DisconnectRequest,
    responses((status = 200, body = DisconnectResponse), (status = 400, body = ApiError), (status = 401, body = ApiError)))]
async fn disconnect(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiFailure> {
    authorize(&state, &headers)?;
    let user = api_body::disconnect(&body)?;
    let user = user.as_str();
    // Revoke first: a client that reconnects at once, to any node, is refused.
    let now = unix_now();
    let disconnected = state.node.revoke(
        user,
        Revocation {
            before: now,
            until: now.saturating_add(state.config.revocation_ttl.as_secs()),
        },
    );
    Ok(Json(DisconnectResponse { disconnected }).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct TopicQuery {
    /// The topic.
    topic: Option<String>,
    /// History: only publications after this offset.
    since: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PresenceResponse {
    topic: String,
    /// `{"user": {"metas": [...]}}`, as in `presence_state`.
    #[schema(value_type = Object)]
    presences: Value,
}

/// The namespace route of `topic`, or 404 naming the field.
fn route_of<'a>(state: &'a AppState, topic: &str) -> Result<&'a Route, ApiFailure> {
    state.node.route(topic).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            format!("topic: {topic:?} matches no namespace"),
            Some("topic"),
        )
    })
}

/// A topic within `max_topic_length` (checked before it is routed, quoted or
/// used as a key).
fn bounded_topic<'a>(state: &AppState, topic: &'a str) -> Result<&'a str, ApiFailure> {
    Ok(api_body::bounded_topic(&state.config, topic)?)
}

fn topic_param(q: &TopicQuery) -> Result<&str, ApiFailure> {
    match q.topic.as_deref() {
        None => Err(bad("topic", "missing query parameter")),
        Some("") => Err(bad("topic", "must not be empty")),
        Some(t) => Ok(t),
    }
}

/// Who is in a topic.
#[utoipa::path(get, path = "/api/presence", params(TopicQuery),
    responses((status = 200, body = PresenceResponse), (status = 400, body = ApiError), (status = 401, body = ApiError)))]
async fn presence(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<TopicQuery>,
) -> Result<Response, ApiFailure> {
    authorize(&state, &headers)?;
    let topic = bounded_topic(&state, topic_param(&q)?)?;
    let presences = serde_json::from_str(&state.node.presence_state(topic)).unwrap_or(Value::Null);
    Ok(Json(PresenceResponse {
        topic: topic.to_owned(),
        presences,
    })
    .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Publication {
    offset: u64,
    event: String,
    #[schema(value_type = Object)]
    payload: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryResponse {
    topic: String,
    epoch: Option<String>,
    /// The newest offset.
    offset: u64,
    publications: Vec<Publication>,
}

/// Recent publications on a history topic.
#[utoipa::path(get, path = "/api/history", params(TopicQuery),
    responses((status = 200, body = HistoryResponse), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 404, body = ApiError)))]
async fn history(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<TopicQuery>,
) -> Result<Response, ApiFailure> {
    authorize(&state, &headers)?;
    let topic = bounded_topic(&state, topic_param(&q)?)?;
    let since = match q.since.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return Err(bad("since", "must be a non-negative integer offset")),
    };
    let route = route_of(&state, topic)?;
    if route.namespace.history_size == 0 {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!(
                "topic: namespace {:?} keeps no history",
                route.namespace.pattern
            ),
            Some("topic"),
        ));
    }
    let (epoch, offset, publications) = match state.node.history(topic, since) {
        None => (None, 0, Vec::new()),
        Some((position, entries)) => {
            let publications = entries
                .into_iter()
                .filter_map(|e| {
                    let (event, payload) = broadcast_parts(e.frame.as_str())?;
                    Some(Publication {
                        offset: e.offset,
                        event,
                        payload: serde_json::from_str(payload.get()).ok()?,
                    })
                })
                .collect();
            (Some(position.epoch), position.offset, publications)
        }
    };
    Ok(Json(HistoryResponse {
        topic: topic.to_owned(),
        epoch,
        offset,
        publications,
    })
    .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatsResponse {
    sessions: usize,
    topics: usize,
    history_topics: usize,
    draining: bool,
    /// Users whose older tokens are refused (API disconnects, cluster-wide).
    revoked_users: usize,
}

/// Node figures.
#[utoipa::path(get, path = "/api/stats", responses((status = 200, body = StatsResponse), (status = 401, body = ApiError)))]
async fn stats(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiFailure> {
    authorize(&state, &headers)?;
    Ok(Json(StatsResponse {
        sessions: state.registry.len(),
        topics: state.node.topic_count(),
        history_topics: state.node.history_topic_count(),
        draining: state.is_draining(),
        revoked_users: state.node.revocations().len(),
    })
    .into_response())
}
