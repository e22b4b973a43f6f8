//! What every cross-node broker shares: the bounded queue from the node to the
//! link task (a full queue refuses the envelope and counts it; the publisher
//! never waits), the link's health for `/readyz`, the set of topics whose
//! subscription the link must update (coalesced: a topic joined and left a
//! thousand times is one entry and one wake-up), and the dispatch of inbound
//! messages to the node's handler after checking them against the wire format.
//!
//! The link tasks (`redis`, `nats`) own their connections; nothing here does
//! I/O. A link task stops when its stop token is cancelled (the server's task
//! tracker waits for it on shutdown).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use super::replay::{ReplayGuard, Stamp};
use super::sign::Signer;
use super::{wire, Broker, BrokerHandler, Envelope, SendError};
use crate::metrics::Metrics;
use crate::protocol::RefSlotFrame;
use crate::pubsub::mailbox::SessionId;

/// State shared by the node's side (`ClusterBroker`) and the link task.
pub struct LinkState {
    /// Random per process: tags this node's messages.
    pub node: Arc<str>,
    pub metrics: Arc<Metrics>,
    /// Signs what this node sends and checks what others send (`cluster_secret`).
    pub signer: Signer,
    /// This node's message counter (stamps, with `cluster_secret`).
    seq: AtomicU64,
    /// Stamps seen from other nodes (with `cluster_secret`).
    replay: Mutex<ReplayGuard>,
    connected: AtomicBool,
    /// Cluster-wide occupancy (Redis, with channel webhooks on).
    pub occupancy: Option<super::occupancy::Occupancy>,
    /// How long the backend may take to accept a connection or answer a
    /// command before the link is declared down (`broker_timeout`).
    pub timeout: Duration,
    /// Envelopes that may wait for the link (`broker_queue`); the Redis link
    /// keeps at most as many unanswered history publishes for a retry.
    pub queue: usize,
    /// Topics whose local membership changed since the link task last looked.
    changed: Mutex<HashSet<Arc<str>>>,
}

impl LinkState {
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

    /// The next stamp for a message this node sends; none without a secret
    /// (unsigned stamps would prove nothing).
    fn stamp(&self) -> Option<Stamp> {
        self.signer.is_enabled().then(|| Stamp {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            ts: unix_ms(),
        })
    }

    /// Accept a verified message's stamp once (always, without a secret).
    fn fresh(&self, origin: &str, stamp: Option<Stamp>) -> Result<(), wire::WireError> {
        if !self.signer.is_enabled() {
            return Ok(());
        }
        self.replay.lock().check(origin, stamp, unix_ms())?;
        Ok(())
    }

    /// The wire form of an outgoing publication on `topic`.
    pub fn publication(&self, topic: &str, frame: &str) -> Vec<u8> {
        wire::encode_publication(&self.signer, &self.node, self.stamp(), topic, frame)
    }

    /// The wire form of an outgoing binary publication on `topic`.
    pub fn binary_publication(&self, topic: &str, frame: &[u8]) -> Vec<u8> {
        wire::encode_binary_publication(&self.signer, &self.node, self.stamp(), topic, frame)
    }

    /// The wire form of an outgoing control message.
    pub fn control(&self, control: &wire::Control) -> Vec<u8> {
        wire::encode_control(&self.signer, &self.node, self.stamp(), control)
    }

    /// The header a history publish travels under through the backend's
    /// sequencing (signed around the frame's ref slot).
    pub fn history_header(
        &self,
        topic: &str,
        exclude: Option<SessionId>,
        frame: &RefSlotFrame,
        binary: bool,
    ) -> HistoryHeader {
        let meta = wire::HistoryMeta {
            exclude,
            stamp: self.stamp(),
            binary,
        };
        let stamp = meta.stamp;
        let sig = wire::sign_history(&self.signer, &self.node, topic, meta, frame);
        HistoryHeader {
            header: wire::frame_header(&self.node, exclude, stamp, sig.as_deref(), binary),
            stamp: wire::stamp_text(stamp),
            sig: sig.unwrap_or_default(),
        }
    }

    fn refused(&self, what: &str, err: &wire::WireError) {
        self.metrics.broker_refused.increment(err.refusal());
        tracing::debug!(error = %err, what, "broker message refused");
    }

    /// A message from a topic's channel: another node's broadcast.
    pub fn receive_publication(&self, handler: &dyn BrokerHandler, topic: &str, bytes: &[u8]) {
        if wire::is_binary_publication(bytes) {
            let msg = wire::decode_binary_publication(&self.signer, topic, bytes)
                .and_then(|msg| self.fresh(&msg.origin, msg.stamp).map(|()| msg));
            match msg {
                Ok(msg) if *msg.origin == *self.node => {}
                Ok(msg) => {
                    self.metrics.broker_received.increment(1);
                    handler.on_binary_publication(topic, msg.frame);
                }
                Err(err) => self.refused("binary publication", &err),
            }
            return;
        }
        let msg = wire::decode_frame(bytes)
            .and_then(|msg| wire::verify_publication(&self.signer, topic, &msg).map(|()| msg))
            .and_then(|msg| self.fresh(&msg.origin, msg.stamp).map(|()| msg));
        match msg {
            Ok(msg) if *msg.origin == *self.node => {}
            Ok(msg) => {
                self.metrics.broker_received.increment(1);
                handler.on_publication(topic, Utf8Bytes::from(msg.frame.to_owned()));
            }
            Err(err) => self.refused("publication", &err),
        }
    }

    /// A sequenced history frame (every node's, this one's included: that is
    /// when the origin delivers, minus the excluded sender).
    pub fn receive_sequenced(&self, handler: &dyn BrokerHandler, topic: &str, bytes: &[u8]) {
        let msg = wire::decode_frame(bytes).and_then(|msg| {
            wire::verify_history(
                &self.signer,
                &msg.origin,
                topic,
                msg.history_meta(),
                msg.frame,
                msg.sig,
            )
            .and_then(|()| self.fresh(&msg.origin, msg.stamp))
            .map(|()| msg)
        });
        match msg {
            Ok(msg) => {
                let own = *msg.origin == *self.node;
                if !own {
                    self.metrics.broker_received.increment(1);
                }
                let exclude = if own { msg.exclude } else { None };
                handler.on_sequenced(topic, msg.frame, exclude, msg.binary);
            }
            Err(err) => self.refused("history", &err),
        }
    }

    /// A history frame read back from the backend's store, with what was
    /// stored beside it (origin, excluded session, signature).
    pub fn receive_stored(
        &self,
        handler: &dyn BrokerHandler,
        topic: &str,
        stored: &StoredFrame<'_>,
    ) {
        let meta = wire::HistoryMeta {
            exclude: stored.exclude,
            stamp: stored.stamp,
            binary: stored.binary,
        };
        let checked = wire::verify_history(
            &self.signer,
            stored.origin,
            topic,
            meta,
            stored.frame,
            stored.sig,
        );
        match checked {
            Ok(()) => handler.on_stored_history(topic, stored.frame, stored.binary),
            Err(err) => self.refused("stored history", &err),
        }
    }

    /// A control message; this node's own are ignored.
    pub fn receive_control(&self, handler: &dyn BrokerHandler, bytes: &[u8]) {
        let msg = wire::decode_control(&self.signer, bytes);
        match msg {
            Ok(msg) if *msg.origin == *self.node => {}
            Ok(msg) => match self.fresh(&msg.origin, msg.stamp) {
                Ok(()) => handler.on_control(&msg.origin, msg.control),
                Err(err) => self.refused("control", &err),
            },
            Err(err) => self.refused("control", &err),
        }
    }
}

/// One entry of a history topic's stream in the backend.
#[derive(Debug, Clone, Copy)]
pub struct StoredFrame<'a> {
    pub frame: &'a str,
    pub origin: &'a str,
    pub exclude: Option<SessionId>,
    pub stamp: Option<Stamp>,
    pub sig: Option<&'a str>,
    /// The frame is the JSON form of a V2 binary broadcast.
    pub binary: bool,
}

/// What a history publish carries through the backend's script: the header
/// the live message starts with, and the stamp and signature stored beside
/// the frame (empty without `cluster_secret`).
#[derive(Debug)]
pub struct HistoryHeader {
    pub header: String,
    pub stamp: String,
    pub sig: String,
}

/// How a cross-node broker is set up.
#[derive(Debug, Clone, Copy)]
pub struct LinkOptions<'a> {
    /// The backend assigns history offsets and can run scripts (Redis).
    pub sequences_history: bool,
    /// Envelopes that may wait for the link task (`broker_queue`).
    pub queue: usize,
    /// `cluster_secret`: every message is signed when set.
    pub secret: Option<&'a str>,
    /// How old a signed message may be (`cluster_replay_window`).
    pub replay_window: Duration,
    /// Track channel occupancy cluster-wide (Redis only), a node counting as
    /// alive this long after its last heartbeat; None: off.
    pub occupancy: Option<Duration>,
    /// `broker_timeout`.
    pub timeout: Duration,
}

/// The node's side of a cross-node broker.
pub struct ClusterBroker {
    state: Arc<LinkState>,
    out: mpsc::Sender<Envelope>,
    /// "Some topic's local membership changed" (capacity 1: a signal, the
    /// topics themselves are in `LinkState::changed`).
    changes: mpsc::Sender<()>,
    sequences_history: bool,
}

/// What a link task is handed.
pub struct LinkParts {
    pub state: Arc<LinkState>,
    /// Envelopes from the node (the other end: `ClusterBroker::send`).
    pub out: mpsc::Receiver<Envelope>,
    /// Wakes the link task to look at `LinkState::take_changed`.
    pub changes: mpsc::Receiver<()>,
    /// Where inbound traffic goes: the node.
    pub handler: Arc<dyn BrokerHandler>,
    /// Cancelled on shutdown; the task returns.
    pub stop: CancellationToken,
}

/// The link's half before the node exists (the node is the handler).
pub struct LinkHalf {
    state: Arc<LinkState>,
    out: mpsc::Receiver<Envelope>,
    changes: mpsc::Receiver<()>,
}

impl LinkHalf {
    pub fn into_parts(self, handler: Arc<dyn BrokerHandler>, stop: CancellationToken) -> LinkParts {
        LinkParts {
            state: self.state,
            out: self.out,
            changes: self.changes,
            handler,
            stop,
        }
    }
}

impl ClusterBroker {
    /// `queue`: envelopes that may wait for the link task (`broker_queue`);
    pub fn new(metrics: Arc<Metrics>, options: LinkOptions<'_>) -> (ClusterBroker, LinkHalf) {
        let LinkOptions {
            sequences_history,
            queue,
            secret,
            replay_window,
            occupancy,
            timeout,
        } = options;
        let state = Arc::new(LinkState {
            node: Arc::from(node_id()),
            metrics,
            signer: Signer::new(secret),
            seq: AtomicU64::new(0),
            replay: Mutex::new(ReplayGuard::new(replay_window)),
            occupancy: occupancy
                .filter(|_| sequences_history)
                .map(super::occupancy::Occupancy::new),
            connected: AtomicBool::new(false),
            changed: Mutex::new(HashSet::new()),
            timeout,
            queue: queue.max(1),
        });
        state.metrics.broker_connected.set(0.0);
        let (out_tx, out_rx) = mpsc::channel(queue.max(1));
        let (ch_tx, ch_rx) = mpsc::channel(1);
        (
            ClusterBroker {
                state: Arc::clone(&state),
                out: out_tx,
                changes: ch_tx,
                sequences_history,
            },
            LinkHalf {
                state,
                out: out_rx,
                changes: ch_rx,
            },
        )
    }

    pub fn state(&self) -> &Arc<LinkState> {
        &self.state
    }

    /// Tell the link task `topic` may need (un)subscribing.
    fn membership_changed(&self, topic: &str) {
        if self.state.changed.lock().insert(Arc::from(topic)) {
            // Full: a wake-up is already pending, and it will see this topic.
            let _ = self.changes.try_send(());
        }
    }
}

impl Broker for ClusterBroker {
    fn send(&self, envelope: Envelope) -> Result<(), SendError> {
        let m = &self.state.metrics;
        match self.out.try_send(envelope) {
            Ok(()) => {
                m.broker_queue_depth.increment(1.0);
                Ok(())
            }
            Err(_) => {
                m.broker_dropped_queue_full.increment(1);
                Err(SendError::QueueFull)
            }
        }
    }

    fn subscribe_topic(&self, topic: &str) {
        self.membership_changed(topic);
    }

    fn unsubscribe_topic(&self, topic: &str) {
        self.membership_changed(topic);
    }

    fn is_ready(&self) -> bool {
        self.state.is_connected()
    }

    fn node_id(&self) -> Option<&str> {
        Some(&self.state.node)
    }

    fn sequences_history(&self) -> bool {
        self.sequences_history
    }

    fn tracks_occupancy(&self) -> bool {
        self.state.occupancy.is_some()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// This process's id among the nodes: 48 bits from the OS's random source
/// (PID and start time are the same for every container started together:
/// PID 1, one second), with the PID for the humans reading logs.
fn node_id() -> String {
    let random = getrandom::u64().unwrap_or_else(|_| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    format!(
        "{:x}-{:012x}",
        std::process::id(),
        random & 0xffff_ffff_ffff
    )
}

/// While the backend is down, envelopes for other nodes cannot go anywhere:
/// drop what is queued (counted) so the queue holds fresh traffic when the
/// link returns. Membership changes are dropped too: the reconnect
/// resubscribes from the node's topics.
pub fn drop_queued(parts: &mut LinkParts) {
    let metrics = Arc::clone(&parts.state.metrics);
    drain_queued(parts, |_| metrics.broker_dropped_disconnected.increment(1));
}

/// Empty the queue while the backend is down, handing each envelope to
/// `each` (which keeps or drops it, and counts what it drops); membership
/// changes are dropped, as in [`drop_queued`].
pub fn drain_queued(parts: &mut LinkParts, mut each: impl FnMut(Envelope)) {
    parts.state.changed.lock().clear();
    while parts.changes.try_recv().is_ok() {}
    while let Ok(env) = parts.out.try_recv() {
        parts.state.metrics.broker_queue_depth.decrement(1.0);
        each(env);
    }
}

#[cfg(test)]
pub(super) mod tests;
