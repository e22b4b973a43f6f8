//! `storm`: a reconnect storm. N subscribers of one history topic spread over
//! several nodes (`--url A,B,C`) track their position (the `"offset:epoch"`
//! ref slot of each broadcast) while the parent publishes through a node
//! that stays up; the parent stops the victim node (SIGTERM: it drains in
//! waves; SIGKILL: it vanishes). Its clients reconnect to the other nodes on
//! phoenix.js's schedule (what a load balancer does once the victim fails its
//! readiness: only nodes at other URLs are tried, in turn) and rejoin with
//! `since`, so recovery replays what they missed. Every subscriber must end
//! with every message once, in order. Listing the victim's URL several
//! times in `--url` puts that share of the clients on it.
//!
//! Recorded per moved client: time from the signal until it is joined again
//! (`Stats::reconnect`), 503s met on the way (admission shedding the herd).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};

use super::{establish, Want, WorkerCtx, HEARTBEAT};
use crate::accounting::{Arrival, StreamTracker};
use crate::cli::{FanoutArgs, StormArgs};
use crate::client::{self, ClientError, Conn, Target};
use crate::payload;
use crate::recorder::Recorder;
use crate::scenario::fanout::PUBLISHER;

/// The topic when `--topic` is not given: `chat:*` keeps history by default.
pub const DEFAULT_TOPIC: &str = "chat:storm";

/// The fan-out part of the storm, its topic filled in.
pub fn fanout_args(args: &StormArgs) -> FanoutArgs {
    let mut f = args.fanout.clone();
    f.topic.get_or_insert_with(|| DEFAULT_TOPIC.to_owned());
    f
}

/// What every client task shares.
struct Shared {
    topic: String,
    messages: u64,
    targets: Vec<Target>,
    /// Where a moved client may go: the targets not at the victim's URL.
    elsewhere: Vec<usize>,
    schedule: Vec<Duration>,
    timeout: Duration,
    give_up: Instant,
    signal_at: Instant,
    rec: Arc<Recorder>,
}

pub async fn worker(args: &StormArgs, mut ctx: WorkerCtx) {
    let f = fanout_args(args);
    let topic = f.topic.clone().unwrap_or_else(|| DEFAULT_TOPIC.to_owned());
    let wants = ctx
        .share(f.subscribers)
        .into_iter()
        .map(|index| Want {
            index,
            topic: Some(topic.clone()),
            also: None,
            recv_buffer: None,
        })
        .collect();
    let mut conns = establish(&ctx, wants).await;
    ctx.rec
        .with(0, |s| s.expected += f.messages * conns.len() as u64);
    super::ready_keeping_alive(&mut ctx.control, &mut conns).await;
    let now = Instant::now();
    let shared = Arc::new(Shared {
        topic,
        messages: f.messages,
        targets: ctx.targets.clone(),
        elsewhere: elsewhere(&ctx.targets, args.victim),
        schedule: args
            .reconnect_ms
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect(),
        timeout: ctx.common.connect_timeout,
        give_up: now + ctx.common.duration + f.grace,
        signal_at: now + args.signal_after,
        rec: Arc::clone(&ctx.rec),
    });
    let mut set = JoinSet::new();
    for (ordinal, (index, conn)) in conns.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let home = (index % shared.targets.len() as u64) as usize;
        let source = ctx.source(ordinal as u64);
        set.spawn(async move { client(conn, index, home, source, &shared).await });
    }
    while set.join_next().await.is_some() {}
}

/// One subscriber's life: read, and when its node goes, come back elsewhere.
async fn client(
    mut conn: Conn,
    index: u64,
    home: usize,
    source: Option<std::net::IpAddr>,
    sh: &Shared,
) {
    let mut stream = Stream {
        tracker: StreamTracker::new(),
        position: None,
        refs: 0,
    };
    let mut moved = false;
    loop {
        match stream.read(&mut conn, index, sh).await {
            Read::Done | Read::TimeUp => break,
            Read::Lost => {}
        }
        sh.rec.disconnected();
        if !moved {
            moved = true;
            sh.rec.with(index, |s| s.moved += 1);
        }
        match stream.come_back(index, home, source, sh).await {
            Some(c) => conn = c,
            None => {
                sh.rec
                    .error(index, String::from("never back on another node"));
                finish(&stream, index, sh);
                return;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.ws.close(None)).await;
    sh.rec.disconnected();
    finish(&stream, index, sh);
}

fn finish(stream: &Stream, index: u64, sh: &Shared) {
    let k = sh.messages;
    sh.rec.with(index, |s| {
        s.lost += stream.tracker.lost(k);
        s.duplicated += stream.tracker.duplicated;
        s.reordered += stream.tracker.reordered;
    });
}

enum Read {
    /// Every message arrived.
    Done,
    /// The run's time is up.
    TimeUp,
    /// The connection went away (closed, dropped, or the channel errored).
    Lost,
}

/// One subscriber's view of the topic: what arrived and where it is.
struct Stream {
    tracker: StreamTracker,
    /// The last broadcast's `(offset, epoch)`.
    position: Option<(u64, String)>,
    refs: u64,
}

/// One frame, as far as a storm client cares.
enum Event {
    Broadcast,
    Reply {
        r: Option<String>,
        ok: bool,
    },
    /// The channel crashed or was closed by the server: rejoin.
    ChannelGone,
    Other,
}

impl Stream {
    fn next_ref(&mut self) -> String {
        self.refs += 1;
        format!("s{}", self.refs)
    }

    /// Classify a text frame; a broadcast is counted and moves the position.
    fn frame(&mut self, text: &str, index: u64, rec: &Recorder) -> Event {
        #[derive(Deserialize)]
        struct Frame<'a>(
            serde::de::IgnoredAny,
            Option<&'a str>,
            serde::de::IgnoredAny,
            &'a str,
            #[serde(borrow)] &'a RawValue,
        );
        let Ok(Frame(_, r, _, event, payload)) = serde_json::from_str::<Frame<'_>>(text) else {
            return Event::Other;
        };
        match event {
            "phx_reply" => Event::Reply {
                r: r.map(str::to_owned),
                ok: payload.get().contains("\"status\":\"ok\""),
            },
            "phx_error" | "phx_close" => Event::ChannelGone,
            e if e.starts_with("phx_") || e.starts_with("presence_") => Event::Other,
            _ => {
                let Some(st) = payload::decode(payload.get()).filter(|s| s.src == PUBLISHER) else {
                    return Event::Other;
                };
                if self.tracker.observe(st.seq) != Arrival::Duplicate {
                    rec.delivered(index, st.ts, Some(st.seq), true);
                }
                if let Some((o, e)) = r.and_then(|slot| slot.split_once(':')) {
                    if let Ok(o) = o.parse() {
                        self.position = Some((o, e.to_owned()));
                    }
                }
                Event::Broadcast
            }
        }
    }

    async fn read(&mut self, conn: &mut Conn, index: u64, sh: &Shared) -> Read {
        let mut next_beat = Instant::now() + HEARTBEAT;
        loop {
            if self.tracker.complete(sh.messages) {
                return Read::Done;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(sh.give_up) => return Read::TimeUp,
                _ = tokio::time::sleep_until(next_beat) => {
                    next_beat += HEARTBEAT;
                    if conn.heartbeat().await.is_err() {
                        return Read::Lost;
                    }
                }
                msg = conn.ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        if let Event::ChannelGone = self.frame(t.as_str(), index, &sh.rec) {
                            return Read::Lost;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        if let Some(f) = frame {
                            sh.rec.close_code(index, u16::from(f.code));
                        }
                        return Read::Lost;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return Read::Lost,
                },
            }
        }
    }

    /// Reconnect on the schedule to the nodes at other URLs than the
    /// victim's, in turn (starting from one spread by the client's index),
    /// and rejoin from the position; None when the run's time ran out first.
    async fn come_back(
        &mut self,
        index: u64,
        home: usize,
        source: Option<std::net::IpAddr>,
        sh: &Shared,
    ) -> Option<Conn> {
        let n = sh.elsewhere.len().max(1);
        let last = sh.schedule.len().saturating_sub(1);
        for attempt in 0usize.. {
            let delay = sh
                .schedule
                .get(attempt.min(last))
                .copied()
                .unwrap_or_default();
            if Instant::now() + delay >= sh.give_up {
                return None;
            }
            tokio::time::sleep(delay).await;
            let at = sh
                .elsewhere
                .get((index as usize + attempt) % n)
                .copied()
                .unwrap_or(home);
            let mut conn = match client::connect(&sh.targets[at], source, None).await {
                Ok((conn, took)) => {
                    sh.rec.connected(index, took);
                    conn
                }
                Err(e) => {
                    if is_503(&e) {
                        sh.rec.with(index, |s| s.refused_503 += 1);
                    }
                    continue;
                }
            };
            if self.rejoin(&mut conn, index, sh).await {
                let back = Instant::now().saturating_duration_since(sh.signal_at);
                sh.rec.with(index, |s| {
                    crate::stats::record(&mut s.reconnect, back.as_micros() as u64);
                });
                return Some(conn);
            }
            sh.rec.disconnected();
        }
        None
    }

    /// Join with `since` (recovery); broadcasts that arrive before the reply
    /// (the replayed ones) are counted like any other.
    async fn rejoin(&mut self, conn: &mut Conn, index: u64, sh: &Shared) -> bool {
        let r = self.next_ref();
        let params = match &self.position {
            Some((offset, epoch)) => {
                serde_json::json!({"since": {"offset": offset, "epoch": epoch}})
            }
            // Nothing seen yet: ask for what is stored (nothing is lost then either).
            None => serde_json::json!({"history": true}),
        };
        let frame = serde_json::json!([r, r, sh.topic, "phx_join", params]).to_string();
        if conn.ws.send(Message::text(frame)).await.is_err() {
            return false;
        }
        let wait = async {
            loop {
                match conn.ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        if let Event::Reply { r: got, ok } = self.frame(t.as_str(), index, &sh.rec)
                        {
                            if got.as_deref() == Some(r.as_str()) {
                                return ok;
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return false,
                    Some(Ok(_)) => {}
                }
            }
        };
        tokio::time::timeout(sh.timeout, wait)
            .await
            .unwrap_or(false)
    }
}

/// The targets at another URL than the victim's (all of them when every
/// target is the victim's: a misconfiguration the run then shows as failures).
fn elsewhere(targets: &[Target], victim: usize) -> Vec<usize> {
    let Some(v) = targets.get(victim) else {
        return (0..targets.len()).collect();
    };
    let out: Vec<usize> = (0..targets.len())
        .filter(|&i| targets[i].url != v.url)
        .collect();
    if out.is_empty() {
        (0..targets.len()).collect()
    } else {
        out
    }
}

/// A handshake the server refused with 503 (admission shedding).
fn is_503(e: &ClientError) -> bool {
    matches!(e, ClientError::Handshake(tungstenite::Error::Http(resp)) if resp.status().as_u16() == 503)
}
