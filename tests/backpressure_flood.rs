//! A subscriber that stops reading while a publisher sends 100 000 messages:
//! server memory stays bounded by the mailbox, 50 healthy subscribers of the
//! same topic receive every message in order, and the stuck one is cut off with
//! 1013 (disconnect) or loses exactly the messages counted as dropped
//! (drop_oldest).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{metric_value, Client, TestServer};
use futures_util::{SinkExt, StreamExt};
use myriad::config::SlowConsumerPolicy;
use myriad::process;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const MESSAGES: u64 = 100_000;
const HEALTHY: usize = 50;
const TOPIC: &str = "room:flood";
const MAILBOX_BYTES: usize = 1 << 20;
/// Stated bound on process RSS growth during the flood: the stuck session's
/// mailbox (1 MiB) plus slack for 52 sessions' buffers, the test's own clients
/// and allocator churn. Without the mailbox bound, the 100 000 messages (~9 MB
/// of frames) would pile up for the stuck subscriber alone.
const RSS_GROWTH_BOUND: u64 = 48 << 20;

/// The sequence number in `[null,null,"room:flood","m",{"s":N}]` without a JSON parse.
fn seq(text: &str) -> Option<u64> {
    let i = text.find("\"s\":")? + 4;
    text[i..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

async fn healthy_reader(mut c: Client) -> u64 {
    // One deadline for the whole read: a timer per message would make these
    // in-process readers (sharing two cores with the server) slow enough to
    // fall a mailbox behind, which is not what this test is about.
    let read_all = async {
        let mut next = 0;
        while next < MESSAGES {
            match c.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    if let Some(s) = seq(t.as_str()) {
                        assert_eq!(s, next, "in order, no gap, no duplicate");
                        next += 1;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("healthy subscriber lost its connection at {next}: {other:?}"),
            }
        }
        next
    };
    tokio::time::timeout(Duration::from_secs(120), read_all)
        .await
        .expect("a healthy subscriber read everything within 120 s")
}

/// Runs the flood; returns the stuck client (unread) and the peak RSS growth.
async fn flood(server: &TestServer) -> (Client, u64) {
    let mut readers = Vec::new();
    for _ in 0..HEALTHY {
        let mut c = server.client().await;
        c.join_ok(TOPIC).await;
        readers.push(tokio::spawn(healthy_reader(c)));
    }
    let mut stuck = server.client().await;
    stuck.join_ok(TOPIC).await;
    let mut publisher = server.client().await;
    let jr = publisher.join_ok(TOPIC).await;

    let rss_before = process::resident_bytes().unwrap();
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let peak = Arc::clone(&peak);
        tokio::spawn(async move {
            loop {
                if let Some(rss) = process::resident_bytes() {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let (mut sink, mut stream) = publisher.ws.split();
    // The publisher reads its replies and its own broadcasts so it is never the slow one.
    let drain = tokio::spawn(async move {
        let mut replies = 0;
        while replies < MESSAGES {
            match stream.next().await {
                Some(Ok(Message::Text(t))) if t.as_str().contains("phx_reply") => replies += 1,
                Some(Ok(_)) => {}
                other => panic!("publisher connection ended: {other:?}"),
            }
        }
    });
    for s in 0..MESSAGES {
        let frame = json!([jr, format!("p{s}"), TOPIC, "m", {"s": s}]).to_string();
        sink.feed(Message::text(frame)).await.unwrap();
        if s % 256 == 255 {
            sink.flush().await.unwrap();
        }
    }
    sink.flush().await.unwrap();
    for r in readers {
        assert_eq!(
            r.await.unwrap(),
            MESSAGES,
            "every healthy subscriber got every message"
        );
    }
    drain.await.unwrap();
    sampler.abort();
    let growth = peak.load(Ordering::Relaxed).saturating_sub(rss_before);
    (stuck, growth)
}

fn config(c: &mut myriad::config::Config, policy: SlowConsumerPolicy) {
    c.client_rate = 0;
    // Healthy readers share two cores with the server and the flood in this
    // process; 8192 messages of slack keeps them healthy on a loaded CI box.
    // The stuck reader still overflows: the kernel may only buffer 64 KiB for
    // it (without socket_send_buffer it would absorb ~4 MiB of the flood).
    c.mailbox_capacity = 8192;
    c.socket_send_buffer = 64 * 1024;
    c.mailbox_max_bytes = MAILBOX_BYTES;
    c.slow_consumer = policy;
    c.close_timeout = Duration::from_secs(60);
    c.write_timeout = Duration::from_secs(120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_subscriber_is_cut_off_with_1013_and_memory_stays_bounded() {
    let server = TestServer::start_with(|c| config(c, SlowConsumerPolicy::Disconnect)).await;
    let (mut stuck, growth) = flood(&server).await;
    assert!(
        growth < RSS_GROWTH_BOUND,
        "RSS grew {growth} bytes, bound {RSS_GROWTH_BOUND}"
    );
    server
        .wait_metric(
            "myriad_sessions_closed_total{reason=\"slow_consumer\"}",
            1.0,
        )
        .await;
    // Reading again, the stuck client drains what the kernel buffered, then
    // finds the 1013 close the server was waiting to send.
    assert_eq!(stuck.close_code().await, CloseCode::Again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_loses_exactly_what_it_counts() {
    let server = TestServer::start_with(|c| config(c, SlowConsumerPolicy::DropOldest)).await;
    let (mut stuck, growth) = flood(&server).await;
    assert!(
        growth < RSS_GROWTH_BOUND,
        "RSS grew {growth} bytes, bound {RSS_GROWTH_BOUND}"
    );
    // Now read everything that reached the stuck client, in order, until quiet.
    let mut received = 0u64;
    let mut last = None;
    while let Some(v) = stuck.recv_opt(Duration::from_secs(2)).await {
        if v[3] == "m" {
            let s = v[4]["s"].as_u64().unwrap();
            assert!(last.is_none_or(|l| s > l), "order kept across drops");
            last = Some(s);
            received += 1;
        }
    }
    assert_eq!(
        last,
        Some(MESSAGES - 1),
        "the newest message is never the one dropped"
    );
    let dropped =
        metric_value(&server.metrics().await, "myriad_mailbox_dropped_total").unwrap() as u64;
    assert!(dropped > 0);
    assert_eq!(
        received + dropped,
        MESSAGES,
        "received {received} + dropped {dropped}"
    );
}
