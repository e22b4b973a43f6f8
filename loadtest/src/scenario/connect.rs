//! `connect`: ramp to N connections, hold them for --duration (heartbeating),
//! close. Measures connect rate and handshake (and join) latency; any close the
//! server initiates while holding is an error. With `--transport sse|longpoll`
//! the connections are HTTP readers of one of `--topics` topics each (an SSE
//! stream held open, a long-poll session kept polling).

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{establish, establish_http, Want, WorkerCtx};
use crate::cli::{ConnectArgs, Transport};
use crate::client::Inbound;

pub async fn worker(args: &ConnectArgs, ctx: WorkerCtx) {
    if ctx.common.transport != Transport::Websocket {
        return http_worker(args, ctx).await;
    }
    websocket_worker(args, ctx).await;
}

async fn websocket_worker(args: &ConnectArgs, mut ctx: WorkerCtx) {
    let wants = ctx
        .share(args.connections)
        .into_iter()
        .map(|index| Want {
            index,
            topic: (args.topics > 0).then(|| ctx.topic(index % args.topics)),
            also: None,
            recv_buffer: None,
        })
        .collect();
    let mut conns = establish(&ctx, wants).await;
    measured_phase_is_the_connect_phase(&ctx);
    super::ready_keeping_alive(&mut ctx.control, &mut conns).await;
    let hold_until = Instant::now() + ctx.common.duration;
    let mut set = JoinSet::new();
    for (index, mut conn) in conns {
        let rec = Arc::clone(&ctx.rec);
        let beat = args.heartbeat;
        set.spawn(async move {
            let mut next_beat = Instant::now() + beat;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(hold_until) => break,
                    _ = tokio::time::sleep_until(next_beat) => {
                        next_beat += beat;
                        if let Err(e) = conn.heartbeat().await {
                            rec.error(index, format!("heartbeat: {}", e.kind()));
                            rec.disconnected();
                            return;
                        }
                    }
                    got = conn.recv() => match got {
                        Ok(Inbound::Closed(code)) => {
                            if let Some(code) = code {
                                rec.close_code(index, code);
                            }
                            rec.error(index, format!("server closed {}", code.map_or("(no code)".into(), |c| c.to_string())));
                            rec.disconnected();
                            return;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            rec.error(index, e.kind());
                            rec.disconnected();
                            return;
                        }
                    }
                }
            }
            conn.close().await;
            rec.disconnected();
        });
    }
    while set.join_next().await.is_some() {}
}

/// `connect` measures the connect phase itself (establish recorded it).
fn measured_phase_is_the_connect_phase(ctx: &WorkerCtx) {
    ctx.rec.with(0, |s| {
        s.phase_start_us = s.connect_start_us;
        s.phase_end_us = s.connect_end_us;
    });
}

/// Hold HTTP readers: each keeps reading (SSE keep-alives, long-poll polls)
/// until the hold ends; a stream or session the server ends is an error.
async fn http_worker(args: &ConnectArgs, mut ctx: WorkerCtx) {
    let topics = args.topics.max(1);
    let wants = ctx
        .share(args.connections)
        .into_iter()
        .map(|index| (index, ctx.topic(index % topics)))
        .collect();
    let readers = establish_http(&ctx, wants).await;
    measured_phase_is_the_connect_phase(&ctx);
    ctx.control.ready_and_wait().await;
    let hold_until = Instant::now() + ctx.common.duration;
    let mut set = JoinSet::new();
    for (index, mut reader) in readers {
        let rec = Arc::clone(&ctx.rec);
        set.spawn(async move {
            loop {
                match tokio::time::timeout_at(hold_until, reader.next_payload()).await {
                    Err(_) => break,
                    Ok(Ok(Some(_))) => {}
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
            rec.disconnected();
        });
    }
    while set.join_next().await.is_some() {}
}
