//! Webhooks: myriad tells the application's backend what happened (sessions
//! opened and closed, channels occupied and vacated, members added and
//! removed, and broadcasts on chosen namespaces), asynchronously, at least
//! once.
//!
//! Emitting is a non-blocking send into a bounded queue (full: the event is
//! dropped and counted; a session or a publish never waits). One task moves
//! events into the spool (memory, or a file that outlives restarts), POSTs
//! them in signed batches, and removes them only when the receiver answers
//! 2xx; failures back off exponentially with jitter, up to `max_attempts`
//! per batch. On shutdown it keeps flushing for `drain_timeout`.
//!
//! Every event has a unique `id` the receiver deduplicates by (delivery is
//! at least once). Never blocks an emitter; never sends an event twice in
//! one batch.

pub mod schema;
pub mod signature;
pub mod spool;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::webhooks::{WebhookEvent, WebhooksConfig};
use crate::config::Pattern;
use crate::metrics::Metrics;
use crate::protocol::{WebhookOutcome, WebhookPost};
use spool::Spool;

/// The emitting side, shared by sessions and the node.
pub struct Webhooks {
    config: WebhooksConfig,
    broadcast_namespaces: Vec<Pattern>,
    node: Arc<str>,
    seq: AtomicU64,
    tx: mpsc::Sender<Vec<u8>>,
    metrics: Arc<Metrics>,
}

/// The sending side, run by the server (`run`).
pub struct Sender {
    config: WebhooksConfig,
    rx: mpsc::Receiver<Vec<u8>>,
    spool: Spool,
    metrics: Arc<Metrics>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Webhooks {
    /// Both halves, when `[webhooks] url` is set. Opens the spool file.
    pub fn new(
        config: &WebhooksConfig,
        node: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Option<(Arc<Webhooks>, Sender)>, spool::SpoolError> {
        if config.url.is_none() {
            return Ok(None);
        }
        let spool = match &config.spool_path {
            Some(path) => Spool::open(path, config.spool_max_bytes)?,
            None => Spool::memory(config.spool_max_bytes),
        };
        metrics.webhook_pending.set(spool.len() as f64);
        let (tx, rx) = mpsc::channel(config.queue);
        let hooks = Arc::new(Webhooks {
            config: config.clone(),
            broadcast_namespaces: config
                .broadcast_namespaces
                .iter()
                .map(|p| Pattern::parse(p))
                .collect(),
            node: Arc::from(node),
            seq: AtomicU64::new(0),
            tx,
            metrics: Arc::clone(&metrics),
        });
        Ok(Some((
            hooks,
            Sender {
                config: config.clone(),
                rx,
                spool,
                metrics,
            },
        )))
    }

    pub fn wants(&self, event: WebhookEvent) -> bool {
        self.config.wants(event)
    }

    /// Whether broadcasts on the namespace with `pattern` are sent.
    pub fn archives(&self, pattern: &str) -> bool {
        self.wants(WebhookEvent::Broadcast)
            && self.broadcast_namespaces.iter().any(|p| p.matches(pattern))
    }

    /// Queue one event (never waits); `data` is only built when the event
    /// is wanted.
    pub fn emit(&self, event: WebhookEvent, data: impl FnOnce() -> Value) {
        if !self.wants(event) {
            return;
        }
        let data = data();
        let id = format!(
            "{}-{}",
            self.node,
            self.seq.fetch_add(1, Ordering::Relaxed) + 1
        );
        let body = json!({
            "id": id,
            "type": event.name(),
            "at": unix_ms(),
            "node": &*self.node,
            "data": data,
        });
        let bytes = body.to_string().into_bytes();
        if self.tx.try_send(bytes).is_err() {
            self.metrics
                .webhook_events
                .increment(WebhookOutcome::QueueFull);
        }
    }
}

/// Exponential from 100 ms to `max`, with up to 50 % jitter.
fn backoff(attempt: u32, max: Duration) -> Duration {
    let base = Duration::from_millis(100u64 << attempt.min(16)).min(max);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    base + base.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

impl Sender {
    /// Deliver until `stop`, then flush for at most `drain`.
    pub async fn run(mut self, stop: CancellationToken, drain: Duration) {
        let client = match reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.config.timeout)
            .user_agent(concat!("myriad/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the webhook client; webhooks are off");
                return;
            }
        };
        let mut attempts = 0u32;
        let mut next_try = Instant::now();
        let mut first_waiting: Option<Instant> = None;
        let mut deadline: Option<Instant> = None;
        loop {
            self.take_queued();
            if self.spool.is_empty() {
                first_waiting = None;
                if deadline.is_some() {
                    return;
                }
            } else if first_waiting.is_none() {
                first_waiting = Some(Instant::now());
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                if !self.spool.is_empty() {
                    tracing::warn!(pending = self.spool.len(), "webhook events left undelivered at shutdown (kept in the spool file, if any)");
                }
                return;
            }
            // A batch goes when it is full, or its first event has waited
            // batch_interval (at once when draining), and not before the
            // back-off allows.
            let full = self.spool.len() >= self.config.batch_max;
            let ripe = first_waiting.is_some_and(|t| {
                full || deadline.is_some() || now >= t + self.config.batch_interval
            });
            if ripe && now >= next_try {
                if self.post_batch(&client).await {
                    attempts = 0;
                    next_try = Instant::now();
                    first_waiting = None;
                } else {
                    attempts += 1;
                    if attempts >= self.config.max_attempts {
                        self.drop_batch();
                        attempts = 0;
                    }
                    next_try = Instant::now() + backoff(attempts, self.config.max_backoff);
                }
                continue;
            }
            let wake = match first_waiting {
                Some(t) => (t + self.config.batch_interval).max(next_try),
                None => now + Duration::from_secs(3600),
            };
            let wake = deadline.map_or(wake, |d| wake.min(d));
            tokio::select! {
                _ = stop.cancelled(), if deadline.is_none() => {
                    deadline = Some(Instant::now() + drain);
                }
                got = self.rx.recv() => match got {
                    Some(event) => self.push(vec![event]),
                    None if deadline.is_none() => deadline = Some(Instant::now() + drain),
                    None => {}
                },
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Move what emitters queued into the spool, in one write.
    fn take_queued(&mut self) {
        let mut events = Vec::new();
        while let Ok(e) = self.rx.try_recv() {
            events.push(e);
            if events.len() >= 1024 {
                break;
            }
        }
        if !events.is_empty() {
            self.push(events);
        }
    }

    fn push(&mut self, events: Vec<Vec<u8>>) {
        let n = events.len() as u64;
        match self.spool.push(&events) {
            Ok(dropped) => {
                self.metrics.webhook_events.add(WebhookOutcome::Queued, n);
                if dropped > 0 {
                    self.metrics
                        .webhook_events
                        .add(WebhookOutcome::SpoolFull, dropped as u64);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "webhook spool write failed; events dropped");
                self.metrics
                    .webhook_events
                    .add(WebhookOutcome::SpoolFull, n);
            }
        }
        self.metrics.webhook_pending.set(self.spool.len() as f64);
    }

    /// POST the oldest batch; true when the receiver acknowledged it.
    async fn post_batch(&mut self, client: &reqwest::Client) -> bool {
        let batch = match self.spool.peek(self.config.batch_max) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "webhook spool read failed");
                return false;
            }
        };
        let Some(url) = &self.config.url else {
            return false;
        };
        // `{"events": [...]}`, the events as they were stored.
        let mut body =
            Vec::with_capacity(batch.iter().map(|(_, e)| e.len() + 1).sum::<usize>() + 12);
        body.extend_from_slice(b"{\"events\":[");
        for (i, (_, e)) in batch.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(e);
        }
        body.extend_from_slice(b"]}");
        let mut req = client
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(secret) = &self.config.secret {
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            req = req.header(
                signature::HEADER,
                signature::sign(secret.as_bytes(), t, &body),
            );
        }
        let ok = match req.body(body).send().await {
            Ok(resp) => resp.status().is_success(),
            Err(e) => {
                tracing::debug!(error = %e.without_url(), "webhook post failed");
                false
            }
        };
        if !ok {
            self.metrics.webhook_posts.increment(WebhookPost::Failed);
            return false;
        }
        self.metrics.webhook_posts.increment(WebhookPost::Ok);
        let keys: Vec<u64> = batch.iter().map(|(k, _)| *k).collect();
        if let Err(e) = self.spool.ack(&keys) {
            tracing::error!(error = %e, "webhook spool update failed; events may be sent again");
        }
        self.metrics
            .webhook_events
            .add(WebhookOutcome::Delivered, keys.len() as u64);
        self.metrics.webhook_pending.set(self.spool.len() as f64);
        true
    }

    /// The oldest batch failed `max_attempts` times: give it up.
    fn drop_batch(&mut self) {
        let Ok(batch) = self.spool.peek(self.config.batch_max) else {
            return;
        };
        let keys: Vec<u64> = batch.iter().map(|(k, _)| *k).collect();
        if self.spool.ack(&keys).is_ok() {
            tracing::warn!(
                events = keys.len(),
                "webhook receiver failed every attempt; events dropped"
            );
            self.metrics
                .webhook_events
                .add(WebhookOutcome::RetriesExhausted, keys.len() as u64);
        }
        self.metrics.webhook_pending.set(self.spool.len() as f64);
    }
}
