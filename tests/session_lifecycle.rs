//! Session lifecycle: handshake checks, idle timeout, echo endpoint, shutdown drain.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use common::{http_get, Ended, TestServer, DEADLINE};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// A raw HTTP upgrade request; returns the status line and body.
async fn raw_upgrade(server: &TestServer, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.public).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        server.public
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    // Read until the headers and a body arrived (or the server closed).
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got);
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        if head.starts_with("HTTP/1.1 101") || !body.is_empty() {
                            break;
                        }
                    }
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn missing_or_unsupported_vsn_is_refused_with_400_naming_the_versions() {
    let server = TestServer::start().await;
    for path in [
        "/socket/websocket",
        "/socket/websocket?vsn=1.0.0",
        "/socket/websocket?vsn=123.1.1",
        "/socket/websocket?vsn=abc",
    ] {
        let (status, body) = raw_upgrade(&server, path).await;
        assert_eq!(status, 400, "{path}");
        assert!(
            body.contains("2.0.0"),
            "{path}: body {body:?} must name the supported version"
        );
    }
    server
        .wait_metric(
            "myriad_handshakes_rejected_total{reason=\"unsupported_vsn\"}",
            4.0,
        )
        .await;
    let (status, _) = raw_upgrade(&server, "/socket/websocket?user=x&vsn=2.0.0").await;
    assert_eq!(status, 101);
}

#[tokio::test]
async fn plain_http_get_is_not_an_upgrade() {
    let server = TestServer::start().await;
    let (status, body) = http_get(&format!(
        "http://{}/socket/websocket?vsn=2.0.0",
        server.public
    ))
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("not a WebSocket upgrade"), "{body}");
}

#[tokio::test]
async fn idle_session_is_closed_after_idle_timeout() {
    let server = TestServer::start_with(|c| c.idle_timeout = Duration::from_millis(300)).await;
    let mut idle = server.client().await;
    let mut busy = server.client().await;
    // The busy client keeps heartbeating past several idle periods.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(900) {
        busy.sync().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(idle.close_code().await, CloseCode::Away);
    busy.sync().await;
    server
        .wait_metric("myriad_sessions_closed_total{reason=\"idle_timeout\"}", 1.0)
        .await;
}

#[tokio::test]
async fn echo_endpoint_is_off_by_default() {
    let server = TestServer::start().await;
    let (status, body) = raw_upgrade(&server, "/ws/echo").await;
    assert_eq!(status, 404);
    assert!(body.contains("--enable-echo"), "{body}");
}

#[tokio::test]
async fn echo_endpoint_echoes_text_and_binary() {
    let server = TestServer::start_with(|c| c.enable_echo = true).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/echo", server.public))
        .await
        .unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    server
        .wait_metric("myriad_sessions_opened_total{endpoint=\"echo\"}", 1.0)
        .await;
}

#[tokio::test]
async fn shutdown_sends_1001_flips_readyz_and_returns() {
    let server = TestServer::start_with(|c| {
        c.close_timeout = Duration::from_secs(30);
        c.drain_timeout = Duration::from_secs(30);
    })
    .await;
    assert_eq!(server.get_admin("/readyz").await.0, 200);
    let mut a = server.client().await;
    a.join_ok("room:drain").await;
    let mut b = server.client().await;
    server.wait_metric("myriad_sessions_active", 2.0).await;

    server.shutdown.cancel();
    // A receives 1001 but does not answer yet: the node is draining, not gone.
    let frame = loop {
        match tokio::time::timeout(DEADLINE, a.ws.next())
            .await
            .expect("close in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected close, got {other:?}"),
        }
    };
    assert_eq!(frame.map(|f| f.code), Some(CloseCode::Away));
    let (status, body) = server.get_admin("/readyz").await;
    assert_eq!((status, body.as_str()), (503, "draining\n"));
    assert_eq!(
        common::metric_value(&server.metrics().await, "myriad_draining"),
        Some(1.0)
    );
    // New connections are refused while draining.
    assert!(tokio_tungstenite::connect_async(server.ws_url())
        .await
        .is_err());

    // Both clients answer the close; the server finishes its drain and returns.
    assert_eq!(b.close_code().await, CloseCode::Away);
    drop(a);
    drop(b);
    let result = tokio::time::timeout(DEADLINE, server.task)
        .await
        .expect("server returned");
    result.expect("no panic").expect("clean shutdown");
}

#[tokio::test]
async fn drain_timeout_bounds_shutdown_when_clients_never_answer() {
    let server = TestServer::start_with(|c| {
        c.close_timeout = Duration::from_secs(60);
        c.drain_timeout = Duration::from_millis(300);
    })
    .await;
    // This client never reads, so it never answers the close.
    let _silent = server.client().await;
    server.wait_metric("myriad_sessions_active", 1.0).await;
    server.shutdown.cancel();
    let result = tokio::time::timeout(DEADLINE, server.task)
        .await
        .expect("returned within drain_timeout");
    result.unwrap().unwrap();
}

#[tokio::test]
async fn client_close_is_answered_and_counted() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.join_ok("room:bye").await;
    c.ws.close(None).await.unwrap();
    assert!(matches!(c.ended().await, Ended::Closed(_) | Ended::Dropped));
    server
        .wait_metric(
            "myriad_sessions_closed_total{reason=\"client_closed\"}",
            1.0,
        )
        .await;
    server.wait_metric("myriad_sessions_active", 0.0).await;
    server.wait_metric("myriad_topics", 0.0).await;
}

#[tokio::test]
async fn a_client_that_trickles_its_headers_is_cut_off_after_handshake_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_with(|c| c.handshake_timeout = Duration::from_millis(300)).await;
    let mut slow = tokio::net::TcpStream::connect(server.public).await.unwrap();
    slow.write_all(b"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // The server closes the connection: reads reach EOF (or a reset) in time.
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(DEADLINE, async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "connection still open after {DEADLINE:?}");
    server
        .wait_metric(
            "myriad_handshakes_rejected_total{reason=\"handshake_timeout\"}",
            1.0,
        )
        .await;
    // A well-behaved client is unaffected.
    let mut c = server.client().await;
    c.sync().await;
}
