//! Connect tokens (JWT HS256/RS256/ES256 from the query or the phoenix
//! subprotocol), anonymous access, topic claims, expiry, Origin checks.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::{Client, TestServer};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use myriad::config::JwtAlgorithm;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const SECRET: &str = "test-secret-of-at-least-thirty-two-bytes";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn hs_token(sub: &str, exp_in: i64, topics: Option<Vec<&str>>) -> String {
    let mut claims = json!({"sub": sub, "exp": now() + exp_in});
    if let Some(t) = topics {
        claims["topics"] = json!(t);
    }
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn hs_server(anonymous: bool) -> TestServer {
    TestServer::start_with(|c| {
        c.anonymous = Some(anonymous);
        c.anonymous_topics = vec!["*".into()];
        c.jwt_secret = Some(SECRET.into());
    })
    .await
}

/// Connect with extra headers; Err(status) when the upgrade is refused.
async fn connect(
    server: &TestServer,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<(Client, Option<String>), u16> {
    let url = format!("ws://{}/socket/websocket?{query}vsn=2.0.0", server.public);
    let mut req = url.into_client_request().unwrap();
    for (k, v) in headers {
        let name =
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut()
            .insert(name, HeaderValue::from_str(v).unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, resp)) => {
            let proto = resp
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_owned());
            Ok((Client::from_ws(ws), proto))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(other) => panic!("unexpected error {other}"),
    }
}

#[tokio::test]
async fn without_anonymous_access_a_token_is_required() {
    let server = hs_server(false).await;
    assert_eq!(connect(&server, "", &[]).await.err(), Some(403));
    server
        .wait_metric(
            "myriad_handshakes_rejected_total{reason=\"unauthorized\"}",
            1.0,
        )
        .await;
    let token = hs_token("alice", 60, None);
    let (mut c, proto) = connect(&server, &format!("token={token}&"), &[])
        .await
        .unwrap();
    assert_eq!(proto, None, "no subprotocol offered, none echoed");
    c.join_ok("room:a").await;
}

#[tokio::test]
async fn bad_and_expired_tokens_get_403() {
    let server = hs_server(true).await;
    assert_eq!(
        connect(&server, "token=garbage&", &[]).await.err(),
        Some(403)
    );
    let expired = hs_token("bob", -5, None);
    assert_eq!(
        connect(&server, &format!("token={expired}&"), &[])
            .await
            .err(),
        Some(403)
    );
    let other_key = encode(
        &Header::default(),
        &json!({"sub": "eve", "exp": now() + 60}),
        &EncodingKey::from_secret(b"not-the-secret"),
    )
    .unwrap();
    assert_eq!(
        connect(&server, &format!("token={other_key}&"), &[])
            .await
            .err(),
        Some(403)
    );
    server
        .wait_metric(
            "myriad_handshakes_rejected_total{reason=\"unauthorized\"}",
            3.0,
        )
        .await;
}

#[tokio::test]
async fn the_subprotocol_token_is_accepted_and_phoenix_is_echoed() {
    let server = hs_server(false).await;
    let token = hs_token("carol", 60, None);
    let b = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&token);
    let offer = format!("phoenix, base64url.bearer.phx.{b}");
    let (mut c, proto) = connect(&server, "", &[("sec-websocket-protocol", &offer)])
        .await
        .unwrap();
    assert_eq!(proto.as_deref(), Some("phoenix"));
    // The token's sub is the presence key.
    c.join("chat:auth", json!({})).await;
    let (state, _) = c.recv_until(|v| v[3] == "presence_state").await;
    assert!(state[4].get("carol").is_some(), "{state}");
}

#[tokio::test]
async fn the_topics_claim_limits_joins() {
    let server = hs_server(false).await;
    let token = hs_token("dave", 60, Some(vec!["room:allowed*"]));
    let (mut c, _) = connect(&server, &format!("token={token}&"), &[])
        .await
        .unwrap();
    c.join_ok("room:allowed-1").await;
    let (_, reply) = c.join("room:other", json!({})).await;
    assert_eq!(
        reply[4],
        json!({"status": "error", "response": {"reason": "unauthorized"}})
    );
}

#[tokio::test]
async fn the_session_is_closed_when_its_token_expires() {
    let server = hs_server(false).await;
    let token = hs_token("erin", 2, None);
    let (mut c, _) = connect(&server, &format!("token={token}&"), &[])
        .await
        .unwrap();
    c.join_ok("room:x").await;
    assert_eq!(c.close_code().await, CloseCode::Library(4001));
    server
        .wait_metric(
            "myriad_sessions_closed_total{reason=\"token_expired\"}",
            1.0,
        )
        .await;
}

#[tokio::test]
async fn cross_site_origins_are_refused_unless_allowed() {
    let server = hs_server(true).await;
    let host = server.public.to_string();
    let same = format!("http://{host}");
    assert!(connect(&server, "", &[("origin", &same)]).await.is_ok());
    assert_eq!(
        connect(&server, "", &[("origin", "https://evil.example")])
            .await
            .err(),
        Some(403)
    );
    server
        .wait_metric(
            "myriad_handshakes_rejected_total{reason=\"origin_not_allowed\"}",
            1.0,
        )
        .await;
    let open =
        TestServer::start_with(|c| c.allowed_origins = vec!["https://app.example".into()]).await;
    assert!(connect(&open, "", &[("origin", "https://app.example")])
        .await
        .is_ok());
    assert_eq!(
        connect(&open, "", &[("origin", "https://evil.example")])
            .await
            .err(),
        Some(403)
    );
}

/// A key pair from openssl: (private PKCS#8 PEM, public PEM).
fn keypair(args: &[&str]) -> (Vec<u8>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!(
        "myriad-keys-{}-{}",
        std::process::id(),
        args.join("-").replace([':', ' '], "_")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let ok = Command::new("openssl")
        .args(["genpkey", "-out"])
        .arg(&private)
        .args(args)
        .status()
        .unwrap();
    assert!(ok.success());
    let ok = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap();
    assert!(ok.success());
    (std::fs::read(&private).unwrap(), public)
}

async fn asymmetric(alg: JwtAlgorithm, jwt_alg: Algorithm, genpkey: &[&str]) {
    let (private, public) = keypair(genpkey);
    let server = TestServer::start_with(|c| {
        c.anonymous = Some(false);
        c.jwt_algorithm = alg;
        c.jwt_public_key_file = Some(public.clone());
    })
    .await;
    let key = match jwt_alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&private).unwrap(),
        _ => EncodingKey::from_ec_pem(&private).unwrap(),
    };
    let token = encode(
        &Header::new(jwt_alg),
        &json!({"sub": "frank", "exp": now() + 60}),
        &key,
    )
    .unwrap();
    let (mut c, _) = connect(&server, &format!("token={token}&"), &[])
        .await
        .unwrap();
    c.join_ok("room:k").await;
    let hs = hs_token("frank", 60, None);
    assert_eq!(
        connect(&server, &format!("token={hs}&"), &[]).await.err(),
        Some(403),
        "HS256 refused when RS/ES is configured"
    );
}

#[tokio::test]
async fn es256_tokens() {
    asymmetric(
        JwtAlgorithm::ES256,
        Algorithm::ES256,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    )
    .await;
}

#[tokio::test]
async fn rs256_tokens() {
    asymmetric(
        JwtAlgorithm::RS256,
        Algorithm::RS256,
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    )
    .await;
}

fn signed(claims: serde_json::Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_token_not_yet_valid_is_refused_with_403() {
    let server = hs_server(false).await;
    let early = signed(json!({"sub": "u", "exp": now() + 600, "nbf": now() + 300}));
    assert_eq!(
        connect(&server, &format!("token={early}&"), &[])
            .await
            .err(),
        Some(403)
    );
}

#[tokio::test]
async fn an_absurd_exp_does_not_crash_the_session() {
    let server = hs_server(false).await;
    let forever = signed(json!({"sub": "u", "exp": 10_000_000_000_000_000_000u64}));
    let (mut c, _) = connect(&server, &format!("token={forever}&"), &[])
        .await
        .unwrap();
    c.join_ok("room:1").await;
    c.sync().await;
    let text = server.metrics().await;
    assert_eq!(
        common::metric_value(&text, "myriad_session_panics_total"),
        Some(0.0)
    );
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let server = TestServer::start_with(|c| {
        c.anonymous = Some(false);
        c.jwt_secret = Some(SECRET.into());
        c.jwt_issuer = Some("https://id.example".into());
        c.jwt_audience = Some("myriad".into());
    })
    .await;
    let exp = now() + 600;
    let good = signed(
        json!({"sub": "u", "exp": exp, "iss": "https://id.example", "aud": ["x", "myriad"]}),
    );
    assert!(connect(&server, &format!("token={good}&"), &[])
        .await
        .is_ok());
    for claims in [
        json!({"sub": "u", "exp": exp, "iss": "https://evil.example", "aud": "myriad"}),
        json!({"sub": "u", "exp": exp, "iss": "https://id.example", "aud": "elsewhere"}),
        json!({"sub": "u", "exp": exp}),
    ] {
        let t = signed(claims.clone());
        assert_eq!(
            connect(&server, &format!("token={t}&"), &[]).await.err(),
            Some(403),
            "{claims}"
        );
    }
}

#[tokio::test]
async fn with_a_key_dropping_the_token_never_widens_what_a_user_may_join() {
    // Default with a key: no token, no connection.
    let strict = TestServer::start_with(|c| c.jwt_secret = Some(SECRET.into())).await;
    assert_eq!(connect(&strict, "", &[]).await.err(), Some(403));
    // Both on: anonymous connections get their own allow-list only.
    let mixed = TestServer::start_with(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.anonymous = Some(true);
        c.anonymous_topics = vec!["public:*".into()];
        c.namespaces = vec![
            myriad::config::NamespaceConfig::new("room:*"),
            myriad::config::NamespaceConfig::new("public:*"),
        ];
    })
    .await;
    let limited = hs_token("u", 60, Some(vec!["room:1"]));
    let (mut with_token, _) = connect(&mixed, &format!("token={limited}&"), &[])
        .await
        .unwrap();
    with_token.join_ok("room:1").await;
    let (mut without, _) = connect(&mixed, "", &[]).await.unwrap();
    let (_, reply) = without.join("room:2", json!({})).await;
    assert_eq!(reply[4]["response"]["reason"], "unauthorized");
    without.join_ok("public:lobby").await;
}
