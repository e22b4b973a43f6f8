//! Outbound back-pressure: a member that stops reading is cut off (mailbox
//! overflow → slow_consumer, or a stuck socket → write_timeout) while the
//! publisher and the healthy members carry on.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use common::{metric_value, Ended, TestServer};
use myriad::config::SlowConsumerPolicy;
use serde_json::json;

const TOPIC: &str = "room:flood";
/// 1000 × 16 KiB = 16 MiB: more than loopback socket buffers hold.
const MESSAGES: usize = 1000;

fn body() -> String {
    "x".repeat(16 * 1024)
}

/// Publisher pushes MESSAGES broadcasts, waiting for each reply; a healthy
/// member reads everything; the stuck member never reads.
async fn flood(server: &TestServer) -> (common::Client, usize) {
    let mut stuck = server.client().await;
    stuck.join_ok(TOPIC).await;
    let mut healthy = server.client().await;
    healthy.join_ok(TOPIC).await;
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < MESSAGES {
            if healthy.recv().await[3] == "m" {
                got += 1;
            }
        }
        got
    });
    let mut publisher = server.client().await;
    let jr = publisher.join_ok(TOPIC).await;
    let b = body();
    for seq in 0..MESSAGES {
        publisher
            .push(&jr, TOPIC, "m", json!({"seq": seq, "b": b}))
            .await;
    }
    let got = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    (stuck, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_reading_is_disconnected_as_slow_consumer() {
    let server = TestServer::start_with(|c| {
        c.client_rate = 0; // the publisher floods on purpose
        c.mailbox_capacity = 16;
        c.slow_consumer = SlowConsumerPolicy::Disconnect;
    })
    .await;
    let (mut stuck, got) = flood(&server).await;
    assert_eq!(got, MESSAGES, "the healthy member received every message");
    server
        .wait_metric(
            "myriad_sessions_closed_total{reason=\"slow_consumer\"}",
            1.0,
        )
        .await;
    // The stuck client finds its connection ended once it reads again.
    let ended = stuck.ended().await;
    assert!(
        matches!(ended, Ended::Dropped | Ended::Closed(_)),
        "{ended:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_never_drains_hits_write_timeout() {
    let server = TestServer::start_with(|c| {
        c.client_rate = 0;
        c.mailbox_capacity = 1_000_000;
        c.mailbox_max_bytes = 1 << 30;
        c.write_timeout = Duration::from_millis(300);
    })
    .await;
    let (_stuck, got) = flood(&server).await;
    assert_eq!(got, MESSAGES);
    server
        .wait_metric(
            "myriad_sessions_closed_total{reason=\"write_timeout\"}",
            1.0,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_counts_what_it_drops() {
    let server = TestServer::start_with(|c| {
        c.client_rate = 0;
        c.mailbox_capacity = 16;
        c.slow_consumer = SlowConsumerPolicy::DropOldest;
        c.write_timeout = Duration::from_secs(60);
    })
    .await;
    let (_stuck, got) = flood(&server).await;
    assert_eq!(got, MESSAGES);
    let text = server.metrics().await;
    let dropped = metric_value(&text, "myriad_mailbox_dropped_total").unwrap();
    assert!(
        dropped > 0.0,
        "the stuck member's oldest messages were dropped and counted"
    );
    assert_eq!(
        metric_value(
            &text,
            "myriad_sessions_closed_total{reason=\"slow_consumer\"}"
        ),
        Some(0.0)
    );
}
