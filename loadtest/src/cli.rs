//! The command line: scenarios as subcommands, the options every scenario
//! shares as global flags. Owns parsing and help text only.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::client::Protocol;
use crate::ramp::Ramp;
use crate::slo::Slo;

/// Load generator for Phoenix Channels V2 and raw WebSocket servers.
///
/// Every scenario is bounded in connections and time, counts lost, duplicated
/// and out-of-order messages, and exits 1 when it saw loss it did not expect
/// or an --slo was violated (2 on a usage or setup error). When the run needs
/// more sockets than this process may open, it spawns worker processes (itself)
/// and merges their histograms into one report.
#[derive(Parser, Debug)]
#[command(
    name = "myriad-load",
    version,
    about,
    long_about,
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Ramp to N connections, hold them for --duration, report connect rate and handshake latency.
    Connect(ConnectArgs),
    /// R rooms x M members; every member pushes at --msg-rate; reports delivered msgs/s and end-to-end latency.
    Chat(ChatArgs),
    /// One topic with N subscribers; a publisher sends K messages; verifies every subscriber got every message in order.
    Fanout(FanoutArgs),
    /// Connections that connect, join, chat briefly and leave, started at --rate per second for --duration.
    Churn(ChurnArgs),
    /// Fan-out where a share of subscribers read slowly or stop reading: shows the slow-consumer policy protecting the rest.
    Slow(SlowArgs),
    /// A reconnect storm: N subscribers of a history topic across several nodes (--url A,B,C) while a publisher publishes; one node gets SIGTERM or SIGKILL; its clients reconnect to the others on phoenix.js's schedule and rejoin with `since`. Reports how long until they are back, 503s, accept-queue overflows and messages lost across the move.
    Storm(StormArgs),
    /// A minimal tokio-tungstenite broadcast server (every text frame goes to every connection): the baseline for --protocol raw.
    BaselineServer(BaselineArgs),
    /// A stub application backend that allows every myriad hook after --delay and acknowledges webhooks: run scenarios against a hooked myriad to measure what hooks cost.
    Backend(BackendArgs),
}

/// Options every scenario shares.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Server WebSocket URL (Phoenix: vsn=2.0.0 is added when missing); several, comma-separated, spread connections round robin over a cluster (the publisher uses the first).
    #[arg(
        long,
        global = true,
        default_value = "ws://127.0.0.1:4000/socket/websocket"
    )]
    pub url: String,
    /// PEM file of CA certificates to trust for wss:// besides the system's (a test server's self-signed certificate, say).
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Wire protocol of the server.
    #[arg(long, global = true, value_enum, default_value_t = Protocol::Phoenix)]
    pub protocol: Protocol,
    /// How clients connect (connect, fanout): WebSocket, Server-Sent Events from myriad's /sse, or Phoenix long-poll (http://, or https:// for a wss:// --url).
    #[arg(long, global = true, value_enum, default_value_t = Transport::Websocket)]
    pub transport: Transport,
    /// Connect token, sent as the `token` query parameter.
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// How long the measured phase runs (connect: hold; chat: sending; churn: starting cycles; fanout/slow: longest wait for delivery).
    #[arg(long, global = true, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Start connections (churn: cycles) at this many per second [default: unpaced, capped by --concurrency].
    #[arg(long, global = true, conflicts_with = "ramp")]
    pub rate: Option<f64>,
    /// Linear ramp of the connection (churn: cycle) rate, e.g. "0->20000 in 60s"; the final rate holds afterwards.
    #[arg(long, global = true)]
    pub ramp: Option<Ramp>,
    /// Most handshakes (churn: cycles) in flight at once, per process.
    #[arg(long, global = true, default_value_t = 256)]
    pub concurrency: usize,
    /// Give up on one connect + handshake (or join) after this long.
    #[arg(long, global = true, value_parser = humantime::parse_duration, default_value = "10s")]
    pub connect_timeout: Duration,
    /// Source addresses to spread connections over: a list and/or ranges, e.g. "127.0.0.2-127.0.0.40,127.0.1.1" [default: the kernel picks; with workers against a 127.x target, 127.0.0.(2+worker)].
    #[arg(long, global = true)]
    pub source_ips: Option<String>,
    /// Worker processes to spread connections over [default: as many as the open-file limit requires].
    #[arg(long, global = true)]
    pub workers: Option<usize>,
    /// Write every figure and the raw histograms (HdrHistogram V2, base64) to this JSON file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Write a Markdown report and SVG plots into this directory.
    #[arg(long, global = true)]
    pub report: Option<PathBuf>,
    /// Objectives, e.g. "p99<50ms,loss=0"; exit 1 when one is violated.
    #[arg(long, global = true)]
    pub slo: Option<Slo>,
    /// PID of the server process: report its RSS per connection and CPU per message (Linux /proc).
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Prometheus endpoint of the server (e.g. http://127.0.0.1:4001/metrics): scraped before and after the run.
    #[arg(long, global = true)]
    pub metrics_url: Option<String>,
    /// Hard cap on the whole run; past it the run is abandoned with exit 2.
    #[arg(long, global = true, value_parser = humantime::parse_duration, default_value = "15m")]
    pub max_run_time: Duration,
    /// Topic name prefix (Phoenix); topics are PREFIX0, PREFIX1, ...
    #[arg(long, global = true, default_value = "room:load-")]
    pub topic_prefix: String,
    /// No live progress display.
    #[arg(long, global = true)]
    pub quiet: bool,
    #[arg(long, global = true, hide = true)]
    pub worker_index: Option<u64>,
    #[arg(long, global = true, hide = true)]
    pub worker_count: Option<u64>,
    /// Shared start of the run's clock (µs since the Unix epoch), for workers.
    #[arg(long, global = true, hide = true)]
    pub t0_us: Option<u64>,
}

#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Connections to open.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub connections: u64,
    /// Join one of this many topics per connection (Phoenix; 0: connect only; SSE and long-poll readers always read one, at least 1).
    #[arg(long, default_value_t = 0)]
    pub topics: u64,
    /// Heartbeat interval while holding (Phoenix heartbeat / raw ping).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub heartbeat: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct ChatArgs {
    /// Rooms (topics).
    #[arg(long, default_value_t = 10)]
    pub rooms: u64,
    /// Members per room; every member sends and receives.
    #[arg(long, default_value_t = 10)]
    pub members: u64,
    /// Messages per second each member pushes.
    #[arg(long, default_value_t = 1.0)]
    pub msg_rate: f64,
    /// Payload size in bytes (JSON padded to this size).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// After sending stops, wait at most this long for in-flight messages.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub grace: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum Transport {
    /// Phoenix over WebSocket (or raw WebSocket).
    Websocket,
    /// myriad's Server-Sent Events endpoint (`/sse?topics=`): read-only.
    Sse,
    /// Phoenix long-poll (`/socket/longpoll`), as phoenix.js speaks it.
    Longpoll,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum PublishVia {
    /// A client connection pushes (Phoenix push or raw text frame).
    Ws,
    /// The server's HTTP API (myriad: POST /api/broadcast).
    Api,
}

#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Subscribers of the one topic.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub subscribers: u64,
    /// Messages the publisher sends.
    #[arg(short = 'k', long, default_value_t = 100)]
    pub messages: u64,
    /// Messages per second the publisher sends (0: as fast as it can).
    #[arg(long, default_value_t = 10.0)]
    pub publish_rate: f64,
    /// Paced publishing: message k goes out only once message k-N has reached 95 % of the subscribers (counted over all workers), so the publisher runs at most N messages ahead of the slowest server; 0: off (--publish-rate alone paces).
    #[arg(long, default_value_t = 0)]
    pub publish_window: u64,
    /// How the publisher publishes.
    #[arg(long, value_enum, default_value_t = PublishVia::Ws)]
    pub publish_via: PublishVia,
    /// Broadcast endpoint for --publish-via api, plain http [default: the --url's host, /api/broadcast].
    #[arg(long)]
    pub api_url: Option<String>,
    /// API key for --publish-via api (Authorization: Bearer).
    #[arg(long)]
    pub api_key: Option<String>,
    /// The topic [default: PREFIX + "fanout"].
    #[arg(long)]
    pub topic: Option<String>,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// After the last publish, wait at most this long for deliveries.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub grace: Duration,
    /// fanout: also put every subscriber in a small chat room of this many members (PREFIX + "side-" + index / size; 0: none), joined after the big topic, so broadcast and chat traffic share the run.
    #[arg(long, default_value_t = 0)]
    pub side_room_size: u64,
    /// fanout: messages per second each subscriber pushes into its side room while it waits for the broadcasts.
    #[arg(long, default_value_t = 0.1)]
    pub side_rate: f64,
}

#[derive(Args, Debug, Clone)]
pub struct ChurnArgs {
    /// Rooms the cycles join (round robin).
    #[arg(long, default_value_t = 10)]
    pub rooms: u64,
    /// Messages each cycle pushes before leaving.
    #[arg(long, default_value_t = 3)]
    pub pushes: u64,
    /// Pause between a cycle's pushes.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "100ms")]
    pub push_interval: Duration,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Cycles started when neither --rate nor --ramp is given: this many per second.
    #[arg(long, default_value_t = 50.0)]
    pub default_rate: f64,
}

#[derive(Args, Debug, Clone)]
pub struct StormArgs {
    /// Subscribers, publisher and messages (-n, -k, --publish-rate, --topic [default: chat:storm, a history namespace]).
    #[command(flatten)]
    pub fanout: FanoutArgs,
    /// Which --url's node is stopped (0-based); the publisher uses another.
    #[arg(long, default_value_t = 0)]
    pub victim: usize,
    /// PID of the victim node's process (it gets the signal).
    #[arg(long)]
    pub victim_pid: u32,
    /// How the victim is stopped: term drains it (waves), kill is a crash.
    #[arg(long, value_enum, default_value_t = StormSignal::Term)]
    pub signal: StormSignal,
    /// When the victim is stopped, after the publisher starts.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3s")]
    pub signal_after: Duration,
    /// Reconnect delays in ms, the last repeating [default: phoenix.js's: 10,50,100,150,200,250,500,1000,2000,5000].
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,50,100,150,200,250,500,1000,2000,5000"
    )]
    pub reconnect_ms: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum StormSignal {
    /// SIGTERM: the node drains.
    Term,
    /// SIGKILL: the node vanishes.
    Kill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum SlowMode {
    /// Stop reading after the join.
    Stall,
    /// Sleep --slow-delay before every read.
    Delay,
}

#[derive(Args, Debug, Clone)]
pub struct SlowArgs {
    #[command(flatten)]
    pub fanout: FanoutArgs,
    /// Share of subscribers that are slow (0..1).
    #[arg(long, default_value_t = 0.1)]
    pub slow_share: f64,
    /// How slow subscribers misbehave.
    #[arg(long, value_enum, default_value_t = SlowMode::Stall)]
    pub slow_mode: SlowMode,
    /// Pause before each read in --slow-mode delay.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "50ms")]
    pub slow_delay: Duration,
    /// SO_RCVBUF of slow subscribers' sockets (small: the server sees the back-pressure soon).
    #[arg(long, default_value_t = 4096)]
    pub slow_rcvbuf: u32,
}

#[derive(Args, Debug, Clone)]
pub struct BackendArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4800")]
    pub listen: String,
    /// Wait this long before every answer (a slow backend).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub delay: Duration,
    /// Stop after this long (bounded like every load loop) [default: run until killed].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub run_for: Option<Duration>,
}

#[derive(Args, Debug, Clone)]
pub struct BaselineArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4100")]
    pub listen: String,
    /// Per-connection outbound queue (messages); a connection whose queue is full misses the message.
    #[arg(long, default_value_t = 1024)]
    pub queue: usize,
    /// Echo each frame to its sender only instead of broadcasting.
    #[arg(long)]
    pub echo: bool,
    /// Run the naive server (a reader and a writer task per connection, the sender list cloned per broadcast) instead of the strong one.
    #[arg(long)]
    pub naive: bool,
    /// Stop after this long (bounded like every load loop) [default: run until killed].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub run_for: Option<Duration>,
}

/// Parse "a.b.c.d-a.b.c.e,x.y.z.w" into addresses.
pub fn parse_source_ips(spec: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: std::net::Ipv4Addr = a
                .trim()
                .parse()
                .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
            let b: std::net::Ipv4Addr = b
                .trim()
                .parse()
                .map_err(|_| format!("{b:?} is not an IPv4 address"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 65_536 {
                return Err(format!("range {part:?} is empty or too large"));
            }
            out.extend((a..=b).map(|x| IpAddr::V4(x.into())));
        } else {
            out.push(
                part.parse()
                    .map_err(|_| format!("{part:?} is not an IP address"))?,
            );
        }
    }
    if out.is_empty() {
        return Err("no source address given".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn source_ip_ranges() {
        let ips = parse_source_ips("127.0.0.2-127.0.0.4, ::1").unwrap();
        assert_eq!(ips.len(), 4);
        assert!(parse_source_ips("127.0.0.5-127.0.0.4").is_err());
        assert!(parse_source_ips("").is_err());
    }
}
