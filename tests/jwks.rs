//! Connect tokens verified with an identity provider's keys (`jwt_jwks_url`):
//! the node fetches the set from a small HTTP server this test runs, follows
//! a key rotation, and holds against tokens that lie about their key.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::cluster::Node;
use common::{poll_until, DEADLINE};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use serde_json::json;
use tokio_tungstenite::tungstenite;

/// What the provider serves, and how often it was asked.
#[derive(Default)]
struct Provider {
    body: Mutex<String>,
    fetches: AtomicUsize,
}

async fn serve_jwks(State(p): State<Arc<Provider>>) -> String {
    p.fetches.fetch_add(1, Ordering::Relaxed);
    p.body.lock().clone()
}

async fn provider() -> (Arc<Provider>, String) {
    let p = Arc::new(Provider::default());
    let app = axum::Router::new()
        .route("/jwks.json", get(serve_jwks))
        .with_state(Arc::clone(&p));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (p, url)
}

/// A P-256 signing key: its public JWK (under `kid`) and its encoding key.
struct SigningKey {
    jwk: serde_json::Value,
    encoding: EncodingKey,
}

fn signing_key(kid: &str) -> SigningKey {
    let pair = rcgen::KeyPair::generate().unwrap();
    let point = pair.public_key_raw();
    assert_eq!(point.len(), 65, "uncompressed P-256 point");
    SigningKey {
        jwk: json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }),
        encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(key: &SigningKey, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(String::from);
    encode(
        &header,
        &json!({"sub": "alice", "exp": now() + 60}),
        &key.encoding,
    )
    .unwrap()
}

/// The HTTP status of an upgrade with `token` (101 when accepted).
async fn upgrade_status(node: &Node, token: &str) -> u16 {
    let url = format!("{}&token={token}", node.ws_url());
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Ok(_) => 101,
        Err(tungstenite::Error::Http(r)) => r.status().as_u16(),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

fn set(keys: &[&SigningKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_checked_against_the_providers_keys_and_follow_a_rotation() {
    let (provider, url) = provider().await;
    let (k1, k2) = (signing_key("k1"), signing_key("k2"));
    // The provider is down (empty answer) when the node starts: not ready.
    let node = Node::spawn(&[
        "--jwt-jwks-url",
        &url,
        "--jwt-jwks-refresh",
        "1h",
        "--jwt-jwks-min-interval",
        "1s",
    ]);
    assert_eq!(node.readyz().await, 503);
    assert_eq!(upgrade_status(&node, &token(&k1, Some("k1"))).await, 403);
    // It comes up with k1: the node retries, loads it, becomes ready.
    *provider.body.lock() = set(&[&k1]);
    assert!(poll_until(DEADLINE, || async { node.readyz().await == 200 }).await);
    assert_eq!(node.metric("myriad_jwks_keys").await, Some(1.0));
    assert_eq!(upgrade_status(&node, &token(&k1, Some("k1"))).await, 101);
    // The only key also serves a token without a kid.
    assert_eq!(upgrade_status(&node, &token(&k1, None)).await, 101);

    // Rotation: k2 appears at the provider. The first k2 token is refused
    // (the node has not seen k2) and makes it look again; within the
    // minimum interval k2 tokens work, with refresh set to an hour.
    *provider.body.lock() = set(&[&k1, &k2]);
    assert_eq!(upgrade_status(&node, &token(&k2, Some("k2"))).await, 403);
    assert!(
        poll_until(DEADLINE, || async {
            upgrade_status(&node, &token(&k2, Some("k2"))).await == 101
        })
        .await,
        "a token of a rotated-in key is accepted after the refetch"
    );
    assert_eq!(node.metric("myriad_jwks_keys").await, Some(2.0));
    // Two keys: a token must say which.
    assert_eq!(upgrade_status(&node, &token(&k1, None)).await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_tokens_and_a_kid_flood_get_nothing() {
    let (provider, url) = provider().await;
    let (k1, stranger) = (signing_key("k1"), signing_key("k1"));
    *provider.body.lock() = set(&[&k1]);
    let node = Node::spawn(&[
        "--jwt-jwks-url",
        &url,
        "--jwt-jwks-refresh",
        "1h",
        "--jwt-jwks-min-interval",
        "5s",
    ]);
    assert!(poll_until(DEADLINE, || async { node.readyz().await == 200 }).await);
    // Another key that claims to be k1.
    assert_eq!(
        upgrade_status(&node, &token(&stranger, Some("k1"))).await,
        403
    );
    // Algorithm confusion: HS256 keyed with the public key's JWK text.
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".into());
    let confused = encode(
        &hs,
        &json!({"sub": "mallory", "exp": now() + 60}),
        &EncodingKey::from_secret(k1.jwk.to_string().as_bytes()),
    )
    .unwrap();
    assert_eq!(upgrade_status(&node, &confused).await, 403);
    // A kid far too long is refused without a lookup.
    let long = token(&k1, Some(&"k".repeat(5000)));
    assert_eq!(upgrade_status(&node, &long).await, 403);

    // 50 made-up kids within the minimum interval: at most one refetch.
    let before = provider.fetches.load(Ordering::Relaxed);
    for i in 0..50 {
        let kid = format!("made-up-{i}");
        assert_eq!(upgrade_status(&node, &token(&k1, Some(&kid))).await, 403);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fetched = provider.fetches.load(Ordering::Relaxed) - before;
    assert!(fetched <= 1, "{fetched} fetches for 50 unknown kids");

    // The provider starts serving garbage: the node keeps its keys.
    *provider.body.lock() = String::from("<html>oops</html>");
    let _ = upgrade_status(&node, &token(&k1, Some("another-made-up"))).await;
    assert!(
        poll_until(Duration::from_secs(15), || async {
            node.metric("myriad_jwks_refreshes_total{result=\"error\"}")
                .await
                .unwrap_or(0.0)
                >= 1.0
        })
        .await
    );
    assert_eq!(upgrade_status(&node, &token(&k1, Some("k1"))).await, 101);
}

#[test]
fn config_check_refuses_jwks_urls_in_the_clear_and_mixed_keys() {
    for (args, key) in [
        (
            vec!["--jwt-jwks-url", "http://idp.example.com/jwks.json"],
            "jwt_jwks_url",
        ),
        (
            vec!["--jwt-jwks-url", "ftp://127.0.0.1/jwks.json"],
            "jwt_jwks_url",
        ),
        (
            vec![
                "--jwt-jwks-url",
                "https://idp.example.com/jwks.json",
                "--jwt-secret",
                "a-jwt-secret-of-at-least-thirty-two-bytes",
            ],
            "jwt_jwks_url",
        ),
        (
            vec!["--jwt-jwks-min-interval", "1h"],
            "jwt_jwks_min_interval",
        ),
    ] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_myriad"));
        let out = common::without_myriad_env(&mut cmd)
            .args(common::SERVE_ON_FREE_PORTS)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{args:?}: {err}");
    }
}
