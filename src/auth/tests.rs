use super::*;
use http::HeaderValue;
use jsonwebtoken::{encode, EncodingKey, Header};

const SECRET: &str = "unit-test-secret-of-at-least-32-bytes";

fn auth(anonymous: bool) -> Authenticator {
    let config = Config {
        anonymous: Some(anonymous),
        anonymous_topics: vec![String::from("*")],
        jwt_secret: Some(String::from(SECRET)),
        api_keys: vec![String::from("k1")],
        ..Config::default()
    };
    Authenticator::new(&config, Arc::default()).unwrap()
}

fn token(sub: &str, exp_in: i64, topics: Option<Vec<&str>>) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut claims = serde_json::json!({"sub": sub, "exp": now + exp_in});
    if let Some(t) = topics {
        claims["topics"] = serde_json::json!(t);
    }
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[test]
fn query_token_is_verified() {
    let id = auth(false)
        .authenticate(&HeaderMap::new(), Some(&token("u1", 60, None)))
        .unwrap();
    assert_eq!(id.user.as_deref(), Some("u1"));
    assert!(id.expires_in.unwrap() <= Duration::from_secs(60));
    assert!(id.may_join("anything"));
}

#[test]
fn subprotocol_token_uses_standard_base64_without_padding() {
    let t = token("u2", 60, Some(vec!["room:*"]));
    let b = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&t);
    let mut h = HeaderMap::new();
    h.insert(
        http::header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_str(&format!("phoenix, {BEARER_PREFIX}{b}")).unwrap(),
    );
    let id = auth(false).authenticate(&h, None).unwrap();
    assert_eq!(id.user.as_deref(), Some("u2"));
    assert!(id.echo_subprotocol);
    assert!(id.may_join("room:1") && !id.may_join("chat:1"));
}

#[test]
fn refusals() {
    let a = auth(false);
    assert_eq!(
        a.authenticate(&HeaderMap::new(), None).unwrap_err(),
        AuthError::TokenRequired
    );
    assert_eq!(
        a.authenticate(&HeaderMap::new(), Some(&token("u", -10, None)))
            .unwrap_err(),
        AuthError::Expired
    );
    assert!(matches!(
        a.authenticate(&HeaderMap::new(), Some("garbage"))
            .unwrap_err(),
        AuthError::InvalidToken(_)
    ));
    assert!(auth(true)
        .authenticate(&HeaderMap::new(), None)
        .unwrap()
        .user
        .is_none());
}

#[test]
fn origin_defaults_to_same_host() {
    let a = auth(true);
    let mut h = HeaderMap::new();
    h.insert(
        http::header::HOST,
        HeaderValue::from_static("chat.example:4000"),
    );
    h.insert(
        http::header::ORIGIN,
        HeaderValue::from_static("https://chat.example:4000"),
    );
    assert!(a.authenticate(&h, None).is_ok());
    h.insert(
        http::header::ORIGIN,
        HeaderValue::from_static("https://evil.example"),
    );
    assert!(matches!(
        a.authenticate(&h, None),
        Err(AuthError::OriginNotAllowed(_))
    ));
}

#[test]
fn api_keys() {
    let a = auth(true);
    let mut h = HeaderMap::new();
    assert!(!a.api_key_ok(&h));
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_static("Bearer k1"),
    );
    assert!(a.api_key_ok(&h));
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_static("Bearer k2"),
    );
    assert!(!a.api_key_ok(&h));
}

fn signed(claims: serde_json::Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn short_or_empty_secrets_are_refused() {
    for secret in ["", "s3cret", &"x".repeat(31)] {
        let config = Config {
            jwt_secret: Some(secret.to_owned()),
            ..Config::default()
        };
        let err = Authenticator::new(&config, Arc::default()).err().unwrap();
        assert!(err.contains("at least 32 bytes"), "{err}");
    }
}

#[test]
fn a_token_not_yet_valid_is_refused() {
    let a = auth(false);
    let t = signed(serde_json::json!({"sub": "u", "exp": now() + 600, "nbf": now() + 300}));
    assert!(matches!(a.verify(&t), Err(AuthError::InvalidToken(_))));
    let t = signed(serde_json::json!({"sub": "u", "exp": now() + 600, "nbf": now() - 1}));
    assert!(a.verify(&t).is_ok());
}

#[test]
fn issuer_and_audience_must_match_when_configured() {
    let config = Config {
        jwt_secret: Some(String::from(SECRET)),
        jwt_issuer: Some(String::from("https://id.example")),
        jwt_audience: Some(String::from("myriad")),
        ..Config::default()
    };
    let a = Authenticator::new(&config, Arc::default()).unwrap();
    let exp = now() + 600;
    let ok = signed(
        serde_json::json!({"sub": "u", "exp": exp, "iss": "https://id.example", "aud": "myriad"}),
    );
    assert!(a.verify(&ok).is_ok());
    for bad in [
        serde_json::json!({"sub": "u", "exp": exp, "iss": "https://evil.example", "aud": "myriad"}),
        serde_json::json!({"sub": "u", "exp": exp, "iss": "https://id.example", "aud": "other"}),
        serde_json::json!({"sub": "u", "exp": exp, "aud": "myriad"}),
        serde_json::json!({"sub": "u", "exp": exp, "iss": "https://id.example"}),
    ] {
        assert!(a.verify(&signed(bad.clone())).is_err(), "{bad}");
    }
    // Nothing configured: an `aud` in the token is accepted.
    let t = signed(serde_json::json!({"sub": "u", "exp": exp, "aud": "anything"}));
    assert!(auth(false).verify(&t).is_ok());
}

#[test]
fn an_absurd_exp_is_capped_not_overflowed() {
    let t = signed(serde_json::json!({"sub": "u", "exp": 10_000_000_000_000_000_000u64}));
    let id = auth(false).verify(&t).unwrap();
    assert_eq!(id.expires_in, Some(MAX_TOKEN_LIFETIME));
    // The session adds it to now: must not overflow.
    assert!(tokio::time::Instant::now()
        .checked_add(MAX_TOKEN_LIFETIME)
        .is_some());
}

#[test]
fn with_allowed_hosts_a_rebinding_host_is_refused() {
    let config = Config {
        allowed_hosts: vec![String::from("chat.example.com")],
        ..Config::default()
    };
    let a = Authenticator::new(&config, Arc::default()).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::HOST,
        HeaderValue::from_static("chat.example.com:443"),
    );
    assert!(a.authenticate(&headers, None).is_ok());
    // A page on evil.example rebound to our address: same-host Origin, wrong Host.
    headers.insert(
        http::header::HOST,
        HeaderValue::from_static("evil.example:4000"),
    );
    headers.insert(
        http::header::ORIGIN,
        HeaderValue::from_static("http://evil.example:4000"),
    );
    assert!(matches!(
        a.authenticate(&headers, None),
        Err(AuthError::HostNotAllowed(_))
    ));
}

#[test]
fn a_non_ascii_origin_is_refused_not_ignored() {
    let a = auth(true);
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::ORIGIN,
        HeaderValue::from_bytes(b"https://\xe9vil.example").unwrap(),
    );
    assert!(matches!(
        a.authenticate(&headers, None),
        Err(AuthError::OriginNotAllowed(_))
    ));
}
