//! What every cross-node broker shares: local delivery through this node's hub
//! first, then a bounded queue towards the backend (a full queue drops the
//! remote copy and counts it; the publisher never waits), the envelope that
//! tags each frame with its origin node (so a node ignores its own publishes
//! echoed back), the set of topics with local members that the backend link
//! must stay subscribed to, reconnect back-off, and health for `/readyz`.
//!
//! The backend links (`redis`, `nats`) own their connections and run as tasks;
//! nothing here does I/O.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::Broker;
use crate::metrics::Metrics;
use crate::pubsub::{FanOut, Hub, SessionId};
use crate::session::mailbox::{Mailbox, Outbound};

/// One publish on its way to other nodes.
#[derive(Debug)]
pub struct Envelope {
    pub topic: Arc<str>,
    pub frame: Utf8Bytes,
}

/// Shared between the broker (sessions' side) and its backend link task.
pub struct Link {
    pub hub: Hub,
    pub metrics: Arc<Metrics>,
    /// Random per process: tags this node's publishes.
    pub node: String,
    connected: AtomicBool,
}

impl Link {
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
        let out = self.hub.fan_out(
            topic,
            &Outbound::Text(Utf8Bytes::from(text.to_string())),
            None,
        );
        self.metrics.fanout_size.record(out.delivered as f64);
        if out.dropped > 0 {
            self.metrics.mailbox_dropped.increment(out.dropped as u64);
        }
    }
}

/// Messages the link task receives besides publishes.
#[derive(Debug)]
pub enum TopicChange {
    /// Local membership of this topic changed: (un)subscribe as needed.
    Recheck(Arc<str>),
}

/// The sessions' side of a cross-node broker.
pub struct ClusterBroker {
    link: Arc<Link>,
    out: mpsc::Sender<Envelope>,
    changes: mpsc::UnboundedSender<TopicChange>,
}

/// What a backend link task is handed.
pub struct LinkParts {
    pub link: Arc<Link>,
    pub out: mpsc::Receiver<Envelope>,
    pub changes: mpsc::UnboundedReceiver<TopicChange>,
}

impl ClusterBroker {
    pub fn new(metrics: Arc<Metrics>, queue: usize) -> (ClusterBroker, LinkParts) {
        let link = Arc::new(Link {
            hub: Hub::new(),
            metrics,
            node: node_id(),
            connected: AtomicBool::new(false),
        });
        link.metrics.broker_connected.set(0.0);
        let (out_tx, out_rx) = mpsc::channel(queue.max(1));
        let (ch_tx, ch_rx) = mpsc::unbounded_channel();
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

impl Broker for ClusterBroker {
    fn subscribe(&self, topic: &str, session: SessionId, mailbox: Arc<Mailbox>) {
        let first = self.link.hub.subscriber_count(topic) == 0;
        self.link.hub.subscribe(topic, session, mailbox);
        if first {
            let _ = self.changes.send(TopicChange::Recheck(Arc::from(topic)));
        }
    }

    fn unsubscribe(&self, topic: &str, session: SessionId) {
        self.link.hub.unsubscribe(topic, session);
        if self.link.hub.subscriber_count(topic) == 0 {
            let _ = self.changes.send(TopicChange::Recheck(Arc::from(topic)));
        }
    }

    fn publish(&self, topic: &str, frame: Outbound, exclude: Option<SessionId>) -> FanOut {
        let m = &self.link.metrics;
        let out = self.link.hub.fan_out(topic, &frame, exclude);
        m.broadcasts.increment(1);
        m.fanout_size.record(out.delivered as f64);
        if out.dropped > 0 {
            m.mailbox_dropped.increment(out.dropped as u64);
        }
        if let Outbound::Text(text) = frame {
            let env = Envelope {
                topic: Arc::from(topic),
                frame: text,
            };
            match self.out.try_send(env) {
                Ok(()) => m.broker_queue_depth.increment(1.0),
                Err(_) => m.broker_dropped_queue_full.increment(1),
            }
        }
        out
    }

    fn topic_count(&self) -> usize {
        self.link.hub.topic_count()
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
    seed: AtomicU64,
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
        Backoff {
            attempt: 0,
            seed: AtomicU64::new(seed),
        }
    }
}

impl Backoff {
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next wait.
    pub fn next_wait(&mut self) -> Duration {
        let step = BACKOFF_START
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64: jitter only, no need for a CSPRNG.
        let mut x = self.seed.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::Relaxed);
        let frac = 0.5 + (x % 1000) as f64 / 2000.0;
        step.mul_f64(frac)
    }
}

/// While the backend is down, publishes for other nodes cannot go anywhere:
/// drop what is queued (counted) so the queue holds fresh traffic when the
/// link returns.
pub fn drop_queued(parts: &mut LinkParts) {
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

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let mut b = Backoff::default();
        let waits: Vec<Duration> = (0..10).map(|_| b.next_wait()).collect();
        assert!(waits[0] >= BACKOFF_START / 2 && waits[0] <= BACKOFF_START);
        assert!(waits[9] >= BACKOFF_MAX / 2 && waits[9] <= BACKOFF_MAX);
        b.reset();
        assert!(b.next_wait() <= BACKOFF_START);
    }

    #[test]
    fn own_publishes_are_not_delivered_twice() {
        let (broker, _parts) = ClusterBroker::new(Metrics::new(), 8);
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
        let (broker, _parts) = ClusterBroker::new(Metrics::new(), 1);
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
