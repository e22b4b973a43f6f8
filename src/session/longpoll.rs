//! A long-poll session: the same supervised session as a WebSocket one (its
//! handler, mailbox, guard, completions and expiry), but frames arrive in
//! POSTed batches and leave through polls instead of a socket.
//!
//! The task owns the handler: a batch is handled in order and its replies
//! are queued in the mailbox, which polls drain (so the mailbox bounds hold
//! for replies too). The session ends when no poll came for `window`, when
//! a poll found it closed or overflowed (`Poller::end`), on drain, or at its
//! expiry. phoenix.js's long-poll transport takes strings only: the poll
//! answer (`server::longpoll`) turns binary broadcasts into their JSON form.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use super::{recv_completion, Expiry, FrameHandler, SessionGuard, SessionSpec};
use crate::protocol::CloseReason;
use crate::pubsub::mailbox::{Mailbox, Outbound};
use crate::supervisor::panic_message;

/// One POST: its frames (text, or binary decoded from base64), and who waits
/// for them to be handled.
pub struct Batch {
    pub frames: Vec<Frame>,
    pub done: oneshot::Sender<()>,
}

pub enum Frame {
    Text(Utf8Bytes),
    Binary(Bytes),
}

/// What the HTTP side keeps of a session: where batches go, its mailbox,
/// when it was last polled, and how to end it.
pub struct Poller {
    pub inbox: mpsc::Sender<Batch>,
    pub mailbox: Arc<Mailbox>,
    last_poll: Mutex<Instant>,
    polling: AtomicBool,
    end: CancellationToken,
    reason: Mutex<Option<CloseReason>>,
    /// A poll ended: the session's window timer starts again from now.
    poll_done: tokio::sync::Notify,
}

impl Poller {
    /// A poll started (the window restarts when it ends). False when one is
    /// already waiting: a session holds one poll at a time, so a token cannot
    /// pile up held requests.
    pub fn poll_started(&self) -> bool {
        *self.last_poll.lock() = Instant::now();
        self.polling
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    pub fn poll_ended(&self) {
        *self.last_poll.lock() = Instant::now();
        self.polling.store(false, Ordering::Release);
        self.poll_done.notify_one();
    }

    /// End the session (a poll found it closed or overflowed).
    pub fn end(&self, reason: CloseReason) {
        self.reason.lock().get_or_insert(reason);
        self.end.cancel();
    }

    pub fn ended(&self) -> bool {
        self.end.is_cancelled()
    }
}

/// The session's half and the HTTP side's half.
pub fn open(mailbox: Arc<Mailbox>, queue: usize) -> (Arc<Poller>, mpsc::Receiver<Batch>) {
    let (tx, rx) = mpsc::channel(queue.max(1));
    let poller = Arc::new(Poller {
        inbox: tx,
        mailbox,
        last_poll: Mutex::new(Instant::now()),
        polling: AtomicBool::new(false),
        end: CancellationToken::new(),
        reason: Mutex::new(None),
        poll_done: tokio::sync::Notify::new(),
    });
    (poller, rx)
}

/// Run the session until it ends; `window`: how long it lives without a poll.
pub async fn run<H: FrameHandler>(
    mut handler: H,
    spec: SessionSpec,
    poller: Arc<Poller>,
    mut inbox: mpsc::Receiver<Batch>,
    window: Duration,
) {
    let mut guard = SessionGuard::open(spec);
    let mut completions = handler.completions();
    let mut expires_at = guard.spec.expires_at;
    let signals = guard.spec.signals.clone();
    let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let mut out = Vec::new();
    let reason = loop {
        let idle_at = if poller.polling.load(Ordering::Relaxed) {
            far
        } else {
            *poller.last_poll.lock() + window
        };
        let result: Result<Expiry, CloseReason> = tokio::select! {
            biased;
            _ = signals.drain.cancelled() => break CloseReason::Shutdown,
            _ = poller.end.cancelled() => {
                break poller.reason.lock().unwrap_or(CloseReason::ClientClosed);
            }
            batch = inbox.recv() => {
                let Some(batch) = batch else { break CloseReason::ClientClosed };
                let mut result = Ok(Expiry::Unchanged);
                for frame in batch.frames {
                    let handled = std::panic::catch_unwind(AssertUnwindSafe(|| match frame {
                        Frame::Text(t) => handler.on_text(&t, &mut out),
                        Frame::Binary(b) => handler.on_binary(b, &mut out),
                    }));
                    match handled {
                        Ok(Ok(())) => {}
                        Ok(Err(reason)) => {
                            result = Err(reason);
                            break;
                        }
                        Err(panic) => {
                            guard.spec.metrics.session_panics.increment(1);
                            tracing::error!(session = guard.spec.id, panic = %panic_message(&panic), "session panicked; closing");
                            result = Err(CloseReason::SessionPanic);
                            break;
                        }
                    }
                }
                queue(&guard.spec.mailbox, &mut out);
                let _ = batch.done.send(());
                result
            }
            // The idle deadline was computed while a poll was out: recompute.
            _ = poller.poll_done.notified() => Ok(Expiry::Unchanged),
            Some(done) = recv_completion(&mut completions), if completions.is_some() => {
                let r = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.on_completion(done, &mut out))) {
                    Ok(r) => r,
                    Err(panic) => {
                        guard.spec.metrics.session_panics.increment(1);
                        tracing::error!(session = guard.spec.id, panic = %panic_message(&panic), "session panicked; closing");
                        Err(CloseReason::SessionPanic)
                    }
                };
                queue(&guard.spec.mailbox, &mut out);
                r
            }
            _ = tokio::time::sleep_until(expires_at.unwrap_or(far)) => {
                if handler.on_expiry() {
                    expires_at = None;
                    Ok(Expiry::Unchanged)
                } else {
                    Err(CloseReason::TokenExpired)
                }
            }
            _ = tokio::time::sleep_until(idle_at) => {
                let quiet = !poller.polling.load(Ordering::Relaxed)
                    && poller.last_poll.lock().elapsed() >= window;
                if quiet { Err(CloseReason::IdleTimeout) } else { Ok(Expiry::Unchanged) }
            }
        };
        match result {
            Ok(Expiry::Unchanged) => {}
            Ok(Expiry::Extend(at)) => expires_at = Some(at),
            Ok(Expiry::Expired) => break CloseReason::TokenExpired,
            Err(reason) => break reason,
        }
    };
    guard.decided(reason);
    poller.end(reason);
    // The handler drops here: its channels leave their topics.
    drop(handler);
}

/// What the handler produced goes where polls read: the mailbox (the poll
/// answer renders binary frames as JSON).
fn queue(mailbox: &Mailbox, out: &mut Vec<Outbound>) {
    for frame in out.drain(..) {
        mailbox.push(frame);
    }
}
