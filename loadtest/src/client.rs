//! One load connection: TCP connect (optionally from a chosen source address),
//! TLS for `wss://` (through `transport`), the WebSocket handshake, and the two
//! wire dialects: Phoenix Channels V2
//! frames and raw text frames. Owns nothing about scenarios: it sends what it
//! is told and hands back what arrived.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use thiserror::Error;
use tokio::net::TcpSocket;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use url::Url;

use crate::transport::{self, Stream, TlsTarget};

/// The wire dialect of the target server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Protocol {
    /// Phoenix Channels V2 JSON frames (myriad, Phoenix, ...).
    Phoenix,
    /// Plain text frames: the payload is sent and expected as-is (echo and
    /// broadcast servers).
    Raw,
}

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("bad url {0:?}: {1}")]
    Url(String, String),
    #[error("tcp connect to {addr}: {source}")]
    Tcp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    TlsSetup(#[from] transport::TlsSetupError),
    #[error("tls handshake with {addr}: {source}")]
    Tls {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("websocket handshake: {0}")]
    Handshake(tungstenite::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("join {topic} refused: {reason}")]
    JoinRefused { topic: String, reason: String },
    #[error("connection closed (code {0:?})")]
    Closed(Option<u16>),
    #[error("websocket: {0}")]
    Ws(#[from] tungstenite::Error),
}

impl ClientError {
    /// A short, low-cardinality label for the error tables.
    pub fn kind(&self) -> String {
        match self {
            ClientError::Url(..) => "bad url".into(),
            ClientError::Tcp { source, .. } => match source.raw_os_error() {
                Some(24) => "tcp: too many open files (EMFILE)".into(),
                Some(99) => "tcp: no free source port (EADDRNOTAVAIL)".into(),
                _ => format!("tcp: {}", source.kind()),
            },
            ClientError::TlsSetup(_) => "tls setup".into(),
            ClientError::Tls { source, .. } => match source.get_ref() {
                Some(inner) => match inner.downcast_ref::<rustls::Error>() {
                    Some(rustls::Error::InvalidCertificate(_)) => {
                        "tls: certificate rejected".into()
                    }
                    _ => "tls handshake failed".into(),
                },
                None => "tls handshake failed".into(),
            },
            ClientError::Handshake(tungstenite::Error::Http(resp)) => {
                format!("http {}", resp.status().as_u16())
            }
            ClientError::Handshake(_) => "handshake failed".into(),
            ClientError::Timeout(_) => "timeout".into(),
            ClientError::JoinRefused { .. } => "join refused".into(),
            ClientError::Closed(code) => match code {
                Some(c) => format!("closed {c}"),
                None => "closed".into(),
            },
            ClientError::Ws(_) => "websocket error".into(),
        }
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: Url,
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub timeout: Duration,
    /// Set for `wss://`.
    pub tls: Option<TlsTarget>,
}

impl Target {
    /// Resolve the URL; for Phoenix, add `vsn=2.0.0` when the URL lacks it.
    /// `wss://` trusts the system's roots plus `tls_ca` (a PEM file).
    pub fn new(
        url: &str,
        protocol: Protocol,
        token: Option<&str>,
        timeout: Duration,
        tls_ca: Option<&Path>,
    ) -> Result<Target, ClientError> {
        let mut url = Url::parse(url).map_err(|e| ClientError::Url(url.into(), e.to_string()))?;
        let tls = match url.scheme() {
            "ws" => None,
            "wss" => {
                let host = url
                    .host_str()
                    .ok_or_else(|| ClientError::Url(url.to_string(), "no host".into()))?;
                let config = transport::client_config(tls_ca)?;
                Some(
                    TlsTarget::new(config, host)
                        .map_err(|e| ClientError::Url(url.to_string(), e))?,
                )
            }
            other => {
                return Err(ClientError::Url(
                    url.to_string(),
                    format!("scheme {other:?} is neither ws:// nor wss://"),
                ))
            }
        };
        if protocol == Protocol::Phoenix && !url.query_pairs().any(|(k, _)| k == "vsn") {
            url.query_pairs_mut().append_pair("vsn", "2.0.0");
        }
        if let Some(token) = token {
            url.query_pairs_mut().append_pair("token", token);
        }
        let addr = url
            .socket_addrs(|| Some(80))
            .map_err(|e| ClientError::Url(url.to_string(), e.to_string()))?
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Url(url.to_string(), "host resolves to nothing".into()))?;
        Ok(Target {
            url,
            addr,
            protocol,
            timeout,
            tls,
        })
    }
}

/// A client connection's small buffers: thousands of them share one process.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(16 << 20))
}

/// An open connection.
pub struct Conn {
    pub ws: WebSocketStream<Stream>,
    pub protocol: Protocol,
    next_ref: u64,
}

/// What arrived.
#[derive(Debug)]
pub enum Inbound {
    /// A broadcast / raw message payload (JSON text).
    Message(String),
    /// A Phoenix reply: ref and status.
    Reply {
        reference: Option<String>,
        status: String,
        topic: String,
    },
    /// Anything else (presence, heartbeat replies, non-JSON text).
    Other,
    Closed(Option<u16>),
}

#[derive(Deserialize)]
struct WireFrame<'a>(
    Option<&'a str>,
    Option<&'a str>,
    &'a str,
    &'a str,
    #[serde(borrow)] &'a RawValue,
);

#[derive(Deserialize)]
struct ReplyPayload<'a> {
    status: &'a str,
}

/// Connect and complete the WebSocket handshake. `recv_buffer` sets SO_RCVBUF
/// (slow-reader scenarios shrink it so a stalled reader backs up quickly).
pub async fn connect(
    target: &Target,
    source: Option<IpAddr>,
    recv_buffer: Option<u32>,
) -> Result<(Conn, Duration), ClientError> {
    let started = Instant::now();
    let fut = async {
        let socket = if target.addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|source| ClientError::Tcp {
            addr: target.addr,
            source,
        })?;
        if let Some(ip) = source {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|source| ClientError::Tcp {
                    addr: target.addr,
                    source,
                })?;
        }
        if let Some(size) = recv_buffer {
            socket
                .set_recv_buffer_size(size)
                .map_err(|source| ClientError::Tcp {
                    addr: target.addr,
                    source,
                })?;
        }
        let stream = socket
            .connect(target.addr)
            .await
            .map_err(|source| ClientError::Tcp {
                addr: target.addr,
                source,
            })?;
        stream
            .set_nodelay(true)
            .map_err(|source| ClientError::Tcp {
                addr: target.addr,
                source,
            })?;
        let stream = match &target.tls {
            None => Stream::Plain(stream),
            Some(tls) => tls
                .connect(stream)
                .await
                .map_err(|source| ClientError::Tls {
                    addr: target.addr,
                    source,
                })?,
        };
        let mut request = target
            .url
            .as_str()
            .into_client_request()
            .map_err(ClientError::Handshake)?;
        if target.protocol == Protocol::Phoenix {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", http_value("phoenix"));
        }
        let (ws, _resp) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
                .await
                .map_err(ClientError::Handshake)?;
        Ok::<Conn, ClientError>(Conn {
            ws,
            protocol: target.protocol,
            next_ref: 0,
        })
    };
    let conn = tokio::time::timeout(target.timeout, fut)
        .await
        .map_err(|_| ClientError::Timeout(target.timeout))??;
    Ok((conn, started.elapsed()))
}

fn http_value(s: &'static str) -> tungstenite::http::HeaderValue {
    tungstenite::http::HeaderValue::from_static(s)
}

impl Conn {
    fn take_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    /// Join `topic` (Phoenix) and wait for its reply; frames that arrive
    /// before the reply (presence) are dropped. Raw connections have nothing
    /// to join.
    pub async fn join(&mut self, topic: &str, timeout: Duration) -> Result<Duration, ClientError> {
        if self.protocol == Protocol::Raw {
            return Ok(Duration::ZERO);
        }
        let started = Instant::now();
        let r = self.take_ref();
        let frame = format!(r#"["{r}","{r}",{},"phx_join",{{}}]"#, json_str(topic));
        self.ws.send(Message::text(frame)).await?;
        let wait = async {
            loop {
                match self.recv().await? {
                    Inbound::Reply {
                        reference, status, ..
                    } if reference.as_deref() == Some(r.as_str()) => {
                        return if status == "ok" {
                            Ok(())
                        } else {
                            Err(ClientError::JoinRefused {
                                topic: topic.into(),
                                reason: status,
                            })
                        };
                    }
                    Inbound::Closed(code) => return Err(ClientError::Closed(code)),
                    _ => {}
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ClientError::Timeout(timeout))??;
        Ok(started.elapsed())
    }

    /// Leave `topic` (Phoenix); raw connections do nothing.
    pub async fn leave(&mut self, topic: &str) -> Result<(), ClientError> {
        if self.protocol == Protocol::Raw {
            return Ok(());
        }
        let r = self.take_ref();
        let frame = format!(r#"["{r}","{r}",{},"phx_leave",{{}}]"#, json_str(topic));
        self.ws.send(Message::text(frame)).await?;
        Ok(())
    }

    /// Send one message: a Phoenix push of `event` on `topic`, or the raw
    /// payload as a text frame.
    pub async fn push(
        &mut self,
        topic: &str,
        event: &str,
        payload: &str,
    ) -> Result<(), ClientError> {
        let text = self.push_frame(topic, event, payload);
        self.ws.send(Message::text(text)).await?;
        Ok(())
    }

    /// The frame `push` would send (for callers that batch with `feed`).
    pub fn push_frame(&mut self, topic: &str, event: &str, payload: &str) -> String {
        match self.protocol {
            Protocol::Raw => payload.to_string(),
            Protocol::Phoenix => {
                let r = self.take_ref();
                format!(
                    r#"[null,"{r}",{},{},{payload}]"#,
                    json_str(topic),
                    json_str(event)
                )
            }
        }
    }

    /// A Phoenix heartbeat; raw connections send a WebSocket ping.
    pub async fn heartbeat(&mut self) -> Result<(), ClientError> {
        let msg = match self.protocol {
            Protocol::Phoenix => {
                let r = self.take_ref();
                Message::text(format!(r#"[null,"{r}","phoenix","heartbeat",{{}}]"#))
            }
            Protocol::Raw => Message::Ping(Default::default()),
        };
        self.ws.send(msg).await?;
        Ok(())
    }

    /// The next inbound item.
    pub async fn recv(&mut self) -> Result<Inbound, ClientError> {
        loop {
            let msg = match self.ws.next().await {
                None => return Ok(Inbound::Closed(None)),
                Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                )) => return Ok(Inbound::Closed(None)),
                Some(Err(tungstenite::Error::Protocol(_) | tungstenite::Error::Io(_))) => {
                    return Ok(Inbound::Closed(None))
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(m)) => m,
            };
            return Ok(match msg {
                Message::Text(text) => classify(self.protocol, text.as_str()),
                Message::Close(frame) => Inbound::Closed(frame.map(|f| u16::from(f.code))),
                Message::Binary(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                    continue
                }
            });
        }
    }

    /// Close politely (best effort, bounded).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}

fn classify(protocol: Protocol, text: &str) -> Inbound {
    match protocol {
        Protocol::Raw => Inbound::Message(text.to_string()),
        Protocol::Phoenix => {
            let Ok(WireFrame(_join_ref, reference, topic, event, payload)) =
                serde_json::from_str::<WireFrame>(text)
            else {
                return Inbound::Other;
            };
            match event {
                "phx_reply" => {
                    let status = serde_json::from_str::<ReplyPayload>(payload.get())
                        .map(|p| p.status.to_string())
                        .unwrap_or_default();
                    Inbound::Reply {
                        reference: reference.map(str::to_string),
                        status,
                        topic: topic.to_string(),
                    }
                }
                "phx_error" | "phx_close" | "presence_state" | "presence_diff" => Inbound::Other,
                _ => Inbound::Message(payload.get().to_string()),
            }
        }
    }
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_phoenix_frames() {
        let m = classify(
            Protocol::Phoenix,
            r#"[null,"3:e1","room:1","msg",{"src":1,"seq":2,"ts":3}]"#,
        );
        assert!(matches!(m, Inbound::Message(p) if p == r#"{"src":1,"seq":2,"ts":3}"#));
        let r = classify(
            Protocol::Phoenix,
            r#"["1","1","room:1","phx_reply",{"status":"ok","response":{}}]"#,
        );
        assert!(
            matches!(r, Inbound::Reply { reference: Some(ref x), ref status, .. } if x == "1" && status == "ok")
        );
        assert!(matches!(
            classify(Protocol::Phoenix, "garbage"),
            Inbound::Other
        ));
        assert!(matches!(
            classify(Protocol::Raw, "garbage"),
            Inbound::Message(_)
        ));
    }

    #[test]
    fn phoenix_url_gets_vsn() {
        let t = Target::new(
            "ws://127.0.0.1:4000/socket/websocket",
            Protocol::Phoenix,
            Some("a b"),
            Duration::from_secs(1),
            None,
        )
        .unwrap();
        assert_eq!(t.url.query(), Some("vsn=2.0.0&token=a+b"));
        let t = Target::new(
            "ws://127.0.0.1:4000/ws/echo",
            Protocol::Raw,
            None,
            Duration::from_secs(1),
            None,
        )
        .unwrap();
        assert_eq!(t.url.query(), None);
        assert!(t.tls.is_none());
        let err = Target::new(
            "http://x/",
            Protocol::Raw,
            None,
            Duration::from_secs(1),
            None,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("neither ws:// nor wss://"), "{err}");
    }
}
