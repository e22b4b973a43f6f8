//! Supervision: channel crashes stay in their channel, restart intensity
//! escalates to 1011, session panics close only their session.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use common::{Client, TestServer};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const TOPIC: &str = "crash:room";
const MESSAGES: usize = 200;

async fn fault_server() -> TestServer {
    TestServer::start_with(|c| {
        c.enable_fault_injection = true;
        c.client_rate = 0; // publishers flood on purpose
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_channels_do_not_touch_the_other_members() {
    let server = fault_server().await;
    let mut members = Vec::new();
    for _ in 0..100 {
        let mut c = server.client().await;
        let jr = c.join_ok(TOPIC).await;
        members.push((c, jr));
    }
    let mut publisher = server.client().await;
    let pub_jr = publisher.join_ok(TOPIC).await;
    let crashers: Vec<(Client, String)> = members.drain(..10).collect();

    // The publisher broadcasts while the ten crash their channels.
    let publishing = tokio::spawn(async move {
        for seq in 0..MESSAGES {
            let r = format!("p{seq}");
            publisher
                .send(json!([pub_jr, r, TOPIC, "tick", {"seq": seq}]))
                .await;
        }
        publisher
    });
    let crashing = tokio::spawn(async move {
        let mut done = Vec::new();
        for (mut c, jr) in crashers {
            c.send(json!([jr, "boom", TOPIC, "panic", {}])).await;
            let (err, _) = c.recv_until(|v| v[3] == "phx_error").await;
            assert_eq!(
                err,
                json!([jr, jr, TOPIC, "phx_error", {"reason": "channel_crash"}])
            );
            // No reply ever comes for the push that crashed; the client rejoins.
            let (_, reply) = c.join(TOPIC, json!({})).await;
            assert_eq!(reply[4]["status"], "ok", "rejoin after crash: {reply}");
            done.push(c);
        }
        done
    });

    let mut receivers = Vec::new();
    for (mut c, _) in members {
        receivers.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            while seqs.len() < MESSAGES {
                let v = c.recv().await;
                assert_ne!(v[3], "phx_error", "a healthy member saw a crash: {v}");
                if v[3] == "tick" {
                    seqs.push(v[4]["seq"].as_u64().unwrap() as usize);
                }
            }
            (seqs, c)
        }));
    }
    let mut healthy = Vec::new();
    for r in receivers {
        let (seqs, c) = r.await.expect("receiver");
        healthy.push(c);
        assert_eq!(
            seqs,
            (0..MESSAGES).collect::<Vec<_>>(),
            "every broadcast, in order"
        );
    }
    let mut publisher = publishing.await.unwrap();
    let crashed = crashing.await.unwrap();
    assert_eq!(crashed.len(), 10);
    server
        .wait_metric("myriad_channel_crashes_total", 10.0)
        .await;
    server.wait_metric("myriad_sessions_active", 101.0).await;
    assert_eq!(healthy.len(), 90);
    let replies: Vec<Value> = publisher.sync().await;
    assert!(replies.iter().all(|v| v[3] != "phx_error"));
}

#[tokio::test]
async fn exceeding_restart_intensity_closes_the_session_with_1011() {
    let server = TestServer::start_with(|c| {
        c.enable_fault_injection = true;
        c.max_restarts = 3;
        c.max_seconds = 60;
    })
    .await;
    let mut bystander = server.client().await;
    bystander.join_ok(TOPIC).await;
    let mut c = server.client().await;
    for crash in 1..=4 {
        let jr = c.join_ok(TOPIC).await;
        c.send(json!([jr, "x", TOPIC, "panic", {}])).await;
        let (err, _) = c.recv_until(|v| v[3] == "phx_error").await;
        assert_eq!(err[0], json!(jr), "crash {crash}");
    }
    assert_eq!(c.close_code().await, CloseCode::Error);
    server
        .wait_metric(
            "myriad_sessions_closed_total{reason=\"restart_intensity\"}",
            1.0,
        )
        .await;
    server
        .wait_metric("myriad_channel_crashes_total", 4.0)
        .await;
    // The bystander lives on and still gets broadcasts.
    bystander.sync().await;
}

#[tokio::test]
async fn a_session_panic_closes_only_that_session_with_1011() {
    let server = fault_server().await;
    let mut other = server.client().await;
    let other_jr = other.join_ok(TOPIC).await;
    let mut c = server.client().await;
    let jr = c.join_ok(TOPIC).await;
    c.send(json!([jr, "x", TOPIC, "panic_session", {}])).await;
    assert_eq!(c.close_code().await, CloseCode::Error);
    server.wait_metric("myriad_session_panics_total", 1.0).await;
    server
        .wait_metric(
            "myriad_sessions_closed_total{reason=\"session_panic\"}",
            1.0,
        )
        .await;
    // Cleanup ran: the panicked session left the topic.
    server.wait_metric("myriad_sessions_active", 1.0).await;
    let (reply, _) = other.push(&other_jr, TOPIC, "still_here", json!({})).await;
    assert_eq!(reply[4]["status"], "ok");
    assert_eq!(server.state.registry.len(), 1);
}

#[tokio::test]
async fn a_panicking_join_handler_replies_join_crashed() {
    let server = fault_server().await;
    let mut c = server.client().await;
    let (_, reply) = c.join(TOPIC, json!({"crash_on_join": true})).await;
    assert_eq!(
        reply[4],
        json!({"status": "error", "response": {"reason": "join crashed"}})
    );
    // Not joined: a push is unmatched. The connection is fine.
    c.send(json!([null, "2", TOPIC, "e", {}])).await;
    let v = c.recv().await;
    assert_eq!(v[4]["response"]["reason"], "unmatched topic");
    c.join_ok(TOPIC).await;
    server
        .wait_metric("myriad_channel_crashes_total", 1.0)
        .await;
}

#[tokio::test]
async fn fault_injection_is_off_by_default() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let (_, reply) = c.join(TOPIC, json!({})).await;
    assert_eq!(
        reply[4],
        json!({"status": "error", "response": {"reason": "unmatched topic"}}),
        "crash:* does not exist without the flag"
    );
}
