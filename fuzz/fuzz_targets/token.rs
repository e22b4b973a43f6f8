//! Connect tokens from the query and the subprotocol header.
#![no_main]
use libfuzzer_sys::fuzz_target;
use myriad::auth::Authenticator;
use myriad::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = Config {
        jwt_secret: Some("a-jwt-secret-of-at-least-thirty-two-bytes".into()),
        ..Config::default()
    };
    let Ok(auth) = Authenticator::new(&config, Default::default()) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(&format!("phoenix, base64url.bearer.phx.{text}")) {
        headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, v);
    }
    let _ = auth.authenticate(&headers, Some(text));
    let _ = auth.authenticate(&headers, None);
});
