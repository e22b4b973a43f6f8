//! # myriad
//!
//! A WebSocket connection server speaking Phoenix Channels V2: every connection
//! is its own supervised task; one crashing session never affects the others.
//!
//! # Layout
//!
//! Top of the stack first; a module imports only modules below it
//! (`scripts/check_layers.py` checks it; ARCHITECTURE.md draws it).
//!
//! - `server`: the public and admin listeners, the HTTP router, graceful shutdown,
//!   and the background tasks (broker link, heartbeat, upkeep) it owns.
//! - `server::accept`: the public accept loop (TCP_NODELAY, handshake timeout, EMFILE back-off).
//! - `server::upgrade`: the HTTP → WebSocket handshake (vsn check, 101, spawn).
//! - `server::api`, `server::admin`: `/api/*`; `/metrics`, `/healthz`, `/readyz`.
//! - `session`: the per-connection task: read, write, timers, close handshake;
//!   `session::events` decides which source to ask after a wake;
//!   `session::frames_out` writes data frames to the socket, vectored.
//! - `session::phoenix`: a connection's channels and the V2 dispatch rules
//!   (`rate`: client rate limiting; `params`: what a join asks for).
//! - `session::echo`, `session::lazy_read`: the echo handler; socket reads that hold
//!   no buffer while a session idles (and follow frame edges: `session::boundary`).
//! - `session::wire`, `session::deadline`: a quiet session parks (no codec, no
//!   read buffer) until its client sends; the one timer's deadlines.
//! - `supervisor`: session ids, spawning, panic capture, restart intensity, drain.
//! - `registry`: every live session by id (API disconnects).
//! - `channel`: the `Channel` trait, the broadcast and fault-injection channels.
//! - `hooks`: calls to the application's backend (connect, refresh, join,
//!   publish, rpc): bounded, timed, retried when safe, behind a breaker.
//! - `pubsub::node`: `Node`, the one owner of a node's topics (hub, history,
//!   presence, routing, membership): join, leave, publish; what other nodes send.
//! - `pubsub::hub`, `pubsub::mailbox`: topic → subscribers and the fan-out loop;
//!   a session's bounded outbound queue (messages and bytes). `pubsub::prefetch`:
//!   the fan-out's cache hints, the crate's only `unsafe`.
//! - `pubsub::history`, `pubsub::presence`, `pubsub::membership`: per-topic rings
//!   with offsets and epochs; who is in a topic; which other nodes are alive.
//! - `pubsub::broker`: the transport to other nodes (`local`, `redis`, `nats`),
//!   its queue and health (`link`), the wire format (`wire`), backend names.
//! - `webhooks`: events posted to the application's backend (sessions,
//!   channels, members, archived broadcasts), spooled, signed, retried.
//! - `metrics`: every metric name, described once; labels as closed enums.
//! - `auth`: JWT connect tokens, anonymous access, Origin allow-list, API keys.
//! - `revocation`: revoked users (API disconnects, cluster-wide), read at connect.
//! - `admission`: connection caps, accept rate, memory watermark; the 503 answers.
//! - `protocol`: V2 frames (decode, encode, the history ref slot), close codes,
//!   reply errors and every refusal label; no I/O.
//! - `config`: one validated `Config`, defaults < TOML file < `MYRIAD_*` env < flags;
//!   namespaces and topic routing.
//! - `process`: resident memory and open descriptors from /proc.

pub mod admission;
pub mod auth;
pub mod channel;
pub mod config;
pub mod hooks;
pub mod metrics;
pub mod process;
pub mod protocol;
pub mod pubsub;
pub mod registry;
pub mod revocation;
pub mod server;
pub mod session;
pub mod supervisor;
pub mod webhooks;
