//! The HTTP → WebSocket handshake for `/socket/websocket` and `/ws/echo`:
//! check the request, answer 101, and hand the upgraded stream to a supervised
//! session task.
//!
//! Everything refused here is refused before any session state is allocated,
//! with a status and a plain-text body that says why.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::Either;
use futures_util::FutureExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::WebSocketStream;

use crate::pubsub::mailbox::SessionId;

use super::client_addr::client_addr;
use super::connect_hook::{self, Refused};
use super::AppState;
use crate::admission::{Permit, Shed};
use crate::auth::{AuthError, Identity};
use crate::protocol::{vsn_supported, SUPPORTED_VSN};
use crate::protocol::{Endpoint, HandshakeRejection};
use crate::session::echo::EchoHandler;
use crate::session::lazy_read::LazyRead;
use crate::session::phoenix::PhoenixHandler;
use crate::session::{self, SessionSpec};

/// Why an upgrade request is refused; one HTTP answer each.
#[derive(Debug, thiserror::Error)]
pub(super) enum UpgradeError {
    #[error("missing vsn parameter: this server speaks Phoenix Channels V2; connect with vsn={}", SUPPORTED_VSN.join(" or vsn="))]
    MissingVsn,
    #[error("unsupported protocol version vsn={0:?}: supported versions are {supported} (Phoenix Channels V2 JSON)", supported = SUPPORTED_VSN.join(", "))]
    UnsupportedVsn(String),
    #[error("not a WebSocket upgrade request: {0}")]
    NotWebSocket(&'static str),
    #[error("unsupported Sec-WebSocket-Version: only 13 is supported")]
    WrongWsVersion,
    #[error("the echo endpoint is disabled; start the server with --enable-echo")]
    EchoDisabled,
    #[error("server is shutting down; reconnect to another node")]
    Draining,
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("{0}; retry later")]
    Shed(Shed),
    #[error("{reason}")]
    BackendDenied { status: u16, reason: String },
    #[error("the application backend is unavailable; retry later")]
    BackendUnavailable,
}

impl UpgradeError {
    /// The rejection's metric label; None for admission's 503s (counted as
    /// `Shed` instead).
    fn rejection(&self) -> Option<HandshakeRejection> {
        Some(match self {
            UpgradeError::MissingVsn | UpgradeError::UnsupportedVsn(_) => {
                HandshakeRejection::UnsupportedVsn
            }
            UpgradeError::NotWebSocket(_) | UpgradeError::WrongWsVersion => {
                HandshakeRejection::NotWebSocket
            }
            UpgradeError::EchoDisabled => HandshakeRejection::EndpointDisabled,
            UpgradeError::Draining => HandshakeRejection::Draining,
            UpgradeError::Auth(err) if err.is_origin() => HandshakeRejection::OriginNotAllowed,
            UpgradeError::Auth(err) if err.is_revoked() => HandshakeRejection::Revoked,
            UpgradeError::Auth(_) => HandshakeRejection::Unauthorized,
            UpgradeError::BackendDenied { .. } => HandshakeRejection::BackendDenied,
            UpgradeError::BackendUnavailable => HandshakeRejection::BackendUnavailable,
            UpgradeError::Shed(_) => return None,
        })
    }

    fn status(&self) -> StatusCode {
        match self {
            UpgradeError::MissingVsn
            | UpgradeError::UnsupportedVsn(_)
            | UpgradeError::NotWebSocket(_) => StatusCode::BAD_REQUEST,
            UpgradeError::WrongWsVersion => StatusCode::UPGRADE_REQUIRED,
            UpgradeError::EchoDisabled => StatusCode::NOT_FOUND,
            UpgradeError::Draining => StatusCode::SERVICE_UNAVAILABLE,
            UpgradeError::Auth(_) => StatusCode::FORBIDDEN,
            UpgradeError::Shed(_) => StatusCode::SERVICE_UNAVAILABLE,
            UpgradeError::BackendDenied { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::FORBIDDEN)
            }
            UpgradeError::BackendUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub(super) fn into_response(self, state: &AppState) -> Response {
        match (&self, self.rejection()) {
            (UpgradeError::Shed(shed), _) => state.metrics.shed.increment(*shed),
            (_, Some(rejection)) => state.metrics.handshakes_rejected.increment(rejection),
            (_, None) => {}
        }
        let mut response = (self.status(), format!("{self}\n")).into_response();
        match self {
            UpgradeError::WrongWsVersion => {
                response
                    .headers_mut()
                    .insert("sec-websocket-version", HeaderValue::from_static("13"));
            }
            UpgradeError::Draining => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            UpgradeError::BackendUnavailable => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            UpgradeError::Shed(shed) => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(shed.retry_after()));
            }
            _ => {}
        }
        response
    }
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Validate the RFC 6455 headers; returns the Sec-WebSocket-Accept value.
fn accept_key(headers: &HeaderMap) -> Result<String, UpgradeError> {
    if !header_has_token(headers, header::CONNECTION, "upgrade") {
        return Err(UpgradeError::NotWebSocket(
            "Connection header lacks \"upgrade\"",
        ));
    }
    if !header_has_token(headers, header::UPGRADE, "websocket") {
        return Err(UpgradeError::NotWebSocket(
            "Upgrade header is not \"websocket\"",
        ));
    }
    match headers.get(header::SEC_WEBSOCKET_VERSION) {
        Some(v) if v.as_bytes() == b"13" => {}
        _ => return Err(UpgradeError::WrongWsVersion),
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or(UpgradeError::NotWebSocket("missing Sec-WebSocket-Key"))?;
    Ok(derive_accept_key(key.as_bytes()))
}

/// A query parameter's value, decoded; borrowed from the query when it
/// needs no decoding (the common case: no copy per upgrade).
pub(super) fn query_param<'q>(
    query: Option<&'q str>,
    name: &str,
) -> Option<std::borrow::Cow<'q, str>> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn switching_protocols(accept: String, subprotocol: bool) -> Result<Response, UpgradeError> {
    // Takes the string's buffer as it is: no copy per upgrade.
    let accept = HeaderValue::try_from(accept)
        .map_err(|_| UpgradeError::NotWebSocket("invalid Sec-WebSocket-Key"))?;
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    if subprotocol {
        // Browsers fail the handshake when an offered subprotocol is not echoed.
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(crate::auth::PHOENIX_SUBPROTOCOL),
        );
    }
    Ok(response)
}

/// `GET /socket/websocket?vsn=2.0.0`: a Phoenix Channels V2 session.
pub async fn phoenix(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    let peer = client_addr(peer, req.headers(), &state.trusted_proxies);
    let query = req.uri().query();
    let checked = match query_param(query, "vsn") {
        None => Err(UpgradeError::MissingVsn),
        Some(v) if !vsn_supported(&v) => Err(UpgradeError::UnsupportedVsn(v.into_owned())),
        Some(_) => accept_key(req.headers()).and_then(|accept| {
            // Admission first: a refused client costs no token verification.
            let permit = admit(&state, peer)?;
            let token = query_param(query, "token");
            let identity = state.auth.authenticate(req.headers(), token.as_deref())?;
            Ok((accept, permit, identity))
        }),
    };
    let (accept, permit, identity) = match checked {
        Ok(checked) => checked,
        Err(err) => return err.into_response(&state),
    };
    let identity = match ask_backend(&state, peer, req.headers(), req.uri().query(), identity).await
    {
        Ok(identity) => identity,
        Err(err) => return err.into_response(&state),
    };
    start(
        state,
        peer,
        req,
        accept,
        permit,
        Endpoint::Phoenix,
        identity,
    )
}

/// The connect hook, when one is configured: the backend shapes the
/// identity or refuses.
pub(super) async fn ask_backend(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    query: Option<&str>,
    identity: Identity,
) -> Result<Identity, UpgradeError> {
    let Some((hooks, ep)) = state
        .hooks
        .as_ref()
        .and_then(|h| h.connect().map(|ep| (h, ep)))
    else {
        return Ok(identity);
    };
    match connect_hook::ask(hooks, ep, peer, headers, query, identity).await {
        Ok(identity) => Ok(identity),
        Err(Refused::Denied { status, reason }) => {
            Err(UpgradeError::BackendDenied { status, reason })
        }
        Err(Refused::Unavailable) => Err(UpgradeError::BackendUnavailable),
    }
}

/// `GET /ws/echo`: raw echo, only with `enable_echo`, under the same Origin and
/// token rules as `/socket/websocket`.
pub async fn echo(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    if !state.config.enable_echo {
        return UpgradeError::EchoDisabled.into_response(&state);
    }
    let peer = client_addr(peer, req.headers(), &state.trusted_proxies);
    let checked = accept_key(req.headers()).and_then(|accept| {
        let permit = admit(&state, peer)?;
        let token = query_param(req.uri().query(), "token");
        let identity = state.auth.authenticate(req.headers(), token.as_deref())?;
        Ok((accept, permit, identity))
    });
    match checked {
        Ok((accept, permit, identity)) => {
            start(state, peer, req, accept, permit, Endpoint::Echo, identity)
        }
        Err(err) => err.into_response(&state),
    }
}

/// The node's yes before any per-client work: not draining, and admission
/// (caps, accept rate, memory) grants a slot the session then holds.
pub(super) fn admit(state: &AppState, peer: SocketAddr) -> Result<Permit, UpgradeError> {
    // A keep-alive connection accepted before the drain may still ask to
    // upgrade; the session would be closed with 1001 at once, so refuse it.
    if state.is_draining() {
        return Err(UpgradeError::Draining);
    }
    state.admission.admit(peer.ip()).map_err(UpgradeError::Shed)
}

/// Answer 101 and spawn the session, which starts once hyper hands over the
/// connection.
fn start(
    state: Arc<AppState>,
    peer: SocketAddr,
    mut req: Request<Body>,
    accept: String,
    permit: Permit,
    endpoint: Endpoint,
    identity: Identity,
) -> Response {
    let response = match switching_protocols(accept, identity.echo_subprotocol) {
        Ok(r) => r,
        Err(err) => return err.into_response(&state),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let id = state.supervisor.next_session_id();
    let supervisor = Arc::clone(&state.supervisor);
    // Combinators, not an `async` block: a block would keep its captures
    // (the identity, the state, the peer) beside the session future they move
    // into, in every idle session's task.
    let session = on_upgrade.then(move |upgraded| {
        let upgraded = match upgraded {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(peer = %peer, error = %err, "upgrade did not complete");
                return Either::Right(std::future::ready(()));
            }
        };
        // The session keeps hyper's `Upgraded` (boxed I/O). Taking the bare
        // TcpStream back with `downcast` measured 5.5 KiB *more* RSS per idle
        // session (BENCHMARKS.md), so we do not.
        let stream = LazyRead::new(TokioIo::new(upgraded));
        let Some(ws) = session::codec(stream, &state.config) else {
            return Either::Right(std::future::ready(()));
        };
        // The admission slot is held for the session's whole life.
        let run = run_session(ws, state, id, peer, endpoint, identity);
        Either::Left(run.map(move |()| drop(permit)))
    });
    supervisor.spawn(id, session);
    response
}

/// Run a Phoenix session over a byte stream that is already past the HTTP
/// upgrade (an in-memory pipe in benchmarks and tests): anonymous identity,
/// no admission check, supervised like every other session. This is what lets
/// one process hold a million sessions while its file-descriptor limit is far
/// lower.
pub fn spawn_stream_session<S>(state: &Arc<AppState>, stream: S, peer: SocketAddr) -> SessionId
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let id = state.supervisor.next_session_id();
    let state = Arc::clone(state);
    let supervisor = Arc::clone(&state.supervisor);
    // The codec is built here, not in the task: an `async` block awaiting it
    // would keep its captures beside the session future in every task.
    let Some(ws) = session::codec(LazyRead::new(stream), &state.config) else {
        return id;
    };
    supervisor.spawn(
        id,
        run_session(ws, state, id, peer, Endpoint::Phoenix, Identity::default()),
    );
    id
}

/// Everything a session needs besides its transport, for any endpoint.
pub(super) fn session_spec(
    state: &AppState,
    id: SessionId,
    peer: SocketAddr,
    endpoint: Endpoint,
    mailbox: Arc<crate::pubsub::mailbox::Mailbox>,
    identity: &Identity,
) -> SessionSpec {
    SessionSpec {
        id,
        peer,
        endpoint,
        config: Arc::clone(&state.config),
        metrics: Arc::clone(&state.metrics),
        registry: Arc::clone(&state.registry),
        signals: state.supervisor.signals(),
        mailbox,
        // The authenticator caps lifetimes; checked_add keeps any other source
        // of a huge duration from panicking the session.
        expires_at: identity
            .expires_in
            .and_then(|d| tokio::time::Instant::now().checked_add(d)),
        user: identity.user.as_deref().map(Arc::from),
        webhooks: state.webhooks.clone(),
    }
}

/// The session future for an upgraded stream. A plain function returning the
/// future (not an `async fn`): an async fn would keep its parameters (the
/// WebSocket among them) beside the session future they were moved into.
fn run_session<S>(
    ws: WebSocketStream<LazyRead<S>>,
    state: Arc<AppState>,
    id: SessionId,
    peer: SocketAddr,
    endpoint: Endpoint,
    identity: Identity,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let config = Arc::clone(&state.config);
    let mailbox = session::new_mailbox(&config);
    let spec = session_spec(&state, id, peer, endpoint, Arc::clone(&mailbox), &identity);
    match endpoint {
        Endpoint::Phoenix => {
            let handler = PhoenixHandler::new(
                id,
                identity,
                mailbox,
                Arc::clone(&state.node),
                Arc::clone(&state.metrics),
                &config,
                state.hooks.clone(),
            );
            Either::Left(session::run(ws, handler, spec))
        }
        // SSE readers never upgrade (server::sse).
        Endpoint::Echo | Endpoint::Sse | Endpoint::Longpoll => {
            Either::Right(session::run(ws, EchoHandler, spec))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// Every idle session holds its whole future: what grows it grows RSS per
    /// session a million times over (BENCHMARKS.md, idle memory). The bound
    /// is the size on 2026-11-30 (1344 bytes in the test profile) plus 4 %;
    /// raise it only with a measurement of what the growth buys.
    #[tokio::test]
    async fn a_phoenix_session_future_stays_small() {
        let state = AppState::new(Arc::new(crate::config::Config::default())).unwrap();
        let (server, _client) = tokio::io::duplex(64);
        let ws = WebSocketStream::from_raw_socket(LazyRead::new(server), Role::Server, None).await;
        let peer = SocketAddr::from(([127, 0, 0, 1], 1));
        let fut = run_session(ws, state, 1, peer, Endpoint::Phoenix, Identity::default());
        let size = std::mem::size_of_val(&fut);
        eprintln!("phoenix session future: {size} bytes");
        assert!(size <= 1400, "session future is {size} bytes");
    }
}
