//! Shared helpers: an in-process server on port 0, a Phoenix V2 test client,
//! HTTP helpers for the admin listener, and polling with a deadline (tests never
//! sleep for a fixed time to wait for an effect).
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // tests fail loudly by design

pub mod cluster;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use myriad::config::Config;
use myriad::server::{self, AppState, Listeners};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// `myriad serve` on free loopback ports (the log line names them).
pub const SERVE_ON_FREE_PORTS: [&str; 5] = [
    "serve",
    "--listen",
    "127.0.0.1:0",
    "--admin-listen",
    "127.0.0.1:0",
];

/// A child process must not inherit configuration from the developer's shell:
/// every `MYRIAD_*` variable is a config key.
pub fn without_myriad_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    for (key, _) in std::env::vars() {
        if key.starts_with("MYRIAD_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// How long any single expectation may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub state: Arc<AppState>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<Result<(), server::ServerError>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            ..Config::default()
        };
        tweak(&mut config);
        config.validate().expect("test config is valid");
        let listeners = Listeners::bind(&config).await.expect("bind");
        let public = listeners.public_addr().unwrap();
        let admin = listeners.admin_addr().unwrap();
        let state = AppState::new(Arc::new(config)).expect("state");
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(server::run(listeners, Arc::clone(&state), async move {
            stop.cancelled().await
        }));
        TestServer {
            public,
            admin,
            state,
            shutdown,
            task,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/socket/websocket?vsn=2.0.0", self.public)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    pub async fn get_admin(&self, path: &str) -> (u16, String) {
        http_get(&format!("http://{}{}", self.admin, path)).await
    }

    pub async fn metrics(&self) -> String {
        self.get_admin("/metrics").await.1
    }

    /// Poll /metrics until `name` (with labels, exactly as rendered) reaches `want`.
    pub async fn wait_metric(&self, name: &str, want: f64) {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            let last = metric_value(&self.metrics().await, name);
            if last == Some(want) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "metric {name} never reached {want}; last {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub async fn http_get(url: &str) -> (u16, String) {
    let resp = reqwest::get(url).await.expect("http get");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// The value of one sample line `name{labels} value` in Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}

/// Poll `check` every 20 ms until it holds or `deadline` passes.
pub async fn poll_until<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Phoenix V2 client over tokio-tungstenite (over TCP, or any stream: TLS).
pub struct Client<S = MaybeTlsStream<TcpStream>> {
    pub ws: WebSocketStream<S>,
    next_ref: u64,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Closed(Option<(CloseCode, String)>),
    Dropped,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        Client { ws, next_ref: 0 }
    }
}

impl<S> Client<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    pub fn from_ws(ws: WebSocketStream<S>) -> Client<S> {
        Client { ws, next_ref: 0 }
    }

    pub fn next_ref(&mut self) -> String {
        self.next_ref += 1;
        self.next_ref.to_string()
    }

    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// Send, reporting failure instead of panicking (the server may have closed).
    pub async fn try_send_text(&mut self, text: &str) -> Result<(), ()> {
        self.ws.send(Message::text(text)).await.map_err(|_| ())
    }

    /// Next data frame, or the close code if the connection ends instead.
    pub async fn recv_or_close(&mut self) -> Result<Value, Option<CloseCode>> {
        loop {
            match tokio::time::timeout(DEADLINE, self.ws.next()).await {
                Err(_) => panic!("nothing within {DEADLINE:?}"),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return Ok(serde_json::from_str(t.as_str()).unwrap())
                }
                Ok(Some(Ok(Message::Close(frame)))) => return Err(frame.map(|f| f.code)),
                Ok(None) | Ok(Some(Err(_))) => return Err(None),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Next data frame as JSON; panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        match self.recv_opt(DEADLINE).await {
            Some(v) => v,
            None => panic!("no frame within {DEADLINE:?}"),
        }
    }

    /// Next data frame within `wait`, or None on timeout.
    pub async fn recv_opt(&mut self, wait: Duration) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(wait, self.ws.next()).await.ok()?;
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return Some(serde_json::from_str(t.as_str()).expect("server sent JSON"))
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Frames until one matches `pred`; the skipped ones are returned too.
    pub async fn recv_until(&mut self, pred: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
        let mut skipped = Vec::new();
        loop {
            let v = self.recv().await;
            if pred(&v) {
                return (v, skipped);
            }
            skipped.push(v);
        }
    }

    /// Join `topic` and return the reply frame.
    pub async fn join(&mut self, topic: &str, params: Value) -> (String, Value) {
        let r = self.next_ref();
        self.send(json!([r, r, topic, "phx_join", params])).await;
        let (reply, _) = self
            .recv_until(|v| v[3] == "phx_reply" && v[1] == json!(r))
            .await;
        (r, reply)
    }

    /// Join and assert ok; returns the join_ref.
    pub async fn join_ok(&mut self, topic: &str) -> String {
        let (jr, reply) = self.join(topic, json!({})).await;
        assert_eq!(reply[4]["status"], "ok", "join {topic}: {reply}");
        jr
    }

    /// Push an event and return the reply (broadcasts seen before it are returned too).
    pub async fn push(
        &mut self,
        join_ref: &str,
        topic: &str,
        event: &str,
        payload: Value,
    ) -> (Value, Vec<Value>) {
        let r = self.next_ref();
        self.send(json!([join_ref, r, topic, event, payload])).await;
        self.recv_until(|v| v[3] == "phx_reply" && v[1] == json!(r))
            .await
    }

    /// Send a heartbeat and return every frame that arrived before its reply.
    /// The server writes queued broadcasts before it reads the next frame, so
    /// this is a barrier: everything sent to this client earlier is in the list.
    pub async fn sync(&mut self) -> Vec<Value> {
        let r = self.next_ref();
        self.send(json!([null, r, "phoenix", "heartbeat", {}]))
            .await;
        self.recv_until(|v| v[2] == "phoenix" && v[1] == json!(r))
            .await
            .1
    }

    /// Read until the connection ends; data frames in between are ignored.
    pub async fn ended(&mut self) -> Ended {
        loop {
            match tokio::time::timeout(DEADLINE, self.ws.next()).await {
                Err(_) => panic!("connection did not end within {DEADLINE:?}"),
                Ok(None) | Ok(Some(Err(_))) => return Ended::Dropped,
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Ended::Closed(frame.map(|f| (f.code, f.reason.to_string())))
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The close code the server sent, failing if it only dropped the connection.
    pub async fn close_code(&mut self) -> CloseCode {
        match self.ended().await {
            Ended::Closed(Some((code, _))) => code,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// What a backend or webhook receiver checks: `body` carries a valid
/// `X-Myriad-Signature` for `secret`, made within the last five minutes.
#[allow(dead_code)] // not every test binary receives signed requests
pub fn assert_signed(secret: &str, headers: &http::HeaderMap, body: &str) {
    let sig = headers
        .get(myriad::webhooks::signature::HEADER)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        myriad::webhooks::signature::verify(secret.as_bytes(), sig, body.as_bytes(), now, 300),
        "unsigned or badly signed request"
    );
}
