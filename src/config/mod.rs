//! One validated [`Config`], layered as built-in defaults < TOML file
//! (`--config FILE`) < environment `MYRIAD_*` < command-line flags.
//!
//! This module owns every setting's name, default, unit and validation. It
//! never reads the environment or files after startup, and nothing else in the
//! crate parses configuration.

mod cidr;
mod flags;
pub mod hooks;
pub mod keys;
pub mod namespace;
pub mod redis_url;
pub mod sources;
pub mod units;
mod validate;
pub mod webhooks;

pub use validate::redacted_url;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use cidr::Cidr;
pub use flags::ServeFlags;
pub use namespace::{
    ChannelKind, NamespaceConfig, Namespaces, Pattern, PresenceMode, Publish, Route,
    MAX_HISTORY_SIZE,
};

/// What happens to a subscriber whose mailbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SlowConsumerPolicy {
    /// Close the session with 1013 "slow consumer".
    Disconnect,
    /// Drop the oldest queued messages to make room; each drop is counted.
    DropOldest,
}

/// Where publishes meet other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BrokerKind {
    /// This node only; needs nothing else running.
    Local,
    /// Redis Pub/Sub (one channel per topic with local members).
    Redis,
    /// NATS core subjects (one subject per topic with local members).
    Nats,
}

/// JWT signature algorithm for connect tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    ES256,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

// Any case, `-` or `_`: `drop-oldest`, `DROP_OLDEST`, `hs256` (config::units).
units::lenient_enum!(SlowConsumerPolicy);
units::lenient_enum!(BrokerKind);
units::lenient_enum!(JwtAlgorithm);
units::lenient_enum!(LogFormat);

/// Every setting of a running node. Field docs give the default, the unit, and
/// what zero means; README's configuration table mirrors them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Public listener (WebSocket endpoints). Default 127.0.0.1:4000.
    pub listen: SocketAddr,
    /// Admin listener (/metrics, /healthz, /readyz). Default 127.0.0.1:4001.
    pub admin_listen: SocketAddr,
    /// Time a client has to send its HTTP request headers (upgrade included);
    /// slower clients are cut off. Default 5s; 0 is invalid.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Close a session that sends nothing for this long. Default 60s; 0 disables.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Park a session whose client sent nothing for this long: it gives up
    /// its WebSocket codec and read buffer (about 0.7 KiB) until the client
    /// sends again; broadcasts still go out while parked. Default 1s; 0
    /// never parks.
    #[serde(with = "humantime_serde")]
    pub park_after: Duration,
    /// The public listener's accept queue (`listen(2)` backlog); the kernel
    /// caps it at `net.core.somaxconn`. Default 4096; 0 is invalid.
    pub listen_backlog: u32,
    /// How often one info line sums up the sessions opened and closed (by
    /// reason); each session's own lines are debug. Default 60s; 0: never.
    #[serde(with = "humantime_serde")]
    pub session_log_interval: Duration,
    /// On SIGTERM/SIGINT, wait at most this long for sessions to close. Default 10s.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Drain closes sessions in waves of at most this many, so their clients
    /// reconnect to the other nodes spread over time. Default 10000; 0 closes
    /// every session at once.
    pub drain_batch_size: usize,
    /// Time between drain waves (±25 % jitter), shortened so every wave
    /// starts within the first three quarters of `drain_timeout`. Default 1s.
    #[serde(with = "humantime_serde")]
    pub drain_batch_interval: Duration,
    /// How long a disconnect through the API keeps refusing the user's older
    /// tokens (on every node): set it to your longest token lifetime. Default
    /// 24h; 0 is invalid.
    #[serde(with = "humantime_serde")]
    pub revocation_ttl: Duration,
    /// After sending a close frame, wait this long for the client's close. Default 2s.
    #[serde(with = "humantime_serde")]
    pub close_timeout: Duration,
    /// A batch of outbound frames must reach the socket within this. Default 10s.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Channel crashes tolerated per session within `max_seconds`. Default 3;
    /// 0 means the first crash closes the session.
    pub max_restarts: u32,
    /// Window for `max_restarts`, in seconds. Default 5; must be at least 1.
    pub max_seconds: u64,
    /// Outbound mailbox bound, in messages. Default 1024; must be at least 1.
    pub mailbox_capacity: usize,
    /// Outbound mailbox bound, in bytes. Default 4 MiB; must be at least 1.
    #[serde(deserialize_with = "units::de_bytes_usize")]
    pub mailbox_max_bytes: usize,
    /// Slow-consumer policy: disconnect (default) or drop_oldest.
    pub slow_consumer: SlowConsumerPolicy,
    /// Largest inbound WebSocket message, in bytes. Default 65536; 0 is invalid.
    #[serde(deserialize_with = "units::de_bytes_usize")]
    pub max_message_size: usize,
    /// Largest inbound WebSocket frame, in bytes. Default 65536; 0 is invalid.
    #[serde(deserialize_with = "units::de_bytes_usize")]
    pub max_frame_size: usize,
    /// tungstenite's per-connection read buffer, in bytes. Default 256. The
    /// socket itself is read in 8 KiB chunks whatever this is (the session's
    /// `LazyRead` keeps what tungstenite has not asked for yet, and allocates
    /// nothing while idle), so this only sets a floor of memory every live
    /// session holds (a parked one holds none, `park_after`): 19 000 idle sockets measured 3.7 KiB RSS each at 256, 4.5 KiB at
    /// 1024 (BENCHMARKS.md). Larger frames still arrive whole.
    #[serde(deserialize_with = "units::de_bytes_usize")]
    pub read_buffer_size: usize,
    /// Outbound bytes gathered before a socket write, in bytes. Default 8192; 0
    /// writes every frame at once. A flush at the end of each batch always writes.
    #[serde(deserialize_with = "units::de_bytes_usize")]
    pub write_buffer_size: usize,
    /// Kernel send buffer (SO_SNDBUF) of each accepted socket, in bytes. Default
    /// 0: the kernel auto-tunes it, up to tcp_wmem's maximum (often 4 MiB) for a
    /// client that stopped reading. A bound makes slow consumers hit the
    /// mailbox limits sooner and caps kernel memory per connection.
    #[serde(deserialize_with = "units::de_bytes_usize")]
    pub socket_send_buffer: usize,
    /// Serve the raw echo endpoint `/ws/echo`. Default false.
    pub enable_echo: bool,
    /// Add namespace `crash:*` whose handler panics on event `panic`. Default false.
    pub enable_fault_injection: bool,
    /// Log format: text (default) or json. Filter with RUST_LOG.
    pub log_format: LogFormat,
    /// Allow connections without a token (presence key `anon-<session>`).
    /// Default: allowed when no JWT key is configured, refused when one is
    /// (dropping a token must never widen what a user may join).
    pub anonymous: Option<bool>,
    /// With a JWT key configured and `anonymous = true`: the topic patterns
    /// anonymous connections may join. Default empty (none). Without a key,
    /// anonymous connections may join every routed topic.
    pub anonymous_topics: Vec<String>,
    /// JWT algorithm: HS256 (default, with jwt_secret), RS256 or ES256 (with jwt_public_key_file).
    pub jwt_algorithm: JwtAlgorithm,
    /// HS256 shared secret. Default none (tokens refused).
    pub jwt_secret: Option<String>,
    /// PEM public key for RS256/ES256. Default none.
    pub jwt_public_key_file: Option<std::path::PathBuf>,
    /// PEM certificate chain for TLS on the public listener (wss://, https://),
    /// with tls_key_file; reloaded on SIGHUP and when the files change.
    /// Default none (plain; terminate TLS in a proxy).
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// PEM private key of tls_cert_file. Default none.
    pub tls_key_file: Option<std::path::PathBuf>,
    /// Serve the admin listener over TLS too (same certificate). Default false.
    pub admin_tls: bool,
    /// This node's public URL as the other nodes reach it (long-poll
    /// requests that land on another node are forwarded here). Default
    /// none: `http(s)://<listen address>` when it is a specific address.
    pub advertise_url: Option<String>,
    /// How long a long-poll request waits for something to send. Default
    /// 10s (phoenix.js gives up on a poll after 20 s).
    #[serde(with = "humantime_serde")]
    pub longpoll_hold: Duration,
    /// An SSE stream ends after this long (±10 %, so streams opened together
    /// do not end together); the browser reconnects, to any node, and resumes
    /// from its last id. Default 0 (never).
    #[serde(with = "humantime_serde")]
    pub sse_max_age: Duration,
    /// Largest long-poll POST body (a batch of frames, each also within
    /// max_message_size). Default 1048576 (1 MiB).
    #[serde(deserialize_with = "units::de_bytes_usize")]
    pub longpoll_max_body: usize,
    /// A long-poll session with no poll for this long ends. Default 20s.
    #[serde(with = "humantime_serde")]
    pub longpoll_window: Duration,
    /// An identity provider's JSON Web Key Set (https://, or http:// on
    /// loopback): connect tokens are verified with its keys by `kid`
    /// (RS*, PS*, ES256/384, EdDSA; never HS*). Instead of jwt_secret and
    /// jwt_public_key_file. Default none.
    pub jwt_jwks_url: Option<String>,
    /// How often the key set is fetched again. Default 10m; at least 10s.
    #[serde(with = "humantime_serde")]
    pub jwt_jwks_refresh: Duration,
    /// A token with an unknown `kid` triggers a fetch (a key rotated in), at
    /// most once per this interval. Default 30s; from 1s to jwt_jwks_refresh.
    #[serde(with = "humantime_serde")]
    pub jwt_jwks_min_interval: Duration,
    /// When set, a token's `iss` must equal it. Default none (not checked).
    pub jwt_issuer: Option<String>,
    /// When set, a token's `aud` must contain it. Default none: `aud` is not
    /// checked (a token that carries one is accepted).
    pub jwt_audience: Option<String>,
    /// Origins allowed to open WebSockets (`https://app.example`, or `*`).
    /// Default empty: same host as the request only. No Origin header (non-browser) is allowed.
    pub allowed_origins: Vec<String>,
    /// Host names (or host:port) WebSocket upgrades are served for; others get
    /// 403. Default empty (any). With the default same-host Origin check this
    /// is the defence against DNS rebinding.
    pub allowed_hosts: Vec<String>,
    /// The public listener expects a PROXY protocol header (v1 or v2) at the
    /// start of every connection, from a load balancer that sends one; the
    /// client it names is the peer. Connections without one are closed.
    /// Default false.
    pub proxy_protocol: bool,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` names the
    /// real client for per-address caps and rates and logs. Default empty
    /// (the TCP peer is the client; headers are ignored).
    pub trusted_proxies: Vec<String>,
    /// Keys for the HTTP API (`Authorization: Bearer <key>`). Default none: `/api` is disabled (404).
    pub api_keys: Vec<String>,
    /// Serve the admin console (`/console`) and the HTTP API it calls on the
    /// admin listener; it logs in with one of `api_keys`. Default false.
    pub admin_ui: bool,
    /// Sessions this node admits; more get 503. Default 100000; 0 = no cap.
    pub max_connections: usize,
    /// Sessions per client IP; more get 503. Default 10000; 0 = no cap.
    pub max_connections_per_ip: usize,
    /// New sessions per second node-wide (token bucket); more get 503. Default 5000; 0 = no limit.
    pub accept_rate: u32,
    /// Burst allowed above accept_rate. Default 10000.
    pub accept_burst: u32,
    /// New WebSocket connections per second admitted from one client address
    /// (IPv6: one /64), so one client churning upgrades cannot spend the
    /// node-wide `accept_rate`. Default 0 (off: loopback load tests connect
    /// thousands per second from one address); set it in production.
    pub accept_rate_per_ip: u32,
    /// Burst allowed above `accept_rate_per_ip`; 0 means the rate. Default 0.
    pub accept_burst_per_ip: u32,
    /// Memory in use above which new sessions get 503 and /readyz 503: a
    /// byte size (`12GiB`), or a percentage (`80%`) of the memory cgroup's
    /// limit (of physical memory outside a limited cgroup). Memory in use is
    /// the process's RSS, or its cgroup's usage when the cgroup has a limit
    /// and charges more (socket buffers count there). Default 0 = off.
    pub memory_high_watermark: units::MemoryWatermark,
    /// Client frames per second per session (heartbeats excluded). Default 100; 0 = no limit.
    pub client_rate: u32,
    /// Burst allowed above client_rate. Default 200.
    pub client_burst: u32,
    /// A session over client_rate for this long is closed with 1008. Default 10s.
    #[serde(with = "humantime_serde")]
    pub abuse_window: Duration,
    /// Channels one session may have joined at once. Default 100; 0 is invalid.
    pub max_topics_per_session: usize,
    /// Longest topic name a client may join or the API publish to, in bytes.
    /// Default 256; 0 is invalid. Longer: an error reply / 400.
    pub max_topic_length: usize,
    /// Longest event name a client may push or the API publish, in bytes.
    /// Default 128; 0 is invalid.
    pub max_event_length: usize,
    /// Longest `ref` / `join_ref` a client may send, in bytes (phoenix.js sends
    /// short counters). Default 64; 0 is invalid. Longer: close 1007.
    pub max_ref_length: usize,
    /// Deepest nesting of arrays/objects in a client payload. Default 64; 0 is
    /// invalid. Deeper: an error reply (the API: 400), never broadcast.
    pub max_payload_depth: usize,
    /// Largest presence `meta` a join may carry, bytes of JSON. Default 1024;
    /// 0 is invalid. Larger: the join is refused (`presence meta too large`).
    #[serde(deserialize_with = "units::de_bytes_usize")]
    pub presence_max_meta_bytes: usize,
    /// Sessions tracked per topic on this node. Default 10000; 0 is invalid.
    /// Past it joins still succeed but are not listed in presence (counted).
    pub presence_max_members: usize,
    /// The most one cluster presence state message carries; a larger state
    /// travels in parts (NATS refuses payloads over 1 MiB by default).
    /// Default 262144; at least 4096.
    #[serde(deserialize_with = "units::de_bytes_usize")]
    pub presence_sync_chunk_bytes: usize,
    /// Bytes of presence state parts a node sends per second (a 100 000-member
    /// state is megabytes). Default 8388608; 0 is invalid.
    #[serde(deserialize_with = "units::de_bytes_usize")]
    pub presence_sync_rate: usize,
    /// Topics with at least this many subscribers on a node get their
    /// presence diffs merged and delivered once per
    /// `presence_batch_interval` (a join into a 100 000-member topic is
    /// otherwise one frame to every member). Default 1000; 0: never.
    pub presence_batch_members: usize,
    /// How often merged presence diffs of big topics go out. Default 200ms;
    /// from 10ms to 10s.
    #[serde(with = "humantime_serde")]
    pub presence_batch_interval: Duration,
    /// How often a node publishes per-topic digests of its members, so peers
    /// whose replica disagrees (a lost diff) ask for those topics again.
    /// Default 10s; 0 disables.
    #[serde(with = "humantime_serde")]
    pub presence_digest_interval: Duration,
    /// In-flight HTTP API / admin requests per listener; more get 503 at once. Default 256.
    pub http_concurrency_limit: usize,
    /// Connections the admin listener serves at once; more are closed at once
    /// (counted as `myriad_http_rejected_total{reason="overloaded"}`).
    /// Default 64; 0 is invalid.
    pub admin_max_connections: usize,
    /// Time one HTTP API / admin request may take; then 504. Default 10s.
    #[serde(with = "humantime_serde")]
    pub http_timeout: Duration,
    /// History kept on this node across all topics, in bytes. Default 64 MiB.
    #[serde(deserialize_with = "units::de_bytes_usize")]
    pub history_max_bytes: usize,
    /// History topics (rings) kept per node. Default 100000; 0 is invalid. A
    /// ring is made on a topic's first publish; past the bound (or
    /// `history_max_bytes`) a publish is delivered without an offset, and
    /// recovery across it answers `recovered: false`.
    pub history_max_topics: usize,
    /// Cluster broker: local (default), redis or nats.
    pub broker: BrokerKind,
    /// Broker address. Default none: redis://127.0.0.1:6379 or nats://127.0.0.1:4222.
    pub broker_url: Option<String>,
    /// PEM file of the CA(s) the broker's TLS certificate must chain to
    /// (rediss:// or tls:// URLs). Default none: the system's roots.
    pub broker_tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate for a broker that requires one (mutual TLS);
    /// set with broker_tls_key. Default none.
    pub broker_tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of broker_tls_cert. Default none.
    pub broker_tls_key: Option<std::path::PathBuf>,
    /// NATS: a .creds file (user JWT and nkey seed) to log in with. Default none.
    pub broker_nats_creds: Option<std::path::PathBuf>,
    /// NATS: a user nkey seed (SU...) to log in with; prefer
    /// MYRIAD_BROKER_NATS_NKEY. Default none.
    pub broker_nats_nkey: Option<String>,
    /// Whether /readyz answers 503 while the broker is unreachable. Default false
    /// (a node keeps serving its own sessions through a broker outage).
    pub broker_required: bool,
    /// Publishes waiting to go to the broker; beyond it they are dropped
    /// (local delivery is unaffected) and counted. Default 65536.
    pub broker_queue: usize,
    /// How long the broker may take to accept a connection or answer a
    /// command before the link is declared down and reconnects. Default 5s;
    /// 0 is invalid.
    #[serde(with = "humantime_serde")]
    pub broker_timeout: Duration,
    /// How often a node tells the others it is alive (cluster brokers). Default 1s.
    #[serde(with = "humantime_serde")]
    pub cluster_heartbeat: Duration,
    /// A node not heard from for this long is considered dead: its presence
    /// entries leave on every other node. Default 5s; must exceed cluster_heartbeat.
    #[serde(with = "humantime_serde")]
    pub cluster_node_timeout: Duration,
    /// Shared by every node of a cluster: each message between nodes is signed
    /// with it (HMAC-SHA256) and unsigned or badly signed ones are dropped.
    /// At least 32 bytes. Default none (nodes trust whoever can publish on
    /// the broker).
    pub cluster_secret: Option<String>,
    /// With cluster_secret: a signed message older (or further ahead of this
    /// node's clock) than this is dropped as a possible replay, and one seen
    /// before is dropped within it. Must exceed the clock skew between nodes
    /// plus the broker's delivery delay. Default 60s; from 1s to 1h.
    #[serde(with = "humantime_serde")]
    pub cluster_replay_window: Duration,
    /// Topic namespaces, first match wins (TOML `[[namespaces]]` only; a file
    /// that sets them replaces the defaults `room:*` and `chat:*`).
    pub namespaces: Vec<NamespaceConfig>,
    /// Calls to the application's backend (TOML `[hooks]` only; see
    /// README "Your backend").
    pub hooks: hooks::HooksConfig,
    /// Events posted to the application's backend (TOML `[webhooks]` only;
    /// see README "Your backend").
    pub webhooks: webhooks::WebhooksConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 4000)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 4001)),
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            park_after: Duration::from_secs(1),
            listen_backlog: 4096,
            session_log_interval: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
            drain_batch_size: 10_000,
            drain_batch_interval: Duration::from_secs(1),
            revocation_ttl: Duration::from_secs(24 * 3600),
            close_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(10),
            max_restarts: 3,
            max_seconds: 5,
            mailbox_capacity: 1024,
            mailbox_max_bytes: 4 << 20,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            max_message_size: 64 << 10,
            max_frame_size: 64 << 10,
            read_buffer_size: 256,
            write_buffer_size: 8 << 10,
            socket_send_buffer: 0,
            enable_echo: false,
            enable_fault_injection: false,
            log_format: LogFormat::Text,
            namespaces: NamespaceConfig::defaults(),
            hooks: hooks::HooksConfig::default(),
            webhooks: webhooks::WebhooksConfig::default(),
            max_connections: 100_000,
            max_connections_per_ip: 10_000,
            accept_rate: 5_000,
            accept_burst: 10_000,
            accept_rate_per_ip: 0,
            accept_burst_per_ip: 0,
            memory_high_watermark: units::MemoryWatermark::Off,
            client_rate: 100,
            client_burst: 200,
            abuse_window: Duration::from_secs(10),
            max_topics_per_session: 100,
            max_topic_length: 256,
            max_event_length: 128,
            max_ref_length: 64,
            max_payload_depth: 64,
            presence_max_meta_bytes: 1024,
            presence_max_members: 10_000,
            presence_sync_chunk_bytes: 256 * 1024,
            presence_sync_rate: 8 * 1024 * 1024,
            presence_digest_interval: Duration::from_secs(10),
            presence_batch_members: 1000,
            presence_batch_interval: Duration::from_millis(200),
            http_concurrency_limit: 256,
            admin_max_connections: 64,
            http_timeout: Duration::from_secs(10),
            history_max_bytes: 64 << 20,
            history_max_topics: 100_000,
            anonymous: None,
            anonymous_topics: Vec::new(),
            jwt_algorithm: JwtAlgorithm::HS256,
            jwt_secret: None,
            jwt_public_key_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            allowed_hosts: Vec::new(),
            proxy_protocol: false,
            api_keys: Vec::new(),
            admin_ui: false,
            broker: BrokerKind::Local,
            broker_url: None,
            broker_tls_ca: None,
            broker_tls_cert: None,
            broker_tls_key: None,
            broker_nats_creds: None,
            broker_nats_nkey: None,
            broker_required: false,
            broker_queue: 65_536,
            broker_timeout: Duration::from_secs(5),
            cluster_heartbeat: Duration::from_secs(1),
            cluster_node_timeout: Duration::from_secs(5),
            cluster_secret: None,
            cluster_replay_window: Duration::from_secs(60),
            jwt_jwks_url: None,
            tls_cert_file: None,
            tls_key_file: None,
            admin_tls: false,
            advertise_url: None,
            longpoll_hold: Duration::from_secs(10),
            longpoll_window: Duration::from_secs(20),
            longpoll_max_body: 1 << 20,
            sse_max_age: Duration::ZERO,
            jwt_jwks_refresh: Duration::from_secs(600),
            jwt_jwks_min_interval: Duration::from_secs(30),
        }
    }
}

/// A configuration that cannot be used. The message always names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(String),
    #[error("invalid value for `{key}`: {why}")]
    Invalid { key: &'static str, why: String },
    /// More than one problem, in the order the checks found them.
    #[error("{} problems: {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Several(Vec<ConfigError>),
}

impl ConfigError {
    /// Each problem on its own (a `Several` unpacked).
    pub fn each(&self) -> Vec<String> {
        match self {
            ConfigError::Several(all) => all.iter().flat_map(ConfigError::each).collect(),
            ConfigError::Load(text) => text.lines().map(str::to_owned).collect(),
            other => vec![other.to_string()],
        }
    }
}

impl From<figment::Error> for ConfigError {
    fn from(err: figment::Error) -> Self {
        let lines: Vec<String> = err
            .into_iter()
            .map(|e| {
                let key = if e.path.is_empty() {
                    String::from("(top level)")
                } else {
                    e.path.join(".")
                };
                let source = e
                    .metadata
                    .as_ref()
                    .map(|m| match &m.source {
                        Some(src) => format!(" (from {} {src})", m.name),
                        None => format!(" (from {})", m.name),
                    })
                    .unwrap_or_default();
                let what = match &e.kind {
                    // Not the list of every key: the closest one.
                    figment::error::Kind::UnknownField(name, expected) => {
                        match keys::closest(name, expected.iter().copied()) {
                            Some(k) => format!("unknown key `{name}`; did you mean `{k}`?"),
                            None => format!(
                                "unknown key `{name}` (README, \"Configuration\", lists them)"
                            ),
                        }
                    }
                    kind => kind.to_string(),
                };
                format!("key `{key}`: {what}{source}")
            })
            .collect();
        // One problem per line (`each()` splits them again).
        ConfigError::Load(lines.join("\n"))
    }
}

impl Config {
    /// Defaults < `file` < `MYRIAD_*` env < `flags`, then validated.
    pub fn load(file: Option<&Path>, flags: &ServeFlags) -> Result<Config, ConfigError> {
        let config: Config = Config::layers(file, flags)?.extract()?;
        config.validate()?;
        Ok(config)
    }

    /// `myriad config print`: the loaded configuration as TOML, each key with
    /// the layer it came from, secrets redacted (config::sources).
    pub fn explain(file: Option<&Path>, flags: &ServeFlags) -> Result<String, ConfigError> {
        let fig = Config::layers(file, flags)?;
        let config: Config = fig.extract()?;
        config.validate()?;
        Ok(sources::render(&config, &fig))
    }

    /// The layers, each named for `config print`.
    fn layers(file: Option<&Path>, flags: &ServeFlags) -> Result<Figment, ConfigError> {
        let mut fig = Figment::from(sources::Labeled {
            inner: Serialized::defaults(Config::default()),
            name: sources::DEFAULTS,
        });
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        // Unknown MYRIAD_* variables are other tools' (warned about in main).
        let known = keys::known();
        Ok(fig
            .merge(
                Env::prefixed(keys::ENV_PREFIX)
                    .filter(move |k| keys::is_known_env(&k.as_str().to_ascii_lowercase(), &known)),
            )
            .merge(sources::Labeled {
                inner: Serialized::defaults(flags),
                name: sources::FLAGS,
            }))
    }

    /// Defaults < `file` < `MYRIAD_*` env, parsed but not validated: `myriad
    /// config check` runs `problems()` itself to report every one.
    pub fn load_unchecked(file: Option<&Path>) -> Result<Config, ConfigError> {
        Ok(Config::layers(file, &ServeFlags::default())?.extract()?)
    }

    /// Parse TOML text (for tests and embedding).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()?;
        config.validate()?;
        Ok(config)
    }

    /// The topic routing the namespaces describe (built once per node).
    pub fn routes(&self) -> Namespaces {
        Namespaces::new(&self.namespaces, self.enable_fault_injection)
    }

    /// `trusted_proxies`, parsed (entries that do not parse are refused by
    /// validation, so none is dropped here in a validated config).
    pub fn trusted_proxy_blocks(&self) -> Vec<Cidr> {
        self.trusted_proxies
            .iter()
            .filter_map(|s| Cidr::parse(s).ok())
            .collect()
    }

    /// Whether a JWT key (secret or public key file) is configured.
    pub fn has_token_key(&self) -> bool {
        self.jwt_secret.is_some()
            || self.jwt_public_key_file.is_some()
            || self.jwt_jwks_url.is_some()
    }

    /// Whether connections without a token are admitted (see `anonymous`).
    pub fn allows_anonymous(&self) -> bool {
        self.anonymous.unwrap_or(!self.has_token_key())
    }

    /// Settings that are valid but probably not what was meant; `config
    /// check` prints them and the server logs them at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.has_token_key() && self.allows_anonymous() {
            out.push(if self.anonymous_topics.is_empty() {
                String::from(
                    "anonymous = true with a JWT key: anonymous connections are admitted but may \
                     join no topic (set anonymous_topics to the ones they may join)",
                )
            } else {
                format!(
                    "anonymous = true with a JWT key: anonymous connections may join {:?}",
                    self.anonymous_topics
                )
            });
        }
        out
    }

    /// The restart-intensity window.
    pub fn restart_window(&self) -> Duration {
        Duration::from_secs(self.max_seconds)
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests;
