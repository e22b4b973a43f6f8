//! The whole Phoenix handler fed a sequence of frames (one per line): no
//! panic, every direct answer a well-formed frame with an object payload.
#![no_main]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use myriad::config::{Config, SlowConsumerPolicy};
use myriad::metrics::Metrics;
use myriad::pubsub::broker::local::LocalBroker;
use myriad::pubsub::mailbox::{Mailbox, MailboxLimits, Outbound};
use myriad::pubsub::Node;
use myriad::session::phoenix::PhoenixHandler;
use myriad::session::FrameHandler;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// One node for the whole run, as in a server: a metrics recorder per input
/// would show up as leaks (its histogram blocks are freed by epoch-based
/// reclamation, after the input ends).
fn world() -> &'static (Arc<Config>, Arc<Metrics>, Arc<Node>) {
    static WORLD: OnceLock<(Arc<Config>, Arc<Metrics>, Arc<Node>)> = OnceLock::new();
    WORLD.get_or_init(|| {
        let config = Config {
            enable_fault_injection: true,
            client_rate: 0,
            max_topics_per_session: 4,
            ..Config::default()
        };
        let metrics = Metrics::new();
        let node = Arc::new(Node::new(
            &config,
            Arc::clone(&metrics),
            Arc::new(LocalBroker),
        ));
        (Arc::new(config), metrics, node)
    })
}

static SESSION: AtomicU64 = AtomicU64::new(1);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (config, metrics, node) = world();
    let (metrics, node) = (Arc::clone(metrics), Arc::clone(node));
    let mailbox = Arc::new(Mailbox::new(MailboxLimits {
        capacity: 64,
        max_bytes: 64 << 10,
        policy: SlowConsumerPolicy::Disconnect,
    }));
    let id = SESSION.fetch_add(1, Ordering::Relaxed);
    let mut handler = PhoenixHandler::new(id, Default::default(), mailbox, node, metrics, config, None);
    for line in text.lines().take(64) {
        let mut out = Vec::new();
        let result = handler.on_text(&Utf8Bytes::from(line.to_owned()), &mut out);
        for frame in out {
            if let Outbound::Text(t) = frame {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("well-formed");
                assert!(v.as_array().is_some_and(|a| a.len() == 5) && v[4].is_object());
            }
        }
        if result.is_err() {
            break;
        }
    }
});
