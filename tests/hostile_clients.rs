//! What one hostile client can no longer do, driven as an attacker would: raw
//! frames over a real WebSocket and plain HTTP against a server on port 0.
//! Forged protocol events, over-long names and refs, deeply nested payloads.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use common::{metric_value, Client, TestServer};
use myriad::config::NamespaceConfig;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const KEY: &str = "api-key";

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.api_keys = vec![KEY.into()];
        c.client_rate = 0;
        c.namespaces = vec![
            NamespaceConfig::new("room:*"),
            NamespaceConfig {
                presence: true,
                history_size: 10,
                ..NamespaceConfig::new("chat:*")
            },
        ];
    })
    .await
}

fn reason(reply: &Value) -> &str {
    reply[4]["response"]["reason"].as_str().unwrap_or("")
}

async fn api_broadcast(server: &TestServer, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/broadcast", server.public))
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn stored(server: &TestServer, topic: &str) -> Vec<Value> {
    let resp = reqwest::Client::new()
        .get(format!(
            "http://{}/api/history?topic={topic}",
            server.public
        ))
        .header("authorization", format!("Bearer {KEY}"))
        .send()
        .await
        .unwrap();
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    body["publications"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_member_cannot_forge_control_events_for_everyone_else() {
    let server = server().await;
    let mut attacker = server.client().await;
    let mut victim = server.client().await;
    for topic in ["room:x", "chat:x"] {
        let jr = attacker.join_ok(topic).await;
        victim.join_ok(topic).await;
        for event in [
            "phx_close",
            "phx_error",
            "phx_reply",
            "presence_diff",
            "presence_state",
            "chan_reply_3",
        ] {
            let (reply, _) = attacker
                .push(&jr, topic, event, json!({"joins": {}, "leaves": {}}))
                .await;
            assert_eq!(reply[4]["status"], "error", "{event}: {reply}");
            assert_eq!(reason(&reply), "reserved event", "{event}");
            assert_eq!(
                reply[0],
                json!(jr),
                "the reply is for the attacker's channel"
            );
        }
    }
    // The victim saw none of them: what it got is its own join's
    // presence_state (a push with its join_ref) and the real join diffs.
    let forged = json!({"joins": {}, "leaves": {}});
    for f in victim.sync().await {
        let event = f[3].as_str().unwrap();
        assert!(f[4] != forged, "a forged frame arrived: {f}");
        assert!(
            !event.starts_with("phx_") && !event.starts_with("chan_reply"),
            "{f}"
        );
        if event == "presence_state" {
            assert!(
                !f[0].is_null(),
                "presence_state only as a push to its own join: {f}"
            );
        }
    }
    assert!(stored(&server, "chat:x").await.is_empty(), "nothing stored");
    let text = server.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            "myriad_client_refusals_total{reason=\"reserved_event\"}"
        ),
        Some(12.0)
    );
    // The HTTP API shares the rule.
    for event in ["phx_close", "presence_diff", "chan_reply_1"] {
        let (status, body) = api_broadcast(
            &server,
            json!({"topic": "room:x", "event": event, "payload": {}}),
        )
        .await;
        assert_eq!(
            (status, body["field"].as_str()),
            (400, Some("event")),
            "{event}"
        );
    }
}

#[tokio::test]
async fn over_long_topics_and_events_get_an_error_reply_and_go_nowhere() {
    let server = server().await;
    let mut c = server.client().await;
    let topic = format!("room:{}", "x".repeat(300));
    let (_, reply) = c.join(&topic, json!({})).await;
    assert_eq!(reason(&reply), "topic too long");
    assert_eq!(reply[0], Value::Null, "like an unmatched topic");
    let jr = c.join_ok("room:ok").await;
    let (reply, _) = c.push(&jr, "room:ok", &"e".repeat(200), json!({})).await;
    assert_eq!(reason(&reply), "event too long");
    let (status, body) = api_broadcast(
        &server,
        json!({"topic": topic, "event": "e", "payload": {}}),
    )
    .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("topic")));
    let text = server.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            "myriad_client_refusals_total{reason=\"topic_too_long\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "myriad_client_refusals_total{reason=\"event_too_long\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&text, "myriad_topics"),
        Some(1.0),
        "only room:ok"
    );
}

#[tokio::test]
async fn a_long_ref_is_not_reflected_but_closes_with_1007() {
    let server = server().await;
    let mut c = server.client().await;
    let r = "1".repeat(10_000);
    c.send(json!([null, r, "phoenix", "heartbeat", {}])).await;
    assert_eq!(c.close_code().await, CloseCode::Invalid);
    let text = server.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            "myriad_malformed_frames_total{kind=\"ref_too_long\"}"
        ),
        Some(1.0)
    );
}

fn nested(depth: usize) -> Value {
    let text = "{\"a\":".repeat(depth) + "1" + &"}".repeat(depth);
    serde_json::from_str::<Value>(&text).unwrap_or(Value::Null)
}

#[tokio::test]
async fn deeply_nested_payloads_are_refused_at_the_door() {
    let server = server().await;
    let mut c = server.client().await;
    let mut other = server.client().await;
    let jr = c.join_ok("chat:deep").await;
    other.join_ok("chat:deep").await;
    other.sync().await;
    // 30 000 levels: sent as text (serde_json itself would refuse to build it).
    let deep = "[".repeat(30_000) + &"]".repeat(30_000);
    let r = c.next_ref();
    c.send_text(&format!(r#"["{jr}","{r}","chat:deep","m",{{"x":{deep}}}]"#))
        .await;
    let (reply, _) = c
        .recv_until(|v| v[3] == "phx_reply" && v[1] == json!(r))
        .await;
    assert_eq!(reason(&reply), "payload too deeply nested");
    let (reply, _) = c.push(&jr, "chat:deep", "m", nested(70)).await;
    assert_eq!(reason(&reply), "payload too deeply nested");
    let (reply, _) = c.push(&jr, "chat:deep", "m", nested(10)).await;
    assert_eq!(reply[4]["status"], "ok", "{reply}");
    let got: Vec<Value> = other
        .sync()
        .await
        .into_iter()
        .filter(|f| f[3] == "m")
        .collect();
    assert_eq!(got.len(), 1, "only the shallow one was broadcast");
    assert_eq!(stored(&server, "chat:deep").await.len(), 1);
    let (status, body) = api_broadcast(
        &server,
        json!({"topic": "room:x", "event": "e", "payload": nested(70)}),
    )
    .await;
    assert_eq!((status, body["field"].as_str()), (400, Some("payload")));
}

#[tokio::test]
async fn the_bounds_are_configurable() {
    let server = TestServer::start_with(|c| {
        c.max_topic_length = 8;
        c.client_rate = 0;
    })
    .await;
    let mut c: Client = server.client().await;
    let (_, reply) = c.join("room:123456", json!({})).await;
    assert_eq!(reason(&reply), "topic too long");
    c.join_ok("room:1").await;
}

#[tokio::test]
async fn presence_cannot_be_used_to_amplify_a_join() {
    let server = TestServer::start_with(|c| {
        c.client_rate = 0;
        c.presence_max_members = 3;
    })
    .await;
    // A meta over presence_max_meta_bytes (1 KiB) is refused outright.
    let mut big = server.client().await;
    let (_, reply) = big
        .join("chat:amp", json!({"meta": {"bio": "x".repeat(5000)}}))
        .await;
    assert_eq!(reason(&reply), "presence meta too large");
    // Past presence_max_members the join works but is not listed.
    let mut members = Vec::new();
    for _ in 0..5 {
        let mut c = server.client().await;
        c.join_ok("chat:amp").await;
        members.push(c);
    }
    let mut late = server.client().await;
    late.join_ok("chat:amp").await;
    let state = late
        .sync()
        .await
        .into_iter()
        .find(|f| f[3] == "presence_state")
        .unwrap();
    assert_eq!(state[4].as_object().unwrap().len(), 3, "{state}");
    let text = server.metrics().await;
    assert_eq!(
        metric_value(&text, "myriad_presence_untracked_total"),
        Some(3.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "myriad_join_refusals_total{reason=\"meta_too_large\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_presence_state_over_mailbox_max_bytes_is_not_written_past_the_bound() {
    let server = TestServer::start_with(|c| {
        c.client_rate = 0;
        c.mailbox_max_bytes = 8192;
    })
    .await;
    // Each member adds ~1 KB of meta to the topic's presence_state; once the
    // state outgrows a joiner's mailbox (8 KiB here), that joiner is cut off
    // as a slow consumer instead of being written past the bound.
    let mut members = Vec::new();
    let mut cut_at = None;
    for i in 0..20 {
        let mut c = server.client().await;
        let j = c.next_ref();
        let meta = json!({"bio": format!("{i}{}", "x".repeat(900))});
        c.send(json!([j, j, "chat:big", "phx_join", {"meta": meta}]))
            .await;
        let r = c.next_ref();
        c.send(json!([null, r, "phoenix", "heartbeat", {}])).await;
        loop {
            match c.recv_or_close().await {
                Ok(v) if v[1] == json!(r) => break,
                Ok(_) => {}
                Err(code) => {
                    assert_eq!(code, Some(CloseCode::Again));
                    cut_at = Some(i);
                    break;
                }
            }
        }
        if cut_at.is_some() {
            break;
        }
        members.push(c);
    }
    let cut_at = cut_at.expect("some joiner's state outgrew its mailbox");
    assert!((5..12).contains(&cut_at), "cut at member {cut_at}");
}

async fn stats(server: &TestServer) -> Value {
    let resp = reqwest::Client::new()
        .get(format!("http://{}/api/stats", server.public))
        .header("authorization", format!("Bearer {KEY}"))
        .send()
        .await
        .unwrap();
    serde_json::from_str(&resp.text().await.unwrap()).unwrap()
}

#[tokio::test]
async fn joins_cannot_fill_the_node_with_history_rings() {
    let server = TestServer::start_with(|c| {
        c.api_keys = vec![KEY.into()];
        c.client_rate = 0;
        c.history_max_topics = 2;
    })
    .await;
    // Joining (and leaving) history topics that nobody publishes to costs nothing.
    let mut c = server.client().await;
    for i in 0..50 {
        let topic = format!("chat:empty{i}");
        let jr = c.join_ok(&topic).await;
        c.send(json!([jr, "x", topic, "phx_leave", {}])).await;
    }
    c.sync().await;
    assert_eq!(stats(&server).await["history_topics"], 0);
    // Past history_max_topics a publish goes out without an offset, counted.
    let mut offsets = Vec::new();
    for t in ["chat:1", "chat:2", "chat:3"] {
        let (status, body) =
            api_broadcast(&server, json!({"topic": t, "event": "e", "payload": {}})).await;
        assert_eq!(status, 200);
        offsets.push(body["offset"].clone());
    }
    assert_eq!(offsets, [json!(1), json!(1), Value::Null]);
    let text = server.metrics().await;
    assert_eq!(
        metric_value(&text, "myriad_history_unstored_total"),
        Some(1.0)
    );
}

#[tokio::test]
async fn the_admin_port_cannot_be_held_open() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_with(|c| {
        c.handshake_timeout = std::time::Duration::from_millis(300);
        c.admin_max_connections = 4;
    })
    .await;
    // Four idle connections fill the admin listener's cap...
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(server.admin).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap(); // never finished
        idle.push(s);
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // ...a fifth is closed at once rather than queued...
    let mut fifth = tokio::net::TcpStream::connect(server.admin).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), fifth.read(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "no answer, just closed");
    // ...and the half-sent requests are cut off after handshake_timeout.
    for mut s in idle {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("cut off by the header timeout")
            .unwrap_or(0);
        let _ = n;
    }
    let (status, _) = server.get_admin("/healthz").await;
    assert_eq!(status, 200, "the admin port serves again");
    let text = server.metrics().await;
    assert!(
        metric_value(&text, "myriad_http_rejected_total{reason=\"overloaded\"}").unwrap_or(0.0)
            >= 1.0
    );
}

#[tokio::test]
async fn an_api_call_without_a_key_is_refused_before_its_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = server().await;
    let mut s = tokio::net::TcpStream::connect(server.public).await.unwrap();
    // Headers promising 2 MB of body, then a trickle that never ends.
    s.write_all(
        b"POST /api/broadcast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n{\"to",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
}

/// The upgrade's HTTP status, or 101.
async fn upgrade_status(server: &TestServer, path_and_query: &str, origin: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("ws://{}{path_and_query}", server.public);
    let mut req = url.into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test]
async fn the_echo_endpoint_follows_the_origin_and_token_rules() {
    let server = TestServer::start_with(|c| {
        c.enable_echo = true;
        c.jwt_secret = Some("a-jwt-secret-of-at-least-thirty-two-bytes".into());
    })
    .await;
    assert_eq!(
        upgrade_status(&server, "/ws/echo", None).await,
        403,
        "token required"
    );
    assert_eq!(
        upgrade_status(&server, "/ws/echo", Some("https://evil.example")).await,
        403
    );
    let open = TestServer::start_with(|c| c.enable_echo = true).await;
    assert_eq!(upgrade_status(&open, "/ws/echo", None).await, 101);
    assert_eq!(
        upgrade_status(&open, "/ws/echo", Some("https://evil.example")).await,
        403,
        "cross-site even without keys"
    );
}

#[tokio::test]
async fn admission_decides_before_any_token_is_verified() {
    let server = TestServer::start_with(|c| {
        c.max_connections = 1;
        c.jwt_secret = Some("a-jwt-secret-of-at-least-thirty-two-bytes".into());
        c.anonymous = Some(true);
    })
    .await;
    let _held = server.client().await;
    // At the cap, a request with a (bad) token is shed without being verified.
    let status = upgrade_status(&server, "/socket/websocket?token=not.a.jwt&vsn=2.0.0", None).await;
    assert_eq!(status, 503);
    let text = server.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            "myriad_handshakes_rejected_total{reason=\"unauthorized\"}"
        ),
        Some(0.0)
    );
}

/// Upgrade from a chosen loopback source address; the HTTP status or 101.
async fn upgrade_from(server: &TestServer, source: &str) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let tcp = socket.connect(server.public).await.unwrap();
    let url = format!("ws://{}/socket/websocket?vsn=2.0.0", server.public);
    match tokio_tungstenite::client_async(url, tcp).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test]
async fn one_client_churning_upgrades_cannot_starve_the_others() {
    let server = TestServer::start_with(|c| {
        c.accept_rate_per_ip = 1;
        c.accept_burst_per_ip = 5;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(upgrade_from(&server, "127.0.0.1").await);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 101).count(),
        5,
        "{statuses:?}"
    );
    assert!(statuses.iter().skip(5).all(|s| *s == 503));
    assert_eq!(
        upgrade_from(&server, "127.0.0.2").await,
        101,
        "another address still gets in"
    );
    let text = server.metrics().await;
    assert_eq!(
        metric_value(&text, "myriad_shed_total{reason=\"accept_rate_per_ip\"}"),
        Some(15.0)
    );
}

async fn upgrade_forwarded_for(server: &TestServer, xff: &str) -> (u16, Option<Client>) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("ws://{}/socket/websocket?vsn=2.0.0", server.public);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("x-forwarded-for", xff.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => (101, Some(Client::from_ws(ws))),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (resp.status().as_u16(), None),
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test]
async fn per_address_caps_see_real_clients_behind_trusted_proxies_only() {
    let behind_proxy = TestServer::start_with(|c| {
        c.max_connections_per_ip = 1;
        c.trusted_proxies = vec!["127.0.0.0/8".into()];
    })
    .await;
    let (a, _ha) = upgrade_forwarded_for(&behind_proxy, "198.51.100.1").await;
    let (b, _hb) = upgrade_forwarded_for(&behind_proxy, "9.9.9.9, 198.51.100.2").await;
    let (again, _) = upgrade_forwarded_for(&behind_proxy, "198.51.100.1").await;
    assert_eq!(
        (a, b, again),
        (101, 101, 503),
        "two clients, then the first one's second"
    );
    // Without trusted_proxies the header is the client's own claim: ignored.
    let direct = TestServer::start_with(|c| c.max_connections_per_ip = 1).await;
    let (first, _h) = upgrade_forwarded_for(&direct, "198.51.100.1").await;
    let (second, _) = upgrade_forwarded_for(&direct, "198.51.100.2").await;
    assert_eq!((first, second), (101, 503));
}

/// GET `url` with 20 wrong API keys, then the right one: the statuses of the
/// guesses and the last answer.
async fn guess_keys(url: &str) -> (Vec<u16>, reqwest::Response) {
    let http = reqwest::Client::new();
    let get = |key: String| {
        http.get(url)
            .header("authorization", format!("Bearer {key}"))
            .send()
    };
    let mut statuses = Vec::new();
    for i in 0..20 {
        statuses.push(get(format!("guess-{i}")).await.unwrap().status().as_u16());
    }
    (statuses, get(KEY.to_string()).await.unwrap())
}

#[tokio::test]
async fn guessing_api_keys_gets_an_address_throttled() {
    let server = server().await;
    let (statuses, resp) = guess_keys(&format!("http://{}/api/stats", server.public)).await;
    assert!(statuses[..5].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // Blocked: even the right key waits (the key is not compared meanwhile).
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let text = server.metrics().await;
    assert!(
        metric_value(&text, "myriad_http_rejected_total{reason=\"throttled\"}").unwrap_or(0.0)
            >= 2.0
    );
}

/// Upgrade behind a PROXY protocol v1 header naming `client`; the status and
/// the connection (kept open by the caller).
async fn upgrade_proxied(server: &TestServer, client: &str) -> (u16, Option<Client>) {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(server.public).await.unwrap();
    tcp.write_all(format!("PROXY TCP4 {client} 127.0.0.1 40000 4000\r\n").as_bytes())
        .await
        .unwrap();
    let url = format!("ws://{}/socket/websocket?vsn=2.0.0", server.public);
    match tokio_tungstenite::client_async(url, tcp).await {
        Ok((ws, _)) => {
            let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                tokio_tungstenite::MaybeTlsStream::Plain(ws.into_inner()),
                tokio_tungstenite::tungstenite::protocol::Role::Client,
                None,
            )
            .await;
            (101, Some(Client::from_ws(ws)))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (resp.status().as_u16(), None),
        Err(_) => (0, None),
    }
}

#[tokio::test]
async fn behind_a_proxy_protocol_balancer_caps_count_the_real_clients() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_with(|c| {
        c.proxy_protocol = true;
        c.max_connections_per_ip = 1;
    })
    .await;
    // One TCP peer (the balancer), two clients: each within its own cap...
    let (a, _held_a) = upgrade_proxied(&server, "198.51.100.1").await;
    let (b, _held_b) = upgrade_proxied(&server, "198.51.100.2").await;
    // ...and the first one's second connection over its cap.
    let (again, _) = upgrade_proxied(&server, "198.51.100.1").await;
    assert_eq!((a, b, again), (101, 101, 503));
    // A connection without the header (not from the balancer) is closed.
    let mut raw = tokio::net::TcpStream::connect(server.public).await.unwrap();
    raw.write_all(b"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), raw.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    let text = server.metrics().await;
    assert_eq!(
        metric_value(
            &text,
            "myriad_handshakes_rejected_total{reason=\"proxy_protocol\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn the_console_is_no_way_around_the_key_throttle() {
    let server = TestServer::start_with(|c| {
        c.api_keys = vec![KEY.to_string()];
        c.admin_ui = true;
    })
    .await;
    let (statuses, resp) = guess_keys(&format!("http://{}/console/overview", server.admin)).await;
    assert!(statuses[..5].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert_eq!(resp.status().as_u16(), 429, "blocked even with the key");
}
