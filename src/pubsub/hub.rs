//! This node's topic → subscribers map and the fan-out loop.
//!
//! Two levels of sharded maps: the outer one (topic → subscriber set) is locked
//! only for an O(1) lookup, insert or remove; fan-out clones the topic's `Arc`
//! and iterates its own subscriber shards, so a broadcast never holds a lock
//! that blocks joins to another topic, and joins to the same topic wait at
//! most for one shard of its subscriber set. A topic's shards are plain maps
//! under a read-write lock (not a `DashMap`, whose iterator clones and drops
//! an `Arc` per member: two locked instructions per delivery that stall the
//! fan-out's overlapped cache misses).
//!
//! A fan-out to a topic of at least [`SPLIT_AT`] local members is shared with
//! the other runtime workers: the subscriber shards are cut into one part per
//! worker (at most [`TOPIC_SHARDS`]), helper tasks (spawned from a thread
//! outside the runtime, so an idle worker is woken for them) take all parts
//! but the first, and the publisher waits for them before
//! returning (fork-join), so delivery order and every other guarantee stay
//! those of one fan-out. A part no other worker picked up is run by the
//! publisher itself: the split never waits on a busy runtime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Waker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize};

use dashmap::DashMap;
use parking_lot::RwLock;

use super::mailbox::{Delivery, Mailbox, Outbound, SessionId};
use super::prefetch;

/// Subscriber shards per topic: enough to spread joins to a hot topic over both
/// cores' worth of contention, small enough that a topic with one member stays
/// cheap.
const TOPIC_SHARDS: usize = 8;

/// Members a fan-out prefetches and wakes together: enough outstanding misses
/// to cover a memory round trip, few enough to stay in the first-level cache.
const FAN_OUT_BATCH: usize = 32;

/// Local members from which one fan-out is split across two workers: below
/// it a fan-out takes well under a millisecond and the helper task's
/// spawn and hand-over would cost more than they save.
const SPLIT_AT: usize = 32_768;

/// A subscriber shard: session → mailbox.
type Shard = RwLock<HashMap<SessionId, Arc<Mailbox>>>;

/// One topic's subscribers on this node, sharded by session id.
#[derive(Default)]
struct Subscribers {
    shards: [Shard; TOPIC_SHARDS],
    /// Members in all shards (changed under a shard's write lock).
    count: AtomicUsize,
}

impl Subscribers {
    fn shard(&self, session: SessionId) -> &Shard {
        &self.shards[(session % TOPIC_SHARDS as u64) as usize]
    }

    /// Add or replace `session`'s mailbox.
    fn insert(&self, session: SessionId, mailbox: Arc<Mailbox>) {
        if self
            .shard(session)
            .write()
            .insert(session, mailbox)
            .is_none()
        {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn remove(&self, session: SessionId) {
        if self.shard(session).write().remove(&session).is_some() {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One topic's local subscribers and how many broadcasts it carried here
/// (the admin console's messages/s; one relaxed add per fan-out).
#[derive(Default)]
struct Topic {
    subscribers: Subscribers,
    broadcasts: AtomicU64,
}

#[derive(Default)]
pub struct Hub {
    topics: DashMap<Arc<str>, Arc<Topic>>,
    /// Fan-outs shared with another worker (`myriad_fanout_splits_total`).
    splits: AtomicU64,
}

/// Wake (and clear) every waker in `wakers`.
fn wake_all(wakers: &mut [Option<Waker>]) {
    for waker in wakers.iter_mut().filter_map(Option::take) {
        waker.wake();
    }
}

/// Who a fan-out passes over: the publisher (`broadcast_from`) and members
/// that already have the frame (a history topic's members that joined ahead
/// of this node, `pubsub::history`). Usually one id at most.
#[derive(Debug, Clone, Copy, Default)]
pub struct Skip<'a> {
    pub publisher: Option<SessionId>,
    /// Sorted ascending: each member costs a binary search, however many
    /// clients joined ahead.
    pub have_it: &'a [SessionId],
}

impl Skip<'_> {
    fn skips(&self, id: SessionId) -> bool {
        self.publisher == Some(id)
            || (!self.have_it.is_empty() && self.have_it.binary_search(&id).is_ok())
    }
}

/// A topic as the admin console lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFigures {
    pub topic: Arc<str>,
    /// Subscribers on this node.
    pub members: usize,
    /// Broadcasts delivered here since the topic got its first subscriber.
    pub broadcasts: u64,
}

/// What one fan-out did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FanOut {
    /// Mailboxes the frame was queued in.
    pub delivered: usize,
    /// Messages dropped under the drop_oldest policy (older ones to make room,
    /// or this one when it can never fit).
    pub dropped: usize,
    /// Subscribers whose mailbox overflowed (disconnect policy).
    pub overflowed: usize,
}

impl FanOut {
    fn add(&mut self, other: FanOut) {
        self.delivered += other.delivered;
        self.dropped += other.dropped;
        self.overflowed += other.overflowed;
    }

    fn count(&mut self, delivery: Delivery) {
        match delivery {
            Delivery::Queued => self.delivered += 1,
            Delivery::DroppedOldest(n) => {
                self.delivered += 1;
                self.dropped += n;
            }
            Delivery::DroppedItself => self.dropped += 1,
            Delivery::Overflowed => self.overflowed += 1,
            Delivery::Closed => {}
        }
    }
}

/// The fan-out loop over `shards`: members in batches of
/// [`FAN_OUT_BATCH`], mailboxes prefetched together, wakers handed back by
/// the pushes prefetched and woken while the next batch's mailboxes arrive.
fn fan_out_shards(shards: &[Shard], frame: &Outbound, skip: Skip<'_>) -> FanOut {
    let mut out = FanOut::default();
    // On the stack: a fan-out to a small topic allocates nothing.
    let mut wakers: [Option<Waker>; FAN_OUT_BATCH] = std::array::from_fn(|_| None);
    let mut pending_wakes = 0;
    for shard in shards {
        let members = shard.read();
        if members.is_empty() {
            continue;
        }
        let mut members = members
            .iter()
            .filter(|(id, _)| !skip.skips(**id))
            .map(|(_, mailbox)| &**mailbox);
        loop {
            let mut batch: [Option<&Mailbox>; FAN_OUT_BATCH] = [None; FAN_OUT_BATCH];
            let mut taken = 0;
            for (slot, mailbox) in batch.iter_mut().zip(members.by_ref()) {
                mailbox.prefetch();
                *slot = Some(mailbox);
                taken += 1;
            }
            wake_all(&mut wakers[..pending_wakes]);
            pending_wakes = 0;
            for mailbox in batch.iter().take(taken).flatten() {
                let (delivery, waker) = mailbox.push_deferred(frame.clone());
                out.count(delivery);
                if let Some(waker) = waker {
                    prefetch::for_write(waker.data().cast());
                    wakers[pending_wakes] = Some(waker);
                    pending_wakes += 1;
                }
            }
            if taken < FAN_OUT_BATCH {
                break;
            }
        }
    }
    wake_all(&mut wakers[..pending_wakes]);
    out
}

/// One part of a split fan-out (a range of the topic's shards): run once, by
/// a helper task or by the publisher, whichever claims it first.
struct Part {
    topic: Arc<Topic>,
    shards: std::ops::Range<usize>,
    frame: Outbound,
    publisher: Option<SessionId>,
    have_it: Vec<SessionId>,
    /// FREE, CLAIMED or DONE.
    state: AtomicU8,
    out: parking_lot::Mutex<FanOut>,
}

const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const DONE: u8 = 2;

/// Marks a part done even if its fan-out unwinds, so the publisher waiting
/// for it never spins forever (a panic here is a bug; the session
/// supervisor reports it where it surfaces).
struct DoneOnDrop<'a>(&'a AtomicU8);

impl Drop for DoneOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(DONE, Ordering::Release);
    }
}

impl Part {
    /// Fan out to this part's shards unless someone already claimed them.
    fn run_if_free(&self) {
        if self
            .state
            .compare_exchange(FREE, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let _done = DoneOnDrop(&self.state);
        let shards = &self.topic.subscribers.shards[self.shards.clone()];
        let skip = Skip {
            publisher: self.publisher,
            have_it: &self.have_it,
        };
        *self.out.lock() = fan_out_shards(shards, &self.frame, skip);
    }

    /// Wait until the part is done (it is running on another worker).
    fn wait(&self) {
        let mut spins = 0u32;
        while self.state.load(Ordering::Acquire) != DONE {
            spins += 1;
            if spins < 1 << 12 {
                std::hint::spin_loop();
            } else {
                // The other worker's thread may have been preempted.
                std::thread::yield_now();
            }
        }
    }
}

/// Split fan-outs waiting for the spawner thread; past this, the publisher
/// spawns its helpers itself.
const SPAWNER_QUEUE: usize = 64;

/// Spawn a task for each helper part, from a thread outside the runtime.
/// Spawned from this worker, the tasks would land in its LIFO slot and local
/// queue, and measured, the other worker then missed them in about a third
/// of the fan-outs to a million members until this one was done
/// (BENCHMARKS.md, fifth session); from outside they go to the shared queue,
/// and an idle worker is woken for them. One thread serves the process; if
/// it cannot be made or its queue is full, the tasks are spawned here.
fn hand_out(handle: &tokio::runtime::Handle, helpers: &[Arc<Part>]) {
    let sent = spawner().is_some_and(|tx| tx.try_send((handle.clone(), helpers.to_vec())).is_ok());
    if !sent {
        spawn_all(handle, helpers);
    }
}

type SpawnJob = (tokio::runtime::Handle, Vec<Arc<Part>>);

/// The spawner thread's queue, started at the first split fan-out.
fn spawner() -> Option<&'static std::sync::mpsc::SyncSender<SpawnJob>> {
    static SPAWNER: std::sync::OnceLock<Option<std::sync::mpsc::SyncSender<SpawnJob>>> =
        std::sync::OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<SpawnJob>(SPAWNER_QUEUE);
            std::thread::Builder::new()
                .name("myriad-fanout".into())
                .spawn(move || {
                    for (handle, parts) in rx {
                        spawn_all(&handle, &parts);
                    }
                })
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

fn spawn_all(handle: &tokio::runtime::Handle, parts: &[Arc<Part>]) {
    for part in parts {
        let part = Arc::clone(part);
        // Not awaited: the claim decides who runs it, and a runtime shutting
        // down (or gone) that drops the task leaves it to the publisher.
        drop(handle.spawn(async move { part.run_if_free() }));
    }
}

/// Fan out to `t` on every worker: parts after the first go to helper tasks
/// (other workers steal them while this one does the first), then wait for
/// each, or run it here if nobody took it. None outside a multi-worker
/// runtime (no other worker to share with).
fn fan_out_split(t: &Arc<Topic>, frame: &Outbound, skip: Skip<'_>) -> Option<FanOut> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
        return None;
    }
    let parts = handle.metrics().num_workers().min(TOPIC_SHARDS);
    if parts < 2 {
        return None;
    }
    // Shards [cut(i), cut(i + 1)) make part i.
    let cut = |i: usize| i * TOPIC_SHARDS / parts;
    let helpers: Vec<Arc<Part>> = (1..parts)
        .map(|i| {
            Arc::new(Part {
                topic: Arc::clone(t),
                shards: cut(i)..cut(i + 1),
                frame: frame.clone(),
                publisher: skip.publisher,
                have_it: skip.have_it.to_vec(),
                state: AtomicU8::new(FREE),
                out: parking_lot::Mutex::new(FanOut::default()),
            })
        })
        .collect();
    hand_out(&handle, &helpers);
    let mut out = fan_out_shards(&t.subscribers.shards[..cut(1)], frame, skip);
    for part in &helpers {
        part.run_if_free();
        part.wait();
        out.add(*part.out.lock());
    }
    Some(out)
}

impl Hub {
    pub fn new() -> Hub {
        Hub::default()
    }

    /// Add (or replace) `session`'s subscription to `topic`.
    pub fn subscribe(&self, topic: &str, session: SessionId, mailbox: Arc<Mailbox>) {
        // Insert while holding the topic's entry so a concurrent unsubscribe that
        // empties and removes the topic cannot lose this subscription.
        match self.topics.get(topic) {
            Some(t) => {
                t.subscribers.insert(session, mailbox);
            }
            None => {
                let entry = self
                    .topics
                    .entry(Arc::from(topic))
                    .or_insert_with(|| Arc::new(Topic::default()));
                entry.subscribers.insert(session, mailbox);
            }
        }
    }

    /// Remove `session`'s subscription; drop the topic when it empties.
    pub fn unsubscribe(&self, topic: &str, session: SessionId) {
        let now_empty = match self.topics.get(topic) {
            Some(t) => {
                t.subscribers.remove(session);
                t.subscribers.is_empty()
            }
            None => false,
        };
        if now_empty {
            self.topics
                .remove_if(topic, |_, t| t.subscribers.is_empty());
        }
    }

    /// Queue `frame` in every subscriber's mailbox except `exclude`'s.
    ///
    /// Members go in batches of [`FAN_OUT_BATCH`]: the batch's mailboxes are
    /// prefetched together, then pushed into; the wakers the pushes hand back
    /// have their tasks' headers prefetched and are woken while the next
    /// batch's mailboxes arrive. A member costs two cache misses (its mailbox,
    /// its task); batching lets a batch's misses overlap instead of queueing
    /// behind each other's atomic operations (`pubsub::prefetch`).
    pub fn fan_out(&self, topic: &str, frame: &Outbound, exclude: Option<SessionId>) -> FanOut {
        let skip = Skip {
            publisher: exclude,
            have_it: &[],
        };
        self.fan_out_skipping(topic, frame, skip)
    }

    /// `fan_out`, passing over every member `skip` names.
    pub fn fan_out_skipping(&self, topic: &str, frame: &Outbound, skip: Skip<'_>) -> FanOut {
        let t = match self.topics.get(topic) {
            Some(t) => Arc::clone(t.value()),
            None => return FanOut::default(),
        };
        t.broadcasts.fetch_add(1, Ordering::Relaxed);
        if t.subscribers.len() >= SPLIT_AT {
            if let Some(out) = fan_out_split(&t, frame, skip) {
                self.splits.fetch_add(1, Ordering::Relaxed);
                return out;
            }
        }
        fan_out_shards(&t.subscribers.shards, frame, skip)
    }

    /// Fan-outs that were shared with another worker.
    pub fn splits(&self) -> u64 {
        self.splits.load(Ordering::Relaxed)
    }

    /// Names of the topics with at least one subscriber (resubscribing after a
    /// broker reconnect).
    pub fn topic_names(&self) -> Vec<Arc<str>> {
        self.topics.iter().map(|e| Arc::clone(e.key())).collect()
    }

    /// Topics with at least one subscriber.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Subscribers of `topic` on this node.
    pub fn subscriber_count(&self, topic: &str) -> usize {
        self.topics.get(topic).map_or(0, |t| t.subscribers.len())
    }

    /// The `n` topics with the most subscribers here (ties: more broadcasts
    /// first). O(topics) with a bounded heap, for the admin console.
    pub fn busiest(&self, n: usize) -> Vec<TopicFigures> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut heap = BinaryHeap::with_capacity(n + 1);
        for e in self.topics.iter() {
            let key = (e.subscribers.len(), e.broadcasts.load(Ordering::Relaxed));
            heap.push(Reverse((key, Arc::clone(e.key()))));
            if heap.len() > n {
                heap.pop();
            }
        }
        let mut out: Vec<TopicFigures> = heap
            .into_iter()
            .map(|Reverse(((members, broadcasts), topic))| TopicFigures {
                topic,
                members,
                broadcasts,
            })
            .collect();
        out.sort_by(|a, b| {
            (b.members, b.broadcasts, &a.topic).cmp(&(a.members, a.broadcasts, &b.topic))
        });
        out
    }

    /// Broadcasts delivered here, every topic (the console's rate).
    pub fn broadcasts_total(&self) -> u64 {
        self.topics
            .iter()
            .map(|t| t.broadcasts.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SlowConsumerPolicy;
    use crate::pubsub::mailbox::MailboxLimits;
    use std::collections::VecDeque;

    fn mailbox() -> Arc<Mailbox> {
        Arc::new(Mailbox::new(MailboxLimits {
            capacity: 4,
            max_bytes: 1024,
            policy: SlowConsumerPolicy::Disconnect,
        }))
    }

    #[test]
    fn fan_out_reaches_every_subscriber_but_the_excluded() {
        let hub = Hub::new();
        let boxes: Vec<_> = (0..5).map(|_| mailbox()).collect();
        for (i, m) in boxes.iter().enumerate() {
            hub.subscribe("t", i as u64, m.clone());
        }
        hub.subscribe("other", 9, mailbox());
        let frame = Outbound::Text("x".into());
        let out = hub.fan_out("t", &frame, Some(2));
        assert_eq!(out.delivered, 4);
        let depths: Vec<_> = boxes.iter().map(|m| m.depth()).collect();
        assert_eq!(depths, [1, 1, 0, 1, 1]);
    }

    /// A waker that counts its wakes.
    struct Counter(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Park a waiting session on `m`: its `ready()` future registers a counting waker.
    fn waiting(m: &Mailbox) -> Arc<Counter> {
        use std::future::Future;
        let counter = Arc::new(Counter(Default::default()));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = std::task::Context::from_waker(&waker);
        let ready = std::pin::pin!(m.ready());
        assert!(ready.poll(&mut cx).is_pending());
        counter
    }

    #[test]
    fn every_waiting_member_is_woken_once_across_batches() {
        let hub = Hub::new();
        // Batches of FAN_OUT_BATCH plus a partial one, with the excluded member
        // in the middle of a batch.
        let n = 3 * FAN_OUT_BATCH as u64 + 5;
        let boxes: Vec<_> = (0..n).map(|_| mailbox()).collect();
        let wakes: Vec<_> = boxes.iter().map(|m| waiting(m)).collect();
        for (i, m) in boxes.iter().enumerate() {
            hub.subscribe("t", i as u64, m.clone());
        }
        let frame = Outbound::Text("x".into());
        let out = hub.fan_out("t", &frame, Some(40));
        assert_eq!(out.delivered, n as usize - 1);
        for (i, (m, w)) in boxes.iter().zip(&wakes).enumerate() {
            let expected = usize::from(i != 40);
            assert_eq!(m.depth(), expected, "member {i}");
            assert_eq!(w.0.load(Ordering::SeqCst), expected, "member {i}");
        }
        // Already woken and not yet drained: no second wake.
        hub.fan_out("t", &frame, None);
        assert_eq!(wakes[0].0.load(Ordering::SeqCst), 1);
        assert_eq!(wakes[40].0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_overflow_in_a_batch_wakes_its_session() {
        let hub = Hub::new();
        let boxes: Vec<_> = (0..FAN_OUT_BATCH as u64 + 1).map(|_| mailbox()).collect();
        for (i, m) in boxes.iter().enumerate() {
            hub.subscribe("t", i as u64, m.clone());
        }
        let frame = Outbound::Text("x".into());
        for _ in 0..4 {
            hub.fan_out("t", &frame, None);
        }
        // Full now; each session waits for its overflow while writing slowly.
        let wakes: Vec<_> = boxes
            .iter()
            .map(|m| {
                use std::future::Future;
                let counter = Arc::new(Counter(Default::default()));
                let waker = Waker::from(Arc::clone(&counter));
                let mut cx = std::task::Context::from_waker(&waker);
                assert!(std::pin::pin!(m.overflowed()).poll(&mut cx).is_pending());
                counter
            })
            .collect();
        let out = hub.fan_out("t", &frame, None);
        assert_eq!(out.overflowed, boxes.len());
        assert!(wakes.iter().all(|w| w.0.load(Ordering::SeqCst) == 1));
    }

    /// A topic of `n` members; returns their mailboxes by session id.
    fn big_topic(hub: &Hub, n: usize) -> Vec<Arc<Mailbox>> {
        (0..n)
            .map(|i| {
                let m = mailbox();
                hub.subscribe("big", i as u64, Arc::clone(&m));
                m
            })
            .collect()
    }

    /// What `m` holds, as text.
    fn texts(m: &Mailbox) -> Vec<String> {
        let mut q = VecDeque::new();
        m.drain(&mut q);
        q.iter()
            .map(|o| o.text().unwrap_or_default().to_string())
            .collect()
    }

    /// Two fan-outs to a big topic on a runtime of `workers` workers: every
    /// member but the excluded one gets both frames, once each, in order.
    fn shared_fan_out_on(workers: usize, excluded: usize) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .build()
            .unwrap();
        let hub = Arc::new(Hub::new());
        let n = SPLIT_AT + 100;
        let boxes = big_topic(&hub, n);
        let publisher = Arc::clone(&hub);
        // From a task, as a session publishes.
        let task = runtime.spawn(async move {
            ["one", "two"]
                .map(|f| publisher.fan_out("big", &Outbound::Text(f.into()), Some(excluded as u64)))
        });
        let outs = runtime.block_on(task).unwrap();
        for out in outs {
            assert_eq!(out.delivered, n - 1, "{out:?}");
        }
        assert_eq!(hub.splits(), 2, "both fan-outs were shared");
        for (i, m) in boxes.iter().enumerate() {
            let want: &[&str] = if i == excluded { &[] } else { &["one", "two"] };
            assert_eq!(texts(m), want, "member {i}: once each, in order");
        }
    }

    #[test]
    fn a_big_fan_out_is_shared_by_two_workers_and_stays_one_fan_out() {
        // Excluded: a member of the second part (shards 4..8).
        shared_fan_out_on(2, 13);
    }

    #[test]
    fn uneven_parts_cover_every_shard_once() {
        // Three parts: shards 0..2, 2..5, 5..8; excluded in the middle one.
        shared_fan_out_on(3, 11);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn with_one_worker_or_none_one_thread_does_it_all() {
        let hub = Hub::new();
        let boxes = big_topic(&hub, SPLIT_AT);
        let out = hub.fan_out("big", &Outbound::Text("x".into()), None);
        assert_eq!(out.delivered, SPLIT_AT);
        let outside = std::thread::spawn({
            let hub = Arc::new(hub);
            move || {
                let out = hub.fan_out("big", &Outbound::Text("y".into()), None);
                (out.delivered, hub.splits())
            }
        })
        .join()
        .unwrap();
        assert_eq!(outside, (SPLIT_AT, 0), "no split without a second worker");
        assert!(boxes.iter().all(|m| texts(m) == ["x", "y"]));
    }

    #[test]
    fn a_part_runs_once_whoever_claims_it() {
        let hub = Hub::new();
        let boxes: Vec<_> = (0..16).map(|_| mailbox()).collect();
        for (i, m) in boxes.iter().enumerate() {
            hub.subscribe("t", i as u64, Arc::clone(m));
        }
        let topic = Arc::clone(hub.topics.get("t").unwrap().value());
        let far = Part {
            topic,
            shards: TOPIC_SHARDS / 2..TOPIC_SHARDS,
            frame: Outbound::Text("f".into()),
            publisher: None,
            have_it: Vec::new(),
            state: AtomicU8::new(FREE),
            out: parking_lot::Mutex::new(FanOut::default()),
        };
        far.run_if_free();
        far.run_if_free();
        far.wait();
        assert_eq!(far.out.lock().delivered, 8, "the far four shards, once");
        for (i, m) in boxes.iter().enumerate() {
            let want = usize::from(i % TOPIC_SHARDS >= TOPIC_SHARDS / 2);
            assert_eq!(m.depth(), want, "member {i}");
        }
    }

    /// The publisher's worker is busy with its own part and never yields, so
    /// a helper part must reach the other worker without this one's help.
    /// Spawned from the busy worker the helper sat in its LIFO slot (no other
    /// worker may steal from there) and this test timed out with the part
    /// still free.
    #[test]
    fn a_helper_part_reaches_the_idle_worker_while_the_publisher_is_busy() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let hub = Hub::new();
        let boxes: Vec<_> = (0..16).map(|_| mailbox()).collect();
        for (i, m) in boxes.iter().enumerate() {
            hub.subscribe("t", i as u64, Arc::clone(m));
        }
        let topic = Arc::clone(hub.topics.get("t").unwrap().value());
        let claimed_elsewhere = runtime.block_on(async move {
            tokio::spawn(async move {
                let part = Arc::new(Part {
                    topic,
                    shards: 0..TOPIC_SHARDS,
                    frame: Outbound::Text("f".into()),
                    publisher: None,
                    have_it: Vec::new(),
                    state: AtomicU8::new(FREE),
                    out: parking_lot::Mutex::new(FanOut::default()),
                });
                hand_out(
                    &tokio::runtime::Handle::current(),
                    std::slice::from_ref(&part),
                );
                // Busy, as a publisher in its own part is: no yield.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                while part.state.load(Ordering::Acquire) != DONE
                    && std::time::Instant::now() < deadline
                {
                    std::hint::spin_loop();
                }
                part.state.load(Ordering::Acquire) == DONE
            })
            .await
            .unwrap()
        });
        assert!(claimed_elsewhere, "the other worker ran the helper part");
        assert!(boxes.iter().all(|m| m.depth() == 1));
    }

    #[test]
    fn members_that_have_the_frame_are_passed_over() {
        let hub = Hub::new();
        let boxes: Vec<_> = (0..64).map(|_| mailbox()).collect();
        for (i, m) in boxes.iter().enumerate() {
            hub.subscribe("t", i as u64, Arc::clone(m));
        }
        let have_it: Vec<SessionId> = (0..64).filter(|i| i % 3 == 0).collect();
        let skip = Skip {
            publisher: Some(1),
            have_it: &have_it,
        };
        let out = hub.fan_out_skipping("t", &Outbound::Text("x".into()), skip);
        assert_eq!(out.delivered, 64 - have_it.len() - 1);
        for (i, m) in boxes.iter().enumerate() {
            let skipped = i == 1 || i % 3 == 0;
            assert_eq!(m.depth(), usize::from(!skipped), "member {i}");
        }
    }

    #[test]
    fn empty_topics_are_removed() {
        let hub = Hub::new();
        hub.subscribe("t", 1, mailbox());
        hub.subscribe("t", 2, mailbox());
        assert_eq!(hub.topic_count(), 1);
        hub.unsubscribe("t", 1);
        assert_eq!(hub.subscriber_count("t"), 1);
        hub.unsubscribe("t", 2);
        assert_eq!(hub.topic_count(), 0);
        hub.unsubscribe("t", 2);
    }

    #[test]
    fn the_busiest_topics_come_first_and_count_their_broadcasts() {
        let hub = Hub::new();
        for i in 0..5 {
            hub.subscribe("big", i, mailbox());
        }
        hub.subscribe("small", 10, mailbox());
        for i in 20..23 {
            hub.subscribe("mid", i, mailbox());
        }
        let frame = Outbound::Text("x".into());
        hub.fan_out("mid", &frame, None);
        hub.fan_out("mid", &frame, None);
        hub.fan_out("nobody", &frame, None);
        let top = hub.busiest(2);
        let names: Vec<&str> = top.iter().map(|t| &*t.topic).collect();
        assert_eq!(names, ["big", "mid"]);
        assert_eq!((top[1].members, top[1].broadcasts), (3, 2));
        assert_eq!(hub.busiest(10).len(), 3);
        assert_eq!(hub.broadcasts_total(), 2);
    }

    #[test]
    fn overflow_is_reported() {
        let hub = Hub::new();
        let m = mailbox();
        hub.subscribe("t", 1, m.clone());
        let frame = Outbound::Text("x".into());
        for _ in 0..4 {
            assert_eq!(hub.fan_out("t", &frame, None).delivered, 1);
        }
        assert_eq!(hub.fan_out("t", &frame, None).overflowed, 1);
        let mut q = VecDeque::new();
        assert!(m.drain(&mut q).overflowed);
    }
}
