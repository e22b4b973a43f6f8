//! One process, a million Phoenix sessions over in-memory pipes.
//!
//! `cargo run --release --example million -- --sessions 1000000`
//!
//! Every session is the real session task (`myriad::server::spawn_stream_session`,
//! the same code as behind a TCP socket) on one end of a `tokio::io::duplex`
//! pipe; the other end is a bare client that writes two `phx_join` frames
//! (`room:<i % topics>` and `room:all`) and reads the replies. Reports:
//! RSS per idle session, time to establish, the time one broadcast to
//! `room:all` takes to reach every mailbox, and sustained deliveries/s (every
//! byte read back by the clients).
//!
//! `--mode pipes` runs the same traffic over the same pipes with no sessions:
//! the baseline to subtract (pipes stand in for kernel sockets, which the
//! per-session target excludes).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use myriad::config::Config;
use myriad::pubsub::Publication;
use myriad::server::{spawn_stream_session, AppState};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Sessions,
    Pipes,
}

#[derive(Parser, Debug)]
struct Args {
    /// Sessions to establish.
    #[arg(long, default_value_t = 1_000_000)]
    sessions: usize,
    /// Small topics (each session joins one of them, and room:all).
    #[arg(long, default_value_t = 1000)]
    topics: usize,
    /// Broadcasts to room:all in the sustained phase.
    #[arg(long, default_value_t = 10)]
    broadcasts: usize,
    /// Pipe capacity per direction, bytes.
    #[arg(long, default_value_t = 4096)]
    pipe: usize,
    /// The sessions' WebSocket read buffer (myriad's read_buffer_size, same default).
    #[arg(long, default_value_t = Config::default().read_buffer_size)]
    read_buffer_size: usize,
    /// Park sessions quiet for this long (myriad's park_after, same default; 0s never).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    park_after: Duration,
    #[arg(long, value_enum, default_value_t = Mode::Sessions)]
    mode: Mode,
    /// Sessions set up concurrently.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

/// A masked client text frame (mask key 0: the payload goes as is).
fn client_frame(text: &str) -> Vec<u8> {
    let len = text.len();
    let mut f = vec![0x81];
    if len < 126 {
        f.push(0x80 | len as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(text.as_bytes());
    f
}

/// A server text frame (unmasked).
fn server_frame(text: &str) -> Vec<u8> {
    let len = text.len();
    let mut f = vec![0x81];
    if len < 126 {
        f.push(len as u8);
    } else {
        f.push(126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    }
    f.extend_from_slice(text.as_bytes());
    f
}

/// Read one server frame; returns its payload length.
async fn read_frame(c: &mut DuplexStream) -> std::io::Result<usize> {
    let mut h = [0u8; 2];
    c.read_exact(&mut h).await?;
    let mut len = (h[1] & 0x7f) as usize;
    if len == 126 {
        let mut ext = [0u8; 2];
        c.read_exact(&mut ext).await?;
        len = u16::from_be_bytes(ext) as usize;
    }
    let mut body = vec![0u8; len];
    c.read_exact(&mut body).await?;
    Ok(len)
}

/// The two joins every session makes: its small topic and `room:all`.
async fn send_joins(client: &mut DuplexStream, topic: &str) -> std::io::Result<()> {
    client
        .write_all(&client_frame(&join_frame(1, topic)))
        .await?;
    client
        .write_all(&client_frame(&join_frame(2, "room:all")))
        .await
}

fn join_frame(r: usize, topic: &str) -> String {
    format!(r#"["{r}","{r}","{topic}","phx_join",{{}}]"#)
}

fn reply_frame(r: usize, topic: &str) -> String {
    format!(r#"["{r}","{r}","{topic}","phx_reply",{{"status":"ok","response":{{}}}}]"#)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config {
        read_buffer_size: args.read_buffer_size,
        park_after: args.park_after,
        idle_timeout: Duration::ZERO,
        max_connections: usize::MAX >> 1,
        ..Config::default()
    };
    config.validate()?;
    let state = AppState::new(Arc::new(config))?;
    let peer = SocketAddr::from(([127, 0, 0, 1], 1));
    let rss_base = rss_kib();
    println!(
        "mode {:?}, {} sessions, {} topics + room:all; RSS at start {} KiB",
        args.mode, args.sessions, args.topics, rss_base
    );

    let started = Instant::now();
    let mut clients: Vec<DuplexStream> = Vec::with_capacity(args.sessions);
    let mut i = 0;
    while i < args.sessions {
        let n = args.batch.min(args.sessions - i);
        let mut set = tokio::task::JoinSet::new();
        for k in i..i + n {
            let (mut client, server) = tokio::io::duplex(args.pipe);
            let topic = format!("room:{}", k % args.topics);
            match args.mode {
                Mode::Sessions => {
                    spawn_stream_session(&state, server, peer);
                    set.spawn(async move {
                        send_joins(&mut client, &topic).await?;
                        read_frame(&mut client).await?;
                        read_frame(&mut client).await?;
                        Ok::<_, std::io::Error>((k, client, None))
                    });
                }
                Mode::Pipes => {
                    set.spawn(async move {
                        let mut server = server;
                        send_joins(&mut client, &topic).await?;
                        let mut sink = vec![0u8; 128];
                        let _ = server.read(&mut sink).await?;
                        server
                            .write_all(&server_frame(&reply_frame(1, &topic)))
                            .await?;
                        server
                            .write_all(&server_frame(&reply_frame(2, "room:all")))
                            .await?;
                        read_frame(&mut client).await?;
                        read_frame(&mut client).await?;
                        Ok::<_, std::io::Error>((k, client, Some(server)))
                    });
                }
            }
        }
        let mut batch: Vec<(usize, DuplexStream, Option<DuplexStream>)> = Vec::with_capacity(n);
        while let Some(r) = set.join_next().await {
            batch.push(r.context("setup task")?.context("pipe setup")?);
        }
        batch.sort_by_key(|b| b.0);
        for (_, c, server) in batch {
            clients.push(c);
            // Pipes mode keeps the server ends alive as the sessions would.
            std::mem::forget(server);
        }
        i += n;
    }
    let establish = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib();
    let per = (rss_idle.saturating_sub(rss_base)) as f64 / args.sessions as f64;
    println!(
        "established {} in {:.2} s ({:.0}/s); RSS {} KiB → {:.2} KiB per {}",
        args.sessions,
        establish.as_secs_f64(),
        args.sessions as f64 / establish.as_secs_f64(),
        rss_idle,
        per,
        if args.mode == Mode::Sessions {
            "idle session (incl. its pipe)"
        } else {
            "pipe pair"
        }
    );
    if args.mode == Mode::Pipes {
        return Ok(());
    }

    // One broadcast to the million-member topic: time until it sits in every mailbox.
    let route = state
        .node
        .route("room:all")
        .context("the default namespaces route room:*")?
        .namespace
        .clone();
    let payload = r#"{"body":"hello, everyone"}"#;
    // Published from a runtime task, as a session or the HTTP API does (wake-ups
    // then go to the worker's local queue, not the shared injection queue).
    let st = Arc::clone(&state);
    let ns = route.clone();
    let (published, fanout) = tokio::spawn(async move {
        let t = Instant::now();
        let published = st.node.publish(Publication {
            namespace: &ns,
            topic: "room:all",
            event: "msg",
            payload,
            exclude: None,
        });
        (published, t.elapsed())
    })
    .await?;
    println!(
        "one broadcast to room:all: {} mailboxes in {:.1} ms ({:.1} M deliveries/s into mailboxes)",
        published.fanout.delivered,
        fanout.as_secs_f64() * 1e3,
        published.fanout.delivered as f64 / fanout.as_secs_f64() / 1e6
    );

    // Sustained: clients read everything; B more broadcasts follow.
    let frame_len = server_frame(
        myriad::protocol::encode::broadcast("room:all", "msg", payload).as_str(),
    )
    .len() as u64;
    let read = Arc::new(AtomicU64::new(0));
    for mut c in clients.drain(..) {
        let read = Arc::clone(&read);
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            while let Ok(n) = c.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                read.fetch_add(n as u64, Ordering::Relaxed);
            }
        });
    }
    let expected = frame_len * (args.broadcasts as u64 + 1) * published.fanout.delivered as u64;
    let t = Instant::now();
    let mut publish_time = Duration::ZERO;
    for _ in 0..args.broadcasts {
        let st = Arc::clone(&state);
        let ns = route.clone();
        publish_time += tokio::spawn(async move {
            let p = Instant::now();
            st.node.publish(Publication {
                namespace: &ns,
                topic: "room:all",
                event: "msg",
                payload,
                exclude: None,
            });
            p.elapsed()
        })
        .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while read.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = t.elapsed();
    let got = read.load(Ordering::Relaxed);
    let deliveries = got / frame_len;
    println!(
        "sustained: {} broadcasts to room:all, {} deliveries read by clients in {:.2} s = {:.2} M deliveries/s (publish calls {:.0} ms of it){}",
        args.broadcasts,
        deliveries,
        took.as_secs_f64(),
        deliveries as f64 / took.as_secs_f64() / 1e6,
        publish_time.as_secs_f64() * 1e3,
        if got < expected { " — INCOMPLETE" } else { "" }
    );
    // Small topics: one message to each (topics x members deliveries).
    let before = read.load(Ordering::Relaxed);
    let t = Instant::now();
    let mut per_topic_frames = 0u64;
    for k in 0..args.topics {
        let topic = format!("room:{k}");
        let p = state.node.publish(Publication {
            namespace: &route,
            topic: &topic,
            event: "msg",
            payload,
            exclude: None,
        });
        let len = server_frame(myriad::protocol::encode::broadcast(&topic, "msg", payload).as_str())
            .len() as u64;
        per_topic_frames += len * p.fanout.delivered as u64;
    }
    while read.load(Ordering::Relaxed) - before < per_topic_frames && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = t.elapsed();
    println!(
        "one message to each of {} topics ({} members each): all read in {:.2} s",
        args.topics,
        args.sessions / args.topics.max(1),
        took.as_secs_f64()
    );
    println!("peak RSS {} KiB", rss_kib());
    Ok(())
}
