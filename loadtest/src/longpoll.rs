//! Long-poll subscribers for `--transport longpoll` (myriad's and Phoenix's
//! `/socket/longpoll`, as phoenix.js speaks it): open a session, POST the
//! join, then poll; each poll's messages are V2 frames. `https://` for a
//! `wss://` target; clients come from `http_reader` (one per source address,
//! keep-alive: a subscriber's polls reuse a pooled connection).

use std::collections::VecDeque;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use crate::client::Target;

pub struct LongPollReader {
    client: reqwest::Client,
    url: String,
    token: String,
    pending: VecDeque<String>,
}

#[derive(Deserialize)]
struct Answer {
    status: u16,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    messages: Vec<String>,
}

/// The endpoint: the WebSocket URL's host, port and query, `/socket/longpoll`.
pub fn url(target: &Target) -> Result<String, String> {
    let query = target.url.query().unwrap_or("vsn=2.0.0");
    Ok(format!(
        "{}/socket/longpoll?{query}",
        crate::http_reader::origin(target)?
    ))
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

impl LongPollReader {
    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Answer, String> {
        let resp = req.send().await.map_err(|e| e.without_url().to_string())?;
        let text = resp.text().await.map_err(|e| e.without_url().to_string())?;
        serde_json::from_str(&text).map_err(|_| format!("not a long-poll answer: {text:.80}"))
    }

    /// Open a session and join `topic`; ready once the join was answered ok.
    pub async fn open(
        client: reqwest::Client,
        base: &str,
        topic: &str,
        timeout: Duration,
    ) -> Result<(LongPollReader, Duration), String> {
        let started = Instant::now();
        let fut = async {
            let mut r = LongPollReader {
                client,
                url: base.to_owned(),
                token: String::new(),
                pending: VecDeque::new(),
            };
            let opened = r.call(r.client.get(&r.url)).await?;
            r.token = match (opened.status, opened.token) {
                (410, Some(t)) => t,
                (s, _) => return Err(format!("open answered {s}")),
            };
            let join = format!(r#"["1","1",{},"phx_join",{{}}]"#, json_str(topic));
            let posted = r.call(r.client.post(r.with_token()).body(join)).await?;
            if posted.status != 200 {
                return Err(format!("join POST answered {}", posted.status));
            }
            loop {
                let frame = r.next_frame().await?.ok_or("session gone while joining")?;
                if frame.contains("\"phx_reply\"") && frame.starts_with("[\"1\",\"1\"") {
                    return if frame.contains("\"status\":\"ok\"") {
                        Ok(r)
                    } else {
                        Err(String::from("join refused"))
                    };
                }
            }
        };
        let r = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| String::from("timeout"))??;
        Ok((r, started.elapsed()))
    }

    fn with_token(&self) -> String {
        format!("{}&token={}", self.url, self.token)
    }

    /// The next frame from the server (polling as needed); None when the
    /// session is gone.
    async fn next_frame(&mut self) -> Result<Option<String>, String> {
        loop {
            if let Some(f) = self.pending.pop_front() {
                return Ok(Some(f));
            }
            let answer = self.call(self.client.get(self.with_token())).await?;
            match answer.status {
                200 => self.pending.extend(answer.messages),
                204 => {}
                410 => return Ok(None),
                s => return Err(format!("poll answered {s}")),
            }
        }
    }

    /// The next broadcast's payload (JSON text); None when the session ended.
    pub async fn next_payload(&mut self) -> Result<Option<String>, String> {
        #[derive(Deserialize)]
        struct Frame<'a>(
            serde::de::IgnoredAny,
            serde::de::IgnoredAny,
            serde::de::IgnoredAny,
            &'a str,
            #[serde(borrow)] &'a RawValue,
        );
        loop {
            let Some(text) = self.next_frame().await? else {
                return Ok(None);
            };
            let Ok(Frame(_, _, _, event, payload)) = serde_json::from_str::<Frame<'_>>(&text)
            else {
                continue;
            };
            if event.starts_with("phx_") || event.starts_with("presence_") {
                continue;
            }
            return Ok(Some(payload.get().to_owned()));
        }
    }
}
