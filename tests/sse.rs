//! `/sse` read as curl or a server-side consumer would: plain HTTP, events
//! parsed by hand; a reconnect with Last-Event-ID gets exactly what it
//! missed, or a gap event; bad requests get clear answers; a reader that
//! stops reading is cut off like a slow WebSocket.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use common::{Client, TestServer, DEADLINE};
use serde_json::{json, Value};

/// One parsed event.
#[derive(Debug, Default, Clone)]
struct Event {
    id: Option<String>,
    kind: Option<String>,
    data: Value,
}

struct Reader {
    resp: reqwest::Response,
    buf: String,
}

impl Reader {
    async fn open(
        s: &TestServer,
        query: &str,
        last_id: Option<&str>,
    ) -> Result<Reader, (u16, String)> {
        let mut req = reqwest::Client::new().get(format!("http://{}/sse?{query}", s.public));
        if let Some(id) = last_id {
            req = req.header("last-event-id", id);
        }
        let resp = req.send().await.unwrap();
        if resp.status() != 200 {
            let status = resp.status().as_u16();
            return Err((status, resp.text().await.unwrap()));
        }
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Ok(Reader {
            resp,
            buf: String::new(),
        })
    }

    /// The next event (comments and the retry hint skipped).
    async fn next(&mut self) -> Event {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = Event::default();
                let mut seen = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        ev.id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        ev.kind = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        ev.data = serde_json::from_str(v).unwrap();
                        seen = true;
                    }
                }
                if seen {
                    return ev;
                }
                continue;
            }
            let chunk = tokio::time::timeout(DEADLINE, self.resp.chunk())
                .await
                .expect("an event in time")
                .unwrap()
                .expect("stream open");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

async fn push(c: &mut Client, jr: &str, topic: &str, n: u64) {
    let (reply, _) = c.push(jr, topic, "msg", json!({ "n": n })).await;
    assert_eq!(reply[4]["status"], "ok");
}

#[tokio::test]
async fn a_reader_resumes_exactly_where_it_left_off() {
    let s = TestServer::start_with(|c| c.client_rate = 0).await;
    let mut pusher = s.client().await;
    let jr = pusher.join_ok("chat:sse").await;
    let jr_room = pusher.join_ok("room:sse").await;

    let mut r = Reader::open(&s, "topics=chat:sse,room:sse", None)
        .await
        .unwrap();
    let ready = r.next().await;
    assert_eq!(ready.kind.as_deref(), Some("ready"));
    assert_eq!(ready.data["topics"], json!(["chat:sse", "room:sse"]));
    push(&mut pusher, &jr, "chat:sse", 1).await;
    let (reply, _) = pusher
        .push(&jr_room, "room:sse", "note", json!({"x": 1}))
        .await;
    assert_eq!(reply[4]["status"], "ok");
    push(&mut pusher, &jr, "chat:sse", 2).await;
    let mut got = Vec::new();
    let mut last_id = ready.id.clone();
    for _ in 0..3 {
        let ev = r.next().await;
        if ev.id.is_some() {
            last_id = ev.id.clone();
        }
        got.push((
            ev.data["topic"].clone(),
            ev.data["event"].clone(),
            ev.data["payload"].clone(),
        ));
    }
    assert_eq!(got[0], (json!("chat:sse"), json!("msg"), json!({"n": 1})));
    assert_eq!(got[1], (json!("room:sse"), json!("note"), json!({"x": 1})));
    assert_eq!(got[2].2, json!({"n": 2}));
    drop(r);

    // Missed while away: 3 and 4. Resuming from the last id gets just those.
    push(&mut pusher, &jr, "chat:sse", 3).await;
    push(&mut pusher, &jr, "chat:sse", 4).await;
    let mut r = Reader::open(&s, "topics=chat:sse,room:sse", last_id.as_deref())
        .await
        .unwrap();
    assert_eq!(r.next().await.kind.as_deref(), Some("ready"));
    assert_eq!(r.next().await.data["payload"], json!({"n": 3}));
    assert_eq!(r.next().await.data["payload"], json!({"n": 4}));
    push(&mut pusher, &jr, "chat:sse", 5).await;
    assert_eq!(
        r.next().await.data["payload"],
        json!({"n": 5}),
        "no duplicates, then live"
    );
    s.wait_metric("myriad_sessions_opened_total{endpoint=\"sse\"}", 2.0)
        .await;
}

#[tokio::test]
async fn a_cursor_history_cannot_serve_gets_a_gap_event() {
    let s = TestServer::start().await;
    let mut c = myriad_cursor::Cursor::default();
    c.set("chat:gap", 5, "an-epoch-that-never-was");
    let mut r = Reader::open(&s, "topics=chat:gap", Some(&c.encode()))
        .await
        .unwrap();
    let first = r.next().await;
    assert_eq!(first.kind.as_deref(), Some("ready"));
    let gap = r.next().await;
    assert_eq!(gap.kind.as_deref(), Some("gap"));
    assert_eq!(gap.data["topic"], "chat:gap");
}

mod myriad_cursor {
    pub use myriad::session::sse::Cursor;
}

#[tokio::test]
async fn bad_requests_are_told_why() {
    let s = TestServer::start_with(|c| c.max_topics_per_session = 2).await;
    let (status, body) = Reader::open(&s, "topics=", None).await.err().unwrap();
    assert_eq!(status, 400, "{body}");
    let (status, _) = Reader::open(&s, "topics=nowhere:1", None)
        .await
        .err()
        .unwrap();
    assert_eq!(status, 404);
    let (status, body) = Reader::open(&s, "topics=room:a,room:b,room:c", None)
        .await
        .err()
        .unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("max_topics_per_session"), "{body}");
    let long = format!("topics=room:{}", "x".repeat(300));
    let (status, _) = Reader::open(&s, &long, None).await.err().unwrap();
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_reader_that_stops_reading_is_cut_off() {
    let s = TestServer::start_with(|c| {
        c.mailbox_capacity = 16;
        c.socket_send_buffer = 4096;
        c.api_keys = vec!["k".into()];
    })
    .await;
    let _stuck = Reader::open(&s, "topics=room:slow", None).await.unwrap();
    // Published through the API: no publisher of ours has a mailbox to fill.
    let http = reqwest::Client::new();
    let body = json!({"topic": "room:slow", "event": "msg", "payload": {"pad": "x".repeat(4000)}})
        .to_string();
    for _ in 0..400 {
        let resp = http
            .post(format!("http://{}/api/broadcast", s.public))
            .header("authorization", "Bearer k")
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    s.wait_metric(
        "myriad_sessions_closed_total{reason=\"slow_consumer\"}",
        1.0,
    )
    .await;
    let _ = Duration::ZERO;
}

#[tokio::test]
async fn streams_are_rotated_after_sse_max_age() {
    let s = TestServer::start_with(|c| c.sse_max_age = Duration::from_millis(300)).await;
    let mut r = Reader::open(&s, "topics=room:rot", None).await.unwrap();
    assert_eq!(r.next().await.kind.as_deref(), Some("ready"));
    // The body ends (the reader sees end of stream) within ~330 ms.
    let ended = tokio::time::timeout(DEADLINE, async {
        loop {
            match r.resp.chunk().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok());
    s.wait_metric("myriad_sessions_closed_total{reason=\"rotated\"}", 1.0)
        .await;
}

/// A V2 binary push, as phoenix.js encodes it.
fn binary_push(jr: &str, r: &str, topic: &str, event: &str, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![
        0,
        jr.len() as u8,
        r.len() as u8,
        topic.len() as u8,
        event.len() as u8,
    ];
    for s in [jr, r, topic, event] {
        f.extend_from_slice(s.as_bytes());
    }
    f.extend_from_slice(payload);
    f
}

/// Send a binary push and read up to its broadcast (the pusher is a member).
async fn push_binary(c: &mut Client, frame: Vec<u8>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    c.ws.send(Message::binary(frame)).await.unwrap();
    tokio::time::timeout(DEADLINE, async {
        while !matches!(c.ws.next().await, Some(Ok(Message::Binary(_)))) {}
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn binary_broadcasts_are_events_with_their_position() {
    let s = TestServer::start_with(|c| c.client_rate = 0).await;
    let mut pusher = s.client().await;
    let jr = pusher.join_ok("chat:sse-bin").await;
    let mut r = Reader::open(&s, "topics=chat:sse-bin", None).await.unwrap();
    assert_eq!(r.next().await.kind.as_deref(), Some("ready"));
    let frame = binary_push(&jr, "90", "chat:sse-bin", "file", &[0, 1, 255]);
    push_binary(&mut pusher, frame.clone()).await;
    let bin = r.next().await;
    assert_eq!(bin.data["event"], "file");
    assert_eq!(bin.data["payload"], json!({"binary": "AAH/"}));
    push(&mut pusher, &jr, "chat:sse-bin", 1).await;
    let after_bin = r.next().await;
    assert_eq!(after_bin.data["payload"], json!({"n": 1}));
    drop(r);
    // Resuming from the binary event's id gets what came after it, no more.
    push(&mut pusher, &jr, "chat:sse-bin", 2).await;
    let mut r = Reader::open(&s, "topics=chat:sse-bin", bin.id.as_deref())
        .await
        .unwrap();
    assert_eq!(r.next().await.kind.as_deref(), Some("ready"));
    assert_eq!(r.next().await.data["payload"], json!({"n": 1}));
    assert_eq!(r.next().await.data["payload"], json!({"n": 2}));
    // And from just before it: the binary one is replayed too.
    push_binary(&mut pusher, frame).await;
    let before = r.next().await;
    assert_eq!(before.data["payload"], json!({"binary": "AAH/"}));
    drop(r);
    let mut r = Reader::open(&s, "topics=chat:sse-bin", after_bin.id.as_deref())
        .await
        .unwrap();
    assert_eq!(r.next().await.kind.as_deref(), Some("ready"));
    assert_eq!(r.next().await.data["payload"], json!({"n": 2}));
    assert_eq!(r.next().await.data["payload"], json!({"binary": "AAH/"}));
}
