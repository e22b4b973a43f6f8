//! The session loop over an in-memory duplex pipe, with tokio's paused clock:
//! every timer (idle, token expiry, close handshake, write timeout) is checked
//! at its exact virtual deadline, and nothing sleeps in real time.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::DuplexStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;

use super::echo::EchoHandler;
use super::*;
use crate::supervisor::ShutdownSignals;

struct Harness {
    client: WebSocketStream<DuplexStream>,
    session: JoinHandle<()>,
    mailbox: Arc<Mailbox>,
    metrics: Arc<Metrics>,
    signals: ShutdownSignals,
    started: Instant,
}

fn test_config() -> Config {
    Config {
        idle_timeout: Duration::from_secs(60),
        close_timeout: Duration::from_secs(2),
        write_timeout: Duration::from_secs(10),
        ..Config::default()
    }
}

/// A session with `handler` over a pipe holding `pipe` bytes each way.
async fn start<H: FrameHandler + 'static>(
    config: Config,
    handler: H,
    pipe: usize,
    expires_in: Option<Duration>,
) -> Harness {
    let (server_io, client_io) = tokio::io::duplex(pipe);
    start_on(server_io, client_io, config, handler, expires_in).await
}

/// A session with `handler` on `server_io`, its client on `client_io`.
async fn start_on<S, H>(
    server_io: S,
    client_io: DuplexStream,
    config: Config,
    handler: H,
    expires_in: Option<Duration>,
) -> Harness
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: FrameHandler + 'static,
{
    let config = Arc::new(config);
    let ws = WebSocketStream::from_raw_socket(
        LazyRead::new(server_io),
        Role::Server,
        Some(websocket_config(&config)),
    )
    .await;
    let client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
    let metrics = Metrics::new();
    let hard_stop = CancellationToken::new();
    let signals = ShutdownSignals {
        drain: hard_stop.child_token(),
        hard_stop,
    };
    let mailbox = new_mailbox(&config);
    let spec = SessionSpec {
        id: 1,
        peer: "127.0.0.1:9".parse().unwrap(),
        endpoint: Endpoint::Echo,
        config: Arc::clone(&config),
        metrics: Arc::clone(&metrics),
        registry: Arc::new(Registry::new()),
        signals: signals.clone(),
        mailbox: Arc::clone(&mailbox),
        expires_at: expires_in.map(|d| Instant::now() + d),
        user: None,
        webhooks: None,
    };
    let session = tokio::spawn(run(ws, handler, spec));
    Harness {
        client,
        session,
        mailbox,
        metrics,
        signals,
        started: Instant::now(),
    }
}

impl Harness {
    /// The next close frame's code (data frames before it are skipped).
    async fn close_code(&mut self) -> Option<CloseCode> {
        while let Some(msg) = self.client.next().await {
            if let Ok(Message::Close(frame)) = msg {
                return frame.map(|f| f.code);
            }
        }
        None
    }

    /// Keep reading after the server's close: tungstenite answers it (as a
    /// browser does) while the stream is polled, until the stream ends.
    async fn answer_close(&mut self) {
        while let Some(Ok(_)) = self.client.next().await {}
    }

    fn closed_for(&self, reason: &str) -> bool {
        let line = format!("myriad_sessions_closed_total{{reason=\"{reason}\"}} 1");
        self.metrics.render().lines().any(|l| l == line)
    }

    fn elapsed(&self) -> Duration {
        Instant::now() - self.started
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_session_closes_with_1001_at_the_idle_timeout_and_traffic_resets_it() {
    let mut h = start(test_config(), EchoHandler, 1 << 16, None).await;
    tokio::time::sleep(Duration::from_secs(50)).await;
    h.client.send(Message::text("ping")).await.unwrap();
    assert_eq!(
        h.client.next().await.unwrap().unwrap(),
        Message::text("ping")
    );
    assert_eq!(h.close_code().await, Some(CloseCode::Away));
    assert_eq!(
        h.elapsed(),
        Duration::from_secs(110),
        "60 s after the last frame"
    );
    h.answer_close().await;
    (&mut h.session).await.unwrap();
    assert!(h.closed_for("idle_timeout"));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_answers_the_close_is_let_go_after_close_timeout() {
    let mut h = start(test_config(), EchoHandler, 1 << 16, None).await;
    // The client reads nothing, so it never answers the idle close.
    let client = h.client;
    (&mut h.session).await.unwrap();
    assert_eq!(
        Instant::now() - h.started,
        Duration::from_secs(62),
        "idle_timeout + close_timeout"
    );
    drop(client);
}

#[tokio::test(start_paused = true)]
async fn a_write_stuck_on_a_full_socket_ends_at_write_timeout() {
    let config = Config {
        mailbox_capacity: 10_000,
        mailbox_max_bytes: 1 << 24,
        ..test_config()
    };
    // 64 bytes of pipe: the first frames fill it and the client never reads.
    let mut h = start(config, EchoHandler, 64, None).await;
    for _ in 0..100 {
        h.mailbox
            .push(Outbound::Text(Utf8Bytes::from("x".repeat(100))));
    }
    (&mut h.session).await.unwrap();
    assert_eq!(Instant::now() - h.started, Duration::from_secs(10));
    assert!(h.closed_for("write_timeout"));
}

#[tokio::test(start_paused = true)]
async fn drain_closes_with_1001_and_a_hard_stop_skips_the_handshake() {
    let mut h = start(test_config(), EchoHandler, 1 << 16, None).await;
    h.signals.drain.cancel();
    assert_eq!(h.close_code().await, Some(CloseCode::Away));
    h.answer_close().await;
    (&mut h.session).await.unwrap();
    assert!(h.closed_for("shutdown"));
    assert_eq!(h.elapsed(), Duration::ZERO);

    let mut h = start(test_config(), EchoHandler, 1 << 16, None).await;
    h.signals.hard_stop.cancel();
    (&mut h.session).await.unwrap();
    assert_eq!(
        Instant::now() - h.started,
        Duration::ZERO,
        "no close_timeout wait after a hard stop"
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_closes_with_4001_at_its_expiry() {
    let mut h = start(
        test_config(),
        EchoHandler,
        1 << 16,
        Some(Duration::from_secs(30)),
    )
    .await;
    assert_eq!(h.close_code().await, Some(CloseCode::Library(4001)));
    assert_eq!(h.elapsed(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_mailbox_overflow_closes_with_1013() {
    let config = Config {
        mailbox_capacity: 2,
        ..test_config()
    };
    let mut h = start(config, EchoHandler, 64, None).await;
    for _ in 0..100 {
        h.mailbox
            .push(Outbound::Text(Utf8Bytes::from("x".repeat(100))));
    }
    assert_eq!(h.close_code().await, Some(CloseCode::Again));
    assert!(
        h.elapsed() < Duration::from_secs(10),
        "not the write timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn an_overflow_during_a_half_written_frame_finishes_that_frame_before_the_1013() {
    let config = Config {
        mailbox_capacity: 2,
        ..test_config()
    };
    // 64 bytes of pipe: the first 300-byte frame goes out in part and stalls.
    let mut h = start(config, EchoHandler, 64, None).await;
    let first = "x".repeat(300);
    h.mailbox
        .push(Outbound::Text(Utf8Bytes::from(first.clone())));
    tokio::time::sleep(Duration::from_millis(10)).await;
    for _ in 0..10 {
        h.mailbox
            .push(Outbound::Text(Utf8Bytes::from("y".repeat(300))));
    }
    // The client sees the half-sent frame whole, then the close: a stream
    // cut inside a frame would fail to parse here instead.
    assert_eq!(
        h.client.next().await.unwrap().unwrap(),
        Message::text(first)
    );
    assert_eq!(h.close_code().await, Some(CloseCode::Again));
    assert!(h.closed_for("slow_consumer"));
}

/// A handler whose every frame panics: the session's own capture closes 1011.
struct Panicking;

impl FrameHandler for Panicking {
    type Completion = std::convert::Infallible;
    fn on_text(&mut self, _: &Utf8Bytes, _: &mut Vec<Outbound>) -> Result<(), CloseReason> {
        panic!("handler bug");
    }
    fn on_binary(&mut self, _: Bytes, _: &mut Vec<Outbound>) -> Result<(), CloseReason> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_frame_handling_closes_with_1011_and_is_counted() {
    let mut h = start(test_config(), Panicking, 1 << 16, None).await;
    h.client.send(Message::text("x")).await.unwrap();
    assert_eq!(h.close_code().await, Some(CloseCode::Error));
    h.answer_close().await;
    (&mut h.session).await.unwrap();
    assert!(h
        .metrics
        .render()
        .lines()
        .any(|l| l == "myriad_session_panics_total 1"));
}

/// Channel crashes past the restart intensity close the session with 1011,
/// after the phx_error of the crash that crossed the line.
#[tokio::test(start_paused = true)]
async fn restart_intensity_closes_the_session_with_1011_after_its_phx_error() {
    use crate::pubsub::broker::local::LocalBroker;
    use crate::pubsub::Node;
    let config = Config {
        enable_fault_injection: true,
        max_restarts: 1,
        ..test_config()
    };
    let metrics = Metrics::new();
    let node = Arc::new(Node::new(
        &config,
        Arc::clone(&metrics),
        Arc::new(LocalBroker),
    ));
    let mailbox = new_mailbox(&config);
    let handler = phoenix::PhoenixHandler::new(
        1,
        crate::auth::Identity::default(),
        Arc::clone(&mailbox),
        node,
        metrics,
        &Arc::new(config.clone()),
        None,
    );
    let mut h = start(config, handler, 1 << 16, None).await;
    let mut errors = 0;
    for i in 0..2 {
        for frame in [
            format!(r#"["1","j{i}","crash:1","phx_join",{{}}]"#),
            format!(r#"["1","p{i}","crash:1","panic",{{}}]"#),
        ] {
            h.client.send(Message::text(frame)).await.unwrap();
        }
    }
    let code = loop {
        match h.client.next().await.unwrap().unwrap() {
            Message::Text(t) if t.contains("phx_error") => errors += 1,
            Message::Close(frame) => break frame.map(|f| f.code),
            _ => {}
        }
    };
    assert_eq!((errors, code), (2, Some(CloseCode::Error)));
}

#[tokio::test(start_paused = true)]
async fn protocol_pings_do_not_keep_an_idle_session_alive() {
    let mut h = start(test_config(), EchoHandler, 1 << 16, None).await;
    // Pings at 20 s and 40 s, then nothing: the deadline stays at 60 s.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(20)).await;
        h.client
            .send(Message::Ping(Bytes::from_static(b"p")))
            .await
            .unwrap();
    }
    assert_eq!(h.close_code().await, Some(CloseCode::Away));
    assert_eq!(
        h.elapsed(),
        Duration::from_secs(60),
        "pings did not move the deadline"
    );
    h.answer_close().await;
    (&mut h.session).await.unwrap();
    assert!(h.closed_for("idle_timeout"));
}

/// The server end of a pipe that counts how often the session reads it.
struct CountingReads {
    inner: DuplexStream,
    reads: Arc<std::sync::atomic::AtomicUsize>,
}

impl tokio::io::AsyncRead for CountingReads {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountingReads {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test(start_paused = true)]
async fn broadcasts_wake_a_session_without_rereading_its_socket_and_frames_still_arrive() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (server_io, client_io) = tokio::io::duplex(1 << 16);
    let reads = Arc::new(AtomicUsize::new(0));
    let server_io = CountingReads {
        inner: server_io,
        reads: Arc::clone(&reads),
    };
    let h = start_on(server_io, client_io, test_config(), EchoHandler, None).await;
    let (mut client, mailbox, signals, session) = (h.client, h.mailbox, h.signals, h.session);
    // One frame per wake: each is read by the client before the next is queued.
    mailbox.push(Outbound::Text("first".into()));
    assert_eq!(
        client.next().await.unwrap().unwrap(),
        Message::text("first")
    );
    let before = reads.load(Ordering::SeqCst);
    for i in 0..50 {
        mailbox.push(Outbound::Text(format!("b{i}").into()));
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::text(format!("b{i}"))
        );
    }
    assert_eq!(
        reads.load(Ordering::SeqCst),
        before,
        "a mailbox wake must not poll the socket"
    );
    // The socket still wakes the session when the client speaks...
    client.send(Message::text("echo me")).await.unwrap();
    assert_eq!(
        client.next().await.unwrap().unwrap(),
        Message::text("echo me")
    );
    assert!(reads.load(Ordering::SeqCst) > before);
    // ...and so does the drain signal, after all those mailbox wakes.
    signals.drain.cancel();
    let mut code = None;
    while let Some(msg) = client.next().await {
        if let Ok(Message::Close(frame)) = msg {
            code = frame.map(|f| f.code);
            break;
        }
    }
    assert_eq!(code, Some(CloseCode::Away));
    while let Some(Ok(_)) = client.next().await {}
    session.await.unwrap();
}

/// The gauge of parked sessions and the count of parks, from the metrics.
fn parked(h: &Harness) -> (u64, u64) {
    let text = h.metrics.render();
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0)
    };
    (
        value("myriad_sessions_parked "),
        value("myriad_session_parks_total "),
    )
}

#[tokio::test(start_paused = true)]
async fn a_quiet_session_parks_takes_broadcasts_parked_and_unparks_when_its_client_sends() {
    let mut h = start(test_config(), EchoHandler, 1 << 16, None).await;
    h.client.send(Message::text("a")).await.unwrap();
    assert_eq!(h.client.next().await.unwrap().unwrap(), Message::text("a"));
    assert_eq!(parked(&h), (0, 0), "busy within park_after");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(parked(&h), (1, 1), "parked after park_after of quiet");
    // Broadcasts are written past the codec: the session stays parked.
    for i in 0..3 {
        h.mailbox.push(Outbound::Text(format!("b{i}").into()));
        assert_eq!(
            h.client.next().await.unwrap().unwrap(),
            Message::text(format!("b{i}"))
        );
    }
    assert_eq!(parked(&h), (1, 1));
    // A burst while parked grows the mailbox's queue; the next park gives
    // the room back.
    for i in 0..20 {
        h.mailbox.push(Outbound::Text(format!("burst{i}").into()));
    }
    for i in 0..20 {
        assert_eq!(
            h.client.next().await.unwrap().unwrap(),
            Message::text(format!("burst{i}"))
        );
    }
    assert!(h.mailbox.spare_room() > 0, "a burst leaves room behind");
    // The client sends: the codec comes back and reads the frame whole.
    h.client.send(Message::text("c")).await.unwrap();
    assert_eq!(h.client.next().await.unwrap().unwrap(), Message::text("c"));
    assert_eq!(parked(&h), (0, 1));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(parked(&h), (1, 2), "parks again after the next quiet");
    assert_eq!(
        h.mailbox.spare_room(),
        0,
        "parking gave the burst's room back"
    );
    // Idle timeout still counts from the last data frame while parked.
    assert_eq!(h.close_code().await, Some(CloseCode::Away));
    assert_eq!(
        h.elapsed(),
        Duration::from_millis(61_500),
        "60 s after \"c\", sent at 1.5 s"
    );
    h.answer_close().await;
    (&mut h.session).await.unwrap();
    assert!(h.closed_for("idle_timeout"));
    assert_eq!(
        parked(&h),
        (0, 2),
        "a session that ends parked leaves the gauge"
    );
}

#[tokio::test(start_paused = true)]
async fn a_parked_session_drains_with_its_close_handshake_and_answers_pings() {
    let mut h = start(test_config(), EchoHandler, 1 << 16, None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(parked(&h), (1, 1));
    h.client
        .send(Message::Ping(Bytes::from_static(b"p")))
        .await
        .unwrap();
    assert_eq!(
        h.client.next().await.unwrap().unwrap(),
        Message::Pong(Bytes::from_static(b"p"))
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        parked(&h),
        (1, 2),
        "a ping unparks; the quiet after it parks"
    );
    h.signals.drain.cancel();
    assert_eq!(h.close_code().await, Some(CloseCode::Away));
    h.answer_close().await;
    (&mut h.session).await.unwrap();
    assert!(h.closed_for("shutdown"));
    assert_eq!(parked(&h), (0, 2));
}

#[tokio::test(start_paused = true)]
async fn a_session_inside_a_frame_does_not_park_and_park_after_zero_never_parks() {
    use tokio::io::AsyncWriteExt;
    let mut h = start(test_config(), EchoHandler, 1 << 16, None).await;
    // Half of a masked text frame "hello" (mask 0), then a long pause.
    let frame = [0x81u8, 0x85, 0, 0, 0, 0, b'h', b'e', b'l', b'l', b'o'];
    h.client.get_mut().write_all(&frame[..8]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(parked(&h), (0, 0), "part of a frame is in the codec");
    h.client.get_mut().write_all(&frame[8..]).await.unwrap();
    assert_eq!(
        h.client.next().await.unwrap().unwrap(),
        Message::text("hello")
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(parked(&h), (1, 1), "parks once the frame is whole");

    let config = Config {
        park_after: Duration::ZERO,
        ..test_config()
    };
    let h = start(config, EchoHandler, 1 << 16, None).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(parked(&h), (0, 0));
}
