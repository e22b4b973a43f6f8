//! `myriad serve` flags: the top layer of configuration. Every flag is an
//! `Option` so that an absent flag leaves the lower layers alone; the help text
//! of each states the built-in default (checked against `Config::default()` by a
//! test).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::{units, BrokerKind, LogFormat, SlowConsumerPolicy};

fn ser_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        None => s.serialize_none(),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 10s, 1m)"))
}

#[derive(Debug, Clone, Default, clap::Args, Serialize)]
#[command(
    next_help_heading = "Server options (flags override MYRIAD_* env, which overrides the file)"
)]
pub struct ServeFlags {
    /// TOML configuration file (keys as in README's configuration table).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Public listener address [default: 127.0.0.1:4000]
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,

    /// Admin listener address: /metrics, /healthz, /readyz [default: 127.0.0.1:4001]
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<SocketAddr>,

    /// Time a client has to send its HTTP request headers, upgrade included [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub handshake_timeout: Option<Duration>,

    /// Close a session that sends nothing for this long; 0 disables [default: 1m]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub idle_timeout: Option<Duration>,

    /// Park a session quiet for this long (it drops its codec and read buffer until the client sends); 0 never parks [default: 1s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub park_after: Option<Duration>,

    /// Public listener's accept queue (listen backlog), capped by the kernel's net.core.somaxconn [default: 4096]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_backlog: Option<u32>,

    /// How often one info line sums up sessions opened and closed by reason; 0: never [default: 1m]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub session_log_interval: Option<Duration>,

    /// On SIGTERM/SIGINT, wait at most this long for sessions to close [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub drain_timeout: Option<Duration>,

    /// Drain closes sessions in waves of at most this many (0: all at once) [default: 10000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_batch_size: Option<usize>,

    /// Time between drain waves, ±25 % jitter, fitted into drain_timeout [default: 1s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub drain_batch_interval: Option<Duration>,

    /// How long an API disconnect refuses the user's older tokens, on every node [default: 1day]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub revocation_ttl: Option<Duration>,

    /// After sending a close frame, wait this long for the client's close [default: 2s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub close_timeout: Option<Duration>,

    /// Time allowed to write one outbound batch before the session is dropped [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub write_timeout: Option<Duration>,

    /// Channel crashes tolerated per session within --max-seconds before close 1011 [default: 3]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,

    /// Restart-intensity window in seconds [default: 5]
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_seconds: Option<u64>,

    /// Outbound mailbox bound in messages [default: 1024]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox_capacity: Option<usize>,

    /// Outbound mailbox bound in bytes [default: 4194304]
    #[arg(long, value_name = "BYTES", value_parser = units::parse_bytes_usize)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox_max_bytes: Option<usize>,

    /// What a full mailbox does: close 1013 or drop the oldest [default: disconnect]
    #[arg(long, value_name = "POLICY", value_parser = units::parse_enum::<SlowConsumerPolicy>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_consumer: Option<SlowConsumerPolicy>,

    /// Largest inbound WebSocket message in bytes; larger closes with 1009 [default: 65536]
    #[arg(long, value_name = "BYTES", value_parser = units::parse_bytes_usize)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<usize>,

    /// Largest inbound WebSocket frame in bytes; larger closes with 1009 [default: 65536]
    #[arg(long, value_name = "BYTES", value_parser = units::parse_bytes_usize)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_frame_size: Option<usize>,

    /// tungstenite's per-connection read buffer in bytes; the socket is read in 8 KiB chunks regardless [default: 256]
    #[arg(long, value_name = "BYTES", value_parser = units::parse_bytes_usize)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_buffer_size: Option<usize>,

    /// Outbound bytes gathered before a socket write; 0 writes each frame [default: 8192]
    #[arg(long, value_name = "BYTES", value_parser = units::parse_bytes_usize)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write_buffer_size: Option<usize>,

    /// Kernel send buffer (SO_SNDBUF) per socket; 0 lets the kernel auto-tune [default: 0]
    #[arg(long, value_name = "BYTES", value_parser = units::parse_bytes_usize)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_send_buffer: Option<usize>,

    /// Serve the raw echo endpoint /ws/echo [default: false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_echo: Option<bool>,

    /// Add namespace crash:* whose handler panics on event "panic" (tests, demos) [default: false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_fault_injection: Option<bool>,

    /// Sessions this node admits (503 beyond); 0 = no cap [default: 100000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,

    /// Sessions per client IP (503 beyond); 0 = no cap [default: 10000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_ip: Option<usize>,

    /// New sessions per second node-wide (503 beyond); 0 = no limit [default: 5000]
    #[arg(long, value_name = "PER_SECOND")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_rate: Option<u32>,

    /// Burst above --accept-rate [default: 10000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_burst: Option<u32>,

    /// New connections per second from one client address (IPv6: per /64); 0 = off [default: 0]
    #[arg(long, value_name = "PER_SECOND")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_rate_per_ip: Option<u32>,

    /// Burst above --accept-rate-per-ip; 0 = the rate [default: 0]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_burst_per_ip: Option<u32>,

    /// Memory in use above which new sessions get 503 and /readyz 503: bytes (12GiB) or a share of the cgroup's limit (80%); 0 = off [default: 0]
    #[arg(long, value_name = "SIZE|PCT", value_parser = units::MemoryWatermark::parse)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_high_watermark: Option<units::MemoryWatermark>,

    /// Client frames per second per session, heartbeats excluded; 0 = no limit [default: 100]
    #[arg(long, value_name = "PER_SECOND")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_rate: Option<u32>,

    /// Burst above --client-rate [default: 200]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_burst: Option<u32>,

    /// A session over --client-rate this long is closed with 1008 [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub abuse_window: Option<Duration>,

    /// Channels one session may have joined at once [default: 100]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_topics_per_session: Option<usize>,

    /// Longest topic name joined or published to, bytes [default: 256]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_topic_length: Option<usize>,

    /// Longest event name pushed or published, bytes [default: 128]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_event_length: Option<usize>,

    /// Longest ref / join_ref a client may send, bytes; longer closes 1007 [default: 64]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ref_length: Option<usize>,

    /// Deepest array/object nesting in a client payload [default: 64]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_payload_depth: Option<usize>,

    /// Largest presence meta a join may carry, bytes [default: 1024]
    #[arg(long, value_name = "BYTES", value_parser = units::parse_bytes_usize)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_max_meta_bytes: Option<usize>,

    /// Sessions tracked in presence per topic on this node; later joins are not listed [default: 10000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_max_members: Option<usize>,

    /// The most one cluster presence state message carries; larger states go in parts [default: 262144]
    #[arg(long, value_name = "BYTES", value_parser = units::parse_bytes_usize)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_sync_chunk_bytes: Option<usize>,

    /// Bytes of presence state parts a node sends per second [default: 8388608]
    #[arg(long, value_name = "BYTES", value_parser = units::parse_bytes_usize)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_sync_rate: Option<usize>,

    /// Topics with at least this many subscribers here get presence diffs merged per --presence-batch-interval; 0: never [default: 1000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_batch_members: Option<usize>,

    /// How often merged presence diffs of big topics go out [default: 200ms]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub presence_batch_interval: Option<Duration>,

    /// How often a node publishes presence digests for anti-entropy (0: never) [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub presence_digest_interval: Option<Duration>,

    /// In-flight HTTP API / admin requests; more get 503 at once [default: 256]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_concurrency_limit: Option<usize>,

    /// Admin listener connections at once; more are closed [default: 64]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_max_connections: Option<usize>,

    /// Time one HTTP API / admin request may take before 504 [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub http_timeout: Option<Duration>,

    /// History kept on this node across all topics, in bytes [default: 67108864]
    #[arg(long, value_name = "BYTES", value_parser = units::parse_bytes_usize)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_max_bytes: Option<usize>,

    /// History topics kept per node; past it publishes carry no offset [default: 100000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_max_topics: Option<usize>,

    /// Allow connections without a token [default: true without a JWT key, false with one]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous: Option<bool>,

    /// With a JWT key and --anonymous: topic patterns anonymous connections may join, comma-separated [default: none]
    #[arg(long, value_name = "PATTERNS", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymous_topics: Option<Vec<String>>,

    /// JWT algorithm for connect tokens [default: HS256]
    #[arg(long, value_name = "ALG", value_parser = units::parse_enum::<super::JwtAlgorithm>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_algorithm: Option<super::JwtAlgorithm>,

    /// HS256 secret for connect tokens; prefer MYRIAD_JWT_SECRET (flags show in ps) [default: none]
    #[arg(long, value_name = "SECRET")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<String>,

    /// PEM public key for RS256/ES256 tokens [default: none]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// PEM certificate chain: TLS on the public listener (wss://), reloaded on SIGHUP or file change [default: none]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of --tls-cert-file [default: none]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,

    /// Serve the admin listener over TLS too, with the same certificate [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_tls: Option<bool>,

    /// This node's public URL for the other nodes (long-poll forwarding) [default: none, http(s)://LISTEN when specific]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_url: Option<String>,

    /// How long a long-poll request waits for something to send (< 20s, phoenix.js's poll timeout) [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub longpoll_hold: Option<Duration>,

    /// End each SSE stream after this long (±10 %) so readers reconnect and spread over the nodes; 0 never [default: 0s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub sse_max_age: Option<Duration>,

    /// Largest long-poll POST body in bytes (each frame also within --max-message-size) [default: 1048576]
    #[arg(long, value_name = "BYTES", value_parser = units::parse_bytes_usize)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub longpoll_max_body: Option<usize>,

    /// A long-poll session with no poll for this long ends [default: 20s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub longpoll_window: Option<Duration>,

    /// Identity provider's JWKS URL (https://, or http:// on loopback): tokens verified by kid [default: none]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_jwks_url: Option<String>,

    /// Fetch the JWKS again this often (>= 10s) [default: 10m]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub jwt_jwks_refresh: Option<Duration>,

    /// A token with an unknown kid refetches the JWKS at most this often [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub jwt_jwks_min_interval: Option<Duration>,

    /// Required `iss` of connect tokens [default: none, not checked]
    #[arg(long, value_name = "ISSUER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of connect tokens [default: none, not checked]
    #[arg(long, value_name = "AUDIENCE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_audience: Option<String>,

    /// Origins allowed to open WebSockets, comma-separated, or * [default: same host only]
    #[arg(long, value_name = "ORIGINS", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_origins: Option<Vec<String>>,

    /// Expect a PROXY protocol (v1/v2) header on every public connection [default: false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<bool>,

    /// Host names served for WebSocket upgrades, comma-separated; others get 403 [default: any]
    #[arg(long, value_name = "HOSTS", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_hosts: Option<Vec<String>>,

    /// Proxies (addresses or CIDRs, comma-separated) whose X-Forwarded-For names the client [default: none]
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<Vec<String>>,

    /// API keys for /api, comma-separated; prefer MYRIAD_API_KEYS [default: none, /api disabled]
    #[arg(long, value_name = "KEYS", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<Vec<String>>,

    /// Serve the admin console (/console) and the HTTP API on the admin listener (needs api_keys) [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_ui: Option<bool>,

    /// Cluster broker: local, redis or nats [default: local]
    #[arg(long, value_name = "KIND", value_parser = units::parse_enum::<BrokerKind>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerKind>,

    /// Broker address, e.g. redis://127.0.0.1:6379 or nats://127.0.0.1:4222 [default: none, the broker's local default]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_url: Option<String>,

    /// PEM CA file the broker's TLS certificate must chain to (rediss:// or tls://) [default: none, the system's roots]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_tls_ca: Option<PathBuf>,

    /// PEM client certificate for mutual TLS with the broker (with --broker-tls-key) [default: none]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_tls_cert: Option<PathBuf>,

    /// PEM private key of --broker-tls-cert [default: none]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_tls_key: Option<PathBuf>,

    /// NATS .creds file (user JWT + nkey seed) to log in with [default: none]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_nats_creds: Option<PathBuf>,

    /// NATS user nkey seed (SU...) to log in with; prefer MYRIAD_BROKER_NATS_NKEY [default: none]
    #[arg(long, value_name = "SEED")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_nats_nkey: Option<String>,

    /// /readyz answers 503 while the broker is unreachable [default: false]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_required: Option<bool>,

    /// Publishes queued for the broker; more are dropped (local delivery continues) and counted [default: 65536]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_queue: Option<usize>,

    /// How long the broker may take to accept a connection or answer a command before the link reconnects [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub broker_timeout: Option<Duration>,

    /// How often a node heartbeats to the others over the broker [default: 1s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub cluster_heartbeat: Option<Duration>,

    /// A node silent this long is dead; its presence entries leave everywhere [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub cluster_node_timeout: Option<Duration>,

    /// Secret every node shares to sign node-to-node messages (>= 32 bytes); prefer MYRIAD_CLUSTER_SECRET [default: none]
    #[arg(long, value_name = "SECRET")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_secret: Option<String>,

    /// With cluster_secret: drop signed node-to-node messages older than this, or seen before within it (1s..1h) [default: 1m]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_duration"
    )]
    pub cluster_replay_window: Option<Duration>,

    /// Log format; filter with RUST_LOG [default: text]
    #[arg(long, value_name = "FORMAT", value_parser = units::parse_enum::<LogFormat>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::super::Config;
    use super::*;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        flags: ServeFlags,
    }

    /// Every config key has a flag, and its help states the real default.
    #[test]
    fn help_documents_every_key_with_its_default() {
        let help = Probe::command().render_long_help().to_string();
        let defaults = serde_json::to_value(Config::default()).unwrap();
        for (key, value) in defaults.as_object().unwrap() {
            if key == "namespaces" || key == "hooks" || key == "webhooks" {
                continue; // a table, set in the TOML file only
            }
            let flag = format!("--{}", key.replace('_', "-"));
            assert!(help.contains(&flag), "no flag {flag} in help");
            let shown = match value {
                serde_json::Value::String(s) => s.clone(),
                // Unset and empty defaults are described in words.
                serde_json::Value::Null | serde_json::Value::Array(_) => {
                    assert!(help.contains(&flag), "no flag {flag} in help");
                    continue;
                }
                other => other.to_string(),
            };
            let expected = format!("[default: {shown}]");
            // The flag's own entry: from its heading line to the next flag.
            let lines: Vec<&str> = help.lines().collect();
            let start = lines
                .iter()
                .position(|l| {
                    let t = l.trim_start();
                    t == flag || t.starts_with(&format!("{flag} "))
                })
                .unwrap_or_else(|| panic!("no entry for {flag}"));
            let end = lines[start + 1..]
                .iter()
                .position(|l| l.trim_start().starts_with('-'))
                .map_or(lines.len(), |i| start + 1 + i);
            let section = lines[start..end].join(" ");
            assert!(
                section.contains(&expected),
                "help for {flag} does not say {expected}: {section}"
            );
        }
    }
}
