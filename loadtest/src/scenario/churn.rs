//! `churn`: cycles started at --rate (or --ramp) for --duration; each cycle
//! connects, joins a room, pushes a few messages, waits for its own messages
//! to come back (the room echoes to the sender), leaves and closes. Loss is a
//! cycle's own message that never came back.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::WorkerCtx;
use crate::accounting::{Arrival, StreamTracker};
use crate::cli::ChurnArgs;
use crate::client::{self, Inbound};
use crate::payload::{self, now_us, Stamp};
use crate::ramp::Schedule;

/// How long a cycle waits for its own messages after its last push.
const ECHO_WAIT: Duration = Duration::from_secs(5);

pub async fn worker(args: &ChurnArgs, mut ctx: WorkerCtx) {
    ctx.control.ready_and_wait().await;
    let schedule = match ctx.schedule() {
        Schedule::Unpaced => Schedule::Rate(args.default_rate),
        s => s,
    };
    let start = Instant::now();
    let start_us = now_us();
    let stop_starting = start + ctx.common.duration;
    let permits = Arc::new(Semaphore::new(ctx.common.concurrency.max(1)));
    let mut set = JoinSet::new();
    let mut i = ctx.index;
    loop {
        let due = start + schedule.due(i).min(Duration::from_secs(86_400));
        if due >= stop_starting {
            break;
        }
        tokio::time::sleep_until(due).await;
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let rec = Arc::clone(&ctx.rec);
        let target = ctx.target(i).clone();
        let source = ctx.source(i / ctx.count);
        let topic = ctx.topic(i % args.rooms.max(1));
        let timeout = ctx.common.connect_timeout;
        let args = args.clone();
        let index = i;
        set.spawn(async move {
            let _permit = permit;
            let mut conn = match client::connect(&target, source, None).await {
                Ok((conn, took)) => {
                    rec.connected(index, took);
                    conn
                }
                Err(e) => {
                    rec.connect_error(index, e.kind());
                    return;
                }
            };
            match conn.join(&topic, timeout).await {
                Ok(took) => rec.joined(index, took),
                Err(e) => {
                    rec.error(index, format!("join: {}", e.kind()));
                    conn.close().await;
                    rec.disconnected();
                    return;
                }
            }
            let src = index + 1;
            let mut tracker = StreamTracker::new();
            let mut sent = 0;
            let mut open = true;
            'pushes: for seq in 1..=args.pushes {
                let body = payload::encode(
                    Stamp {
                        src,
                        seq,
                        ts: now_us(),
                    },
                    args.size,
                );
                if let Err(e) = conn.push(&topic, "msg", &body).await {
                    rec.error(index, format!("push: {}", e.kind()));
                    open = false;
                    break;
                }
                sent += 1;
                rec.sent(index, 1);
                let next = Instant::now() + args.push_interval;
                // Read what arrives until the next push is due.
                while Instant::now() < next {
                    match tokio::time::timeout_at(next, conn.recv()).await {
                        Err(_) => break,
                        Ok(got) => {
                            if !absorb(got, src, &mut tracker, &rec, index) {
                                open = false;
                                break 'pushes;
                            }
                        }
                    }
                }
            }
            let wait_until = Instant::now() + ECHO_WAIT;
            while open && !tracker.complete(sent) {
                match tokio::time::timeout_at(wait_until, conn.recv()).await {
                    Err(_) => break,
                    Ok(got) => open = absorb(got, src, &mut tracker, &rec, index),
                }
            }
            rec.with(index, |s| {
                s.expected += sent;
                s.lost += tracker.lost(sent);
                s.duplicated += tracker.duplicated;
                s.reordered += tracker.reordered;
                s.cycles += 1;
            });
            if open {
                let _ = conn.leave(&topic).await;
                conn.close().await;
            }
            rec.disconnected();
        });
        i += ctx.count;
        // Reap finished cycles so the set does not grow with the run.
        while set.try_join_next().is_some() {}
    }
    while set.join_next().await.is_some() {}
    ctx.rec.with(0, |s| {
        s.phase_start_us = start_us;
        s.phase_end_us = now_us();
    });
}

/// Account one inbound item; false when the connection is gone.
fn absorb(
    got: Result<Inbound, client::ClientError>,
    src: u64,
    tracker: &mut StreamTracker,
    rec: &crate::recorder::Recorder,
    index: u64,
) -> bool {
    match got {
        Ok(Inbound::Message(text)) => {
            if let Some(st) = payload::decode(&text).filter(|s| s.src == src) {
                if tracker.observe(st.seq) != Arrival::Duplicate {
                    rec.delivered(index, st.ts, None, true);
                }
            }
            true
        }
        Ok(Inbound::Reply { status, .. }) if status != "ok" => {
            rec.error(index, format!("push refused: {status}"));
            true
        }
        Ok(Inbound::Closed(code)) => {
            if let Some(c) = code {
                rec.close_code(index, c);
            }
            rec.error(
                index,
                format!(
                    "server closed {}",
                    code.map_or("(no code)".into(), |c| c.to_string())
                ),
            );
            false
        }
        Ok(_) => true,
        Err(e) => {
            rec.error(index, e.kind());
            false
        }
    }
}
