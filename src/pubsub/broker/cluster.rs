//! What every cross-node broker shares: local delivery through this node's hub
//! first, then a bounded queue towards the backend (a full queue drops the
//! remote copy and counts it; the publisher never waits), the envelope that
//! tags each frame with its origin node (so a node ignores its own publishes
//! echoed back), the set of topics with local members that the backend link
//! must stay subscribed to, reconnect back-off, health for `/readyz`, and
//! presence replication (heartbeats, state sync, dead-node sweep) over the
//! control channel.
//!
//! The backend links (`redis`, `nats`) own their connections and run as tasks;
//! nothing here does I/O.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{Broker, HistoryAck};
use crate::channel::ChannelRouter;
use crate::config::NamespaceConfig;
use crate::history::History;
use crate::metrics::Metrics;
use crate::presence::{Presence, RemoteMember};
use crate::protocol::encode;
use crate::pubsub::{FanOut, Hub, SessionId};
use crate::session::mailbox::{Mailbox, Outbound};

/// Something on its way to other nodes.
#[derive(Debug)]
pub enum Envelope {
    /// A broadcast frame for `topic`'s channel.
    Frame { topic: Arc<str>, frame: Utf8Bytes },
    /// A presence-replication message for the control channel.
    Control(Vec<u8>),
    /// A history-namespace publish for the backend to sequence: the frame is
    /// `prefix` + `"<offset>:<epoch>"` + `suffix` once it has its offset.
    History {
        topic: Arc<str>,
        prefix: String,
        suffix: String,
        size: usize,
        /// How long the topic's history lives in the backend once idle.
        ttl: Duration,
        exclude: Option<SessionId>,
        /// Told the assigned offset (the HTTP API's answer).
        ack: Option<HistoryAck>,
    },
}

/// The channel (Redis) / subject (NATS) every node listens on for presence
/// replication and heartbeats; never a topic channel (those carry a prefix).
pub const CONTROL: &str = "myriad-control";

/// Heartbeat and dead-node timing.
#[derive(Debug, Clone, Copy)]
pub struct ClusterTiming {
    pub heartbeat: Duration,
    pub node_timeout: Duration,
}

/// Shared between the broker (sessions' side) and its backend link task.
pub struct Link {
    pub hub: Hub,
    pub metrics: Arc<Metrics>,
    pub presence: Arc<Presence>,
    pub history: Arc<History>,
    pub router: ChannelRouter,
    /// The backend sequences history publishes (Redis); NATS does not.
    pub sequences_history: bool,
    pub timing: ClusterTiming,
    /// Random per process: tags this node's publishes.
    pub node: String,
    connected: AtomicBool,
    /// Other nodes by id, when each was last heard from.
    peers: Mutex<HashMap<String, Instant>>,
    /// Topics whose local membership changed since the link task last looked:
    /// a set, so a topic joined and left a thousand times is one entry and
    /// churn cannot queue work faster than the link subscribes.
    changed: Mutex<HashSet<Arc<str>>>,
}

impl Link {
    /// Topics to (un)subscribe as their local membership now says.
    pub fn take_changed(&self) -> Vec<Arc<str>> {
        self.changed.lock().drain().collect()
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn set_connected(&self, up: bool) {
        let was = self.connected.swap(up, Ordering::Relaxed);
        self.metrics
            .broker_connected
            .set(if up { 1.0 } else { 0.0 });
        if was != up {
            if up {
                tracing::info!("broker connected");
            } else {
                tracing::warn!(
                    "broker connection lost; serving local sessions only until it returns"
                );
            }
        }
    }

    /// The wire form: `<node>\n<frame>`.
    pub fn encode(&self, frame: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.node.len() + 1 + frame.len());
        out.extend_from_slice(self.node.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(frame.as_bytes());
        out
    }

    /// A control message from this node.
    fn control(
        &self,
        kind: &str,
        extra: impl FnOnce(&mut serde_json::Map<String, Value>),
    ) -> Vec<u8> {
        let mut m = serde_json::Map::new();
        m.insert("n".into(), Value::String(self.node.clone()));
        m.insert("k".into(), Value::String(kind.into()));
        extra(&mut m);
        Value::Object(m).to_string().into_bytes()
    }

    /// "I am alive".
    pub fn heartbeat(&self) -> Vec<u8> {
        self.control("hb", |_| {})
    }

    /// "Everyone, send me your members" (after connecting, or on meeting a
    /// node this one had not heard from).
    pub fn sync_request(&self) -> Vec<u8> {
        self.control("sync", |_| {})
    }

    fn state_message(&self) -> Vec<u8> {
        let members: Vec<Value> = self
            .presence
            .local_members()
            .into_iter()
            .map(|m| Value::Array(vec![Value::String(m.topic), Value::String(m.key), m.meta]))
            .collect();
        self.control("state", |m| {
            m.insert("e".into(), Value::Array(members));
        })
    }

    /// Handle a control message; returns replies to publish.
    pub fn on_control(&self, payload: &[u8]) -> Vec<Vec<u8>> {
        let Ok(msg) = serde_json::from_slice::<Value>(payload) else {
            self.metrics.broker_errors.increment(1);
            return Vec::new();
        };
        let (Some(node), Some(kind)) = (msg["n"].as_str(), msg["k"].as_str()) else {
            self.metrics.broker_errors.increment(1);
            return Vec::new();
        };
        if node == self.node {
            return Vec::new();
        }
        let mut replies = Vec::new();
        let known = self
            .peers
            .lock()
            .insert(node.to_owned(), Instant::now())
            .is_some();
        if !known {
            tracing::info!(peer = node, "cluster node joined");
            replies.push(self.sync_request());
        }
        match kind {
            "sync" => replies.push(self.state_message()),
            "state" => {
                let members = msg["e"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| {
                        Some(RemoteMember {
                            topic: e.get(0)?.as_str()?.to_owned(),
                            key: e.get(1)?.as_str()?.to_owned(),
                            meta: e.get(2)?.clone(),
                        })
                    })
                    .collect();
                for (topic, diff) in self.presence.replace_remote(node, members) {
                    self.deliver_presence_diff(&topic, &diff);
                }
            }
            "diff" => {
                if let Some(topic) = msg["t"].as_str() {
                    self.presence.apply_remote_diff(node, topic, &msg["d"]);
                }
            }
            _ => {}
        }
        replies
    }

    /// Drop nodes silent for longer than the node timeout; their members
    /// leave on this node.
    pub fn sweep_peers(&self) {
        let now = Instant::now();
        let dead: Vec<String> = {
            let mut peers = self.peers.lock();
            let dead: Vec<String> = peers
                .iter()
                .filter(|(_, seen)| now.duration_since(**seen) > self.timing.node_timeout)
                .map(|(n, _)| n.clone())
                .collect();
            for n in &dead {
                peers.remove(n);
            }
            dead
        };
        for node in dead {
            tracing::warn!(peer = %node, "cluster node silent past cluster_node_timeout; its presence entries leave");
            self.metrics.broker_peers_lost.increment(1);
            for (topic, diff) in self.presence.drop_node(&node) {
                self.deliver_presence_diff(&topic, &diff);
            }
        }
        self.metrics
            .broker_peers
            .set(self.peers.lock().len() as f64);
    }

    fn deliver_presence_diff(&self, topic: &str, diff: &str) {
        let frame = Outbound::Text(encode::broadcast(topic, "presence_diff", diff));
        self.hub.fan_out(topic, &frame, None);
    }

    /// The history header: `<node>\n<excluded session or ->\n`.
    pub fn history_header(&self, exclude: Option<SessionId>) -> String {
        match exclude {
            Some(id) => format!("{}\n{id}\n", self.node),
            None => format!("{}\n-\n", self.node),
        }
    }

    /// A frame read back from the backend's history store (warm-up after
    /// connecting): stored if newer than what the ring holds, and delivered to
    /// local members then (they missed it while this node was cut off).
    pub fn warm_history(&self, topic: &str, frame: &str) {
        if !self.append_history(topic, frame, None) {
            self.metrics.broker_errors.increment(1);
        }
    }

    /// A sequenced history frame from the backend (every node receives every
    /// one, so each ring stays complete): store it, deliver it locally.
    pub fn deliver_history(&self, topic: &str, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else {
            self.metrics.broker_errors.increment(1);
            return;
        };
        let mut parts = text.splitn(3, '\n');
        let (Some(node), Some(excl), Some(frame)) = (parts.next(), parts.next(), parts.next())
        else {
            self.metrics.broker_errors.increment(1);
            return;
        };
        // The origin's own publish comes back too: that is when it delivers,
        // minus the sender under broadcast_from.
        let exclude = (node == self.node)
            .then(|| excl.parse::<SessionId>().ok())
            .flatten();
        if node != self.node {
            self.metrics.broker_received.increment(1);
        }
        if !self.append_history(topic, frame, exclude) {
            self.metrics.broker_errors.increment(1);
        }
    }

    /// Store a cluster-sequenced frame in its ring and deliver it to local
    /// members if it is new; false when the frame has no offset ref slot.
    fn append_history(&self, topic: &str, frame: &str, exclude: Option<SessionId>) -> bool {
        let Some((offset, epoch)) = crate::history::parse_ref_slot(frame) else {
            return false;
        };
        // Topics no namespace routes (config differs between nodes) are not ours.
        let Some(route) = self.router.route(topic) else {
            return true;
        };
        let ns = &route.namespace;
        let frame = Utf8Bytes::from(frame.to_owned());
        self.history.append_sequenced(
            topic,
            offset,
            epoch,
            frame,
            ns.history_size,
            ns.history_ttl,
            |f| {
                let started = std::time::Instant::now();
                let out = self.hub.fan_out(topic, &Outbound::Text(f), exclude);
                self.metrics.fanout_done(&out, started.elapsed());
            },
        );
        true
    }

    /// Deliver a frame that arrived from the backend to local subscribers,
    /// unless this node sent it.
    pub fn deliver_remote(&self, topic: &str, payload: &[u8]) {
        let Some(split) = payload.iter().position(|b| *b == b'\n') else {
            self.metrics.broker_errors.increment(1);
            return;
        };
        if &payload[..split] == self.node.as_bytes() {
            return;
        }
        let Ok(text) = std::str::from_utf8(&payload[split + 1..]) else {
            self.metrics.broker_errors.increment(1);
            return;
        };
        self.metrics.broker_received.increment(1);
        let started = std::time::Instant::now();
        let out = self.hub.fan_out(
            topic,
            &Outbound::Text(Utf8Bytes::from(text.to_string())),
            None,
        );
        self.metrics.fanout_done(&out, started.elapsed());
    }
}

/// The sessions' side of a cross-node broker.
pub struct ClusterBroker {
    link: Arc<Link>,
    out: mpsc::Sender<Envelope>,
    /// "Some topic's local membership changed" (capacity 1: a signal, the
    /// topics themselves are in `Link::changed`).
    changes: mpsc::Sender<()>,
}

/// What a backend link task is handed.
pub struct LinkParts {
    pub link: Arc<Link>,
    pub out: mpsc::Receiver<Envelope>,
    /// Wakes the link task to look at `Link::take_changed`.
    pub changes: mpsc::Receiver<()>,
}

impl ClusterBroker {
    pub fn new(
        metrics: Arc<Metrics>,
        presence: Arc<Presence>,
        history: Arc<History>,
        router: ChannelRouter,
        sequences_history: bool,
        timing: ClusterTiming,
        queue: usize,
    ) -> (ClusterBroker, LinkParts) {
        let link = Arc::new(Link {
            hub: Hub::new(),
            metrics,
            presence,
            history,
            router,
            sequences_history,
            timing,
            node: node_id(),
            connected: AtomicBool::new(false),
            peers: Mutex::new(HashMap::new()),
            changed: Mutex::new(HashSet::new()),
        });
        link.metrics.broker_connected.set(0.0);
        let (out_tx, out_rx) = mpsc::channel(queue.max(1));
        let (ch_tx, ch_rx) = mpsc::channel(1);
        (
            ClusterBroker {
                link: Arc::clone(&link),
                out: out_tx,
                changes: ch_tx,
            },
            LinkParts {
                link,
                out: out_rx,
                changes: ch_rx,
            },
        )
    }

    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }
}

impl ClusterBroker {
    /// Tell the link task `topic` may need (un)subscribing.
    fn membership_changed(&self, topic: &str) {
        if self.link.changed.lock().insert(Arc::from(topic)) {
            // Full: a wake-up is already pending, and it will see this topic.
            let _ = self.changes.try_send(());
        }
    }

    /// Queue for the link task; false (counted) when the queue is full.
    fn enqueue(&self, env: Envelope) -> bool {
        let m = &self.link.metrics;
        match self.out.try_send(env) {
            Ok(()) => {
                m.broker_queue_depth.increment(1.0);
                true
            }
            Err(_) => {
                m.broker_dropped_queue_full.increment(1);
                false
            }
        }
    }
}

impl Broker for ClusterBroker {
    fn subscribe(&self, topic: &str, session: SessionId, mailbox: Arc<Mailbox>) {
        let first = self.link.hub.subscriber_count(topic) == 0;
        self.link.hub.subscribe(topic, session, mailbox);
        if first {
            self.membership_changed(topic);
        }
    }

    fn unsubscribe(&self, topic: &str, session: SessionId) {
        self.link.hub.unsubscribe(topic, session);
        if self.link.hub.subscriber_count(topic) == 0 {
            self.membership_changed(topic);
        }
    }

    fn publish(&self, topic: &str, frame: Outbound, exclude: Option<SessionId>) -> FanOut {
        let m = &self.link.metrics;
        let started = std::time::Instant::now();
        let out = self.link.hub.fan_out(topic, &frame, exclude);
        m.broadcasts.increment(1);
        m.fanout_done(&out, started.elapsed());
        if let Outbound::Text(text) = frame {
            // A full queue drops only the remote copy (counted).
            let _ = self.enqueue(Envelope::Frame {
                topic: Arc::from(topic),
                frame: text,
            });
        }
        out
    }

    fn sequence_history(
        &self,
        topic: &str,
        event: &str,
        payload: &str,
        namespace: &NamespaceConfig,
        exclude: Option<SessionId>,
        ack: Option<HistoryAck>,
    ) -> bool {
        if !self.link.sequences_history || !self.link.is_connected() {
            return false;
        }
        // Split an encoded frame around its ref slot: the backend fills in
        // "<offset>:<epoch>" atomically with assigning the offset. The marker
        // is plain ASCII (the encoder leaves it as is) and the ref slot comes
        // before topic, event and payload, so the first match is the slot.
        let marker = "@@myriad-ref@@";
        let frame = encode::frame_with_ref(marker, topic, event, payload);
        let Some((prefix, suffix)) = frame.split_once(marker) else {
            return false;
        };
        let env = Envelope::History {
            topic: Arc::from(topic),
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
            size: namespace.history_size,
            ttl: namespace.history_ttl,
            exclude,
            ack,
        };
        // Full queue: the caller sequences locally (the ring forks its epoch).
        self.enqueue(env)
    }

    fn presence_changed(&self, topic: &str, diff: &str) {
        /// The "diff" control message, with the diff embedded as it is (no
        /// parse into a tree and back).
        #[derive(serde::Serialize)]
        struct DiffMessage<'a> {
            n: &'a str,
            k: &'static str,
            t: &'a str,
            d: &'a RawValue,
        }
        let Ok(d) = serde_json::from_str::<&RawValue>(diff) else {
            return;
        };
        let msg = DiffMessage {
            n: &self.link.node,
            k: "diff",
            t: topic,
            d,
        };
        let Ok(msg) = serde_json::to_vec(&msg) else {
            return;
        };
        let _ = self.enqueue(Envelope::Control(msg));
    }

    fn topic_count(&self) -> usize {
        self.link.hub.topic_count()
    }

    fn node(&self) -> Option<&str> {
        Some(&self.link.node)
    }

    fn is_ready(&self) -> bool {
        self.link.is_connected()
    }
}

fn node_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}-{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

/// Exponential back-off with jitter between reconnect attempts: 100 ms doubling
/// to 5 s, each wait drawn from [50 %, 100 %] of the step so a fleet of nodes
/// does not reconnect in lockstep after the broker returns.
pub struct Backoff {
    attempt: u32,
    seed: u64,
}

pub const BACKOFF_START: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Default for Backoff {
    fn default() -> Backoff {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            | 1;
        Backoff { attempt: 0, seed }
    }
}

impl Backoff {
    /// The wait after a link failed: a link that had come up starts over from
    /// the shortest step, one that never came up keeps growing it.
    pub fn after_failure(&mut self, was_connected: bool) -> Duration {
        if was_connected {
            self.attempt = 0;
        }
        self.next_wait()
    }

    /// The next wait.
    pub fn next_wait(&mut self) -> Duration {
        let step = BACKOFF_START
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64: jitter only, no need for a CSPRNG.
        let mut x = self.seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed = x;
        let frac = 0.5 + (x % 1000) as f64 / 2000.0;
        step.mul_f64(frac)
    }
}

/// While the backend is down, publishes for other nodes cannot go anywhere:
/// drop what is queued (counted) so the queue holds fresh traffic when the
/// link returns. Membership changes are dropped too: the reconnect
/// resubscribes from the hub's topics.
pub fn drop_queued(parts: &mut LinkParts) {
    parts.link.changed.lock().clear();
    while parts.changes.try_recv().is_ok() {}
    let mut n = 0u64;
    while parts.out.try_recv().is_ok() {
        n += 1;
    }
    if n > 0 {
        parts.link.metrics.broker_queue_depth.decrement(n as f64);
        parts.link.metrics.broker_dropped_disconnected.increment(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: ClusterTiming = ClusterTiming {
        heartbeat: Duration::from_secs(1),
        node_timeout: Duration::from_secs(5),
    };

    fn test_broker(queue: usize) -> (ClusterBroker, LinkParts) {
        let config = crate::config::Config::default();
        ClusterBroker::new(
            Metrics::new(),
            Arc::new(Presence::new()),
            Arc::new(History::new(1 << 20)),
            ChannelRouter::new(&config),
            true,
            TIMING,
            queue,
        )
    }

    #[test]
    fn membership_churn_coalesces_per_topic() {
        let (broker, mut parts) = test_broker(8);
        let m = Arc::new(Mailbox::new(crate::session::mailbox::MailboxLimits {
            capacity: 8,
            max_bytes: 1 << 20,
            policy: crate::config::SlowConsumerPolicy::Disconnect,
        }));
        for _ in 0..1000 {
            broker.subscribe("room:a", 1, Arc::clone(&m));
            broker.unsubscribe("room:a", 1);
        }
        broker.subscribe("room:b", 2, Arc::clone(&m));
        assert!(parts.changes.try_recv().is_ok(), "one wake-up");
        assert!(parts.changes.try_recv().is_err(), "and only one");
        let mut topics: Vec<_> = parts
            .link
            .take_changed()
            .iter()
            .map(|t| t.to_string())
            .collect();
        topics.sort();
        assert_eq!(topics, ["room:a", "room:b"]);
    }

    #[test]
    fn an_outage_drops_queued_publishes_and_membership_changes() {
        let (broker, mut parts) = test_broker(8);
        let m = Arc::new(Mailbox::new(crate::session::mailbox::MailboxLimits {
            capacity: 8,
            max_bytes: 1 << 20,
            policy: crate::config::SlowConsumerPolicy::Disconnect,
        }));
        for t in ["room:a", "room:b", "room:c"] {
            broker.subscribe(t, 1, Arc::clone(&m));
            broker.unsubscribe(t, 1);
        }
        broker.publish("room:a", Outbound::Text(Utf8Bytes::from("x")), None);
        drop_queued(&mut parts);
        assert!(parts.changes.try_recv().is_err(), "changes drained");
        assert!(
            parts.link.take_changed().is_empty(),
            "changed topics dropped"
        );
        assert!(parts.out.try_recv().is_err(), "publishes drained");
        let text = parts.link.metrics.render();
        assert!(
            text.contains("myriad_broker_dropped_total{reason=\"disconnected\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let mut b = Backoff::default();
        let waits: Vec<Duration> = (0..10).map(|_| b.next_wait()).collect();
        assert!(waits[0] >= BACKOFF_START / 2 && waits[0] <= BACKOFF_START);
        assert!(waits[9] >= BACKOFF_MAX / 2 && waits[9] <= BACKOFF_MAX);
        assert!(
            b.after_failure(false) >= BACKOFF_MAX / 2,
            "a link that never came up"
        );
        assert!(
            b.after_failure(true) <= BACKOFF_START,
            "a link that was up starts over"
        );
    }

    #[test]
    fn own_publishes_are_not_delivered_twice() {
        let (broker, _parts) = test_broker(8);
        let link = broker.link();
        let m = Arc::new(Mailbox::new(crate::session::mailbox::MailboxLimits {
            capacity: 8,
            max_bytes: 1 << 20,
            policy: crate::config::SlowConsumerPolicy::Disconnect,
        }));
        broker.subscribe("room:a", 1, Arc::clone(&m));
        link.deliver_remote("room:a", &link.encode("[null,null,\"room:a\",\"e\",{}]"));
        assert_eq!(m.depth(), 0, "own node's echo is ignored");
        link.deliver_remote("room:a", b"other-node\n[null,null,\"room:a\",\"e\",{}]");
        assert_eq!(m.depth(), 1, "another node's publish is delivered");
        link.deliver_remote("room:a", b"garbage-without-separator");
        assert_eq!(m.depth(), 1);
    }

    #[test]
    fn a_full_queue_drops_the_remote_copy_not_the_local_delivery() {
        let (broker, _parts) = test_broker(1);
        let m = Arc::new(Mailbox::new(crate::session::mailbox::MailboxLimits {
            capacity: 8,
            max_bytes: 1 << 20,
            policy: crate::config::SlowConsumerPolicy::Disconnect,
        }));
        broker.subscribe("room:a", 1, Arc::clone(&m));
        for _ in 0..3 {
            let out = broker.publish("room:a", Outbound::Text(Utf8Bytes::from("x")), None);
            assert_eq!(out.delivered, 1);
        }
        assert_eq!(m.depth(), 3);
        let text = broker.link().metrics.render();
        assert!(
            text.contains("myriad_broker_dropped_total{reason=\"queue_full\"} 2"),
            "{text}"
        );
    }
}
