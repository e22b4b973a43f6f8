//! The Phoenix V2 dispatch rules against a live server (docs/protocol.md §3.2, §8).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use common::{metric_value, Client, TestServer};
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn join_ok_replies_with_the_join_refs() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(json!(["1", "1", "room:lobby", "phx_join", {"user": "a"}]))
        .await;
    assert_eq!(
        c.recv().await,
        json!(["1", "1", "room:lobby", "phx_reply", {"status": "ok", "response": {}}])
    );
}

#[tokio::test]
async fn push_is_replied_and_broadcast_to_every_member() {
    let server = TestServer::start().await;
    let mut sender = server.client().await;
    let jr = sender.join_ok("room:lobby").await;
    let mut others = Vec::new();
    for _ in 0..3 {
        let mut c = server.client().await;
        c.join_ok("room:lobby").await;
        others.push(c);
    }
    sender
        .send(json!([jr, "9", "room:lobby", "new_msg", {"body": "hi"}]))
        .await;
    let expected_broadcast = json!([null, null, "room:lobby", "new_msg", {"body": "hi"}]);
    // The sender gets the reply and, being a member, the broadcast too.
    let mut got = vec![sender.recv().await, sender.recv().await];
    got.sort_by_key(|v| v[3].to_string());
    assert_eq!(
        got,
        vec![
            expected_broadcast.clone(),
            json!([jr, "9", "room:lobby", "phx_reply", {"status": "ok", "response": {}}]),
        ]
    );
    for c in &mut others {
        assert_eq!(c.recv().await, expected_broadcast);
    }
    server.wait_metric("myriad_broadcasts_total", 1.0).await;
}

#[tokio::test]
async fn heartbeat_is_answered_without_any_channel() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(json!([null, "1", "phoenix", "heartbeat", {}])).await;
    assert_eq!(
        c.recv().await,
        json!([null, "1", "phoenix", "phx_reply", {"status": "ok", "response": {}}])
    );
}

#[tokio::test]
async fn leave_replies_then_closes_and_stops_broadcasts() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let jr = a.join_ok("room:lobby").await;
    let jb = b.join_ok("room:lobby").await;
    a.send(json!([jr, "3", "room:lobby", "phx_leave", {}]))
        .await;
    assert_eq!(
        a.recv().await,
        json!([jr, "3", "room:lobby", "phx_reply", {"status": "ok", "response": {}}])
    );
    assert_eq!(
        a.recv().await,
        json!([jr, jr, "room:lobby", "phx_close", {}])
    );
    // After leaving, B's broadcast no longer reaches A.
    b.push(&jb, "room:lobby", "after", json!({})).await;
    assert_eq!(
        a.sync().await,
        Vec::<serde_json::Value>::new(),
        "A must receive nothing"
    );
    server.wait_metric("myriad_channel_leaves_total", 1.0).await;
}

#[tokio::test]
async fn leave_of_a_topic_not_joined_replies_ok_without_close() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(json!(["7", "5", "room:x", "phx_leave", {}])).await;
    assert_eq!(
        c.recv().await,
        json!(["7", "5", "room:x", "phx_reply", {"status": "ok", "response": {}}])
    );
    assert_eq!(c.recv_opt(Duration::from_millis(200)).await, None);
}

#[tokio::test]
async fn push_to_a_topic_not_joined_is_unmatched_with_null_join_ref() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(json!(["1", "4", "room:lobby", "new_msg", {}])).await;
    assert_eq!(
        c.recv().await,
        json!([null, "4", "room:lobby", "phx_reply", {"status": "error", "response": {"reason": "unmatched topic"}}])
    );
}

#[tokio::test]
async fn join_of_an_unroutable_topic_is_unmatched() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(json!(["1", "1", "phoenix", "phx_join", {}])).await;
    assert_eq!(
        c.recv().await,
        json!([null, "1", "phoenix", "phx_reply", {"status": "error", "response": {"reason": "unmatched topic"}}])
    );
    server
        .wait_metric("myriad_channel_joins_total{result=\"error\"}", 1.0)
        .await;
}

#[tokio::test]
async fn duplicate_join_replies_then_closes_the_old_join() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.send(json!(["1", "1", "room:lobby", "phx_join", {}]))
        .await;
    c.recv().await;
    c.send(json!(["3", "3", "room:lobby", "phx_join", {}]))
        .await;
    assert_eq!(
        c.recv().await,
        json!(["3", "3", "room:lobby", "phx_reply", {"status": "ok", "response": {}}])
    );
    assert_eq!(
        c.recv().await,
        json!(["1", "1", "room:lobby", "phx_close", {}])
    );
    // Stale join_ref: dropped silently. Null join_ref: delivered.
    c.send(json!(["1", "4", "room:lobby", "new_msg", {}])).await;
    c.send(json!([null, "5", "room:lobby", "new_msg", {}]))
        .await;
    let (reply, before) = c.recv_until(|v| v[3] == "phx_reply").await;
    assert_eq!(
        reply[1], "5",
        "only the null-join_ref push is answered: {reply}"
    );
    assert_eq!(reply[0], "3");
    assert!(before.iter().all(|v| v[3] == "new_msg"));
    c.sync().await;
    // Still exactly one subscription: one broadcast per push, not two.
    c.push("3", "room:lobby", "once", json!({})).await;
    let seen = c.sync().await;
    assert_eq!(
        seen.iter().filter(|v| v[3] == "once").count(),
        1,
        "{seen:?}"
    );
}

#[tokio::test]
async fn non_object_payload_is_refused_not_broadcast() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let jr = c.join_ok("room:lobby").await;
    let (reply, _) = c
        .push(&jr, "room:lobby", "new_msg", json!("just a string"))
        .await;
    assert_eq!(reply[4]["status"], "error");
    assert_eq!(
        reply[4]["response"]["reason"],
        "payload must be a JSON object"
    );
}

async fn expect_malformed_close(
    text_or_binary: Result<&str, Vec<u8>>,
    code: CloseCode,
    kind: &str,
) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let server = TestServer::start().await;
    let mut c = server.client().await;
    match text_or_binary {
        Ok(text) => c.send_text(text).await,
        Err(bytes) => c.ws.send(Message::binary(bytes)).await.unwrap(),
    }
    assert_eq!(c.close_code().await, code, "frame kind {kind}");
    let label = format!("myriad_malformed_frames_total{{kind=\"{kind}\"}}");
    server.wait_metric(&label, 1.0).await;
    // The server is unaffected: a new client works.
    let mut fresh = server.client().await;
    fresh.join_ok("room:after").await;
}

#[tokio::test]
async fn malformed_bad_json_closes_1007() {
    expect_malformed_close(Ok("{not json"), CloseCode::Invalid, "bad_json").await;
}

#[tokio::test]
async fn malformed_not_an_array_closes_1007() {
    expect_malformed_close(Ok(r#"{"topic":"x"}"#), CloseCode::Invalid, "not_array").await;
}

#[tokio::test]
async fn malformed_wrong_arity_closes_1007() {
    expect_malformed_close(
        Ok(r#"["1","1","room:lobby"]"#),
        CloseCode::Invalid,
        "wrong_arity",
    )
    .await;
}

#[tokio::test]
async fn malformed_non_string_topic_closes_1007() {
    expect_malformed_close(
        Ok(r#"["1","1",42,"phx_join",{}]"#),
        CloseCode::Invalid,
        "bad_field",
    )
    .await;
}

/// A binary frame that is not a V2 binary push (docs/protocol.md §2.2).
#[tokio::test]
async fn malformed_binary_frame_closes_1007() {
    expect_malformed_close(Err(vec![0, 1, 2]), CloseCode::Invalid, "bad_binary").await;
    expect_malformed_close(Err(vec![7]), CloseCode::Invalid, "bad_binary").await;
}

#[tokio::test]
async fn invalid_utf8_text_closes_1007() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::Message;
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let frame = Frame::message(vec![b'[', 0xff, 0xfe, b']'], OpCode::Data(Data::Text), true);
    c.ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(c.close_code().await, CloseCode::Invalid);
    server
        .wait_metric("myriad_malformed_frames_total{kind=\"invalid_utf8\"}", 1.0)
        .await;
}

#[tokio::test]
async fn message_over_max_message_size_closes_1009() {
    let server = TestServer::start_with(|c| {
        c.max_message_size = 1024;
        c.max_frame_size = 1024;
    })
    .await;
    let mut c = server.client().await;
    let big = "x".repeat(4096);
    c.send_text(&format!(r#"[null,"1","room:a","e",{{"b":"{big}"}}]"#))
        .await;
    assert_eq!(c.close_code().await, CloseCode::Size);
    server
        .wait_metric(
            "myriad_sessions_closed_total{reason=\"message_too_big\"}",
            1.0,
        )
        .await;
}

#[tokio::test]
async fn messages_and_bytes_are_counted() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let jr = c.join_ok("room:count").await;
    c.push(&jr, "room:count", "e", json!({})).await;
    let text = server.metrics().await;
    assert!(metric_value(&text, "myriad_messages_received_total").unwrap_or(0.0) >= 2.0);
    assert!(metric_value(&text, "myriad_received_bytes_total").unwrap_or(0.0) > 0.0);
    let _ = Client::connect(&server.ws_url()).await;
}
