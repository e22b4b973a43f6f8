//! # myriad
//!
//! A WebSocket connection server speaking Phoenix Channels V2: every connection
//! is its own supervised task; one crashing session never affects the others.
//!
//! # Layout
//!
//! - `config`: one validated `Config`, defaults < TOML file < `MYRIAD_*` env < flags.
//! - `server`: the public and admin listeners, the HTTP router, graceful shutdown.
//! - `server::accept`: the public accept loop (TCP_NODELAY, handshake timeout, EMFILE back-off).
//! - `admission`: connection caps, accept rate, memory watermark; the 503 answers.
//! - `server::upgrade`: the HTTP → WebSocket handshake (vsn check, 101, spawn).
//! - `server::admin`: `/metrics`, `/healthz`, `/readyz`.
//! - `supervisor`: spawning sessions, panic capture, restart intensity, drain.
//! - `session`: the per-connection task: read, write, mailbox, timers.
//! - `session::mailbox`: the bounded (messages and bytes) outbound queue.
//! - `session::phoenix`: a connection's channels and the V2 dispatch rules.
//! - `session::echo`: the raw echo handler behind `/ws/echo`.
//! - `session::lazy_read`: socket reads that hold no buffer while a session idles.
//! - `protocol`: V2 frames: decode, encode, close codes and reply errors; no I/O.
//! - `channel`: the `Channel` trait, the broadcast and fault-injection channels, routing.
//! - `pubsub`: topics, subscribers, fan-out (`hub`), and the `Broker` seam (`broker::local`;
//!   `broker::cluster` with the `redis` and `nats` links for several nodes).
//! - `pubsub::topics`: routing + broker + history + presence; the one `publish`.
//! - `history`: per-topic rings with offsets and epochs, recovery on join.
//! - `presence`: who is in a topic; `presence_state` / `presence_diff` payloads.
//! - `auth`: JWT connect tokens, anonymous access, Origin allow-list, API keys.
//! - `registry`: every live session by id.
//! - `metrics`: every metric name, described once; the Prometheus exporter.

pub mod admission;
pub mod auth;
pub mod channel;
pub mod config;
pub mod metrics;
pub mod process;
pub mod protocol;
pub mod pubsub;
pub mod registry;
pub mod server;
pub mod session;
pub mod supervisor;
