//! A Server-Sent Events reader (`GET /sse`): a session without a socket of
//! its own, whose mailbox becomes a `text/event-stream` body.
//!
//! Every broadcast on its topics is one event, `data: {"topic", "event",
//! "payload"}`; on history topics the event's `id:` is a cursor with every
//! topic's position, so a browser's `EventSource` that reconnects sends it
//! back as `Last-Event-ID` and gets exactly what it missed (or a `gap`
//! event naming the topic when history no longer reaches back). A comment
//! line keeps proxies from closing an idle stream; `retry:` tells the browser
//! when to reconnect, with jitter so a restart is not answered by a herd.
//!
//! Same bounds as a WebSocket session (the mailbox: a slow reader is cut),
//! same registry (API disconnects), metrics (endpoint `sse`) and drain. It
//! never reads from the client: there is nothing to read.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::Stream;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::{SessionGuard, SessionSpec};
use crate::config::NamespaceConfig;
use crate::protocol::{binary, broadcast_fields, history_position, CloseReason};
use crate::pubsub::mailbox::Outbound;
use crate::pubsub::Node;

/// Longest `Last-Event-ID` read back.
pub const MAX_CURSOR_BYTES: usize = 8192;

/// Every history topic's position: what an event's `id:` carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor(BTreeMap<String, (u64, String)>);

impl Cursor {
    /// Read a `Last-Event-ID`; anything malformed reads as no cursor.
    pub fn parse(text: &str, max_topics: usize) -> Cursor {
        if text.len() > MAX_CURSOR_BYTES {
            return Cursor::default();
        }
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|b| serde_json::from_slice::<Vec<(String, u64, String)>>(&b).ok());
        let Some(entries) = decoded else {
            return Cursor::default();
        };
        Cursor(
            entries
                .into_iter()
                .take(max_topics)
                .map(|(t, o, e)| (t, (o, e)))
                .collect(),
        )
    }

    pub fn get(&self, topic: &str) -> Option<&(u64, String)> {
        self.0.get(topic)
    }

    pub fn set(&mut self, topic: &str, offset: u64, epoch: &str) {
        self.0.insert(topic.to_owned(), (offset, epoch.to_owned()));
    }

    pub fn encode(&self) -> String {
        let entries: Vec<(&str, u64, &str)> = self
            .0
            .iter()
            .map(|(t, (o, e))| (t.as_str(), *o, e.as_str()))
            .collect();
        let json = serde_json::to_vec(&entries).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }
}

/// What the HTTP handler hands over: the session, its topics (already
/// joined), the cursor they are at, and what to say first.
pub struct SseStream {
    pub spec: SessionSpec,
    pub node: Arc<Node>,
    pub topics: Vec<(String, Arc<NamespaceConfig>)>,
    pub cursor: Cursor,
    /// Topics whose history no longer reaches back to the client's cursor.
    pub gaps: Vec<String>,
    /// `retry:` hint, in milliseconds (jittered by the caller).
    pub retry_ms: u64,
    pub keepalive: Duration,
    /// When the stream ends for rotation (`sse_max_age`), if it does.
    pub rotate_at: Option<Instant>,
}

struct State {
    guard: SessionGuard,
    node: Arc<Node>,
    topics: Vec<(String, Arc<NamespaceConfig>)>,
    cursor: Cursor,
    keepalive: Duration,
    batch: VecDeque<Outbound>,
    first: Option<Bytes>,
}

impl Drop for State {
    fn drop(&mut self) {
        let id = self.guard.spec.id;
        for (topic, ns) in &self.topics {
            self.node.leave(topic, ns, id);
        }
        // The body is dropped when the client goes away: that is how an SSE
        // stream usually ends.
        if self.guard.reason.is_none() {
            self.guard.decided(CloseReason::ConnectionLost);
        }
    }
}

fn event(out: &mut Vec<u8>, id: Option<&str>, data: &str) {
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
}

impl State {
    /// The events for what the mailbox held.
    fn events(&mut self) -> Bytes {
        let mut out = Vec::new();
        while let Some(frame) = self.batch.pop_front() {
            let text = match frame {
                Outbound::Text(text) => text,
                Outbound::Binary(bin) => {
                    self.binary_event(&mut out, &bin);
                    continue;
                }
            };
            // One parse per frame (the position is a prefix scan).
            let Some((topic, event_name, payload)) = broadcast_fields(text.as_str()) else {
                continue;
            };
            let id = history_position(text.as_str()).map(|(offset, epoch)| {
                self.cursor.set(&topic, offset, epoch);
                self.cursor.encode()
            });
            let data = data_json(&topic, &event_name, &payload);
            event(&mut out, id.as_deref(), &data);
        }
        Bytes::from(out)
    }
}

impl State {
    /// A V2 binary broadcast, as its JSON form. Its position is not in the
    /// frame: on a history topic it is the one after the cursor's (a reader
    /// gets every broadcast of its topics, in order, or is cut).
    fn binary_event(&mut self, out: &mut Vec<u8>, frame: &[u8]) {
        let Some((topic, event_name, payload)) = binary::decode_broadcast(frame) else {
            return;
        };
        let id = self.cursor.get(topic).cloned().map(|(offset, epoch)| {
            self.cursor.set(topic, offset + 1, &epoch);
            self.cursor.encode()
        });
        let json = binary::json_payload(payload);
        let Ok(payload) = RawValue::from_string(json) else {
            return;
        };
        event(out, id.as_deref(), &data_json(topic, event_name, &payload));
    }
}

fn data_json(topic: &str, event: &str, payload: &RawValue) -> String {
    let topic = serde_json::to_string(topic).unwrap_or_default();
    let event = serde_json::to_string(event).unwrap_or_default();
    format!(
        "{{\"topic\":{topic},\"event\":{event},\"payload\":{}}}",
        payload.get()
    )
}

/// The response body: events until the client leaves, the node drains, the
/// connection expires, or the reader falls behind its mailbox.
pub fn body(s: SseStream) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    let mut first = format!("retry: {}\n\n", s.retry_ms).into_bytes();
    // Where the stream starts, as an event with an id: a reader that
    // reconnects before any broadcast arrived still resumes from here.
    let topics: Vec<&str> = s.topics.iter().map(|(t, _)| t.as_str()).collect();
    let cursor = (!s.cursor.0.is_empty()).then(|| s.cursor.encode());
    first.extend_from_slice(b"event: ready\n");
    event(
        &mut first,
        cursor.as_deref(),
        &serde_json::json!({ "topics": topics }).to_string(),
    );
    for topic in &s.gaps {
        let topic = serde_json::to_string(topic).unwrap_or_default();
        first.extend_from_slice(format!("event: gap\ndata: {{\"topic\":{topic}}}\n\n").as_bytes());
    }
    // Token expiry or rotation, whichever comes first.
    let ends_at = match (s.spec.expires_at, s.rotate_at) {
        (Some(e), Some(r)) if r < e => Some((r, CloseReason::Rotated)),
        (Some(e), _) => Some((e, CloseReason::TokenExpired)),
        (None, Some(r)) => Some((r, CloseReason::Rotated)),
        (None, None) => None,
    };
    let state = State {
        guard: SessionGuard::open(s.spec),
        node: s.node,
        topics: s.topics,
        cursor: s.cursor,
        keepalive: s.keepalive,
        batch: VecDeque::new(),
        first: Some(Bytes::from(first)),
    };
    futures_util::stream::unfold(state, move |mut st| async move {
        if let Some(first) = st.first.take() {
            return Some((Ok(first), st));
        }
        let mailbox = Arc::clone(&st.guard.spec.mailbox);
        let signals = st.guard.spec.signals.clone();
        let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        loop {
            tokio::select! {
                biased;
                _ = signals.drain.cancelled() => {
                    st.guard.decided(CloseReason::Shutdown);
                    return None;
                }
                _ = tokio::time::sleep_until(ends_at.map_or(far, |(at, _)| at)) => {
                    let reason = ends_at.map_or(CloseReason::TokenExpired, |(_, r)| r);
                    st.guard.decided(reason);
                    return None;
                }
                _ = mailbox.ready() => {
                    let drained = mailbox.drain(&mut st.batch);
                    if drained.overflowed {
                        st.guard.decided(CloseReason::SlowConsumer);
                        return None;
                    }
                    if let Some(reason) = drained.close_requested {
                        st.guard.decided(reason);
                        return None;
                    }
                    let events = st.events();
                    if !events.is_empty() {
                        return Some((Ok(events), st));
                    }
                }
                _ = tokio::time::sleep(st.keepalive) => {
                    return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), st));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_garbage_reads_as_none() {
        let mut c = Cursor::default();
        c.set("chat:a", 7, "ep1");
        c.set("chat:\"b\"", 9, "ep2");
        let back = Cursor::parse(&c.encode(), 10);
        assert_eq!(back, c);
        assert_eq!(Cursor::parse(&c.encode(), 1).0.len(), 1, "bounded");
        assert_eq!(Cursor::parse("!!not base64", 10), Cursor::default());
        assert_eq!(Cursor::parse(&"A".repeat(9000), 10), Cursor::default());
    }

    #[test]
    fn broadcast_frames_become_events() {
        let payload = RawValue::from_string("{\"a\":1}".into()).unwrap();
        assert_eq!(
            data_json("room:\"x\"", "msg", &payload),
            r#"{"topic":"room:\"x\"","event":"msg","payload":{"a":1}}"#
        );
        let (topic, event, _) = broadcast_fields(r#"[null,"3:e","chat:a","m",{}]"#).unwrap();
        assert_eq!((topic.as_str(), event.as_str()), ("chat:a", "m"));
    }
}
