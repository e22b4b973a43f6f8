//! The backend hooks against an in-process backend: every hook's happy path,
//! and every way a backend fails (slow, down, garbage, overloaded), with the
//! node staying healthy and other topics unaffected.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::{poll_until, Client, TestServer, DEADLINE};
use myriad::config::hooks::{HookEndpoint, HooksConfig};
use myriad::config::{Config, NamespaceConfig, Publish};
use parking_lot::Mutex;
use serde_json::{json, Value};

const SECRET: &str = "a-hook-secret-of-at-least-32-bytes!!";

/// How the backend answers one hook.
#[derive(Clone)]
struct Answer {
    delay: Duration,
    status: u16,
    body: String,
}

impl Answer {
    fn json(v: Value) -> Answer {
        Answer {
            delay: Duration::ZERO,
            status: 200,
            body: v.to_string(),
        }
    }
    fn ok(result: Value) -> Answer {
        Answer::json(json!({ "result": result }))
    }
    fn deny(reason: &str) -> Answer {
        Answer::json(json!({"error": {"reason": reason}}))
    }
    fn slow(mut self, d: Duration) -> Answer {
        self.delay = d;
        self
    }
}

/// The backend: answers per hook, and every request it saw.
#[derive(Default)]
struct Backend {
    answers: Mutex<HashMap<String, Answer>>,
    seen: Mutex<Vec<(String, Value, HeaderMap)>>,
    /// Answer this many requests with 503 first (whatever the hook).
    fail_first: std::sync::atomic::AtomicUsize,
}

impl Backend {
    fn set(&self, hook: &str, a: Answer) {
        self.answers.lock().insert(hook.to_owned(), a);
    }
    fn seen(&self, hook: &str) -> Vec<Value> {
        self.seen
            .lock()
            .iter()
            .filter(|(h, _, _)| h == hook)
            .map(|(_, v, _)| v.clone())
            .collect()
    }
}

async fn answer(
    State(b): State<Arc<Backend>>,
    Path(hook): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    // Every request is signed; a receiver checks it like this.
    common::assert_signed(SECRET, &headers, &body);
    b.seen.lock().push((hook.clone(), v, headers));
    let failing = b
        .fail_first
        .fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |n| n.checked_sub(1),
        )
        .is_ok();
    if failing {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
    }
    let a = b
        .answers
        .lock()
        .get(&hook)
        .cloned()
        .unwrap_or_else(|| Answer::ok(json!({})));
    tokio::time::sleep(a.delay).await;
    (StatusCode::from_u16(a.status).unwrap(), a.body).into_response()
}

/// A backend on a free port; its base URL.
async fn backend() -> (Arc<Backend>, String) {
    let b = Arc::new(Backend::default());
    let app = axum::Router::new()
        .route("/{hook}", post(answer))
        .with_state(Arc::clone(&b));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (b, url)
}

fn ep(base: &str, hook: &str) -> Option<HookEndpoint> {
    Some(HookEndpoint {
        url: format!("{base}/{hook}"),
        timeout: None,
        concurrency: None,
    })
}

/// `hooked:*` with join, publish and rpc hooks (rpc for `load_more`),
/// presence and history; `room:*` without hooks.
fn hooked_config(c: &mut Config, base: &str) {
    c.client_rate = 0;
    c.hooks = HooksConfig {
        secret: Some(SECRET.into()),
        timeout: Duration::from_millis(500),
        breaker_failures: 3,
        breaker_cooldown: Duration::from_secs(60),
        forward_headers: vec!["cookie".into()],
        ..HooksConfig::default()
    };
    c.namespaces = vec![
        NamespaceConfig {
            presence: true,
            history_size: 10,
            join_hook: ep(base, "join"),
            publish_hook: ep(base, "publish"),
            rpc_hook: ep(base, "rpc"),
            rpc_events: vec!["load_more".into()],
            ..NamespaceConfig::new("hooked:*")
        },
        NamespaceConfig::new("room:*"),
    ];
}

async fn server(base: &str, tweak: impl FnOnce(&mut Config)) -> TestServer {
    let base = base.to_owned();
    TestServer::start_with(move |c| {
        hooked_config(c, &base);
        tweak(c);
    })
    .await
}

fn reason(reply: &Value) -> &Value {
    &reply[4]["response"]["reason"]
}

#[tokio::test]
async fn the_join_hook_decides_and_shapes_the_join() {
    let (b, base) = backend().await;
    let s = server(&base, |_| {}).await;
    let mut c = s.client().await;
    b.set("join", Answer::deny("not a member"));
    let (_, reply) = c.join("hooked:1", json!({"password": "nope"})).await;
    assert_eq!(reply[4]["status"], "error");
    assert_eq!(reason(&reply), "not a member");
    let seen = b.seen("join");
    assert_eq!(seen[0]["topic"], "hooked:1");
    assert_eq!(seen[0]["params"]["password"], "nope");
    assert!(seen[0]["id"].as_str().is_some_and(|id| !id.is_empty()));
    b.set(
        "join",
        Answer::ok(
            json!({"response": {"welcome": "ann"}, "meta": {"role": "mod"}, "info": {"room": 1}}),
        ),
    );
    let (_, reply) = c.join("hooked:1", json!({"password": "yes"})).await;
    assert_eq!(reply[4]["status"], "ok", "{reply}");
    assert_eq!(reply[4]["response"]["welcome"], "ann");
    // The backend's meta is what presence shows.
    let (state, _) = c.recv_until(|v| v[3] == "presence_state").await;
    let metas = state[4].as_object().unwrap().values().next().unwrap()["metas"].clone();
    assert_eq!(metas[0]["role"], "mod", "{state}");
    s.wait_metric("myriad_join_refusals_total{reason=\"backend_denied\"}", 1.0)
        .await;
    s.wait_metric(
        "myriad_hook_requests_total{hook=\"join\",result=\"ok\"}",
        1.0,
    )
    .await;
}

#[tokio::test]
async fn the_publish_hook_accepts_rewrites_or_refuses_and_only_accepted_pushes_are_kept() {
    let (b, base) = backend().await;
    let s = server(&base, |_| {}).await;
    let mut pusher = s.client().await;
    let mut member = s.client().await;
    let jr = pusher.join_ok("hooked:p").await;
    member.join_ok("hooked:p").await;
    member.sync().await;

    b.set("publish", Answer::deny("banned word"));
    let (reply, _) = pusher
        .push(&jr, "hooked:p", "msg", json!({"body": "darn"}))
        .await;
    assert_eq!(reason(&reply), "banned word");
    b.set(
        "publish",
        Answer::ok(json!({"payload": {"body": "clean", "id": 42}, "response": {"id": 42}})),
    );
    let (reply, _) = pusher
        .push(&jr, "hooked:p", "msg", json!({"body": "hello"}))
        .await;
    assert_eq!(reply[4]["status"], "ok");
    assert_eq!(reply[4]["response"]["id"], 42);
    let (got, _) = member.recv_until(|v| v[3] == "msg").await;
    assert_eq!(got[4], json!({"body": "clean", "id": 42}));
    let seen = b.seen("publish");
    assert_eq!(seen[1]["payload"]["body"], "hello");
    assert_eq!(seen[1]["event"], "msg");
    // History holds the accepted, rewritten push only.
    let mut late = s.client().await;
    b.set("join", Answer::ok(json!({})));
    let (_, reply) = late.join("hooked:p", json!({"history": true})).await;
    assert_eq!(reply[4]["status"], "ok");
    let frames = late.sync().await;
    let kept: Vec<&Value> = frames.iter().filter(|f| f[3] == "msg").collect();
    assert_eq!(kept.len(), 1, "{frames:?}");
    assert_eq!(kept[0][4]["body"], "clean");
}

#[tokio::test]
async fn an_rpc_is_answered_to_the_pusher_only() {
    let (b, base) = backend().await;
    let s = server(&base, |_| {}).await;
    let mut pusher = s.client().await;
    let mut member = s.client().await;
    let jr = pusher.join_ok("hooked:r").await;
    member.join_ok("hooked:r").await;
    b.set(
        "rpc",
        Answer::ok(json!({"response": {"messages": [1, 2, 3]}})),
    );
    let (reply, _) = pusher
        .push(&jr, "hooked:r", "load_more", json!({"before": 10}))
        .await;
    assert_eq!(reply[4]["status"], "ok");
    assert_eq!(reply[4]["response"]["messages"], json!([1, 2, 3]));
    assert_eq!(b.seen("rpc")[0]["payload"]["before"], 10);
    assert!(b.seen("publish").is_empty(), "an rpc is not a publish");
    assert!(member.sync().await.iter().all(|f| f[3] != "load_more"));
}

#[tokio::test]
async fn a_slow_backend_holds_only_its_own_topic_and_order_is_kept() {
    let (b, base) = backend().await;
    let s = server(&base, |_| {}).await;
    let mut c = s.client().await;
    let plain = c.join_ok("room:free").await;
    b.set(
        "join",
        Answer::ok(json!({})).slow(Duration::from_millis(300)),
    );
    // Join, then at once a push on the same topic, a heartbeat and a push
    // elsewhere: the last two are answered while the join waits.
    c.send(json!(["1", "1", "hooked:s", "phx_join", {}])).await;
    c.send(json!(["1", "2", "hooked:s", "msg", {"n": 1}])).await;
    c.send(json!([null, "3", "phoenix", "heartbeat", {}])).await;
    c.send(json!([plain, "4", "room:free", "msg", {}])).await;
    let mut order = Vec::new();
    while order.len() < 4 {
        let v = c.recv().await;
        if v[3] == "phx_reply" {
            order.push(v[1].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        order,
        ["3", "4", "1", "2"],
        "other topics first; the topic in order"
    );
}

#[tokio::test]
async fn timeouts_and_a_dead_backend_fail_fast_behind_the_breaker() {
    let (b, base) = backend().await;
    let s = server(&base, |_| {}).await;
    let mut c = s.client().await;
    b.set("join", Answer::ok(json!({})).slow(Duration::from_secs(5)));
    for _ in 0..3 {
        let (_, reply) = c.join("hooked:t", json!({})).await;
        assert_eq!(reason(&reply), "backend unavailable");
    }
    s.wait_metric(
        "myriad_hook_requests_total{hook=\"join\",result=\"timeout\"}",
        3.0,
    )
    .await;
    s.wait_metric("myriad_hook_breaker_open{hook=\"join\"}", 1.0)
        .await;
    // Open: refused at once, the backend not asked.
    let asked = b.seen("join").len();
    let started = std::time::Instant::now();
    let (_, reply) = c.join("hooked:t", json!({})).await;
    assert_eq!(reason(&reply), "backend unavailable");
    assert!(started.elapsed() < Duration::from_millis(400));
    assert_eq!(b.seen("join").len(), asked);
    s.wait_metric(
        "myriad_hook_requests_total{hook=\"join\",result=\"breaker_open\"}",
        1.0,
    )
    .await;
    // The node is fine, and so are topics without hooks.
    assert_eq!(s.get_admin("/readyz").await.0, 200);
    let jr = c.join_ok("room:ok").await;
    let (reply, _) = c.push(&jr, "room:ok", "m", json!({})).await;
    assert_eq!(reply[4]["status"], "ok");
}

#[tokio::test]
async fn garbage_and_error_statuses_are_failures_not_refusals() {
    let (b, base) = backend().await;
    let s = server(&base, |_| {}).await;
    let mut c = s.client().await;
    for (body, status) in [
        ("<html>oops</html>", 200),
        ("{\"result\": 5}", 200),
        ("{}", 500),
    ] {
        b.set(
            "join",
            Answer {
                delay: Duration::ZERO,
                status,
                body: body.into(),
            },
        );
        let (_, reply) = c.join("hooked:g", json!({})).await;
        assert_eq!(reason(&reply), "backend unavailable", "{body}");
    }
    s.wait_metric(
        "myriad_hook_requests_total{hook=\"join\",result=\"garbage\"}",
        2.0,
    )
    .await;
    s.wait_metric(
        "myriad_hook_requests_total{hook=\"join\",result=\"error\"}",
        1.0,
    )
    .await;
    // A huge answer is cut off, not read.
    b.set(
        "join",
        Answer::json(json!({"result": {"response": {"x": "y".repeat(100_000)}}})),
    );
    let (_, reply) = c.join("hooked:g", json!({})).await;
    assert_eq!(reason(&reply), "backend unavailable");
}

#[tokio::test]
async fn a_session_cannot_pile_up_calls() {
    let (b, base) = backend().await;
    let s = server(&base, |c| c.hooks.max_pending_per_session = 4).await;
    let mut c = s.client().await;
    b.set(
        "join",
        Answer::ok(json!({})).slow(Duration::from_millis(300)),
    );
    for i in 0..10 {
        c.send(json!([null, i.to_string(), "hooked:x", "msg", {}]))
            .await;
        if i == 0 {
            c.send(json!(["j", "j", "hooked:x", "phx_join", {}])).await;
        }
    }
    let mut too_many = 0;
    let mut joined = false;
    while !joined {
        let v = c.recv().await;
        if v[3] == "phx_reply" && reason(&v) == "too many pending" {
            too_many += 1;
        }
        joined |= v[1] == "j";
    }
    assert!(too_many >= 5, "{too_many}");
    s.wait_metric(
        "myriad_client_refusals_total{reason=\"too_many_pending\"}",
        too_many as f64,
    )
    .await;
}

#[tokio::test]
async fn the_connect_hook_decides_who_connects() {
    let (b, base) = backend().await;
    let s = server(&base, |c| c.hooks.connect = ep(&base, "connect")).await;
    b.set(
        "connect",
        Answer::ok(json!({"user": "ann", "topics": ["hooked:*"], "info": {"plan": "pro"}})),
    );
    let url = format!("{}&user_token=abc", s.ws_url());
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        url.as_str(),
    )
    .unwrap();
    req.headers_mut()
        .insert("cookie", "session=s3cret".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut c = Client::from_ws(ws);
    let seen = b.seen("connect");
    assert_eq!(seen[0]["params"]["user_token"], "abc");
    assert!(seen[0]["params"].get("vsn").is_none());
    assert_eq!(seen[0]["headers"]["cookie"], "session=s3cret");
    assert_eq!(seen[0]["remote_addr"], "127.0.0.1");
    // Its user and info reach the later hooks; its topics bound the joins.
    b.set("join", Answer::ok(json!({})));
    c.join_ok("hooked:c").await;
    let join = b.seen("join");
    assert_eq!(join[0]["user"], "ann");
    assert_eq!(join[0]["info"]["plan"], "pro");
    let (_, reply) = c.join("room:other", json!({})).await;
    assert_eq!(reason(&reply), "unauthorized");

    b.set(
        "connect",
        Answer::json(json!({"error": {"reason": "log in first", "status": 401}})),
    );
    let refused = tokio_tungstenite::connect_async(s.ws_url()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 401);
            let body =
                String::from_utf8_lossy(r.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("log in first"), "{body}");
        }
        other => panic!("expected 401, got {other:?}"),
    }
    b.set(
        "connect",
        Answer::ok(json!({})).slow(Duration::from_secs(5)),
    );
    match tokio_tungstenite::connect_async(s.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 503);
            assert!(r.headers().contains_key("retry-after"));
        }
        other => panic!("expected 503, got {other:?}"),
    }
    s.wait_metric(
        "myriad_handshakes_rejected_total{reason=\"backend_denied\"}",
        1.0,
    )
    .await;
    s.wait_metric(
        "myriad_handshakes_rejected_total{reason=\"backend_unavailable\"}",
        1.0,
    )
    .await;
}

#[tokio::test]
async fn the_refresh_hook_extends_a_connection_or_ends_it() {
    let (b, base) = backend().await;
    let s = server(&base, |c| {
        c.hooks.connect = ep(&base, "connect");
        c.hooks.refresh = ep(&base, "refresh");
    })
    .await;
    b.set(
        "connect",
        Answer::ok(json!({"user": "ann", "expires_in": 1})),
    );
    b.set("refresh", Answer::ok(json!({"expires_in": 1})));
    let mut c = s.client().await;
    // Two expiries pass; each is extended.
    assert!(
        poll_until(Duration::from_secs(4), || async {
            b.seen("refresh").len() >= 2
        })
        .await
    );
    c.sync().await;
    assert_eq!(b.seen("refresh")[0]["user"], "ann");
    // The backend says no: the connection ends with 4001.
    b.set("refresh", Answer::deny("session revoked"));
    assert_eq!(
        c.close_code().await,
        tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Library(4001)
    );
    let _ = DEADLINE;
}

#[tokio::test]
async fn publish_hooks_need_a_members_namespace() {
    let c = Config {
        namespaces: vec![NamespaceConfig {
            publish: Publish::Server,
            publish_hook: ep("http://127.0.0.1:1", "publish"),
            ..NamespaceConfig::new("events:*")
        }],
        ..Config::default()
    };
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("publish_hook"), "{err}");
    let c = Config {
        hooks: HooksConfig {
            connect: ep("ftp://x", "connect"),
            ..HooksConfig::default()
        },
        ..Config::default()
    };
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("hooks"), "{err}");
}

#[tokio::test]
async fn a_hostile_backend_answer_is_bounded() {
    let (b, base) = backend().await;
    let s = server(&base, |c| {
        c.hooks.connect = ep(&base, "connect");
        c.presence_max_meta_bytes = 256;
    })
    .await;
    // A connect refusal with a status outside 4xx and an absurd expiry.
    b.set(
        "connect",
        Answer::json(json!({"error": {"reason": "no", "status": 200}})),
    );
    match tokio_tungstenite::connect_async(s.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
    b.set(
        "connect",
        Answer::ok(json!({"user": "ann", "expires_in": u64::MAX})),
    );
    // A user id longer than any node accepts as a presence key: garbage.
    b.set("connect", Answer::ok(json!({"user": "u".repeat(2000)})));
    match tokio_tungstenite::connect_async(s.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    s.wait_metric(
        "myriad_hook_requests_total{hook=\"connect\",result=\"garbage\"}",
        1.0,
    )
    .await;
    b.set(
        "connect",
        Answer::ok(json!({"user": "ann", "expires_in": u64::MAX})),
    );
    let mut c = s.client().await;
    // A 10 KB reason reaches the client cut to 256 bytes.
    b.set("join", Answer::deny(&"r".repeat(10_000)));
    let (_, reply) = c.join("hooked:h", json!({})).await;
    assert_eq!(reason(&reply).as_str().unwrap().len(), 256);
    // A presence meta over presence_max_meta_bytes refuses the join.
    b.set(
        "join",
        Answer::ok(json!({"meta": {"bio": "x".repeat(1000)}})),
    );
    let (_, reply) = c.join("hooked:h", json!({})).await;
    assert_eq!(reason(&reply), "presence meta too large");
    // A replacement payload deeper than max_payload_depth is not broadcast.
    b.set("join", Answer::ok(json!({})));
    let jr = c.join_ok("hooked:h").await;
    let deep: Value = serde_json::from_str(&format!(
        "{{\"x\":{}1{}}}",
        "[".repeat(100),
        "]".repeat(100)
    ))
    .unwrap();
    b.set("publish", Answer::ok(json!({"payload": deep})));
    let (reply, _) = c.push(&jr, "hooked:h", "msg", json!({"a": 1})).await;
    assert_eq!(reason(&reply), "backend unavailable");
    assert!(c.sync().await.iter().all(|f| f[3] != "msg"));
    // The session lived through all of it (no overflowed expiry timer).
    let (reply, _) = c.push(&jr, "hooked:h", "msg", json!({"a": 1})).await;
    assert_eq!(reply[4]["status"], "error");
}

#[tokio::test]
async fn repeatable_calls_are_retried_and_publishes_are_not() {
    let (b, base) = backend().await;
    let s = server(&base, |_| {}).await;
    let mut c = s.client().await;
    // A join is safe to repeat: one 503, then it goes through.
    b.fail_first.store(1, std::sync::atomic::Ordering::Relaxed);
    let jr = c.join_ok("hooked:retry").await;
    let joins = b.seen("join");
    assert_eq!(joins.len(), 2, "retried once");
    assert_eq!(
        joins[0]["id"], joins[1]["id"],
        "same request id: an idempotency key"
    );
    // A publish is not: one 503 is the answer.
    b.fail_first.store(1, std::sync::atomic::Ordering::Relaxed);
    let (reply, _) = c.push(&jr, "hooked:retry", "msg", json!({})).await;
    assert_eq!(reason(&reply), "backend unavailable");
    assert_eq!(b.seen("publish").len(), 1);
}

#[tokio::test]
async fn the_connect_hook_sees_a_verified_tokens_claims() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    const JWT: &str = "a-jwt-secret-of-at-least-thirty-two-bytes";
    let (b, base) = backend().await;
    let s = server(&base, |c| {
        c.hooks.connect = ep(&base, "connect");
        c.jwt_secret = Some(JWT.into());
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = encode(
        &Header::default(),
        &json!({"sub": "ann", "exp": now + 60, "plan": "pro"}),
        &EncodingKey::from_secret(JWT.as_bytes()),
    )
    .unwrap();
    let _c = Client::connect(&format!("{}&token={token}", s.ws_url())).await;
    let seen = b.seen("connect");
    assert_eq!(seen[0]["claims"]["sub"], "ann");
    assert_eq!(seen[0]["claims"]["plan"], "pro");
    // With a key set, no token means no connection: the hook is not asked.
    let refused = tokio_tungstenite::connect_async(s.ws_url()).await;
    assert!(refused.is_err());
    assert_eq!(b.seen("connect").len(), 1);
}
