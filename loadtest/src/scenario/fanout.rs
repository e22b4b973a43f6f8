//! `fanout` (and `slow`, which is fan-out with misbehaving subscribers): N
//! subscribers on one topic; the parent process publishes K messages (a client
//! push or the HTTP API). Every healthy subscriber must get every message once
//! and in order; the report gives deliveries/s and, per message, publish to
//! last delivery. Slow subscribers (`slow`) stall or dawdle on purpose: what
//! they miss is expected loss, and the server disconnecting them is the point.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{establish, establish_http, Want, WorkerCtx, HEARTBEAT};
use crate::accounting::{Arrival, StreamTracker};
use crate::cli::{Common, FanoutArgs, PublishVia, SlowArgs, SlowMode, Transport};
use crate::client::{self, Conn, Inbound, Protocol, Target};
use crate::payload::{self, now_us, Stamp};
use crate::recorder::Recorder;

/// The publisher's stream id (subscribers are 1..).
pub const PUBLISHER: u64 = 0;

pub fn topic(common: &Common, args: &FanoutArgs) -> String {
    args.topic
        .clone()
        .unwrap_or_else(|| format!("{}fanout", common.topic_prefix))
}

/// Is subscriber `i` one of the slow ones? Spreads `share` evenly over 0..n.
pub fn is_slow(i: u64, share: f64) -> bool {
    let share = share.clamp(0.0, 1.0);
    ((i + 1) as f64 * share).floor() > (i as f64 * share).floor()
}

/// Healthy subscribers still waiting in this worker; stalled readers drain
/// once they are done.
struct Progress {
    healthy_left: AtomicU64,
    done: Notify,
}

pub async fn worker(args: &FanoutArgs, slow: Option<&SlowArgs>, mut ctx: WorkerCtx) {
    let topic = topic(&ctx.common, args);
    if ctx.common.transport != Transport::Websocket {
        return http_worker(args, ctx, &topic).await;
    }
    let share = slow.map_or(0.0, |s| s.slow_share);
    let wants = ctx
        .share(args.subscribers)
        .into_iter()
        .map(|index| Want {
            index,
            topic: Some(topic.clone()),
            also: side_room(&ctx, args, index),
            recv_buffer: slow
                .filter(|_| is_slow(index, share))
                .map(|s| s.slow_rcvbuf),
        })
        .collect();
    let mut conns = establish(&ctx, wants).await;
    let healthy = conns.iter().filter(|(i, _)| !is_slow(*i, share)).count() as u64;
    let progress = Arc::new(Progress {
        healthy_left: AtomicU64::new(healthy),
        done: Notify::new(),
    });
    ctx.rec.with(0, |s| s.expected += args.messages * healthy);
    super::ready_keeping_alive(&mut ctx.control, &mut conns).await;
    let give_up = Instant::now() + ctx.common.duration + args.grace;
    let k = args.messages;
    let mut set = JoinSet::new();
    for (index, conn) in conns {
        let side = side_room(&ctx, args, index).map(|topic| Side {
            topic,
            every: Duration::from_secs_f64(1.0 / args.side_rate),
            size: args.size,
        });
        let rec = Arc::clone(&ctx.rec);
        let progress = Arc::clone(&progress);
        let slow_mode = slow
            .filter(|_| is_slow(index, share))
            .map(|s| (s.slow_mode, s.slow_delay));
        set.spawn(async move {
            match slow_mode {
                None => {
                    subscriber(conn, index, k, give_up, side, &rec).await;
                    if progress.healthy_left.fetch_sub(1, Ordering::AcqRel) == 1 {
                        progress.done.notify_waiters();
                    }
                }
                Some((mode, delay)) => {
                    slow_subscriber(conn, index, k, give_up, mode, delay, &rec, &progress).await
                }
            }
            rec.disconnected();
        });
    }
    while set.join_next().await.is_some() {}
}

/// `--transport sse|longpoll`: every subscriber of this worker reads over HTTP.
async fn http_worker(args: &FanoutArgs, mut ctx: WorkerCtx, topic: &str) {
    let wants = ctx
        .share(args.subscribers)
        .into_iter()
        .map(|index| (index, topic.to_owned()))
        .collect();
    let readers = establish_http(&ctx, wants).await;
    ctx.rec
        .with(0, |s| s.expected += args.messages * readers.len() as u64);
    ctx.control.ready_and_wait().await;
    let give_up = Instant::now() + ctx.common.duration + args.grace;
    let k = args.messages;
    let mut set = JoinSet::new();
    for (index, mut reader) in readers {
        let rec = Arc::clone(&ctx.rec);
        set.spawn(async move {
            let mut tracker = StreamTracker::new();
            while !tracker.complete(k) {
                let got = tokio::time::timeout_at(give_up, reader.next_payload()).await;
                match got {
                    Err(_) => break,
                    Ok(Ok(Some(text))) => {
                        let Some(st) = payload::decode(&text).filter(|s| s.src == PUBLISHER) else {
                            continue;
                        };
                        if tracker.observe(st.seq) != Arrival::Duplicate {
                            rec.delivered(index, st.ts, Some(st.seq), true);
                        }
                    }
                    Ok(Ok(None)) => {
                        rec.error(index, String::from("server ended the stream"));
                        break;
                    }
                    Ok(Err(e)) => {
                        rec.error(index, e);
                        break;
                    }
                }
            }
            rec.with(index, |s| {
                s.lost += tracker.lost(k);
                s.duplicated += tracker.duplicated;
                s.reordered += tracker.reordered;
            });
            rec.disconnected();
        });
    }
    while set.join_next().await.is_some() {}
}

/// `--side-room-size`: the small room subscriber `index` also chats in.
fn side_room(ctx: &WorkerCtx, args: &FanoutArgs, index: u64) -> Option<String> {
    (args.side_room_size > 0).then(|| {
        format!(
            "{}side-{}",
            ctx.common.topic_prefix,
            index / args.side_room_size
        )
    })
}

/// A subscriber's chat in its side room: where and how often it pushes.
struct Side {
    topic: String,
    every: Duration,
    size: usize,
}

/// A healthy subscriber: read until all K arrived or time is up, chatting in
/// its side room meanwhile when it has one.
async fn subscriber(
    mut conn: Conn,
    index: u64,
    k: u64,
    give_up: Instant,
    side: Option<Side>,
    rec: &Recorder,
) {
    let mut tracker = StreamTracker::new();
    let mut next_beat = Instant::now() + HEARTBEAT;
    // Members start at spread offsets so a room's pushes do not arrive in step.
    let mut next_side = side
        .as_ref()
        .map(|s| Instant::now() + s.every.mul_f64((index % 97) as f64 / 97.0));
    let mut side_seq = 0;
    let mut open = true;
    while !tracker.complete(k) {
        tokio::select! {
            _ = tokio::time::sleep_until(give_up) => break,
            _ = tokio::time::sleep_until(next_beat) => {
                next_beat += HEARTBEAT;
                let _ = conn.heartbeat().await;
            }
            _ = sleep_until_some(next_side), if next_side.is_some() => {
                if let (Some(s), Some(at)) = (&side, next_side.as_mut()) {
                    *at += s.every;
                    side_seq += 1;
                    let body = payload::encode(Stamp { src: index + 1, seq: side_seq, ts: now_us() }, s.size);
                    if conn.push(&s.topic, "msg", &body).await.is_ok() {
                        rec.side_sent(index);
                    }
                }
            }
            got = conn.recv() => match got {
                Ok(Inbound::Message(text)) => {
                    let Some(st) = payload::decode(&text) else { continue };
                    if st.src != PUBLISHER {
                        rec.side_delivered(index, st.ts);
                    } else if tracker.observe(st.seq) != Arrival::Duplicate {
                        rec.delivered(index, st.ts, Some(st.seq), true);
                    }
                }
                Ok(Inbound::Closed(code)) => {
                    if let Some(c) = code { rec.close_code(index, c); }
                    rec.error(index, format!("server closed {}", code.map_or("(no code)".into(), |c| c.to_string())));
                    open = false;
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    rec.error(index, e.kind());
                    open = false;
                    break;
                }
            }
        }
    }
    rec.with(index, |s| {
        s.lost += tracker.lost(k);
        s.duplicated += tracker.duplicated;
        s.reordered += tracker.reordered;
    });
    if open {
        conn.close().await;
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A slow subscriber: stalls until the healthy ones are done (or dawdles on
/// every read), then drains whatever the server still lets it have.
#[allow(clippy::too_many_arguments)]
async fn slow_subscriber(
    mut conn: Conn,
    index: u64,
    k: u64,
    give_up: Instant,
    mode: SlowMode,
    delay: Duration,
    rec: &Recorder,
    progress: &Progress,
) {
    if mode == SlowMode::Stall {
        let done = progress.done.notified();
        if progress.healthy_left.load(Ordering::Acquire) > 0 {
            tokio::select! {
                _ = done => {}
                _ = tokio::time::sleep_until(give_up) => {}
            }
        }
    }
    let mut tracker = StreamTracker::new();
    let mut closed_by_server = false;
    // Drain: stop after a quiet second, at the deadline, or on close.
    let quiet = Duration::from_secs(1);
    while !tracker.complete(k) {
        if mode == SlowMode::Delay {
            tokio::time::sleep(delay).await;
        }
        let deadline = (Instant::now() + quiet).min(give_up + quiet);
        match tokio::time::timeout_at(deadline, conn.recv()).await {
            Err(_) => break,
            Ok(Ok(Inbound::Message(text))) => {
                // Slow readers' deliveries stay out of the latency and rate
                // figures: they measure the healthy subscribers.
                if let Some(st) = payload::decode(&text).filter(|s| s.src == PUBLISHER) {
                    tracker.observe(st.seq);
                }
            }
            Ok(Ok(Inbound::Closed(code))) => {
                if let Some(c) = code {
                    rec.close_code(index, c);
                }
                closed_by_server = true;
                break;
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                closed_by_server = true;
                break;
            }
        }
    }
    let lost = tracker.lost(k);
    rec.with(index, |s| {
        s.expected_loss += lost;
        s.duplicated += tracker.duplicated;
        s.reordered += tracker.reordered;
        if closed_by_server {
            s.slow_disconnected += 1;
        }
    });
    if !closed_by_server {
        conn.close().await;
    }
}

/// The publisher (runs in the parent). `ready` is awaited after the publisher
/// connected (and joined) and before the first publish, so the workers can be
/// started at the right moment.
pub struct Publisher {
    via: Via,
    topic: String,
}

enum Via {
    Ws(Box<Conn>),
    Api {
        http: reqwest::Client,
        url: String,
        key: Option<String>,
    },
}

impl Publisher {
    pub async fn connect(
        common: &Common,
        args: &FanoutArgs,
        target: &Target,
    ) -> anyhow::Result<Publisher> {
        let topic = topic(common, args);
        let via = match args.publish_via {
            PublishVia::Ws => {
                let (mut conn, _) = client::connect(target, None, None)
                    .await
                    .context("publisher connect")?;
                conn.join(&topic, common.connect_timeout)
                    .await
                    .context("publisher join")?;
                Via::Ws(Box::new(conn))
            }
            PublishVia::Api => {
                let url = match &args.api_url {
                    Some(u) => u.clone(),
                    None => {
                        let mut u = target.url.clone();
                        let scheme = if u.scheme() == "wss" { "https" } else { "http" };
                        u.set_scheme(scheme).map_err(|_| {
                            anyhow::anyhow!("cannot derive the API URL from {}", target.url)
                        })?;
                        u.set_path("/api/broadcast");
                        u.set_query(None);
                        u.to_string()
                    }
                };
                if url.starts_with("https:") {
                    anyhow::bail!(
                        "--publish-via api: the HTTP publisher speaks plain http only; \
                         give --api-url http://... (a node's own port behind the TLS terminator)"
                    );
                }
                Via::Api {
                    http: reqwest::Client::new(),
                    url,
                    key: args.api_key.clone(),
                }
            }
        };
        Ok(Publisher { via, topic })
    }

    /// Publish K messages at the configured rate; records sends and errors
    /// into `rec` under the publisher's key.
    /// `delivered` reads the deliveries counted so far over every worker
    /// (`--publish-window` paces on it).
    pub async fn run(
        self,
        args: &FanoutArgs,
        rec: &Recorder,
        give_up: Instant,
        delivered: &(dyn Fn() -> u64 + Sync),
    ) {
        let window = Window {
            ahead: args.publish_window,
            subscribers: args.subscribers,
            delivered,
        };
        let interval =
            (args.publish_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.publish_rate));
        let start = Instant::now();
        let start_us = now_us();
        match self.via {
            Via::Ws(conn) => {
                let protocol = conn.protocol;
                let (mut sink, mut stream) = conn.ws.split();
                // Drain the publisher's own copies and push replies so the
                // server never sees it as a slow consumer.
                let refused = Arc::new(AtomicU64::new(0));
                let replies = Arc::new(AtomicU64::new(0));
                let (refused_r, replies_r) = (Arc::clone(&refused), Arc::clone(&replies));
                let drain = tokio::spawn(async move {
                    while let Some(Ok(msg)) = stream.next().await {
                        if let Message::Text(t) = msg {
                            match protocol {
                                Protocol::Phoenix if t.contains("\"phx_reply\"") => {
                                    replies_r.fetch_add(1, Ordering::Release);
                                    if !t.contains("\"status\":\"ok\"") {
                                        refused_r.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                                // A raw broadcast server sends the publisher its
                                // own frames too: each is its "reply".
                                Protocol::Raw
                                    if payload::decode(&t).is_some_and(|s| s.src == PUBLISHER) =>
                                {
                                    replies_r.fetch_add(1, Ordering::Release);
                                }
                                _ => {}
                            }
                        }
                    }
                });
                for seq in 1..=args.messages {
                    let Some(body) =
                        next_message(seq, start, interval, give_up, args.size, rec, &window).await
                    else {
                        break;
                    };
                    let text = match protocol {
                        Protocol::Raw => body,
                        Protocol::Phoenix => format!(
                            r#"[null,"{seq}",{},"msg",{body}]"#,
                            serde_json::Value::String(self.topic.clone())
                        ),
                    };
                    if let Err(e) = sink.send(Message::text(text)).await {
                        rec.error(PUBLISHER, format!("publish: {e}"));
                        break;
                    }
                    rec.sent(PUBLISHER, 1);
                }
                // Closing while pushes are still unread would make the server
                // drop them with the connection (unread data at close is a
                // reset): wait for every reply (the join's included), or for
                // a raw broadcast server's copies of our own frames.
                let sent = rec.with(PUBLISHER, |s| s.sent);
                let wait_until = Instant::now() + Duration::from_secs(10);
                while replies.load(Ordering::Acquire) < sent && Instant::now() < wait_until {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let _ = tokio::time::timeout(Duration::from_secs(2), sink.close()).await;
                drain.abort();
                let refused = refused.load(Ordering::Relaxed);
                if refused > 0 {
                    rec.with(PUBLISHER, |s| {
                        *s.errors
                            .entry("publish refused by server".into())
                            .or_default() += refused
                    });
                }
            }
            Via::Api { http, url, key } => {
                for seq in 1..=args.messages {
                    let Some(body) =
                        next_message(seq, start, interval, give_up, args.size, rec, &window).await
                    else {
                        break;
                    };
                    let json = format!(
                        r#"{{"topic":{},"event":"msg","payload":{body}}}"#,
                        serde_json::Value::String(self.topic.clone())
                    );
                    let mut req = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(json);
                    if let Some(k) = &key {
                        req = req.bearer_auth(k);
                    }
                    match req.send().await {
                        Ok(resp) if resp.status().is_success() => rec.sent(PUBLISHER, 1),
                        Ok(resp) => {
                            rec.error(PUBLISHER, format!("api: http {}", resp.status().as_u16()))
                        }
                        Err(e) => rec.error(
                            PUBLISHER,
                            format!(
                                "api: {}",
                                if e.is_timeout() {
                                    "timeout"
                                } else {
                                    "request failed"
                                }
                            ),
                        ),
                    }
                }
            }
        }
        rec.with(PUBLISHER, |s| {
            s.phase_start_us = start_us;
        });
    }
}

/// Wait for message `seq`'s turn (when paced) and stamp it; None once the
/// run is out of time (counted).
/// `--publish-window`: how far the publisher may run ahead of the deliveries.
struct Window<'a> {
    ahead: u64,
    subscribers: u64,
    delivered: &'a (dyn Fn() -> u64 + Sync),
}

impl Window<'_> {
    /// Wait until message `seq - ahead` has (about) reached 95 % of the
    /// subscribers: the deliveries counted so far cover that many messages.
    async fn wait_for(&self, seq: u64, give_up: Instant) {
        if self.ahead == 0 || seq <= self.ahead {
            return;
        }
        let need = (seq - self.ahead) * self.subscribers * 95 / 100;
        while (self.delivered)() < need && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn next_message(
    seq: u64,
    start: Instant,
    interval: Option<Duration>,
    give_up: Instant,
    size: usize,
    rec: &Recorder,
    window: &Window<'_>,
) -> Option<String> {
    if let Some(iv) = interval {
        tokio::time::sleep_until(start + iv * (seq - 1) as u32).await;
    }
    window.wait_for(seq, give_up).await;
    if Instant::now() >= give_up {
        rec.error(PUBLISHER, "publisher ran out of time".into());
        return None;
    }
    Some(payload::encode(
        Stamp {
            src: PUBLISHER,
            seq,
            ts: now_us(),
        },
        size,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_share_is_spread_evenly() {
        let slow = (0..1000).filter(|&i| is_slow(i, 0.1)).count();
        assert_eq!(slow, 100);
        assert_eq!((0..10).filter(|&i| is_slow(i, 0.0)).count(), 0);
        assert_eq!((0..10).filter(|&i| is_slow(i, 1.0)).count(), 10);
    }
}
