//! Load-shedding and per-session limits: connection caps, accept rate, memory
//! watermark (503 + Retry-After, counted, /readyz flips), client rate limit
//! (rate_limited replies, then 1008), channels per session.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use common::{metric_value, Client, TestServer};
use serde_json::json;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Upgrade from `source` (a loopback address); Err((status, retry_after)) when refused.
async fn connect_from(server: &TestServer, source: &str) -> Result<Client, (u16, Option<String>)> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let tcp = socket.connect(server.public).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
    match tokio_tungstenite::client_async(server.ws_url(), stream).await {
        Ok((ws, _)) => Ok(Client::from_ws(ws)),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err((
            resp.status().as_u16(),
            resp.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
        )),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn the_connection_cap_sheds_with_503_and_flips_readyz() {
    let server = TestServer::start_with(|c| c.max_connections = 3).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect_from(&server, "127.0.0.1").await.unwrap());
    }
    assert_eq!(
        connect_from(&server, "127.0.0.1").await.err(),
        Some((503, Some("5".into())))
    );
    server
        .wait_metric("myriad_shed_total{reason=\"max_connections\"}", 1.0)
        .await;
    assert_eq!(
        server.get_admin("/readyz").await,
        (503, "overloaded\n".into())
    );
    // Existing sessions are untouched.
    clients[0].join_ok("room:cap").await;
    // One leaves: ready again, and a new client gets in.
    drop(clients.pop());
    let ready = common::poll_until(common::DEADLINE, || async {
        server.get_admin("/readyz").await.0 == 200
    })
    .await;
    assert!(ready, "/readyz recovers");
    connect_from(&server, "127.0.0.1").await.unwrap();
}

#[tokio::test]
async fn the_per_ip_cap_counts_each_address() {
    let server = TestServer::start_with(|c| c.max_connections_per_ip = 2).await;
    let _a = connect_from(&server, "127.0.0.1").await.unwrap();
    let _b = connect_from(&server, "127.0.0.1").await.unwrap();
    assert_eq!(
        connect_from(&server, "127.0.0.1").await.err().map(|e| e.0),
        Some(503)
    );
    server
        .wait_metric("myriad_shed_total{reason=\"per_ip\"}", 1.0)
        .await;
    // Another address is not affected, and the node stays ready.
    connect_from(&server, "127.0.0.2").await.unwrap();
    assert_eq!(server.get_admin("/readyz").await.0, 200);
}

#[tokio::test]
async fn the_accept_rate_sheds_bursts_with_retry_after_1() {
    let server = TestServer::start_with(|c| {
        c.accept_rate = 1;
        c.accept_burst = 2;
    })
    .await;
    let _a = connect_from(&server, "127.0.0.1").await.unwrap();
    let _b = connect_from(&server, "127.0.0.1").await.unwrap();
    assert_eq!(
        connect_from(&server, "127.0.0.1").await.err(),
        Some((503, Some("1".into())))
    );
    server
        .wait_metric("myriad_shed_total{reason=\"accept_rate\"}", 1.0)
        .await;
}

#[tokio::test]
async fn the_memory_watermark_sheds_and_flips_readyz() {
    // A watermark below any real RSS: every new session is shed.
    let server = TestServer::start_with(|c| {
        c.memory_high_watermark = myriad::config::units::MemoryWatermark::Bytes(1024)
    })
    .await;
    assert_eq!(
        connect_from(&server, "127.0.0.1").await.err().map(|e| e.0),
        Some(503)
    );
    server
        .wait_metric("myriad_shed_total{reason=\"memory\"}", 1.0)
        .await;
    assert_eq!(server.get_admin("/readyz").await.0, 503);
    assert_eq!(
        server.get_admin("/healthz").await.0,
        200,
        "alive, just not ready"
    );
}

#[tokio::test]
async fn excess_pushes_get_rate_limited_then_the_abuser_is_closed_with_1008() {
    let server = TestServer::start_with(|c| {
        c.client_rate = 5;
        c.client_burst = 5;
        c.abuse_window = Duration::from_millis(800);
    })
    .await;
    let mut polite = server.client().await;
    let mut c = server.client().await;
    let jr = c.join_ok("room:rl").await;
    let mut limited = 0;
    let mut closed = None;
    for i in 0..200 {
        let r = format!("r{i}");
        if c.try_send_text(&json!([jr, r, "room:rl", "spam", {}]).to_string())
            .await
            .is_err()
        {
            break;
        }
        match c.recv_or_close().await {
            Ok(v) if v[4]["response"]["reason"] == "rate_limited" => limited += 1,
            Ok(_) => {}
            Err(code) => {
                closed = code;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(limited > 0, "excess pushes were answered with rate_limited");
    assert_eq!(closed, Some(CloseCode::Policy));
    server
        .wait_metric(
            "myriad_sessions_closed_total{reason=\"rate_limit_abuse\"}",
            1.0,
        )
        .await;
    assert!(
        metric_value(&server.metrics().await, "myriad_rate_limited_total").unwrap()
            >= limited as f64
    );
    // Heartbeats are not rate limited, and other sessions are unaffected.
    polite.sync().await;
}

#[tokio::test]
async fn joins_beyond_max_topics_per_session_are_refused() {
    let server = TestServer::start_with(|c| c.max_topics_per_session = 2).await;
    let mut c = server.client().await;
    c.join_ok("room:1").await;
    c.join_ok("room:2").await;
    let (_, reply) = c.join("room:3", json!({})).await;
    assert_eq!(
        reply[4],
        json!({"status": "error", "response": {"reason": "too many channels joined"}})
    );
    // A duplicate join of an open topic is not a new channel.
    c.join_ok("room:2").await;
}
