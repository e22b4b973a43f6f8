//! Subscribers over plain HTTP (`--transport sse|longpoll`): the one reader
//! type the scenarios hold, the HTTP clients they share (one per source
//! address, with the `wss://` target's TLS settings for `https://`), and the
//! endpoint URLs derived from `--url` (`ws://` → `http://`, `wss://` →
//! `https://`, same host and port).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::cli::Transport;
use crate::client::Target;
use crate::longpoll::LongPollReader;
use crate::sse::SseReader;

/// HTTP clients, one per source address and scheme; shared by concurrent opens.
#[derive(Default)]
pub struct Clients(Mutex<HashMap<(Option<IpAddr>, bool), reqwest::Client>>);

impl Clients {
    /// The client for `source` and `target` (cheap: clients share their pool).
    pub fn get(&self, source: Option<IpAddr>, target: &Target) -> reqwest::Client {
        let tls = target.tls.as_ref().map(|t| Arc::clone(&t.config));
        self.0
            .lock()
            .entry((source, tls.is_some()))
            .or_insert_with(|| {
                let mut b = reqwest::Client::builder()
                    .local_address(source)
                    .tcp_nodelay(true);
                if let Some(cfg) = tls {
                    // The same roots as wss:// (system + --tls-ca).
                    b = b.use_preconfigured_tls((*cfg).clone());
                }
                b.build().unwrap_or_default()
            })
            .clone()
    }
}

/// `scheme://host:port` of the target's HTTP side.
pub fn origin(target: &Target) -> Result<String, String> {
    let scheme = match target.url.scheme() {
        "ws" => "http",
        "wss" => "https",
        other => return Err(format!("--url scheme {other}: ws:// or wss://")),
    };
    let host = target.url.host_str().ok_or("no host in --url")?;
    let port = target
        .url
        .port()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    Ok(format!("{scheme}://{host}:{port}"))
}

/// A subscriber reading over HTTP.
pub enum HttpReader {
    Sse(SseReader),
    LongPoll(LongPollReader),
}

impl HttpReader {
    /// Open one reader of `topic` (joined: ready for broadcasts).
    pub async fn open(
        transport: Transport,
        clients: &Clients,
        target: &Target,
        topic: &str,
        token: Option<&str>,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<(HttpReader, Duration), String> {
        let client = clients.get(source, target);
        if transport == Transport::Longpoll {
            let url = crate::longpoll::url(target)?;
            let (r, took) = LongPollReader::open(client, &url, topic, timeout).await?;
            return Ok((HttpReader::LongPoll(r), took));
        }
        let url = crate::sse::url(target, topic, token)?;
        let (r, took) = SseReader::open(client, &url, timeout).await?;
        Ok((HttpReader::Sse(r), took))
    }

    /// The next broadcast's payload (JSON text); None when the server ended
    /// the stream or session.
    pub async fn next_payload(&mut self) -> Result<Option<String>, String> {
        match self {
            HttpReader::Sse(r) => r.next_payload().await,
            HttpReader::LongPoll(r) => r.next_payload().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Protocol;

    fn target(url: &str) -> Target {
        let ca = None;
        Target::new(url, Protocol::Phoenix, None, Duration::from_secs(1), ca).unwrap()
    }

    #[test]
    fn http_urls_follow_the_websocket_url() {
        let t = target("ws://127.0.0.1:4000/socket/websocket");
        assert_eq!(origin(&t).unwrap(), "http://127.0.0.1:4000");
        let t = target("ws://[::1]:4000/socket/websocket");
        assert_eq!(origin(&t).unwrap(), "http://[::1]:4000");
    }
}
