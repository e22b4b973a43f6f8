//! `/socket/longpoll` spoken by hand: the open/poll/post cycle, and what an
//! attacker or a broken client gets (forged tokens, oversized bodies, a
//! client that stops polling).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use common::{TestServer, DEADLINE};
use serde_json::Value;

async fn lp(s: &TestServer, method: &str, query: &str, body: String) -> (u16, Value) {
    let url = format!("http://{}/socket/longpoll?vsn=2.0.0{query}", s.public);
    let http = reqwest::Client::new();
    let req = match method {
        "POST" => http.post(url).body(body),
        _ => http.get(url),
    };
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn a_session_opens_takes_frames_and_answers_polls() {
    let s = TestServer::start_with(|c| c.longpoll_hold = Duration::from_millis(300)).await;
    let (_, opened) = lp(&s, "GET", "", String::new()).await;
    assert_eq!(opened["status"], 410);
    let token = opened["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("lp1."));
    let q = format!("&token={token}");
    // Nothing yet: the poll is held, then 204.
    let (_, empty) = lp(&s, "GET", &q, String::new()).await;
    assert_eq!(empty["status"], 204);
    // A batch of two frames, answered in order through the next poll.
    let batch =
        "[\"1\",\"1\",\"room:lp\",\"phx_join\",{}]\n[null,\"2\",\"phoenix\",\"heartbeat\",{}]";
    let (_, posted) = lp(&s, "POST", &q, batch.into()).await;
    assert_eq!(posted["status"], 200);
    let (_, polled) = lp(&s, "GET", &q, String::new()).await;
    assert_eq!(polled["status"], 200);
    let refs: Vec<Value> = polled["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| serde_json::from_str::<Value>(m.as_str().unwrap()).unwrap()[1].clone())
        .collect();
    assert_eq!(refs, ["1", "2"]);
    s.wait_metric("myriad_sessions_active", 1.0).await;
}

#[tokio::test]
async fn forged_tokens_and_oversized_bodies_get_nothing() {
    let s = TestServer::start().await;
    let (_, opened) = lp(&s, "GET", "", String::new()).await;
    let token = opened["token"].as_str().unwrap().to_owned();
    // Same node and session, another signature; another session id.
    let (body, _) = token.rsplit_once('.').unwrap();
    let forged = format!("&token={body}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(lp(&s, "GET", &forged, String::new()).await.1["status"], 410);
    let other_session = token.replacen(".1.", ".2.", 1);
    assert_eq!(
        lp(&s, "POST", &format!("&token={other_session}"), "[]".into())
            .await
            .1["status"],
        410
    );
    let (status, _) = lp(&s, "POST", &format!("&token={token}"), "x".repeat(2 << 20)).await;
    assert_eq!(status, 413);
    s.wait_metric("myriad_http_rejected_total{reason=\"too_large\"}", 1.0)
        .await;
    // A malformed frame ends the session like on a WebSocket.
    let q = format!("&token={token}");
    assert_eq!(
        lp(&s, "POST", &q, "{not a frame".into()).await.1["status"],
        200
    );
    s.wait_metric(
        "myriad_sessions_closed_total{reason=\"malformed_frame\"}",
        1.0,
    )
    .await;
    assert_eq!(lp(&s, "GET", &q, String::new()).await.1["status"], 410);
}

#[tokio::test]
async fn a_client_that_stops_polling_is_gone_after_the_window() {
    let s = TestServer::start_with(|c| {
        c.longpoll_hold = Duration::from_millis(100);
        c.longpoll_window = Duration::from_millis(500);
    })
    .await;
    let (_, opened) = lp(&s, "GET", "", String::new()).await;
    let q = format!("&token={}", opened["token"].as_str().unwrap());
    s.wait_metric("myriad_sessions_closed_total{reason=\"idle_timeout\"}", 1.0)
        .await;
    assert_eq!(lp(&s, "GET", &q, String::new()).await.1["status"], 410);
    let _ = DEADLINE;
}

#[tokio::test]
async fn a_frame_over_max_message_size_ends_the_session_as_on_a_websocket() {
    let s = TestServer::start_with(|c| {
        c.max_message_size = 1024;
        c.max_frame_size = 1024;
    })
    .await;
    let (_, opened) = lp(&s, "GET", "", String::new()).await;
    let q = format!("&token={}", opened["token"].as_str().unwrap());
    let big = format!(
        "[null,\"1\",\"room:x\",\"m\",{{\"p\":\"{}\"}}]",
        "x".repeat(2000)
    );
    assert_eq!(lp(&s, "POST", &q, big).await.1["status"], 410);
    s.wait_metric("myriad_malformed_frames_total{kind=\"too_big\"}", 1.0)
        .await;
    s.wait_metric(
        "myriad_sessions_closed_total{reason=\"message_too_big\"}",
        1.0,
    )
    .await;
}

#[tokio::test]
async fn a_session_holds_one_poll_at_a_time() {
    let s = TestServer::start_with(|c| c.longpoll_hold = Duration::from_secs(5)).await;
    let (_, opened) = lp(&s, "GET", "", String::new()).await;
    let q = format!("&token={}", opened["token"].as_str().unwrap());
    let held = tokio::spawn({
        let url = format!("http://{}/socket/longpoll?vsn=2.0.0{q}", s.public);
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A second poll while the first waits: answered at once, not held.
    let started = std::time::Instant::now();
    let (_, second) = lp(&s, "GET", &q, String::new()).await;
    assert_eq!(second["status"], 204);
    assert!(started.elapsed() < Duration::from_secs(2));
    held.abort();
}

#[tokio::test]
async fn a_client_that_polled_and_then_vanished_is_gone_after_the_window() {
    let s = TestServer::start_with(|c| {
        c.longpoll_hold = Duration::from_millis(100);
        c.longpoll_window = Duration::from_millis(500);
    })
    .await;
    let (_, opened) = lp(&s, "GET", "", String::new()).await;
    let q = format!("&token={}", opened["token"].as_str().unwrap());
    // As phoenix.js does: a poll is out while a frame is POSTed (the session
    // handles it mid-poll), the poll ends, and then the client is gone.
    let held = tokio::spawn({
        let url = format!("http://{}/socket/longpoll?vsn=2.0.0{q}", s.public);
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let beat = "[null,\"1\",\"phoenix\",\"heartbeat\",{}]".to_owned();
    assert_eq!(lp(&s, "POST", &q, beat).await.1["status"], 200);
    assert!(held.await.unwrap().contains("\"status\":200"));
    s.wait_metric("myriad_sessions_closed_total{reason=\"idle_timeout\"}", 1.0)
        .await;
    s.wait_metric("myriad_sessions_active", 0.0).await;
}
