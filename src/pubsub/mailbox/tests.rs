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
    assert_eq!(texts(q), ["b", "c"]);
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

fn texts(q: VecDeque<Outbound>) -> Vec<String> {
    q.into_iter()
        .map(|o| match o {
            Outbound::Text(t) => t.to_string(),
            Outbound::Binary(_) => unreachable!(),
        })
        .collect()
}

#[test]
fn a_message_into_an_idle_mailbox_allocates_nothing() {
    let m = mailbox(10, 100, SlowConsumerPolicy::Disconnect);
    assert_eq!(m.push(text("a")), Delivery::Queued);
    assert_eq!(m.depth(), 1);
    assert_eq!(
        m.state.lock().queue.rest.capacity(),
        0,
        "first message is inline"
    );
    let mut q = VecDeque::new();
    assert_eq!(m.drain(&mut q).messages, 1);
    assert_eq!(texts(q), ["a"]);
    assert_eq!(m.depth(), 0);
}

#[test]
fn order_is_kept_across_the_inline_head() {
    let m = mailbox(10, 100, SlowConsumerPolicy::DropOldest);
    for t in ["a", "b", "c"] {
        m.push(text(t));
    }
    let mut q = VecDeque::from([text("z")]);
    assert_eq!(m.drain(&mut q).messages, 3);
    assert_eq!(texts(q), ["z", "a", "b", "c"]);
    // Refilled after a drain, the head slot is used again first.
    m.push(text("d"));
    m.push(text("e"));
    let mut q = VecDeque::new();
    m.drain(&mut q);
    assert_eq!(texts(q), ["d", "e"]);
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

/// A waker that counts its wakes.
struct Counter(std::sync::atomic::AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn another_source_waking_the_session_is_reported_once_and_never_lost() {
    let m = Arc::new(mailbox(4, 1000, SlowConsumerPolicy::Disconnect));
    let counter = Arc::new(Counter(Default::default()));
    let task = Waker::from(Arc::clone(&counter));
    let cx = Context::from_waker(&task);
    assert_eq!(m.poll_wake(&cx), Poll::Pending);
    // A socket (say) wakes the session through the mailbox's other waker.
    let others = Mailbox::others_waker(&m);
    others.wake_by_ref();
    assert_eq!(counter.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    let woken = Woken {
        mailbox: false,
        others: true,
    };
    assert_eq!(m.poll_wake(&cx), Poll::Ready(woken));
    // Reported once, then the session is registered again.
    assert_eq!(m.poll_wake(&cx), Poll::Pending);
    // A wake while the session runs (no waker registered) is kept, not lost.
    let running = Arc::new(Counter(Default::default()));
    let _ = m.poll_wake(&Context::from_waker(&Waker::from(Arc::clone(&running))));
    m.push(text("a"));
    others.wake_by_ref();
    let both = Woken {
        mailbox: true,
        others: true,
    };
    assert_eq!(m.poll_wake(&cx), Poll::Ready(both));
    assert_eq!(
        m.poll_wake(&cx),
        Poll::Ready(Woken {
            mailbox: true,
            others: false
        })
    );
}

#[test]
fn spare_room_a_burst_left_is_given_back_only_when_empty() {
    let m = Mailbox::new(MailboxLimits {
        capacity: 100,
        max_bytes: 1 << 20,
        policy: SlowConsumerPolicy::Disconnect,
    });
    for i in 0..10 {
        m.push(Outbound::Text(format!("f{i}").into()));
    }
    m.release_spare();
    assert_eq!(m.depth(), 10, "nothing queued is dropped");
    let mut into = VecDeque::new();
    m.drain(&mut into);
    assert!(
        m.state.lock().queue.rest.capacity() > 0,
        "the burst's room stays"
    );
    m.release_spare();
    assert_eq!(m.state.lock().queue.rest.capacity(), 0);
    m.push(Outbound::Text("again".into()));
    assert_eq!(m.depth(), 1);
}
