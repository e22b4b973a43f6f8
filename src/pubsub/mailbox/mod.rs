//! A session's outbound mailbox: bounded in messages and in bytes, written by
//! any number of publishers, drained by exactly one session task.
//!
//! Publishers never wait: a push either queues, drops the oldest messages
//! (`slow_consumer = "drop_oldest"`), or marks the mailbox overflowed
//! (`"disconnect"`), which wakes the session so it can close with 1013. The
//! mailbox never touches the socket.
//!
//! The session's waker lives in the mailbox's own state, under the lock a push
//! takes anyway: waking is "take the waker, wake it" (no separate `Notify`
//! with its own lock and waiter list), and readiness is level-triggered (a
//! non-empty queue is ready), so no wake-up can be lost or need re-arming.
//! A broadcast to a million members costs one lock and at most one wake per
//! member, and no allocation for a member whose mailbox was empty.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::config::SlowConsumerPolicy;
use crate::protocol::CloseReason;

/// Bytes per cache line on the CPUs we run on (x86_64, and most arm64 cores).
const CACHE_LINE: usize = 64;

/// Identifies a session on this node; unique for the life of the process.
/// The hub files mailboxes under it.
pub type SessionId = u64;

/// One queued frame. Text frames are shared (`Utf8Bytes` is reference-counted),
/// so a broadcast queued in 10 000 mailboxes exists once in memory.
#[derive(Debug, Clone)]
pub enum Outbound {
    Text(Utf8Bytes),
    Binary(Bytes),
}

impl Outbound {
    pub fn len(&self) -> usize {
        match self {
            Outbound::Text(t) => t.len(),
            Outbound::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame's text, when it is a text frame.
    pub fn text(&self) -> Option<&str> {
        match self {
            Outbound::Text(t) => Some(t.as_str()),
            Outbound::Binary(_) => None,
        }
    }

    pub fn into_message(self) -> Message {
        match self {
            Outbound::Text(t) => Message::Text(t),
            Outbound::Binary(b) => Message::Binary(b),
        }
    }
}

/// Result of offering a frame to a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Queued,
    /// Queued after dropping this many older messages.
    DroppedOldest(usize),
    /// Not queued: under drop_oldest, a message larger than the whole byte
    /// bound can never fit, so it is the one dropped.
    DroppedItself,
    /// The mailbox overflowed under the disconnect policy; its session will close.
    Overflowed,
    /// The session is gone or already overflowed; nothing was queued.
    Closed,
}

#[derive(Debug, Clone, Copy)]
pub struct MailboxLimits {
    pub capacity: usize,
    pub max_bytes: usize,
    pub policy: SlowConsumerPolicy,
}

/// FIFO of queued frames whose first element lives inline: a broadcast into an
/// idle mailbox (the common case of a fan-out) allocates nothing, and the
/// fan-out's only memory traffic per member is the mailbox itself.
#[derive(Debug, Default)]
struct Queue {
    /// The oldest frame; `None` only when `rest` is empty too.
    head: Option<Outbound>,
    rest: VecDeque<Outbound>,
}

impl Queue {
    fn len(&self) -> usize {
        usize::from(self.head.is_some()) + self.rest.len()
    }

    fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    fn push_back(&mut self, msg: Outbound) {
        if self.head.is_none() {
            self.head = Some(msg);
        } else {
            self.rest.push_back(msg);
        }
    }

    fn pop_front(&mut self) -> Option<Outbound> {
        let head = self.head.take();
        self.head = self.rest.pop_front();
        head
    }

    /// Move everything, in order, to the back of `into`.
    fn drain_into(&mut self, into: &mut VecDeque<Outbound>) {
        if let Some(head) = self.head.take() {
            into.push_back(head);
            into.append(&mut self.rest);
        }
    }

    /// Drop everything queued and any allocation.
    fn clear(&mut self) {
        *self = Queue::default();
    }
}

#[derive(Debug, Default)]
struct State {
    queue: Queue,
    bytes: usize,
    overflowed: bool,
    closed: bool,
    /// Set from outside (server API disconnect, say): the session closes with it.
    close_requested: Option<CloseReason>,
    /// The owning session, when it waits on `ready` or `overflowed`.
    waker: Option<Waker>,
    /// A source the session polls with [`Mailbox::others_waker`] (its socket,
    /// the drain signal, timers) woke it since it last asked.
    others_woken: bool,
}

impl State {
    /// Something for the session: frames, an overflow, or a close request.
    fn ready(&self) -> bool {
        !self.queue.is_empty() || self.overflowed || self.close_requested.is_some()
    }

    /// Remember `cx`'s waker (one task owns the mailbox, so one slot).
    fn register(&mut self, cx: &Context<'_>) {
        match &self.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => self.waker = Some(cx.waker().clone()),
        }
    }
}

pub struct Mailbox {
    state: Mutex<State>,
    limits: MailboxLimits,
}

/// What woke the owning session ([`Mailbox::poll_wake`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Woken {
    /// Frames are queued, the mailbox overflowed, or a close was requested.
    pub mailbox: bool,
    /// A source polled with [`Mailbox::others_waker`] woke the session.
    pub others: bool,
}

/// What a drain handed to the session.
#[derive(Debug, Default, Clone, Copy)]
pub struct Drained {
    pub messages: usize,
    pub overflowed: bool,
    pub close_requested: Option<CloseReason>,
}

impl Mailbox {
    pub fn new(limits: MailboxLimits) -> Mailbox {
        Mailbox {
            state: Mutex::new(State::default()),
            limits,
        }
    }

    /// Offer a frame. Never blocks on the consumer.
    pub fn push(&self, msg: Outbound) -> Delivery {
        let (delivery, wake) = self.push_deferred(msg);
        if let Some(w) = wake {
            w.wake();
        }
        delivery
    }

    /// [`push`](Self::push), handing back the session's waker instead of
    /// waking it: a fan-out wakes a batch of members at once after touching
    /// their task headers together (`pubsub::fan_out`). The caller must wake
    /// what it gets, or the session sleeps on a non-empty mailbox.
    pub fn push_deferred(&self, msg: Outbound) -> (Delivery, Option<Waker>) {
        let len = msg.len();
        let mut st = self.state.lock();
        if st.closed || st.overflowed {
            return (Delivery::Closed, None);
        }
        let fits = |st: &State| {
            st.queue.len() < self.limits.capacity && st.bytes + len <= self.limits.max_bytes
        };
        let mut dropped = 0;
        if !fits(&st) {
            match self.limits.policy {
                SlowConsumerPolicy::Disconnect => {
                    st.overflowed = true;
                    st.queue.clear();
                    st.bytes = 0;
                    return (Delivery::Overflowed, st.waker.take());
                }
                SlowConsumerPolicy::DropOldest => {
                    if len > self.limits.max_bytes {
                        return (Delivery::DroppedItself, None);
                    }
                    while !fits(&st) {
                        match st.queue.pop_front() {
                            Some(old) => {
                                st.bytes -= old.len();
                                dropped += 1;
                            }
                            None => break,
                        }
                    }
                }
            }
        }
        let was_empty = st.queue.is_empty();
        st.bytes += len;
        st.queue.push_back(msg);
        // The session drains everything on each wake, so only the first message
        // after a drain needs to wake it.
        let waker = if was_empty { st.waker.take() } else { None };
        let delivery = if dropped > 0 {
            Delivery::DroppedOldest(dropped)
        } else {
            Delivery::Queued
        };
        (delivery, waker)
    }

    /// Ask for the cache lines a push touches (the lock and the state behind
    /// it), so a fan-out can overlap many members' misses (`pubsub::prefetch`).
    #[inline]
    pub fn prefetch(&self) {
        let start: *const u8 = std::ptr::from_ref(&self.state).cast();
        let mut offset = 0;
        while offset < std::mem::size_of::<Mutex<State>>() {
            super::prefetch::for_write(start.wrapping_add(offset));
            offset += CACHE_LINE;
        }
    }

    /// Ready when there is something to drain, the mailbox overflowed, or a
    /// close was requested.
    pub fn ready(&self) -> Ready<'_> {
        Ready(self)
    }

    /// Ready when the mailbox is ready (as [`ready`](Self::ready)) or another
    /// source woke the session through [`others_waker`](Self::others_waker);
    /// says which, and clears the second. Pending registers `cx`'s waker, so
    /// a push or another source's wake arriving later wakes the task.
    pub fn poll_wake(&self, cx: &Context<'_>) -> Poll<Woken> {
        let mut st = self.state.lock();
        let woken = Woken {
            mailbox: st.ready(),
            others: std::mem::take(&mut st.others_woken),
        };
        if woken == Woken::default() {
            st.register(cx);
            Poll::Pending
        } else {
            Poll::Ready(woken)
        }
    }

    /// A waker for the session's other sources (socket, signals, timers):
    /// waking it marks that one of them has news, then wakes the session, so
    /// the session asks those sources only when one of them spoke
    /// (`session::events`). It shares the mailbox's allocation.
    pub fn others_waker(mailbox: &Arc<Mailbox>) -> Waker {
        Waker::from(Arc::clone(mailbox))
    }

    /// Ready once a push overflowed the mailbox (the write path watches this
    /// while a slow socket holds the session).
    pub fn overflowed(&self) -> Overflowed<'_> {
        Overflowed(self)
    }

    /// Move everything queued to the back of `into` in one lock.
    pub fn drain(&self, into: &mut VecDeque<Outbound>) -> Drained {
        let mut st = self.state.lock();
        let messages = st.queue.len();
        st.queue.drain_into(into);
        st.bytes = 0;
        Drained {
            messages,
            overflowed: st.overflowed,
            close_requested: st.close_requested,
        }
    }

    /// Give back the queue's spare room if nothing is queued: a burst leaves
    /// room for its size behind, which a session that has gone quiet (it
    /// parks) should not keep.
    pub fn release_spare(&self) {
        let mut st = self.state.lock();
        if st.queue.is_empty() && st.queue.rest.capacity() > 0 {
            st.queue.rest = VecDeque::new();
        }
    }

    /// Frames the queue has room for beyond its inline head (tests).
    #[cfg(test)]
    pub fn spare_room(&self) -> usize {
        self.state.lock().queue.rest.capacity()
    }

    /// Ask the owning session to close with `reason` (it wakes and closes).
    pub fn request_close(&self, reason: CloseReason) {
        let mut st = self.state.lock();
        st.close_requested = Some(reason);
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether a push overflowed the mailbox under the disconnect policy.
    pub fn is_overflowed(&self) -> bool {
        self.state.lock().overflowed
    }

    /// Refuse all further pushes and free what is queued.
    pub fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        st.queue.clear();
        st.bytes = 0;
    }

    /// Messages currently queued.
    /// Whether `messages` frames of `bytes` in all would fit now, within both
    /// bounds (a history replay is queued only whole).
    pub fn fits(&self, messages: usize, bytes: usize) -> bool {
        let st = self.state.lock();
        !st.overflowed
            && st.queue.len() + messages <= self.limits.capacity
            && st.bytes + bytes <= self.limits.max_bytes
    }

    pub fn depth(&self) -> usize {
        self.state.lock().queue.len()
    }
}

/// The waker of [`Mailbox::others_waker`].
impl Wake for Mailbox {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut st = self.state.lock();
        st.others_woken = true;
        let waker = st.waker.take();
        drop(st);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Future of [`Mailbox::ready`].
pub struct Ready<'a>(&'a Mailbox);

impl Future for Ready<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.0.state.lock();
        if st.ready() {
            Poll::Ready(())
        } else {
            st.register(cx);
            Poll::Pending
        }
    }
}

/// Future of [`Mailbox::overflowed`].
pub struct Overflowed<'a>(&'a Mailbox);

impl Future for Overflowed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.0.state.lock();
        if st.overflowed {
            Poll::Ready(())
        } else {
            st.register(cx);
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests;
