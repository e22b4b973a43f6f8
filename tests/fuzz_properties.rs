//! The fuzz targets' properties on stable (proptest, fixed case counts): every
//! parser that reads outside input and the Phoenix handler fed arbitrary frame
//! sequences must never panic, and must keep their bounds. `fuzz/` runs the
//! same entry points under libFuzzer with nightly for longer.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::VecDeque;
use std::sync::Arc;

use myriad::config::{Config, NamespaceConfig, SlowConsumerPolicy};
use myriad::metrics::Metrics;
use myriad::protocol::{self, limits};
use myriad::pubsub::broker::local::LocalBroker;
use myriad::pubsub::broker::sign::Signer;
use myriad::pubsub::broker::wire;
use myriad::pubsub::mailbox::{Mailbox, MailboxLimits, Outbound};
use myriad::pubsub::Node;
use myriad::server::api_body;
use myriad::session::phoenix::PhoenixHandler;
use myriad::session::FrameHandler;
use proptest::prelude::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Utf8Bytes;

fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn the_frame_decoder_never_panics(text in ".{0,300}") {
        let _ = protocol::decode(&text);
    }

    #[test]
    fn the_frame_decoder_survives_near_frames(
        jr in prop::option::of("[0-9]{0,3}"),
        r in prop::option::of("[0-9]{0,3}"),
        topic in "[a-z:*\"\\\\]{0,12}",
        event in "[a-z_]{0,12}",
        payload in "[\\[\\]{}\"a:,0-9 ]{0,40}",
        extra in ".{0,10}",
    ) {
        let q = |s: &Option<String>| s.as_ref().map_or("null".to_owned(), |s| format!("\"{s}\""));
        let text = format!("[{},{},\"{topic}\",\"{event}\",{payload}{extra}]", q(&jr), q(&r));
        if let Ok(frame) = protocol::decode(&text) {
            prop_assert!(frame.topic.len() <= text.len());
        }
    }

    #[test]
    fn api_bodies_never_panic_and_accepted_ones_hold_the_limits(
        topic in "[a-z:]{0,300}",
        event in "(phx_|presence_)?[a-z]{0,140}",
        nest in 0usize..80,
        junk in ".{0,40}",
    ) {
        let config = Config::default();
        let payload = format!("{{\"x\":{}1{}}}", "[".repeat(nest), "]".repeat(nest));
        for body in [
            format!(r#"{{"topic":"{topic}","event":"{event}","payload":{payload}}}"#),
            format!(r#"{{"topic":"{topic}","event":"{event}","payload":{junk}}}"#),
            junk.clone(),
        ] {
            if let Ok(b) = api_body::broadcast(body.as_bytes(), &config) {
                prop_assert!(b.topic.len() <= config.max_topic_length);
                prop_assert!(b.event.len() <= config.max_event_length);
                prop_assert!(!limits::is_reserved_event(&b.event));
                prop_assert!(!limits::json_deeper_than(&b.payload, config.max_payload_depth));
            }
            let _ = api_body::disconnect(body.as_bytes());
        }
    }

    #[test]
    fn wire_decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = wire::decode_frame(&bytes);
        let _ = wire::decode_control(&Signer::new(None), &bytes);
        let _ = wire::decode_control(&Signer::new(Some("a-cluster-secret-of-at-least-32-bytes")), &bytes);
    }

    #[test]
    fn broadcast_checks_never_panic(text in ".{0,200}", topic in ".{0,10}") {
        let _ = protocol::check_broadcast(&text, &topic, protocol::SlotKind::Null);
        let _ = protocol::check_broadcast(&text, &topic, protocol::SlotKind::History);
        let _ = protocol::history_position(&text);
        let _ = protocol::broadcast_parts(&text);
        let _ = protocol::RefSlotFrame::unfill(&text);
        let _ = limits::json_deeper_than(&text, 3);
    }
}

proptest! {
    #![proptest_config(cases(300))]

    #[test]
    fn the_config_loader_never_panics(text in "[a-z_ =\"0-9\\[\\]\\.\n]{0,200}") {
        let _ = Config::from_toml(&text);
    }

    #[test]
    fn token_parsing_never_panics(token in ".{0,200}", proto in "[ -~]{0,120}") {
        let config = Config {
            jwt_secret: Some("a-jwt-secret-of-at-least-thirty-two-bytes".into()),
            ..Config::default()
        };
        let auth = myriad::auth::Authenticator::new(&config, Default::default()).unwrap();
        let mut headers = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&format!("phoenix, base64url.bearer.phx.{proto}")) {
            headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, v);
        }
        let _ = auth.authenticate(&headers, Some(&token));
        let _ = auth.authenticate(&headers, None);
    }
}

/// One of a small set of frames, mutated: the handler must answer every
/// sequence without panicking, with well-formed frames only, within bounds.
fn frame_strategy() -> impl Strategy<Value = String> {
    let topic = prop::sample::select(vec![
        "room:a".to_owned(),
        "chat:h".to_owned(),
        "crash:1".to_owned(),
        "phoenix".to_owned(),
        "nope".to_owned(),
        "room:".to_owned() + &"x".repeat(300),
    ]);
    let event = prop::sample::select(vec![
        "phx_join",
        "phx_leave",
        "heartbeat",
        "m",
        "phx_close",
        "presence_diff",
        "panic",
    ]);
    let jr = prop::sample::select(vec![
        Value::Null,
        json!("1"),
        json!("2"),
        json!("9".repeat(100)),
    ]);
    let payload = prop::sample::select(vec![
        json!({}),
        json!({"since": {"offset": 1, "epoch": "e"}}),
        json!({"history": true}),
        json!({"meta": {"m": "x".repeat(2000)}}),
        json!([1, 2]),
        json!("text"),
        json!({"crash_on_join": true}),
    ]);
    (jr, "[0-9]{1,3}", topic, event, payload, any::<u8>()).prop_map(|(jr, r, t, e, p, cut)| {
        let text = json!([jr, r, t, e, p]).to_string();
        // Now and then a truncated (malformed) frame.
        if cut > 250 {
            text[..text.len() / 2].to_owned()
        } else {
            text
        }
    })
}

proptest! {
    #![proptest_config(cases(300))]

    #[test]
    fn the_phoenix_handler_survives_any_frame_sequence(
        frames in prop::collection::vec(frame_strategy(), 1..40)
    ) {
        let mut namespaces = NamespaceConfig::defaults();
        namespaces[1].history_size = 5;
        let config = Config {
            enable_fault_injection: true,
            max_topics_per_session: 3,
            client_rate: 0,
            namespaces,
            ..Config::default()
        };
        let metrics = Metrics::new();
        let node = Arc::new(Node::new(&config, Arc::clone(&metrics), Arc::new(LocalBroker)));
        let limits = MailboxLimits {
            capacity: 64,
            max_bytes: 64 << 10,
            policy: SlowConsumerPolicy::Disconnect,
        };
        let mailbox = Arc::new(Mailbox::new(limits));
        let mut handler = PhoenixHandler::new(
            1,
            myriad::auth::Identity::default(),
            Arc::clone(&mailbox),
            Arc::clone(&node),
            metrics,
            &Arc::new(config.clone()),
            None,
        );
        for text in frames {
            let mut out = Vec::new();
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handler.on_text(&Utf8Bytes::from(text.clone()), &mut out)
            }));
            // Panics are for the session's own capture only with the
            // fault-injection session event, which this grammar never sends.
            prop_assert!(result.is_ok(), "panic on {text}");
            for frame in out {
                let Outbound::Text(t) = frame else { continue };
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                prop_assert!(v.as_array().is_some_and(|a| a.len() == 5), "{t}");
                prop_assert!(v[4].is_object(), "server payloads are objects: {t}");
                prop_assert!(t.len() < 8 << 10, "replies stay small: {}", t.len());
            }
            if result.unwrap().is_err() {
                break; // the session would close here
            }
            let mut q = VecDeque::new();
            mailbox.drain(&mut q);
            prop_assert!(q.iter().map(Outbound::len).sum::<usize>() <= limits.max_bytes);
        }
    }
}
