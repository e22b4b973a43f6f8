//! The server HTTP API: auth, publish, disconnect, presence, history, stats,
//! OpenAPI, and 400s that name the field.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Client, TestServer};
use jsonwebtoken::{encode, EncodingKey, Header};
use myriad::config::NamespaceConfig;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const KEY: &str = "api-key-1";

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.api_keys = vec![KEY.into()];
        c.jwt_secret = Some("api-test-secret-of-at-least-32-bytes".into());
        // Anonymous members too (with a key that takes an explicit opt-in).
        c.anonymous = Some(true);
        c.anonymous_topics = vec!["*".into()];
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

async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("http://{}{}", server.public, path);
    let mut req = match method {
        "POST" => client.post(&url),
        _ => client.get(&url),
    };
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_owned());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn the_api_is_off_without_keys_and_needs_the_key() {
    let off = TestServer::start().await;
    let (status, body) = call(&off, "GET", "/api/stats", Some(KEY), None).await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("api_keys"));
    let server = server().await;
    assert_eq!(call(&server, "GET", "/api/stats", None, None).await.0, 401);
    assert_eq!(
        call(&server, "GET", "/api/stats", Some("wrong"), None)
            .await
            .0,
        401
    );
    let (status, stats) = call(&server, "GET", "/api/stats", Some(KEY), None).await;
    assert_eq!(status, 200);
    assert_eq!(stats["sessions"], 0);
}

#[tokio::test]
async fn broadcast_reaches_members_and_reports_offsets() {
    let server = server().await;
    let mut a = server.client().await;
    a.join_ok("room:api").await;
    let body = json!({"topic": "room:api", "event": "news", "payload": {"n": 1}}).to_string();
    let (status, resp) = call(&server, "POST", "/api/broadcast", Some(KEY), Some(&body)).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp, json!({"delivered": 1, "offset": null}));
    assert_eq!(
        a.sync().await,
        vec![json!([null, null, "room:api", "news", {"n": 1}])]
    );

    let body = json!({"topic": "chat:api", "event": "news", "payload": {}}).to_string();
    let (_, resp) = call(&server, "POST", "/api/broadcast", Some(KEY), Some(&body)).await;
    assert_eq!(resp["offset"], 1);
    let (_, resp) = call(&server, "POST", "/api/broadcast", Some(KEY), Some(&body)).await;
    assert_eq!(resp["offset"], 2);
    let (status, hist) = call(
        &server,
        "GET",
        "/api/history?topic=chat:api&since=1",
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(hist["offset"], 2);
    assert_eq!(
        hist["publications"],
        json!([{"offset": 2, "event": "news", "payload": {}}])
    );
}

#[tokio::test]
async fn bad_bodies_get_400_naming_the_field() {
    let server = server().await;
    for (body, field) in [
        (json!({"event": "e", "payload": {}}), "topic"),
        (json!({"topic": 5, "event": "e", "payload": {}}), "topic"),
        (json!({"topic": "room:a", "payload": {}}), "event"),
        (
            json!({"topic": "room:a", "event": "phx_join", "payload": {}}),
            "event",
        ),
        (json!({"topic": "room:a", "event": "e"}), "payload"),
        (
            json!({"topic": "room:a", "event": "e", "payload": [1]}),
            "payload",
        ),
    ] {
        let (status, resp) = call(
            &server,
            "POST",
            "/api/broadcast",
            Some(KEY),
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(resp["field"], field, "{body}: {resp}");
    }
    let (status, resp) = call(&server, "POST", "/api/broadcast", Some(KEY), Some("{oops")).await;
    assert_eq!(status, 400);
    assert!(resp["error"].as_str().unwrap().contains("JSON"));
    let body = json!({"topic": "nowhere:1", "event": "e", "payload": {}}).to_string();
    let (status, resp) = call(&server, "POST", "/api/broadcast", Some(KEY), Some(&body)).await;
    assert_eq!((status, resp["field"].clone()), (404, json!("topic")));
    let (status, resp) = call(&server, "POST", "/api/disconnect", Some(KEY), Some("{}")).await;
    assert_eq!((status, resp["field"].clone()), (400, json!("user")));
    let (status, resp) = call(
        &server,
        "GET",
        "/api/history?topic=chat:x&since=abc",
        Some(KEY),
        None,
    )
    .await;
    assert_eq!((status, resp["field"].clone()), (400, json!("since")));
    let (status, resp) = call(&server, "GET", "/api/presence", Some(KEY), None).await;
    assert_eq!((status, resp["field"].clone()), (400, json!("topic")));
}

#[tokio::test]
async fn disconnect_revokes_the_user_closing_its_sessions_with_4003() {
    let server = server().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = encode(
        &Header::default(),
        &json!({"sub": "mallory", "exp": now + 60}),
        &EncodingKey::from_secret(b"api-test-secret-of-at-least-32-bytes"),
    )
    .unwrap();
    let url = format!("{}&token={token}", server.ws_url());
    let mut one = Client::connect(&url).await;
    let mut two = Client::connect(&url).await;
    let mut bystander = server.client().await;
    one.sync().await;
    two.sync().await;
    let (status, resp) = call(
        &server,
        "POST",
        "/api/disconnect",
        Some(KEY),
        Some(r#"{"user":"mallory"}"#),
    )
    .await;
    assert_eq!((status, resp), (200, json!({"disconnected": 2})));
    // Not 1001: a kicked client is told not to just come back.
    assert_eq!(one.close_code().await, CloseCode::Library(4003));
    assert_eq!(two.close_code().await, CloseCode::Library(4003));
    bystander.sync().await;
    server
        .wait_metric("myriad_sessions_closed_total{reason=\"disconnected\"}", 2.0)
        .await;
    // The same token is refused from now on (the README's promise)...
    let refused = tokio_tungstenite::connect_async(url.as_str()).await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 403),
        "{refused:?}"
    );
    server
        .wait_metric("myriad_handshakes_rejected_total{reason=\"revoked\"}", 1.0)
        .await;
    // ...while one issued after the kick is accepted (read the clock again:
    // the kick may have landed a second after `now`).
    let after_kick = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let later = encode(
        &Header::default(),
        &json!({"sub": "mallory", "exp": now + 60, "iat": after_kick + 1}),
        &EncodingKey::from_secret(b"api-test-secret-of-at-least-32-bytes"),
    )
    .unwrap();
    let mut back = Client::connect(&format!("{}&token={later}", server.ws_url())).await;
    back.sync().await;
    let (_, stats) = call(&server, "GET", "/api/stats", Some(KEY), None).await;
    assert_eq!(stats["revoked_users"], 1);
}

#[tokio::test]
async fn presence_lists_members() {
    let server = server().await;
    let mut a = server.client().await;
    a.join("chat:p", json!({"meta": {"name": "ann"}})).await;
    a.sync().await;
    let (status, resp) = call(
        &server,
        "GET",
        "/api/presence?topic=chat:p",
        Some(KEY),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let presences = resp["presences"].as_object().unwrap();
    assert_eq!(presences.len(), 1);
    assert_eq!(
        presences.values().next().unwrap()["metas"][0]["name"],
        "ann"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let server = server().await;
    let (status, doc) = call(&server, "GET", "/api/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/broadcast",
        "/api/disconnect",
        "/api/presence",
        "/api/history",
        "/api/stats",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    // What the backend receives and answers is documented too.
    for schema in [
        "ConnectRequest",
        "ConnectResult",
        "JoinRequest",
        "JoinResult",
        "PushRequest",
        "PublishResult",
        "RpcResult",
        "RefreshResult",
        "Denial",
        "WebhookBatch",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "{schema} missing"
        );
    }
}
