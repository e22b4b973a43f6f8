//! Every metric name, described once, and the exporter behind `/metrics`.
//!
//! Each server owns its own recorder (no global `metrics` recorder), so several
//! servers in one process (tests, embedding) never mix their counts. Handles are
//! registered once at startup; hot paths increment a cached handle and never look
//! a name up. Labels come only from closed sets (`reason`, `kind`, `endpoint`,
//! `result`), never from topics, users or paths.

use std::sync::Arc;

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use std::marker::PhantomData;

use crate::admission::Shed;
use crate::process;
use crate::protocol::{
    BrokerRefusal, ClientRefusal, CloseReason, Endpoint, HandshakeRejection, HookKind, HookResult,
    HttpRejection, JoinRefusal, JwksFetch, MalformedKind, TlsReload, WebhookOutcome, WebhookPost,
};

pub const SESSIONS_ACTIVE: &str = "myriad_sessions_active";
pub const SESSIONS_PARKED: &str = "myriad_sessions_parked";
pub const SESSION_PARKS: &str = "myriad_session_parks_total";
pub const SESSIONS_OPENED: &str = "myriad_sessions_opened_total";
pub const SESSIONS_CLOSED: &str = "myriad_sessions_closed_total";
pub const HANDSHAKES_REJECTED: &str = "myriad_handshakes_rejected_total";
pub const ACCEPT_ERRORS: &str = "myriad_accept_errors_total";
pub const SHED: &str = "myriad_shed_total";
pub const JOIN_REFUSALS: &str = "myriad_join_refusals_total";

/// Why a join was refused (the `reason` label of `myriad_join_refusals_total`).
pub const HTTP_REJECTED: &str = "myriad_http_rejected_total";
pub const RATE_LIMITED: &str = "myriad_rate_limited_total";
pub const CHANNEL_JOINS: &str = "myriad_channel_joins_total";
pub const CHANNEL_LEAVES: &str = "myriad_channel_leaves_total";
pub const CHANNEL_CRASHES: &str = "myriad_channel_crashes_total";
pub const SESSION_PANICS: &str = "myriad_session_panics_total";
pub const MESSAGES_IN: &str = "myriad_messages_received_total";
pub const MESSAGES_OUT: &str = "myriad_messages_sent_total";
pub const BYTES_IN: &str = "myriad_received_bytes_total";
pub const BYTES_OUT: &str = "myriad_sent_bytes_total";
pub const MALFORMED_FRAMES: &str = "myriad_malformed_frames_total";
pub const CLIENT_REFUSALS: &str = "myriad_client_refusals_total";
pub const PRESENCE_UNTRACKED: &str = "myriad_presence_untracked_total";
pub const REPLAYS_REFUSED: &str = "myriad_history_replays_refused_total";
pub const HISTORY_UNSTORED: &str = "myriad_history_unstored_total";
pub const HISTORY_GAPS: &str = "myriad_history_gaps_total";
pub const BROKER_CONNECTED: &str = "myriad_broker_connected";
pub const BROKER_PUBLISHED: &str = "myriad_broker_published_total";
pub const BROKER_RECEIVED: &str = "myriad_broker_received_total";
pub const BROKER_DROPPED: &str = "myriad_broker_dropped_total";
pub const BROKER_ERRORS: &str = "myriad_broker_errors_total";
pub const BROKER_REFUSED: &str = "myriad_broker_refused_total";
pub const JWKS_REFRESHES: &str = "myriad_jwks_refreshes_total";
pub const JWKS_KEYS: &str = "myriad_jwks_keys";
pub const HOOK_REQUESTS: &str = "myriad_hook_requests_total";
pub const HOOK_DURATION: &str = "myriad_hook_duration_seconds";
pub const HOOK_BREAKER_OPEN: &str = "myriad_hook_breaker_open";
pub const HOOK_IN_FLIGHT: &str = "myriad_hook_in_flight";
pub const WEBHOOK_EVENTS: &str = "myriad_webhook_events_total";
pub const WEBHOOK_POSTS: &str = "myriad_webhook_posts_total";
pub const WEBHOOK_PENDING: &str = "myriad_webhook_pending";
pub const TLS_RELOADS: &str = "myriad_tls_reloads_total";
pub const LONGPOLL_FORWARDED: &str = "myriad_longpoll_forwarded_total";

/// Seconds a backend hook call takes (retries included).
const HOOK_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The backend hooks' metrics: by hook, and by hook and result.
pub struct HookMetrics {
    requests: Vec<Counter>,
    duration: Vec<Histogram>,
    breaker_open: Vec<Gauge>,
    pub in_flight: Gauge,
}

fn hook_index(kind: HookKind) -> usize {
    HookKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

impl HookMetrics {
    pub fn record(&self, kind: HookKind, result: HookResult, took: std::time::Duration) {
        let r = HookResult::ALL
            .iter()
            .position(|x| *x == result)
            .unwrap_or(0);
        if let Some(c) = self
            .requests
            .get(hook_index(kind) * HookResult::ALL.len() + r)
        {
            c.increment(1);
        }
        if let Some(h) = self.duration.get(hook_index(kind)) {
            h.record(took.as_secs_f64());
        }
    }

    pub fn breaker(&self, kind: HookKind, open: bool) {
        if let Some(g) = self.breaker_open.get(hook_index(kind)) {
            g.increment(if open { 1.0 } else { -1.0 });
        }
    }
}
pub const BROKER_RECONNECTS: &str = "myriad_broker_reconnects_total";
pub const BROKER_QUEUE: &str = "myriad_broker_queue_depth";
pub const BROKER_PEERS: &str = "myriad_broker_peers";
pub const BROKER_PEERS_LOST: &str = "myriad_broker_peers_lost_total";
pub const MAILBOX_DEPTH: &str = "myriad_mailbox_depth_messages";
pub const MAILBOX_DROPPED: &str = "myriad_mailbox_dropped_total";
pub const BROADCASTS: &str = "myriad_broadcasts_total";
pub const FANOUT_DURATION: &str = "myriad_fanout_duration_seconds";
pub const FANOUT_SPLITS: &str = "myriad_fanout_splits_total";
pub const FANOUT_SIZE: &str = "myriad_fanout_subscribers";
pub const TOPICS: &str = "myriad_topics";
pub const HISTORY_BYTES: &str = "myriad_history_bytes";
pub const DRAINING: &str = "myriad_draining";
pub const PROCESS_RSS: &str = "myriad_process_resident_memory_bytes";
pub const PROCESS_FDS: &str = "myriad_process_open_fds";
pub const PROCESS_MAX_FDS: &str = "myriad_process_max_fds";
pub const CGROUP_MEMORY: &str = "myriad_cgroup_memory_bytes";
pub const CGROUP_MEMORY_LIMIT: &str = "myriad_cgroup_memory_limit_bytes";
pub const MEMORY_WATERMARK: &str = "myriad_memory_high_watermark_bytes";
pub const LISTEN_BACKLOG: &str = "myriad_listen_backlog";
pub const LISTEN_OVERFLOWS: &str = "myriad_listen_overflows_total";
pub const DRAIN_WAVES: &str = "myriad_drain_waves_total";
pub const PRESENCE_SYNC_PARTS: &str = "myriad_presence_sync_parts_sent_total";
pub const PRESENCE_SYNC_QUEUE: &str = "myriad_presence_sync_queue_bytes";
pub const PRESENCE_DIGEST_MISMATCHES: &str = "myriad_presence_digest_mismatches_total";
pub const PRESENCE_DIFFS_COALESCED: &str = "myriad_presence_diffs_coalesced_total";
pub const DRAIN_CLOSED: &str = "myriad_drain_sessions_closed_total";
pub const RUNTIME_ALIVE_TASKS: &str = "myriad_runtime_alive_tasks";
pub const RUNTIME_GLOBAL_QUEUE: &str = "myriad_runtime_global_queue_depth";

/// Seconds one broadcast takes to reach every local mailbox.
const FANOUT_BUCKETS: &[f64] = &[
    0.000_01, 0.000_1, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const SIZE_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
    100000.0, 1000000.0,
];

/// A closed set of label values: every value's series is registered at start
/// (so it exists at zero before its first event) and found by index, never by
/// string, so a misspelt label cannot silently lose a count.
pub trait LabelSet: Copy + PartialEq + 'static {
    fn all() -> &'static [Self];
    fn label(self) -> &'static str;
    /// Position in `all()`.
    fn index(self) -> usize;
}

macro_rules! label_set {
    ($($t:ty),* $(,)?) => {$(
        impl LabelSet for $t {
            fn all() -> &'static [Self] {
                &<$t>::ALL
            }
            fn label(self) -> &'static str {
                <$t>::label(self)
            }
            fn index(self) -> usize {
                // Sets are a handful of values; a value missing from `ALL`
                // (a bug a unit test catches) is counted nowhere.
                <$t>::ALL.iter().position(|l| *l == self).unwrap_or(usize::MAX)
            }
        }
    )*};
}

label_set!(
    BrokerRefusal,
    ClientRefusal,
    CloseReason,
    Endpoint,
    HandshakeRejection,
    HttpRejection,
    JoinRefusal,
    JwksFetch,
    MalformedKind,
    Shed,
    WebhookOutcome,
    WebhookPost,
    TlsReload,
);

/// One counter per value of a label set.
pub struct Family<L> {
    counters: Vec<Counter>,
    set: PhantomData<fn(L)>,
}

impl<L: LabelSet> Family<L> {
    fn register(new: impl Fn(&'static str) -> Counter) -> Family<L> {
        Family {
            counters: L::all().iter().map(|l| new(l.label())).collect(),
            set: PhantomData,
        }
    }

    pub fn increment(&self, label: L) {
        self.add(label, 1);
    }

    pub fn add(&self, label: L, n: u64) {
        if let Some(c) = self.counters.get(label.index()) {
            c.increment(n);
        }
    }
}

/// Sessions opened and closed (by reason) since the last `take`: what the
/// periodic info summary reports, so a reconnect storm is one log line per
/// interval instead of two per session (those are debug).
pub struct SessionTally {
    opened: std::sync::atomic::AtomicU64,
    closed: Vec<std::sync::atomic::AtomicU64>,
}

impl Default for SessionTally {
    fn default() -> SessionTally {
        SessionTally {
            opened: std::sync::atomic::AtomicU64::new(0),
            closed: CloseReason::ALL
                .iter()
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        }
    }
}

impl SessionTally {
    pub fn opened(&self) {
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn closed(&self, reason: CloseReason) {
        if let Some(c) = self.closed.get(reason.index()) {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Opened, and closed by reason (only reasons seen), since the last take.
    pub fn take(&self) -> (u64, Vec<(&'static str, u64)>) {
        use std::sync::atomic::Ordering::Relaxed;
        let opened = self.opened.swap(0, Relaxed);
        let closed = CloseReason::ALL
            .iter()
            .zip(&self.closed)
            .filter_map(|(r, c)| match c.swap(0, Relaxed) {
                0 => None,
                n => Some((r.label(), n)),
            })
            .collect();
        (opened, closed)
    }
}

/// Cached metric handles for one server.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pub sessions_active: Gauge,
    /// Sessions idle without a codec (`park_after`).
    pub sessions_parked: Gauge,
    pub session_parks: Counter,
    pub sessions_opened: Family<Endpoint>,
    pub sessions_closed: Family<CloseReason>,
    /// Since the last session summary log line.
    pub session_tally: SessionTally,
    pub handshakes_rejected: Family<HandshakeRejection>,
    pub accept_errors_fd: Counter,
    pub shed: Family<Shed>,
    join_refusals: Family<JoinRefusal>,
    pub http_rejected: Family<HttpRejection>,
    pub rate_limited: Counter,
    pub accept_errors_other: Counter,
    pub joins_ok: Counter,
    pub joins_error: Counter,
    pub leaves: Counter,
    pub channel_crashes: Counter,
    pub session_panics: Counter,
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub malformed: Family<MalformedKind>,
    pub client_refusals: Family<ClientRefusal>,
    pub presence_untracked: Counter,
    pub replays_refused: Counter,
    pub history_unstored: Counter,
    pub history_gaps: Counter,
    pub fanout_splits: Counter,
    pub mailbox_depth: Histogram,
    pub mailbox_dropped: Counter,
    pub broadcasts: Counter,
    pub fanout_size: Histogram,
    pub fanout_duration: Histogram,
    pub topics: Gauge,
    pub history_bytes: Gauge,
    pub draining: Gauge,
    pub process_rss: Gauge,
    pub process_fds: Gauge,
    pub process_max_fds: Gauge,
    pub cgroup_memory: Gauge,
    pub cgroup_memory_limit: Gauge,
    pub memory_watermark: Gauge,
    pub listen_backlog: Gauge,
    pub listen_overflows: Counter,
    /// The kernel's ListenOverflows when the listener started.
    listen_overflows_base: std::sync::OnceLock<u64>,
    pub drain_waves: Counter,
    pub presence_sync_parts: Counter,
    pub presence_sync_queue: Gauge,
    pub presence_digest_mismatches: Counter,
    pub presence_diffs_coalesced: Counter,
    pub drain_closed: Counter,
    pub runtime_alive_tasks: Gauge,
    pub runtime_global_queue: Gauge,
    pub broker_connected: Gauge,
    pub broker_published: Counter,
    pub broker_received: Counter,
    pub broker_dropped_queue_full: Counter,
    pub broker_dropped_disconnected: Counter,
    /// Inbound cluster traffic the link task could not keep up with (Redis
    /// Cluster's push queue, bounded by `broker_queue`); the link then
    /// resynchronises.
    pub broker_dropped_inbound_full: Counter,
    pub broker_errors: Counter,
    pub broker_refused: Family<BrokerRefusal>,
    pub broker_reconnects: Counter,
    pub broker_queue_depth: Gauge,
    pub broker_peers: Gauge,
    pub broker_peers_lost: Counter,
    pub jwks_refreshes: Family<JwksFetch>,
    pub jwks_keys: Gauge,
    pub hooks: HookMetrics,
    pub webhook_events: Family<WebhookOutcome>,
    pub webhook_posts: Family<WebhookPost>,
    pub webhook_pending: Gauge,
    pub tls_reloads: Family<TlsReload>,
    pub longpoll_forwarded: Counter,
}

fn meta() -> Metadata<'static> {
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()))
}

impl Metrics {
    /// Record one local fan-out: its size, how long it took, what it dropped.
    pub fn fanout_done(&self, delivered: usize, dropped: usize, took: std::time::Duration) {
        self.fanout_size.record(delivered as f64);
        self.fanout_duration.record(took.as_secs_f64());
        if dropped > 0 {
            self.mailbox_dropped.increment(dropped as u64);
        }
    }

    pub fn new() -> Arc<Metrics> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(MAILBOX_DEPTH.into()), SIZE_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(FANOUT_SIZE.into()), SIZE_BUCKETS))
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(FANOUT_DURATION.into()), FANOUT_BUCKETS)
            })
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(HOOK_DURATION.into()), HOOK_BUCKETS)
            })
            // Both calls only fail on an empty bucket list, which SIZE_BUCKETS is not.
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        let handle = recorder.handle();
        let r = &recorder;

        let counter = |name: &'static str, help: &'static str, unit: Option<Unit>| {
            r.describe_counter(
                KeyName::from_const_str(name),
                unit,
                SharedString::const_str(help),
            );
            r.register_counter(&Key::from_static_name(name), &meta())
        };
        let labelled = |name: &'static str, label: &'static str, value: &'static str| {
            let key = Key::from_parts(name, vec![Label::from_static_parts(label, value)]);
            r.register_counter(&key, &meta())
        };
        let gauge = |name: &'static str, help: &'static str, unit: Option<Unit>| {
            r.describe_gauge(
                KeyName::from_const_str(name),
                unit,
                SharedString::const_str(help),
            );
            r.register_gauge(&Key::from_static_name(name), &meta())
        };
        let histogram = |name: &'static str, help: &'static str| {
            r.describe_histogram(
                KeyName::from_const_str(name),
                None,
                SharedString::const_str(help),
            );
            r.register_histogram(&Key::from_static_name(name), &meta())
        };

        r.describe_counter(
            KeyName::from_const_str(SESSIONS_OPENED),
            None,
            SharedString::const_str("WebSocket sessions opened, by endpoint."),
        );
        r.describe_counter(
            KeyName::from_const_str(SESSIONS_CLOSED),
            None,
            SharedString::const_str("WebSocket sessions closed, by close reason."),
        );
        r.describe_counter(
            KeyName::from_const_str(HANDSHAKES_REJECTED),
            None,
            SharedString::const_str(
                "Upgrade requests refused before a session started, by reason.",
            ),
        );
        r.describe_counter(
            KeyName::from_const_str(JOIN_REFUSALS),
            None,
            SharedString::const_str(
                "Joins refused, by reason (too_many_channels: max_topics_per_session).",
            ),
        );
        r.describe_counter(
            KeyName::from_const_str(HTTP_REJECTED),
            None,
            SharedString::const_str(
                "API and admin requests refused by the protective layers, by reason.",
            ),
        );
        r.describe_counter(
            KeyName::from_const_str(SHED),
            None,
            SharedString::const_str("Upgrades refused with 503 by admission control, by reason."),
        );
        r.describe_counter(
            KeyName::from_const_str(ACCEPT_ERRORS),
            None,
            SharedString::const_str(
                "Failed accepts, by kind (fd_exhausted: out of descriptors or memory, accept backs off).",
            ),
        );
        r.describe_counter(
            KeyName::from_const_str(MALFORMED_FRAMES),
            None,
            SharedString::const_str("Inbound frames that could not be decoded, by kind."),
        );
        r.describe_counter(
            KeyName::from_const_str(TLS_RELOADS),
            None,
            SharedString::const_str(
                "Reloads of the listener's TLS certificate (SIGHUP or changed files), by result.",
            ),
        );
        r.describe_counter(
            KeyName::from_const_str(WEBHOOK_EVENTS),
            None,
            SharedString::const_str(
                "Webhook events, by outcome (queued, delivered, or dropped and why).",
            ),
        );
        r.describe_counter(
            KeyName::from_const_str(WEBHOOK_POSTS),
            None,
            SharedString::const_str("Webhook batch POSTs, by result (failed: no 2xx in time)."),
        );
        r.describe_counter(
            KeyName::from_const_str(JWKS_REFRESHES),
            None,
            SharedString::const_str(
                "Fetches of jwt_jwks_url, by result (an error keeps the previous keys).",
            ),
        );
        r.describe_counter(
            KeyName::from_const_str(BROKER_REFUSED),
            None,
            SharedString::const_str(
                "Messages from the broker dropped before any client saw them, by reason.",
            ),
        );
        r.describe_counter(
            KeyName::from_const_str(CLIENT_REFUSALS),
            None,
            SharedString::const_str(
                "Client frames refused with an error reply for what they carry (reserved event, \
                 over-long topic or event, too-deep payload), by reason.",
            ),
        );
        r.describe_counter(
            KeyName::from_const_str(CHANNEL_JOINS),
            None,
            SharedString::const_str("Channel joins, by result (ok or error)."),
        );

        r.describe_counter(
            KeyName::from_const_str(BROKER_DROPPED),
            None,
            SharedString::const_str(
                "Publishes not sent to other nodes (local delivery unaffected), by reason: queue_full (broker_queue) or disconnected; inbound_full: traffic from a Redis Cluster the link could not keep up with (it then resynchronises).",
            ),
        );

        let metrics = Metrics {
            broker_connected: gauge(
                BROKER_CONNECTED,
                "1 while the cluster broker is reachable (always 0 with broker = local).",
                None,
            ),
            broker_published: counter(
                BROKER_PUBLISHED,
                "Publishes sent to other nodes through the broker.",
                None,
            ),
            broker_received: counter(
                BROKER_RECEIVED,
                "Publishes from other nodes delivered to local subscribers.",
                None,
            ),
            broker_dropped_queue_full: labelled(BROKER_DROPPED, "reason", "queue_full"),
            broker_dropped_disconnected: labelled(BROKER_DROPPED, "reason", "disconnected"),
            broker_dropped_inbound_full: labelled(BROKER_DROPPED, "reason", "inbound_full"),
            broker_errors: counter(
                BROKER_ERRORS,
                "Broker connection, publish and decode errors.",
                None,
            ),
            broker_reconnects: counter(
                BROKER_RECONNECTS,
                "Reconnect attempts to the broker after a failure.",
                None,
            ),
            broker_peers: gauge(
                BROKER_PEERS,
                "Other cluster nodes heard from within cluster_node_timeout.",
                None,
            ),
            broker_peers_lost: counter(
                BROKER_PEERS_LOST,
                "Nodes declared dead after cluster_node_timeout of silence (their presence left).",
                None,
            ),
            broker_queue_depth: gauge(
                BROKER_QUEUE,
                "Publishes waiting to go to the broker (bounded by broker_queue).",
                None,
            ),
            sessions_active: gauge(SESSIONS_ACTIVE, "WebSocket sessions currently open.", None),
            sessions_parked: gauge(
                SESSIONS_PARKED,
                "WebSocket sessions parked: quiet for park_after, holding their stream without a codec or read buffer until the client sends again.",
                None,
            ),
            session_parks: counter(
                SESSION_PARKS,
                "Times a session was parked (a session unparks when its client sends, and parks again after park_after of quiet).",
                None,
            ),
            sessions_opened: Family::register(|l| labelled(SESSIONS_OPENED, "endpoint", l)),
            sessions_closed: Family::register(|l| labelled(SESSIONS_CLOSED, "reason", l)),
            session_tally: SessionTally::default(),
            handshakes_rejected: Family::register(|l| labelled(HANDSHAKES_REJECTED, "reason", l)),
            accept_errors_fd: labelled(ACCEPT_ERRORS, "kind", "fd_exhausted"),
            shed: Family::register(|l| labelled(SHED, "reason", l)),
            join_refusals: Family::register(|l| labelled(JOIN_REFUSALS, "reason", l)),
            http_rejected: Family::register(|l| labelled(HTTP_REJECTED, "reason", l)),
            rate_limited: counter(
                RATE_LIMITED,
                "Client frames refused with rate_limited (client_rate).",
                None,
            ),
            accept_errors_other: labelled(ACCEPT_ERRORS, "kind", "other"),
            joins_ok: labelled(CHANNEL_JOINS, "result", "ok"),
            joins_error: labelled(CHANNEL_JOINS, "result", "error"),
            leaves: counter(
                CHANNEL_LEAVES,
                "Channels left by the client (phx_leave).",
                None,
            ),
            channel_crashes: counter(
                CHANNEL_CRASHES,
                "Channel handler panics contained to their channel (phx_error sent).",
                None,
            ),
            session_panics: counter(
                SESSION_PANICS,
                "Panics outside channel handlers; each closed its session.",
                None,
            ),
            messages_in: counter(
                MESSAGES_IN,
                "WebSocket data messages received from clients.",
                None,
            ),
            messages_out: counter(
                MESSAGES_OUT,
                "WebSocket data messages written to clients.",
                None,
            ),
            bytes_in: counter(
                BYTES_IN,
                "Payload bytes of messages received from clients.",
                Some(Unit::Bytes),
            ),
            bytes_out: counter(
                BYTES_OUT,
                "Payload bytes of messages written to clients.",
                Some(Unit::Bytes),
            ),
            malformed: Family::register(|l| labelled(MALFORMED_FRAMES, "kind", l)),
            client_refusals: Family::register(|l| labelled(CLIENT_REFUSALS, "reason", l)),
            broker_refused: Family::register(|l| labelled(BROKER_REFUSED, "reason", l)),
            jwks_refreshes: Family::register(|l| labelled(JWKS_REFRESHES, "result", l)),
            webhook_events: Family::register(|l| labelled(WEBHOOK_EVENTS, "outcome", l)),
            tls_reloads: Family::register(|l| labelled(TLS_RELOADS, "result", l)),
            longpoll_forwarded: counter(
                LONGPOLL_FORWARDED,
                "Long-poll requests for another node's session, forwarded to it.",
                None,
            ),
            webhook_posts: Family::register(|l| labelled(WEBHOOK_POSTS, "result", l)),
            webhook_pending: gauge(
                WEBHOOK_PENDING,
                "Webhook events in the spool, not yet acknowledged.",
                None,
            ),
            jwks_keys: gauge(
                JWKS_KEYS,
                "Signing keys in the identity provider's set as last fetched (jwt_jwks_url).",
                None,
            ),
            hooks: {
                r.describe_counter(
                    KeyName::from_const_str(HOOK_REQUESTS),
                    None,
                    SharedString::const_str("Backend hook calls, by hook and result."),
                );
                r.describe_histogram(
                    KeyName::from_const_str(HOOK_DURATION),
                    Some(Unit::Seconds),
                    SharedString::const_str("Backend hook call time (retries included), by hook."),
                );
                r.describe_gauge(
                    KeyName::from_const_str(HOOK_BREAKER_OPEN),
                    None,
                    SharedString::const_str(
                        "Endpoints of a hook whose breaker is open (calls fail at once).",
                    ),
                );
                let hook = |k: HookKind| Label::from_static_parts("hook", k.label());
                HookMetrics {
                    requests: HookKind::ALL
                        .iter()
                        .flat_map(|k| {
                            HookResult::ALL.iter().map(move |res| {
                                let labels =
                                    vec![hook(*k), Label::from_static_parts("result", res.label())];
                                r.register_counter(&Key::from_parts(HOOK_REQUESTS, labels), &meta())
                            })
                        })
                        .collect(),
                    duration: HookKind::ALL
                        .iter()
                        .map(|k| {
                            r.register_histogram(&Key::from_parts(HOOK_DURATION, vec![hook(*k)]), &meta())
                        })
                        .collect(),
                    breaker_open: HookKind::ALL
                        .iter()
                        .map(|k| {
                            r.register_gauge(&Key::from_parts(HOOK_BREAKER_OPEN, vec![hook(*k)]), &meta())
                        })
                        .collect(),
                    in_flight: gauge(
                        HOOK_IN_FLIGHT,
                        "Backend hook calls in flight on this node (bounded by [hooks] max_in_flight).",
                        None,
                    ),
                }
            },
            history_unstored: counter(
                HISTORY_UNSTORED,
                "History publishes delivered without an offset: no room for a new ring (history_max_topics or history_max_bytes).",
                None,
            ),
            fanout_splits: counter(
                FANOUT_SPLITS,
                "Broadcasts to a topic with at least 32768 local members whose fan-out was shared across the runtime's workers.",
                None,
            ),
            history_gaps: counter(
                HISTORY_GAPS,
                "Cluster-sequenced history frames that arrived after a missing offset; the frames kept before them were dropped, so recovery across the gap answers recovered:false.",
                None,
            ),
            replays_refused: counter(
                REPLAYS_REFUSED,
                "Recovering joins answered recovered:false because the missed frames did not fit the joiner's mailbox.",
                None,
            ),
            presence_untracked: counter(
                PRESENCE_UNTRACKED,
                "Joins not listed in presence because the topic tracks presence_max_members sessions on this node.",
                None,
            ),
            mailbox_depth: histogram(
                MAILBOX_DEPTH,
                "Messages waiting in a session mailbox when its writer drained it.",
            ),
            mailbox_dropped: counter(
                MAILBOX_DROPPED,
                "Messages dropped from full mailboxes under slow_consumer = drop_oldest.",
                None,
            ),
            broadcasts: counter(BROADCASTS, "Broadcasts published to topics.", None),
            fanout_duration: histogram(
                FANOUT_DURATION,
                "Time one broadcast took to reach every local subscriber's mailbox, seconds.",
            ),
            fanout_size: histogram(
                FANOUT_SIZE,
                "Local subscribers one broadcast was delivered to.",
            ),
            topics: gauge(TOPICS, "Topics with at least one local subscriber.", None),
            history_bytes: gauge(
                HISTORY_BYTES,
                "Bytes of history stored across all topics (bounded by history_max_bytes).",
                Some(Unit::Bytes),
            ),
            draining: gauge(
                DRAINING,
                "1 while the node drains for shutdown, else 0.",
                None,
            ),
            process_rss: gauge(
                PROCESS_RSS,
                "Resident set size of the process.",
                Some(Unit::Bytes),
            ),
            process_fds: gauge(PROCESS_FDS, "Open file descriptors of the process.", None),
            process_max_fds: gauge(
                PROCESS_MAX_FDS,
                "The process's open-file limit (soft RLIMIT_NOFILE, raised to the hard limit at start).",
                None,
            ),
            cgroup_memory: gauge(
                CGROUP_MEMORY,
                "Memory charged to the process's cgroup (socket buffers and page cache included).",
                Some(Unit::Bytes),
            ),
            cgroup_memory_limit: gauge(
                CGROUP_MEMORY_LIMIT,
                "The cgroup's memory limit (absent when unlimited).",
                Some(Unit::Bytes),
            ),
            memory_watermark: gauge(
                MEMORY_WATERMARK,
                "memory_high_watermark in bytes (a percentage resolved against the memory limit; 0: off).",
                Some(Unit::Bytes),
            ),
            listen_backlog: gauge(
                LISTEN_BACKLOG,
                "The public listener's accept queue: listen_backlog, capped by net.core.somaxconn.",
                None,
            ),
            listen_overflows: counter(
                LISTEN_OVERFLOWS,
                "Connections the kernel dropped because an accept queue was full (TcpExt ListenOverflows of this network namespace, counted since start).",
                None,
            ),
            listen_overflows_base: std::sync::OnceLock::new(),
            presence_sync_parts: counter(
                PRESENCE_SYNC_PARTS,
                "Presence state messages (parts of at most presence_sync_chunk_bytes) sent to other nodes.",
                None,
            ),
            presence_sync_queue: gauge(
                PRESENCE_SYNC_QUEUE,
                "Bytes of presence state parts waiting for the presence_sync_rate budget.",
                Some(Unit::Bytes),
            ),
            presence_digest_mismatches: counter(
                PRESENCE_DIGEST_MISMATCHES,
                "Topics whose replica of another node disagreed with that node's digest (asked for again).",
                None,
            ),
            presence_diffs_coalesced: counter(
                PRESENCE_DIFFS_COALESCED,
                "Presence diffs of big topics merged into a later one (presence_batch_members).",
                None,
            ),
            drain_waves: counter(
                DRAIN_WAVES,
                "Waves of sessions asked to close while draining.",
                None,
            ),
            drain_closed: counter(
                DRAIN_CLOSED,
                "Sessions asked to close by a drain wave.",
                None,
            ),
            runtime_alive_tasks: gauge(RUNTIME_ALIVE_TASKS, "Tokio tasks currently alive.", None),
            runtime_global_queue: gauge(
                RUNTIME_GLOBAL_QUEUE,
                "Tasks waiting in the tokio runtime's global queue.",
                None,
            ),
            recorder,
            handle,
        };
        Arc::new(metrics)
    }

    /// A refused join: counted as `result="error"` and by reason.
    pub fn join_refused(&self, reason: JoinRefusal) {
        self.joins_error.increment(1);
        self.join_refusals.increment(reason);
    }

    /// Count the kernel's accept-queue overflows from now on (the kernel's
    /// figure is since the network namespace began).
    pub fn count_listen_overflows_from_now(&self) {
        if let Some(now) = process::listen_overflows() {
            let _ = self.listen_overflows_base.set(now);
        }
    }

    /// Refresh the sampled gauges (process and runtime) and render the text format.
    pub fn render(&self) -> String {
        if let Some(rss) = process::resident_bytes() {
            self.process_rss.set(rss as f64);
        }
        if let Some(fds) = process::open_fds() {
            self.process_fds.set(fds as f64);
        }
        if let Some(max) = process::max_fds() {
            self.process_max_fds.set(max as f64);
        }
        if let Some(cg) = process::cgroup_memory() {
            self.cgroup_memory.set(cg.usage as f64);
            if let Some(limit) = cg.limit {
                self.cgroup_memory_limit.set(limit as f64);
            }
        }
        if let (Some(&base), Some(now)) = (
            self.listen_overflows_base.get(),
            process::listen_overflows(),
        ) {
            self.listen_overflows.absolute(now.saturating_sub(base));
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let m = rt.metrics();
            self.runtime_alive_tasks.set(m.num_alive_tasks() as f64);
            self.runtime_global_queue.set(m.global_queue_depth() as f64);
        }
        self.handle.render()
    }

    /// Drain histogram samples into buckets; called periodically so that samples
    /// recorded between scrapes do not pile up.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The recorder, for registering ad-hoc metrics in tests or extensions.
    pub fn recorder(&self) -> &PrometheusRecorder {
        &self.recorder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indexes_follow_all<L: LabelSet + PartialEq + std::fmt::Debug>() {
        for (i, l) in L::all().iter().enumerate() {
            assert_eq!(l.index(), i, "{l:?}");
        }
    }

    #[test]
    fn every_label_set_indexes_its_all_list() {
        indexes_follow_all::<CloseReason>();
        indexes_follow_all::<ClientRefusal>();
        indexes_follow_all::<BrokerRefusal>();
        indexes_follow_all::<Endpoint>();
        indexes_follow_all::<HandshakeRejection>();
        indexes_follow_all::<HttpRejection>();
        indexes_follow_all::<JoinRefusal>();
        indexes_follow_all::<MalformedKind>();
        indexes_follow_all::<Shed>();
    }

    #[test]
    fn every_label_exists_at_zero_before_its_first_event() {
        let m = Metrics::new();
        let text = m.render();
        for l in JoinRefusal::ALL {
            let line = format!("{JOIN_REFUSALS}{{reason=\"{}\"}} 0", l.label());
            assert!(text.contains(&line), "{line}");
        }
        for l in MalformedKind::ALL {
            let line = format!("{MALFORMED_FRAMES}{{kind=\"{}\"}} 0", l.label());
            assert!(text.contains(&line), "{line}");
        }
        m.join_refused(JoinRefusal::Crashed);
        let line = format!("{JOIN_REFUSALS}{{reason=\"crashed\"}} 1");
        assert!(m.render().contains(&line));
    }
}
