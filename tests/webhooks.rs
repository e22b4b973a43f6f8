//! Webhooks against an in-process receiver: every event kind arrives,
//! signed, with unique ids; a receiver that is down for a while still gets
//! every event; events spooled to a file outlive a killed node.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::cluster::Node;
use common::{poll_until, TestServer, DEADLINE};
use myriad::config::webhooks::{WebhookEvent, WebhooksConfig};
use myriad::config::NamespaceConfig;
use parking_lot::Mutex;
use serde_json::{json, Value};

const SECRET: &str = "a-webhook-secret-of-at-least-32-bytes";

/// The receiver: answers with `status`, records the events of 2xx batches.
struct Receiver {
    status: AtomicU16,
    events: Mutex<Vec<Value>>,
    posts: Mutex<usize>,
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: String) -> StatusCode {
    *r.posts.lock() += 1;
    common::assert_signed(SECRET, &headers, &body);
    let status = StatusCode::from_u16(r.status.load(Ordering::Relaxed)).unwrap();
    if status.is_success() {
        let batch: Value = serde_json::from_str(&body).unwrap();
        r.events
            .lock()
            .extend(batch["events"].as_array().unwrap().iter().cloned());
    }
    status
}

async fn receiver(status: u16) -> (Arc<Receiver>, String) {
    let r = Arc::new(Receiver {
        status: AtomicU16::new(status),
        events: Mutex::new(Vec::new()),
        posts: Mutex::new(0),
    });
    let app = axum::Router::new()
        .route("/events", post(receive))
        .with_state(Arc::clone(&r));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (r, url)
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

fn webhooks(url: &str) -> WebhooksConfig {
    WebhooksConfig {
        url: Some(url.into()),
        secret: Some(SECRET.into()),
        events: WebhookEvent::ALL.to_vec(),
        broadcast_namespaces: vec!["chat:*".into()],
        batch_interval: Duration::from_millis(50),
        ..WebhooksConfig::default()
    }
}

#[tokio::test]
async fn every_event_kind_reaches_the_receiver_signed_and_unique() {
    let (r, url) = receiver(200).await;
    let s = TestServer::start_with(|c| c.webhooks = webhooks(&url)).await;
    let mut a = s.client().await;
    let jr = a.join_ok("chat:w").await;
    a.push(&jr, "chat:w", "msg", json!({"body": "hi"})).await;
    a.send(json!([jr, "9", "chat:w", "phx_leave", {}])).await;
    a.sync().await;
    drop(a);
    let want = [
        "session_opened",
        "channel_occupied",
        "member_added",
        "broadcast",
        "member_removed",
        "channel_vacated",
        "session_closed",
    ];
    assert!(
        poll_until(DEADLINE, || async { r.events.lock().len() >= want.len() }).await,
        "{:?}",
        types(&r.events.lock())
    );
    let events = r.events.lock().clone();
    assert_eq!(types(&events), want);
    assert_eq!(events[1]["data"]["topic"], "chat:w");
    assert_eq!(events[3]["data"]["payload"]["body"], "hi");
    // Dropped without a close frame.
    assert_eq!(events[6]["data"]["reason"], "connection_lost");
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "unique ids");
    s.wait_metric("myriad_webhook_events_total{outcome=\"delivered\"}", 7.0)
        .await;
}

#[tokio::test]
async fn a_receiver_that_is_down_for_a_while_still_gets_every_event() {
    let (r, url) = receiver(503).await;
    let s = TestServer::start_with(|c| {
        c.webhooks = WebhooksConfig {
            batch_max: 3,
            ..webhooks(&url)
        };
        c.namespaces = vec![NamespaceConfig::new("room:*")];
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut c = s.client().await;
        c.join_ok(&format!("room:{i}")).await;
        clients.push(c);
    }
    // Failing, and backing off.
    assert!(poll_until(DEADLINE, || async { *r.posts.lock() >= 3 }).await);
    assert!(r.events.lock().is_empty());
    r.status.store(200, Ordering::Relaxed);
    // 5 opened + 5 occupied, in batches of at most 3.
    assert!(
        poll_until(Duration::from_secs(15), || async {
            r.events.lock().len() >= 10
        })
        .await,
        "{:?}",
        types(&r.events.lock())
    );
    let events = r.events.lock().clone();
    let ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 10);
    assert!(s
        .metrics()
        .await
        .contains("myriad_webhook_posts_total{result=\"failed\"}"));
}

#[tokio::test]
async fn a_batch_that_keeps_failing_is_dropped_and_counted() {
    let (_r, url) = receiver(500).await;
    let s = TestServer::start_with(|c| {
        c.webhooks = WebhooksConfig {
            max_attempts: 2,
            max_backoff: Duration::from_millis(100),
            ..webhooks(&url)
        };
    })
    .await;
    let _c = s.client().await;
    s.wait_metric(
        "myriad_webhook_events_total{outcome=\"retries_exhausted\"}",
        1.0,
    )
    .await;
    s.wait_metric("myriad_webhook_pending", 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_events_outlive_a_killed_node() {
    let (r, url) = receiver(503).await;
    let dir = std::env::temp_dir().join(format!("myriad-webhooks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spool = dir.join("spool.redb");
    let _ = std::fs::remove_file(&spool);
    let config = dir.join("myriad.toml");
    std::fs::write(
        &config,
        format!(
            "[webhooks]\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nspool_path = \"{}\"\nbatch_interval = \"50ms\"\nmax_backoff = \"200ms\"\n",
            spool.display()
        ),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let mut node = Node::spawn(&args);
    let mut c = node.client().await;
    c.join_ok("room:kept").await;
    c.sync().await;
    // Opened + occupied are in the spool file, undelivered.
    assert!(
        poll_until(DEADLINE, || async {
            node.metric("myriad_webhook_pending").await == Some(2.0)
        })
        .await
    );
    node.kill();
    drop(c);
    r.status.store(200, Ordering::Relaxed);
    let node = Node::spawn(&args);
    assert!(
        poll_until(DEADLINE, || async { r.events.lock().len() >= 2 }).await,
        "the spooled events arrive after the restart"
    );
    let got = types(&r.events.lock());
    assert_eq!(got[..2], ["session_opened", "channel_occupied"]);
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn shutdown_flushes_the_last_events() {
    let (r, url) = receiver(200).await;
    let s = TestServer::start_with(|c| {
        c.webhooks = WebhooksConfig {
            // Without the shutdown, these would wait a minute for company.
            batch_interval: Duration::from_secs(60),
            ..webhooks(&url)
        };
    })
    .await;
    let mut c = s.client().await;
    c.join_ok("room:last").await;
    s.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), s.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let got = types(&r.events.lock());
    assert!(got.contains(&"session_closed".to_owned()), "{got:?}");
    assert!(got.contains(&"channel_vacated".to_owned()), "{got:?}");
}
