//! # myriad-load
//!
//! A load generator for Phoenix Channels V2 and raw WebSocket servers.
//!
//! # Layout
//!
//! - `cli`: subcommands (scenarios) and shared flags.
//! - `client`: one connection: connect (source address), handshake, Phoenix / raw frames.
//! - `http_reader`, `sse`, `longpoll`: subscribers over HTTP (`--transport sse|longpoll`).
//! - `payload`: the load message's stamp (source, sequence, send time) and padding.
//! - `accounting`: loss / duplicate / reorder detection on one stream.
//! - `ramp`: `--rate` / `--ramp` schedules.
//! - `stats`: counters, hdrhistograms, time series; merging and the wire form.
//! - `recorder`: sharded recording from many connection tasks; live counters.
//! - `control`: parent ↔ worker coordination (ready, start, live, result).
//! - `workers`: open-file limit, worker split, source addresses, child processes.
//! - `scenario`: connect, chat, fanout (+ slow), churn; the shared connect phase.
//! - `run`: a run end to end: workers, probe, progress, publisher, merge.
//! - `probe`: server RSS / CPU from /proc, Prometheus scrapes.
//! - `slo`: `--slo` parsing and judgement.
//! - `report`: figures, human summary, JSON, Markdown + SVG plots.
//! - `baseline`: the plain tokio-tungstenite broadcast servers ratios are measured against (strong by default, `--naive`).

pub mod accounting;
pub mod backend;
pub mod baseline;
pub mod cli;
pub mod client;
pub mod control;
pub mod http_reader;
pub mod longpoll;
pub mod payload;
pub mod probe;
pub mod ramp;
pub mod recorder;
pub mod report;
pub mod run;
pub mod scenario;
pub mod slo;
pub mod sse;
pub mod stats;
pub mod transport;
pub mod workers;
