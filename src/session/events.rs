//! What a session waits on, in what order it asks, and which source woke it.
//!
//! A session sleeps on six sources: the drain signal, its mailbox, the socket,
//! the answers to backend calls, and one timer (idle timeout and token
//! expiry). `tokio::select!` would poll all of them on every wake, yet nearly
//! every wake of a busy node is a broadcast landing in the mailbox: each would
//! also re-check the socket (a readiness check and a waker registration in
//! tokio-tungstenite), the drain token (two process-wide locks in tokio-util,
//! contended by every core) and the rest.
//!
//! So the sources other than the mailbox are polled with a waker of their own,
//! [`Mailbox::others_waker`], which raises a flag in the mailbox before waking
//! the task: they are asked only on the first pass, after that flag was
//! raised, or after one of them produced something (a stream that yielded
//! must be asked again). The mailbox itself is asked on every pass. Priority
//! is unchanged: drain, mailbox, inbound frames, completions, timer.
//!
//! This module decides what happens next; it must never act on an event.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Sleep;
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::Message;

use super::wire::Wire;
use super::SessionSpec;
use crate::pubsub::mailbox::{Mailbox, Woken};

/// What woke the session, highest priority first.
pub(super) enum Event<C> {
    /// The node is draining (or stopping).
    Shutdown,
    /// Frames are queued, the mailbox overflowed, or a close was requested.
    Mailbox,
    /// The next inbound message, or the end of the stream.
    Inbound(Option<Result<Message, WsError>>),
    /// A backend call the handler started has answered.
    Completion(C),
    /// The idle / expiry / parking timer fired.
    Timer,
    /// The wire parked (a park was due and nothing was left to read).
    Parked,
}

/// The sources a session waits on, other than its mailbox.
pub(super) struct Sources<'a, D, S, C> {
    /// The drain signal's future, pinned for the session's life so its
    /// registration survives between passes.
    pub drain: Pin<&'a mut D>,
    pub wire: &'a mut Wire<S>,
    pub completions: &'a mut Option<mpsc::UnboundedReceiver<C>>,
    pub timer: Pin<&'a mut Sleep>,
    /// The codec's settings (to unpark) and the metrics (to count parks).
    pub spec: &'a SessionSpec,
    /// Park the wire the next time it has nothing to read; cleared once
    /// parked.
    pub park_due: &'a mut bool,
}

/// Which sources need asking on the next pass.
pub(super) struct Gate {
    /// Handed to every source but the mailbox (it flags the mailbox, then
    /// wakes the task).
    others: Waker,
    /// Ask the other sources on the next pass: first pass, one of them woke
    /// the session, or one of them yielded last time.
    ask_others: bool,
}

impl Gate {
    pub fn new(mailbox: &Arc<Mailbox>) -> Gate {
        Gate {
            others: Mailbox::others_waker(mailbox),
            ask_others: true,
        }
    }

    /// Ask every source on the next pass (the session changed what one of
    /// them should do: a park became due).
    pub fn ask_others(&mut self) {
        self.ask_others = true;
    }

    /// Wait for the next event. A plain function returning the future (an
    /// `async fn` would hold its arguments twice), since every idle session
    /// holds this future.
    pub fn next<'a, D, S, C>(
        &'a mut self,
        mailbox: &'a Mailbox,
        mut sources: Sources<'a, D, S, C>,
    ) -> impl Future<Output = Event<C>> + 'a
    where
        D: Future<Output = ()>,
        S: AsyncRead + AsyncWrite + Unpin,
    {
        std::future::poll_fn(move |cx| self.poll_next(cx, mailbox, &mut sources))
    }

    fn poll_next<D, S, C>(
        &mut self,
        cx: &mut Context<'_>,
        mailbox: &Mailbox,
        sources: &mut Sources<'_, D, S, C>,
    ) -> Poll<Event<C>>
    where
        D: Future<Output = ()>,
        S: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            let woken = match mailbox.poll_wake(cx) {
                Poll::Ready(woken) => woken,
                // Registered: a push or an `others` wake will wake the task.
                Poll::Pending => Woken::default(),
            };
            self.ask_others |= woken.others;
            let mut others = Context::from_waker(&self.others);
            if self.ask_others && sources.drain.as_mut().poll(&mut others).is_ready() {
                return Poll::Ready(Event::Shutdown);
            }
            // Returning early leaves `ask_others` as it is: sources not asked
            // this pass are asked on the next one if they needed to be.
            if woken.mailbox {
                return Poll::Ready(Event::Mailbox);
            }
            if self.ask_others {
                let config = &sources.spec.config;
                if let Poll::Ready(msg) = sources.wire.poll_inbound(&mut others, config) {
                    return Poll::Ready(Event::Inbound(msg));
                }
                // Nothing to read: the moment a due park may happen.
                if *sources.park_due && sources.wire.try_park(&mut others, &sources.spec.metrics) {
                    *sources.park_due = false;
                    // `ask_others` stays set: the next pass registers the
                    // bare stream's read with `others` itself.
                    return Poll::Ready(Event::Parked);
                }
                if let Some(rx) = sources.completions.as_mut() {
                    match rx.poll_recv(&mut others) {
                        Poll::Ready(Some(done)) => return Poll::Ready(Event::Completion(done)),
                        // The handler dropped its sender: nothing more comes.
                        Poll::Ready(None) => *sources.completions = None,
                        Poll::Pending => {}
                    }
                }
                if sources.timer.as_mut().poll(&mut others).is_ready() {
                    return Poll::Ready(Event::Timer);
                }
                // Every other source is pending with `others` registered.
                self.ask_others = false;
            }
            if woken == Woken::default() {
                return Poll::Pending;
            }
            // Woken by another source that turned out pending: ask the
            // mailbox again, which registers the task before it sleeps.
        }
    }
}
