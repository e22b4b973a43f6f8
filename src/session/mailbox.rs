//! A session's outbound mailbox: bounded in messages and in bytes, written by
//! any number of publishers, drained by exactly one session task.
//!
//! Publishers never wait: a push either queues, drops the oldest messages
//! (`slow_consumer = "drop_oldest"`), or marks the mailbox overflowed
//! (`"disconnect"`), which wakes the session so it can close with 1013. The
//! mailbox never touches the socket.

use std::collections::VecDeque;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::config::SlowConsumerPolicy;
use crate::protocol::CloseReason;

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

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Outbound>,
    bytes: usize,
    overflowed: bool,
    closed: bool,
    /// Set from outside (server API disconnect, say): the session closes with it.
    close_requested: Option<CloseReason>,
}

pub struct Mailbox {
    state: Mutex<State>,
    /// Wakes the owning session; a permit is stored when it is not waiting.
    notify: Notify,
    limits: MailboxLimits,
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
            notify: Notify::new(),
            limits,
        }
    }

    /// Offer a frame. Never blocks on the consumer.
    pub fn push(&self, msg: Outbound) -> Delivery {
        let len = msg.len();
        let mut st = self.state.lock();
        if st.closed || st.overflowed {
            return Delivery::Closed;
        }
        let fits = |st: &State| {
            st.queue.len() < self.limits.capacity && st.bytes + len <= self.limits.max_bytes
        };
        let mut dropped = 0;
        if !fits(&st) {
            match self.limits.policy {
                SlowConsumerPolicy::Disconnect => {
                    st.overflowed = true;
                    st.queue = VecDeque::new();
                    st.bytes = 0;
                    drop(st);
                    self.notify.notify_one();
                    return Delivery::Overflowed;
                }
                SlowConsumerPolicy::DropOldest => {
                    if len > self.limits.max_bytes {
                        return Delivery::DroppedItself;
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
        drop(st);
        // The session drains everything on each wake, so only the first message
        // after a drain needs to wake it.
        if was_empty {
            self.notify.notify_one();
        }
        if dropped > 0 {
            Delivery::DroppedOldest(dropped)
        } else {
            Delivery::Queued
        }
    }

    /// Wait until something was pushed (or the mailbox overflowed).
    pub async fn ready(&self) {
        self.notify.notified().await
    }

    /// Move everything queued into `into` (which must be empty) in one lock.
    pub fn drain(&self, into: &mut VecDeque<Outbound>) -> Drained {
        let mut st = self.state.lock();
        std::mem::swap(&mut st.queue, into);
        st.bytes = 0;
        Drained {
            messages: into.len(),
            overflowed: st.overflowed,
            close_requested: st.close_requested,
        }
    }

    /// Ask the owning session to close with `reason` (it wakes and closes).
    pub fn request_close(&self, reason: CloseReason) {
        self.state.lock().close_requested = Some(reason);
        self.notify.notify_one();
    }

    /// Whether a push overflowed the mailbox under the disconnect policy.
    pub fn is_overflowed(&self) -> bool {
        self.state.lock().overflowed
    }

    /// Store a wake-up for the session. Used after the session itself consumed
    /// a notification while it was busy writing, so nothing queued meanwhile is
    /// left waiting for a push that will not notify (pushes notify only when the
    /// queue goes from empty to non-empty).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Refuse all further pushes and free what is queued.
    pub fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        st.queue = VecDeque::new();
        st.bytes = 0;
    }

    /// Messages currently queued.
    pub fn depth(&self) -> usize {
        self.state.lock().queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Outbound {
        Outbound::Text(Utf8Bytes::from(s))
    }

    fn mailbox(capacity: usize, max_bytes: usize, policy: SlowConsumerPolicy) -> Mailbox {
        Mailbox::new(MailboxLimits {
            capacity,
            max_bytes,
            policy,
        })
    }

    #[test]
    fn disconnect_policy_overflows_on_message_bound() {
        let m = mailbox(2, 1000, SlowConsumerPolicy::Disconnect);
        assert_eq!(m.push(text("a")), Delivery::Queued);
        assert_eq!(m.push(text("b")), Delivery::Queued);
        assert_eq!(m.push(text("c")), Delivery::Overflowed);
        assert_eq!(m.push(text("d")), Delivery::Closed);
        let mut q = VecDeque::new();
        let d = m.drain(&mut q);
        assert!(d.overflowed);
        assert_eq!(d.messages, 0);
    }

    #[test]
    fn disconnect_policy_overflows_on_byte_bound() {
        let m = mailbox(100, 5, SlowConsumerPolicy::Disconnect);
        assert_eq!(m.push(text("abc")), Delivery::Queued);
        assert_eq!(m.push(text("de")), Delivery::Queued);
        assert_eq!(m.push(text("f")), Delivery::Overflowed);
    }

    #[test]
    fn drop_oldest_keeps_the_newest() {
        let m = mailbox(2, 1000, SlowConsumerPolicy::DropOldest);
        m.push(text("a"));
        m.push(text("b"));
        assert_eq!(m.push(text("c")), Delivery::DroppedOldest(1));
        let mut q = VecDeque::new();
        m.drain(&mut q);
        let got: Vec<_> = q
            .into_iter()
            .map(|o| match o {
                Outbound::Text(t) => t.to_string(),
                Outbound::Binary(_) => unreachable!(),
            })
            .collect();
        assert_eq!(got, ["b", "c"]);
    }

    #[test]
    fn drop_oldest_by_bytes_and_oversized_message() {
        let m = mailbox(100, 4, SlowConsumerPolicy::DropOldest);
        m.push(text("ab"));
        m.push(text("cd"));
        assert_eq!(m.push(text("efg")), Delivery::DroppedOldest(2));
        assert_eq!(m.push(text("hijkl")), Delivery::DroppedItself);
        assert_eq!(m.depth(), 1);
    }

    #[test]
    fn closed_mailbox_refuses() {
        let m = mailbox(10, 100, SlowConsumerPolicy::Disconnect);
        m.push(text("a"));
        m.close();
        assert_eq!(m.push(text("b")), Delivery::Closed);
        assert_eq!(m.depth(), 0);
    }

    #[tokio::test]
    async fn push_wakes_the_reader() {
        let m = std::sync::Arc::new(mailbox(10, 100, SlowConsumerPolicy::Disconnect));
        let m2 = m.clone();
        let waiter = tokio::spawn(async move {
            m2.ready().await;
            m2.depth()
        });
        tokio::task::yield_now().await;
        m.push(text("x"));
        assert_eq!(waiter.await.unwrap(), 1);
    }
}
