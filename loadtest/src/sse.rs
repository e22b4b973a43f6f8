//! Server-Sent Events readers for `--transport sse` (myriad's `/sse`): one
//! streaming HTTP/1.1 GET per subscriber, events parsed as they arrive, on
//! the WebSocket URL's host and port (`/sse?topics=T`; `https://` for
//! `wss://`). Clients come from `http_reader`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::client::Target;

/// One reader's stream.
pub struct SseReader {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

/// `/sse?topics=T` on the target's host and port (`https://` for `wss://`).
pub fn url(target: &Target, topic: &str, token: Option<&str>) -> Result<String, String> {
    let mut url = format!(
        "{}/sse?topics={}",
        crate::http_reader::origin(target)?,
        urlencode(topic)
    );
    if let Some(t) = token {
        url.push_str(&format!("&token={}", urlencode(t)));
    }
    Ok(url)
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl SseReader {
    /// Open the stream; ready once the server's `ready` event arrived.
    pub async fn open(
        client: reqwest::Client,
        url: &str,
        timeout: Duration,
    ) -> Result<(SseReader, Duration), String> {
        let started = Instant::now();
        let fut = async {
            let resp = client
                .get(url)
                .send()
                .await
                .map_err(|e| e.without_url().to_string())?;
            if !resp.status().is_success() {
                return Err(format!("HTTP {}", resp.status().as_u16()));
            }
            let mut reader = SseReader {
                resp,
                buf: Vec::new(),
            };
            // The first event says the subscription is in place.
            match reader.next_event().await? {
                Some(ev) if ev.kind.as_deref() == Some("ready") => Ok(reader),
                _ => Err(String::from("no ready event")),
            }
        };
        let reader = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| String::from("timeout"))??;
        Ok((reader, started.elapsed()))
    }

    /// The next broadcast's payload (JSON text); None when the stream ended.
    pub async fn next_payload(&mut self) -> Result<Option<String>, String> {
        #[derive(Deserialize)]
        struct Data<'a> {
            #[serde(borrow)]
            payload: &'a RawValue,
        }
        loop {
            let Some(ev) = self.next_event().await? else {
                return Ok(None);
            };
            if ev.kind.is_some() {
                continue; // ready, gap
            }
            let data: Data<'_> = serde_json::from_str(&ev.data).map_err(|e| e.to_string())?;
            return Ok(Some(data.payload.get().to_owned()));
        }
    }

    async fn next_event(&mut self) -> Result<Option<Event>, String> {
        loop {
            if let Some(end) = find(&self.buf, b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let mut ev = Event::default();
                let mut has_data = false;
                for line in text.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        ev.kind = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        ev.data = v.to_owned();
                        has_data = true;
                    }
                }
                if has_data {
                    return Ok(Some(ev));
                }
                continue; // a comment or the retry hint
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk),
                Ok(None) => return Ok(None),
                Err(e) => return Err(e.without_url().to_string()),
            }
        }
    }
}

#[derive(Default)]
struct Event {
    kind: Option<String>,
    data: String,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
