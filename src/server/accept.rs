//! The public accept loop and per-connection HTTP/1 serving.
//!
//! Owns: accepting TCP connections (TCP_NODELAY on each), the handshake
//! timeout (a client that trickles its request headers is cut off), serving
//! HTTP/1 with upgrades so the WebSocket handshake can take over the socket,
//! and closing idle keep-alive connections on shutdown. Running out of file
//! descriptors never ends the loop: it backs off, logs once per interval, counts,
//! and resumes when descriptors free up. It never touches a WebSocket session.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::proxy_protocol::read_header;
use super::tls::Tls;
use crate::metrics::Metrics;
use crate::protocol::{HandshakeRejection, HttpRejection};

/// How long accept waits after the process ran out of descriptors, at first and
/// at most; doubling in between.
const FD_BACKOFF_START: Duration = Duration::from_millis(10);
const FD_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one "out of file descriptors" log line per this interval.
const FD_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Largest HTTP request head hyper buffers (the upgrade request is a few hundred
/// bytes; a JWT in the query or subprotocol a few KiB). Larger heads are refused.
const MAX_REQUEST_HEAD: usize = 64 * 1024;
/// On shutdown, idle or in-flight HTTP connections get this long to finish.
const HTTP_GRACE: Duration = Duration::from_secs(2);

/// Per-connection socket settings from the config.
#[derive(Clone)]
pub struct ConnOptions {
    pub handshake_timeout: Duration,
    /// SO_SNDBUF in bytes; 0 leaves the kernel's auto-tuning alone.
    pub send_buffer: usize,
    /// Connections served at once; past it a new one is closed at once
    /// (counted). None: no cap here (the public listener's caps are
    /// admission's, which answers 503 instead).
    pub max_connections: Option<usize>,
    /// Every connection starts with a PROXY protocol header naming the client.
    pub proxy_protocol: bool,
    /// TLS on this listener (`tls_cert_file`), with the current certificate.
    pub tls: Option<Arc<Tls>>,
}

/// Accept until `stop` fires, then wait (briefly) for HTTP connections that are
/// not WebSocket sessions to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    opts: ConnOptions,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let connections = TaskTracker::new();
    let slots = opts
        .max_connections
        .map(|n| Arc::new(tokio::sync::Semaphore::new(n)));
    let mut backoff = FD_BACKOFF_START;
    let mut last_fd_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff = FD_BACKOFF_START;
                let permit = match &slots {
                    None => None,
                    Some(slots) => match Arc::clone(slots).try_acquire_owned() {
                        Ok(permit) => Some(permit),
                        Err(_) => {
                            // Closing costs nothing; queueing would hold a
                            // descriptor per waiting connection.
                            metrics.http_rejected.increment(HttpRejection::Overloaded);
                            drop(tcp);
                            continue;
                        }
                    },
                };
                let router = router.clone();
                let metrics = Arc::clone(&metrics);
                let stop = stop.clone();
                let opts = opts.clone();
                connections.spawn(async move {
                    connection(tcp, peer, router, opts, metrics, stop).await;
                    drop(permit);
                });
            }
            Err(err) if is_resource_exhaustion(&err) => {
                metrics.accept_errors_fd.increment(1);
                if last_fd_log.is_none_or(|t| t.elapsed() >= FD_LOG_INTERVAL) {
                    tracing::error!(error = %err, backoff_ms = backoff.as_millis() as u64, "accept: out of file descriptors or memory; backing off");
                    last_fd_log = Some(Instant::now());
                }
                // Sleep instead of spinning: the pending connection stays in the
                // kernel backlog until a descriptor frees up.
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(FD_BACKOFF_MAX);
            }
            Err(err) => {
                // Per-connection failures (ECONNABORTED, a reset before accept)
                // concern only that client.
                metrics.accept_errors_other.increment(1);
                tracing::debug!(error = %err, "accept failed for one connection");
            }
        }
    }
    drop(listener);
    connections.close();
    let _ = tokio::time::timeout(HTTP_GRACE + Duration::from_millis(500), connections.wait()).await;
}

fn is_resource_exhaustion(err: &io::Error) -> bool {
    // EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12 on Linux.
    matches!(err.raw_os_error(), Some(24 | 23 | 105 | 12))
}

async fn connection(
    mut tcp: TcpStream,
    peer: SocketAddr,
    router: Router,
    opts: ConnOptions,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let handshake_timeout = opts.handshake_timeout;
    let mut peer = peer;
    if opts.proxy_protocol {
        let header = tokio::time::timeout(handshake_timeout, read_header(&mut tcp)).await;
        match header {
            Ok(Ok(Some(client))) => peer = client,
            Ok(Ok(None)) => {}
            Ok(Err(err)) => {
                metrics
                    .handshakes_rejected
                    .increment(HandshakeRejection::ProxyProtocol);
                tracing::debug!(peer = %peer, error = %err, "PROXY protocol header refused");
                return;
            }
            Err(_) => {
                metrics
                    .handshakes_rejected
                    .increment(HandshakeRejection::HandshakeTimeout);
                return;
            }
        }
    }
    // Real-time frames are small: Nagle's algorithm would hold each one back
    // for the peer's delayed ACK (tens of milliseconds).
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!(error = %err, "cannot set TCP_NODELAY");
    }
    // The kernel grows a send buffer to tcp_wmem's maximum (often 4 MiB) for
    // a client that stopped reading: memory per slow client, and the
    // slow-consumer cut-off only starts once it is full.
    if opts.send_buffer > 0 {
        if let Err(err) = socket2::SockRef::from(&tcp).set_send_buffer_size(opts.send_buffer) {
            tracing::debug!(error = %err, "cannot set SO_SNDBUF");
        }
    }
    match &opts.tls {
        None => serve_http(tcp, peer, router, &opts, metrics, stop).await,
        Some(tls) => {
            // The TLS handshake is part of the handshake: same time limit.
            let acceptor = tls.acceptor();
            match tokio::time::timeout(opts.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => serve_http(stream, peer, router, &opts, metrics, stop).await,
                Ok(Err(err)) => {
                    metrics
                        .handshakes_rejected
                        .increment(HandshakeRejection::Tls);
                    tracing::debug!(peer = %peer, error = %err, "TLS handshake failed");
                }
                Err(_) => {
                    metrics
                        .handshakes_rejected
                        .increment(HandshakeRejection::HandshakeTimeout);
                }
            }
        }
    }
}

/// HTTP/1 with upgrades over `io` (a TCP or TLS stream), until it ends or
/// the listener stops.
async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    opts: &ConnOptions,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let handshake_timeout = opts.handshake_timeout;
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        router.clone().oneshot(req)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .max_buf_size(MAX_REQUEST_HEAD);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(HTTP_GRACE, conn.as_mut()).await {
                Ok(result) => result,
                Err(_) => return,
            }
        }
    };
    if let Err(err) = result {
        if err.is_timeout() {
            metrics
                .handshakes_rejected
                .increment(HandshakeRejection::HandshakeTimeout);
            tracing::debug!(peer = %peer, "request headers not received within handshake_timeout");
        } else {
            tracing::debug!(peer = %peer, error = %err, "http connection error");
        }
    }
}
