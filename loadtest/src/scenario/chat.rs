//! `chat`: R rooms × M members; every member pushes at --msg-rate and receives
//! every message of its room (sender included). Each member checks every other
//! member's stream for loss, duplicates and reordering; expected deliveries
//! are sent × members per room. Rooms are never split across workers, so all
//! of a room's accounting happens in one process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{establish, Want, WorkerCtx, HEARTBEAT};
use crate::accounting::{Arrival, StreamTracker};
use crate::cli::ChatArgs;
use crate::client::Inbound;
use crate::payload::{self, now_us, Stamp};

/// What the members of one room share.
struct Room {
    /// Messages each member sent (final once `senders_left` is 0).
    sent: Vec<AtomicU64>,
    members_up: AtomicU64,
}

pub async fn worker(args: &ChatArgs, mut ctx: WorkerCtx) {
    let m = args.members.max(1);
    let rooms: Vec<u64> = ctx.share(args.rooms);
    let mut wants = Vec::new();
    for &r in &rooms {
        for k in 0..m {
            wants.push(Want {
                index: r * m + k,
                topic: Some(ctx.topic(r)),
                also: None,
                recv_buffer: None,
            });
        }
    }
    let mut conns = establish(&ctx, wants).await;
    let shared: HashMap<u64, Arc<Room>> = rooms
        .iter()
        .map(|&r| {
            let room = Room {
                sent: (0..m).map(|_| AtomicU64::new(0)).collect(),
                members_up: AtomicU64::new(0),
            };
            (r, Arc::new(room))
        })
        .collect();
    for (index, _) in &conns {
        if let Some(room) = shared.get(&(index / m)) {
            room.members_up.fetch_add(1, Ordering::Relaxed);
        }
    }
    super::ready_keeping_alive(&mut ctx.control, &mut conns).await;
    let start = Instant::now();
    let start_us = now_us();
    let send_until = start + ctx.common.duration;
    let give_up = send_until + args.grace;
    let senders_left = Arc::new(AtomicU64::new(conns.len() as u64));
    let interval = Duration::from_secs_f64(1.0 / args.msg_rate.max(1e-3));
    let mut set = JoinSet::new();
    for (index, mut conn) in conns {
        let room_no = index / m;
        let Some(room) = shared.get(&room_no).cloned() else {
            continue;
        };
        let me = (index % m) as usize;
        let rec = Arc::clone(&ctx.rec);
        let topic = ctx.topic(room_no);
        let size = args.size;
        let senders_left = Arc::clone(&senders_left);
        // Spread first sends over one interval so members do not send in lockstep.
        let offset = interval.mul_f64((index % 997) as f64 / 997.0);
        set.spawn(async move {
            let mut trackers = vec![StreamTracker::new(); m as usize];
            let mut next_send = start + offset;
            let mut sending = true;
            let mut next_beat = start + HEARTBEAT;
            let mut seq = 0u64;
            let mut check = tokio::time::interval(Duration::from_millis(50));
            let mut alive = true;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(give_up) => break,
                    _ = tokio::time::sleep_until(next_send), if sending => {
                        if next_send >= send_until {
                            sending = false;
                            senders_left.fetch_sub(1, Ordering::AcqRel);
                            continue;
                        }
                        seq += 1;
                        let stamp = Stamp { src: index + 1, seq, ts: now_us() };
                        if let Err(e) = conn.push(&topic, "msg", &payload::encode(stamp, size)).await {
                            rec.error(index, format!("push: {}", e.kind()));
                            senders_left.fetch_sub(1, Ordering::AcqRel);
                            alive = false;
                            break;
                        }
                        room.sent[me].store(seq, Ordering::Release);
                        rec.sent(index, 1);
                        next_send += interval;
                    }
                    _ = tokio::time::sleep_until(next_beat) => {
                        next_beat += HEARTBEAT;
                        let _ = conn.heartbeat().await;
                    }
                    _ = check.tick(), if !sending => {
                        if senders_left.load(Ordering::Acquire) == 0
                            && trackers.iter().enumerate().all(|(k, t)| t.complete(room.sent[k].load(Ordering::Acquire)))
                        {
                            break;
                        }
                    }
                    got = conn.recv() => match got {
                        Ok(Inbound::Message(text)) => {
                            let Some(st) = payload::decode(&text) else { continue };
                            let Some(k) = st.src.checked_sub(1 + room_no * m).filter(|k| *k < m) else { continue };
                            if trackers[k as usize].observe(st.seq) != Arrival::Duplicate {
                                rec.delivered(index, st.ts, None, true);
                            }
                        }
                        Ok(Inbound::Reply { status, .. }) if status != "ok" => {
                            rec.error(index, format!("push refused: {status}"));
                        }
                        Ok(Inbound::Closed(code)) => {
                            if let Some(c) = code { rec.close_code(index, c); }
                            rec.error(index, format!("server closed {}", code.map_or("(no code)".into(), |c| c.to_string())));
                            if sending {
                                senders_left.fetch_sub(1, Ordering::AcqRel);
                            }
                            alive = false;
                            break;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            rec.error(index, e.kind());
                            if sending {
                                senders_left.fetch_sub(1, Ordering::AcqRel);
                            }
                            alive = false;
                            break;
                        }
                    }
                }
            }
            // Wait for every sender so the final counts are known.
            while senders_left.load(Ordering::Acquire) > 0 && Instant::now() < give_up {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (mut lost, mut dup, mut reo) = (0, 0, 0);
            for (k, t) in trackers.iter().enumerate() {
                lost += t.lost(room.sent[k].load(Ordering::Acquire));
                dup += t.duplicated;
                reo += t.reordered;
            }
            rec.with(index, |s| {
                s.lost += lost;
                s.duplicated += dup;
                s.reordered += reo;
            });
            if alive {
                conn.close().await;
            }
            rec.disconnected();
        });
    }
    while set.join_next().await.is_some() {}
    let end_us = now_us();
    let expected: u64 = shared
        .values()
        .map(|room| {
            let sent: u64 = room.sent.iter().map(|s| s.load(Ordering::Acquire)).sum();
            sent * room.members_up.load(Ordering::Acquire)
        })
        .sum();
    ctx.rec.with(0, |s| {
        s.expected += expected;
        s.phase_start_us = start_us;
        s.phase_end_us = end_us;
    });
}
