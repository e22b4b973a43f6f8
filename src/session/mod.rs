//! The per-connection task: one task owns one WebSocket and waits on, in
//! priority order: the drain signal (a hard stop cancels it too), the
//! outbound mailbox, inbound frames, the answers to calls the handler started
//! (backend hooks), the idle and expiry timer (`events`: the sources other
//! than the mailbox are asked only when one of them woke the session).
//!
//! The session is generic over the byte stream, so the same code serves TCP
//! sockets and in-memory pipes (benchmarks, tests). It reads the next frame only
//! after the previous one was handled (TCP pushes back on a client that sends
//! faster than its handler runs), writes its own replies and the mailbox's
//! frames in batches with one flush each, and turns any panic in frame handling
//! into a 1011 close. Cleanup runs from drop guards on every exit path. The
//! session never reads another session's state; it reaches others only
//! through the broker.

mod boundary;
mod deadline;
pub mod echo;
mod events;
pub mod frames_out;
pub mod lazy_read;
pub mod longpoll;
pub mod phoenix;
pub mod sse;
mod wire;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::config::webhooks::WebhookEvent;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::protocol::{CloseReason, Endpoint, MalformedKind};
use crate::pubsub::mailbox::{Mailbox, MailboxLimits, Outbound, SessionId};
use crate::registry::{Registry, SessionEntry};
use crate::supervisor::{panic_message, ShutdownSignals};
use crate::webhooks::Webhooks;
use deadline::Deadlines;
use events::Event;
use lazy_read::LazyRead;
pub use wire::codec;
use wire::Wire;

/// What a session does with inbound data frames: the Phoenix protocol or echo.
pub trait FrameHandler: Send {
    /// Answers to calls the handler started (backend hooks), handed back
    /// into the session's task so the handler sees them in order with frames.
    type Completion: Send + 'static;

    /// Handle one text frame; frames for this client go into `out`.
    fn on_text(&mut self, text: &Utf8Bytes, out: &mut Vec<Outbound>) -> Result<(), CloseReason>;
    /// Handle one binary frame.
    fn on_binary(&mut self, data: Bytes, out: &mut Vec<Outbound>) -> Result<(), CloseReason>;

    /// Where the handler's completions arrive; taken once, at start. None
    /// (the default): the handler starts no calls.
    fn completions(&mut self) -> Option<mpsc::UnboundedReceiver<Self::Completion>> {
        None
    }

    /// A call the handler started has finished; it may move the
    /// connection's expiry (a refresh).
    fn on_completion(
        &mut self,
        _done: Self::Completion,
        _out: &mut Vec<Outbound>,
    ) -> Result<Expiry, CloseReason> {
        Ok(Expiry::Unchanged)
    }

    /// The connection's expiry passed. True: the handler asked for it to be
    /// extended, and the answer comes as a completion; false: close (4001).
    fn on_expiry(&mut self) -> bool {
        false
    }
}

/// What a completion does to the connection's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Unchanged,
    /// Expires at this instant now.
    Extend(Instant),
    /// Close with 4001.
    Expired,
}

/// Everything a session needs besides its socket and handler.
pub struct SessionSpec {
    pub id: SessionId,
    pub peer: SocketAddr,
    pub endpoint: Endpoint,
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub signals: ShutdownSignals,
    pub mailbox: Arc<Mailbox>,
    /// When the connect token expires; the session closes then (4001).
    pub expires_at: Option<Instant>,
    /// The token's `sub`, for the registry (API disconnect by user).
    pub user: Option<Arc<str>>,
    /// Where `session_opened` / `session_closed` go, with `[webhooks]` on.
    pub webhooks: Option<Arc<Webhooks>>,
}

/// The WebSocket settings derived from the config (small buffers: an idle
/// session must cost a few KiB, not tungstenite's 128 KiB defaults).
pub fn websocket_config(config: &Config) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(config.read_buffer_size)
        .write_buffer_size(config.write_buffer_size)
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_frame_size))
}

/// A mailbox sized from the config.
pub fn new_mailbox(config: &Config) -> Arc<Mailbox> {
    Arc::new(Mailbox::new(MailboxLimits {
        capacity: config.mailbox_capacity,
        max_bytes: config.mailbox_max_bytes,
        policy: config.slow_consumer,
    }))
}

/// Counts the session in and out: gauge, registry, open/close log lines and the
/// close-reason counter. Dropped on every exit path, panics included.
struct SessionGuard {
    /// The session's identity and shared handles, owned here (not copied) so
    /// every idle session holds them once.
    spec: SessionSpec,
    started: Instant,
    reason: Option<CloseReason>,
}

impl SessionGuard {
    fn open(spec: SessionSpec) -> SessionGuard {
        spec.metrics.sessions_active.increment(1.0);
        spec.metrics.sessions_opened.increment(spec.endpoint);
        spec.registry.insert(
            spec.id,
            SessionEntry {
                peer: spec.peer,
                endpoint: spec.endpoint,
                user: spec.user.clone(),
                mailbox: Arc::clone(&spec.mailbox),
            },
        );
        // Debug: a reconnect storm would be two info lines per session; the
        // summary (`session_log_interval`) says how many at info.
        tracing::debug!(session = spec.id, peer = %spec.peer, endpoint = spec.endpoint.label(), "session opened");
        spec.metrics.session_tally.opened();
        if let Some(w) = &spec.webhooks {
            w.emit(WebhookEvent::SessionOpened, || {
                serde_json::json!({
                    "session": spec.id,
                    "user": spec.user.as_deref(),
                    "remote_addr": spec.peer.ip().to_string(),
                    "endpoint": spec.endpoint.label(),
                })
            });
        }
        SessionGuard {
            spec,
            started: Instant::now(),
            reason: None,
        }
    }
}

impl SessionGuard {
    fn decided(&mut self, reason: CloseReason) {
        self.reason = Some(reason);
        self.spec.metrics.sessions_closed.increment(reason);
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        // No reason recorded means the session future unwound from a panic.
        let spec = &self.spec;
        let reason = match self.reason {
            Some(reason) => reason,
            None => {
                spec.metrics
                    .sessions_closed
                    .increment(CloseReason::SessionPanic);
                CloseReason::SessionPanic
            }
        };
        spec.mailbox.close();
        spec.registry.remove(spec.id);
        if let Some(w) = &spec.webhooks {
            w.emit(WebhookEvent::SessionClosed, || {
                serde_json::json!({
                    "session": spec.id,
                    "user": spec.user.as_deref(),
                    "reason": reason.label(),
                    "code": reason.close_code().map(u16::from),
                    "duration_ms": self.started.elapsed().as_millis() as u64,
                })
            });
        }
        spec.metrics.sessions_active.decrement(1.0);
        spec.metrics.session_tally.closed(reason);
        tracing::debug!(
            session = spec.id,
            peer = %spec.peer,
            endpoint = spec.endpoint.label(),
            duration_ms = self.started.elapsed().as_millis() as u64,
            reason = reason.label(),
            "session closed"
        );
    }
}

/// The future that runs one session to its end. Built by a plain function so
/// the future holds the session state once (an `async fn` would also keep its
/// parameters); the guard opens here, so a future dropped unpolled still
/// counts the session in and out.
pub fn run<S, H>(
    ws: WebSocketStream<LazyRead<S>>,
    handler: H,
    spec: SessionSpec,
) -> impl Future<Output = ()> + Send
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: FrameHandler,
{
    let mut session = Session {
        wire: Wire::new(ws),
        guard: SessionGuard::open(spec),
        out: Vec::new(),
        batch: VecDeque::new(),
        sent: 0,
    };
    let mut handler = handler;
    async move {
        let reason = session.serve(&mut handler).await;
        // Counted when decided, not when the close handshake ends: a stuck client
        // can hold the handshake for close_timeout.
        session.guard.decided(reason);
        Box::pin(session.close(reason)).await;
        // `handler` drops after this: its guard leaves every topic.
        drop(handler);
    }
}

struct Session<S> {
    /// The WebSocket: tungstenite's codec, or the bare stream while parked.
    wire: Wire<S>,
    /// The spec, and the cleanup when the session ends however it ends.
    guard: SessionGuard,
    /// Frames the handler produced for this client (replies, pushes).
    out: Vec<Outbound>,
    /// Frames taken from the mailbox for the current write.
    batch: VecDeque<Outbound>,
    /// Bytes of the chunk at the front of `batch` already on the wire: not 0
    /// only after a write was abandoned inside a frame (`frames_out`).
    sent: usize,
}

/// The next completion, when the handler has a channel for them (the
/// long-poll session's select; the WebSocket session asks in `events`).
async fn recv_completion<C>(rx: &mut Option<mpsc::UnboundedReceiver<C>>) -> Option<C> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl<S> Session<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn serve<H: FrameHandler>(&mut self, handler: &mut H) -> CloseReason {
        let mut clock = Deadlines::new(self.guard.spec.expires_at, &self.guard.spec.config);
        let mut completions = handler.completions();
        let sleep = tokio::time::sleep_until(clock.next(&self.guard.spec.config));
        tokio::pin!(sleep);
        let signals = self.guard.spec.signals.clone();
        let mailbox = Arc::clone(&self.guard.spec.mailbox);
        // Fires on a hard stop too (the drain token is its child). Pinned for
        // the session's life: its registration survives between events.
        let drain = signals.drain.cancelled();
        tokio::pin!(drain);
        let mut gate = events::Gate::new(&mailbox);

        loop {
            let sources = events::Sources {
                drain: drain.as_mut(),
                wire: &mut self.wire,
                completions: &mut completions,
                timer: sleep.as_mut(),
                spec: &self.guard.spec,
                park_due: &mut clock.park_due,
            };
            let event = gate.next(&mailbox, sources).await;
            match event {
                Event::Shutdown => return CloseReason::Shutdown,
                Event::Mailbox => {
                    let drained = mailbox.drain(&mut self.batch);
                    if drained.overflowed {
                        return CloseReason::SlowConsumer;
                    }
                    if let Some(reason) = drained.close_requested {
                        return reason;
                    }
                    if drained.messages > 0 {
                        self.guard
                            .spec
                            .metrics
                            .mailbox_depth
                            .record(drained.messages as f64);
                        // Boxed: the write's state (timers, overflow watch) would
                        // otherwise be inlined into every idle session's future.
                        if let Err(reason) = Box::pin(self.write_batch()).await {
                            return reason;
                        }
                    }
                }
                Event::Inbound(msg) => {
                    let msg = match msg {
                        None => return CloseReason::ClientClosed,
                        Some(Err(err)) => return self.read_error(err),
                        Some(Ok(msg)) => msg,
                    };
                    // Only data frames count as activity: protocol pings cost
                    // nothing to send and would keep an abandoned connection
                    // (and its descriptor) alive forever. phoenix.js's
                    // heartbeats are data frames.
                    let data = matches!(msg, Message::Text(_) | Message::Binary(_));
                    if let Some(at) = clock.inbound(data, &self.guard.spec.config) {
                        sleep.as_mut().reset(at);
                    }
                    if let Err(reason) = Box::pin(self.handle(handler, msg)).await {
                        return reason;
                    }
                }
                Event::Completion(done) => match Box::pin(self.complete(handler, done)).await {
                    Ok(Expiry::Unchanged) => {}
                    Ok(Expiry::Extend(at)) => {
                        clock.expires_at = Some(at);
                        sleep.as_mut().reset(clock.next(&self.guard.spec.config));
                    }
                    Ok(Expiry::Expired) => return CloseReason::TokenExpired,
                    Err(reason) => return reason,
                },
                Event::Parked => {
                    // Quiet for park_after: the room a burst of broadcasts
                    // grew (write batch, mailbox queue) goes too; a busy
                    // session keeps it.
                    if self.batch.is_empty() {
                        self.batch = VecDeque::new();
                    }
                    mailbox.release_spare();
                }
                Event::Timer => {
                    let now = Instant::now();
                    if clock.expired(now) {
                        if !handler.on_expiry() {
                            return CloseReason::TokenExpired;
                        }
                        // Asked the backend: the answer decides (a completion).
                        clock.expires_at = None;
                    }
                    let config = &self.guard.spec.config;
                    if clock.idle(now, config) {
                        return CloseReason::IdleTimeout;
                    }
                    if clock.park_due_now(now, config) {
                        gate.ask_others();
                    }
                    sleep.as_mut().reset(clock.next(config));
                }
            }
        }
    }

    /// One inbound message. Handler calls run under panic capture: a panic here
    /// is a session-level fault (channel handlers have their own capture inside).
    async fn handle<H: FrameHandler>(
        &mut self,
        handler: &mut H,
        msg: Message,
    ) -> Result<(), CloseReason> {
        let metrics = &self.guard.spec.metrics;
        let result = match msg {
            Message::Text(text) => {
                metrics.messages_in.increment(1);
                metrics.bytes_in.increment(text.len() as u64);
                let out = &mut self.out;
                std::panic::catch_unwind(AssertUnwindSafe(|| handler.on_text(&text, out)))
            }
            Message::Binary(data) => {
                metrics.messages_in.increment(1);
                metrics.bytes_in.increment(data.len() as u64);
                let out = &mut self.out;
                std::panic::catch_unwind(AssertUnwindSafe(|| handler.on_binary(data, out)))
            }
            Message::Close(_) => return Err(CloseReason::ClientClosed),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Ok(()),
        };
        self.handled(result).await
    }

    /// After a handler call under panic capture: a panic ends the session
    /// (1011); otherwise what the handler produced is written, even when it
    /// also asks to close (the phx_error that precedes a restart-intensity
    /// close must reach the client).
    async fn handled<T>(
        &mut self,
        result: std::thread::Result<Result<T, CloseReason>>,
    ) -> Result<T, CloseReason> {
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(panic) => {
                self.guard.spec.metrics.session_panics.increment(1);
                tracing::error!(session = self.guard.spec.id, panic = %panic_message(&panic), "session panicked; closing with 1011");
                self.out.clear();
                return Err(CloseReason::SessionPanic);
            }
        };
        if !self.out.is_empty() {
            // Replies are rare (a join, a heartbeat every 30 s): an idle
            // session keeps no buffer for them. Broadcasts keep theirs.
            self.batch.extend(std::mem::take(&mut self.out));
            self.write_batch().await?;
            if self.batch.is_empty() {
                self.batch = VecDeque::new();
            }
        }
        outcome
    }

    /// A call the handler started has finished: let it act, under panic
    /// capture, and write what it produced.
    async fn complete<H: FrameHandler>(
        &mut self,
        handler: &mut H,
        done: H::Completion,
    ) -> Result<Expiry, CloseReason> {
        let out = &mut self.out;
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| handler.on_completion(done, out)));
        self.handled(result).await
    }

    /// Write everything in `self.batch` and flush once, within `write_timeout`.
    /// A mailbox overflow or a hard stop while the socket is slow ends the
    /// write at once instead of waiting out the timeout.
    ///
    /// The write is tried once before any of that is set up: a socket with
    /// room (nearly every write) then costs no timer, and no registration
    /// with the process-wide hard-stop token, whose locks every core shares.
    async fn write_batch(&mut self) -> Result<(), CloseReason> {
        let wire = &mut self.wire;
        let batch = &mut self.batch;
        let sent = &mut self.sent;
        let write = async {
            // tungstenite's own frames (a pong it owes) go out whole first.
            wire.flush().await?;
            frames_out::write(wire.stream().map_err(WsError::Io)?, batch, sent)
                .await
                .map_err(WsError::Io)
        };
        let spec = &self.guard.spec;
        let result = {
            let mut write = std::pin::pin!(write);
            match std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
                Poll::Ready(result) => Ok(result),
                Poll::Pending => tokio::select! {
                    biased;
                    _ = spec.signals.hard_stop.cancelled() => return Err(CloseReason::Shutdown),
                    _ = spec.mailbox.overflowed() => return Err(CloseReason::SlowConsumer),
                    result = tokio::time::timeout(spec.config.write_timeout, write) => result,
                },
            }
        };
        // Keep a burst's allocation from pinning memory in an idle session.
        if self.batch.capacity() > 64 {
            self.batch = VecDeque::new();
        }
        match result {
            Ok(Ok((messages, bytes))) => {
                self.guard.spec.metrics.messages_out.increment(messages);
                self.guard.spec.metrics.bytes_out.increment(bytes);
                Ok(())
            }
            Ok(Err(_)) => Err(CloseReason::ConnectionLost),
            Err(_) => Err(CloseReason::WriteTimeout),
        }
    }

    fn read_error(&self, err: WsError) -> CloseReason {
        let metrics = &self.guard.spec.metrics;
        match err {
            WsError::ConnectionClosed | WsError::AlreadyClosed => CloseReason::ClientClosed,
            WsError::Io(_) => CloseReason::ConnectionLost,
            WsError::Capacity(_) => {
                metrics.malformed.increment(MalformedKind::TooBig);
                CloseReason::MessageTooBig
            }
            WsError::Utf8(_) => {
                metrics.malformed.increment(MalformedKind::InvalidUtf8);
                CloseReason::InvalidUtf8
            }
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                CloseReason::ConnectionLost
            }
            _ => CloseReason::ProtocolViolation,
        }
    }

    /// Send the close frame for `reason` (if any) and wait briefly for the
    /// client's answer, so the client sees the code rather than a reset.
    async fn close(&mut self, reason: CloseReason) {
        let timeout = self.guard.spec.config.close_timeout;
        let hard_stop = self.guard.spec.signals.hard_stop.clone();
        if hard_stop.is_cancelled() {
            return;
        }
        let Some(code) = reason.close_code() else {
            if reason == CloseReason::ClientClosed {
                // Flush tungstenite's queued close echo.
                let _ = tokio::time::timeout(timeout, self.wire.flush()).await;
            }
            return;
        };
        let frame = CloseFrame {
            code,
            reason: reason.text().into(),
        };
        let Some(ws) = self.wire.live(&self.guard.spec.config) else {
            return;
        };
        let (batch, sent) = (&mut self.batch, &mut self.sent);
        let handshake = async {
            // A write abandoned inside a frame (slow consumer, write timeout)
            // is finished first, or the close would land inside that frame.
            if frames_out::finish_partial(ws.get_mut(), batch, sent)
                .await
                .is_err()
            {
                return;
            }
            if ws.send(Message::Close(Some(frame))).await.is_err() {
                return;
            }
            // Read until the client's close (tungstenite then ends the stream).
            while let Some(Ok(_)) = ws.next().await {}
        };
        tokio::select! {
            _ = hard_stop.cancelled() => {}
            _ = tokio::time::timeout(timeout, handshake) => {}
        }
    }
}

#[cfg(test)]
mod tests;
