//! Criterion benches for the hot primitives: frame decode, broadcast encode,
//! and fan-out of one encoded frame to N in-memory mailboxes (hub + mailbox,
//! no sockets). Setup happens outside the timed section.

#![allow(clippy::unwrap_used)] // a bench input that fails to decode is a bug in the bench

use std::collections::VecDeque;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use myriad::config::SlowConsumerPolicy;
use myriad::protocol::{decode, encode};
use myriad::pubsub::mailbox::{Mailbox, MailboxLimits, Outbound};
use myriad::pubsub::Hub;

const PUSH: &str = r#"["3","17","room:lobby","new_msg",{"body":"hello there, how is everyone doing today?","ts":1763800000000}]"#;

fn bench_codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_push", |b| {
        b.iter(|| {
            let frame = decode(black_box(PUSH)).unwrap();
            black_box(frame.payload.get().len())
        })
    });
    let frame = decode(PUSH).unwrap();
    g.bench_function("encode_broadcast", |b| {
        b.iter(|| {
            black_box(encode::broadcast(
                &frame.topic,
                &frame.event,
                frame.payload.get(),
            ))
        })
    });
    g.bench_function("encode_reply", |b| {
        b.iter(|| {
            black_box(encode::reply(
                Some("3"),
                Some("17"),
                "room:lobby",
                "ok",
                "{}",
            ))
        })
    });
    g.finish();
}

fn bench_fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    for n in [1usize, 100, 1_000, 10_000, 100_000] {
        let hub = Hub::new();
        let boxes: Vec<Arc<Mailbox>> = (0..n)
            .map(|i| {
                let m = Arc::new(Mailbox::new(MailboxLimits {
                    capacity: 1024,
                    max_bytes: 4 << 20,
                    policy: SlowConsumerPolicy::Disconnect,
                }));
                hub.subscribe("room:hot", i as u64, Arc::clone(&m));
                m
            })
            .collect();
        let frame = Outbound::Text(encode::broadcast("room:hot", "new_msg", r#"{"body":"hi"}"#));
        let mut scratch = VecDeque::new();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_batched(
                || {
                    for m in &boxes {
                        m.drain(&mut scratch);
                        scratch.clear();
                    }
                },
                |_| black_box(hub.fan_out("room:hot", &frame, None)),
                criterion::BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

/// Baseline for fan-out ratios: the same frame cloned into N plain queues, no
/// map, no lock, no wake-up. Fan-out cost over this is what the hub and the
/// mailbox add.
fn bench_fanout_baseline(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_baseline");
    for n in [1usize, 100, 1_000, 10_000, 100_000] {
        let mut queues: Vec<VecDeque<Outbound>> =
            (0..n).map(|_| VecDeque::with_capacity(4)).collect();
        let frame = Outbound::Text(encode::broadcast("room:hot", "new_msg", r#"{"body":"hi"}"#));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    for q in queues.iter_mut() {
                        q.clear();
                    }
                    let start = std::time::Instant::now();
                    for q in queues.iter_mut() {
                        q.push_back(frame.clone());
                    }
                    total += start.elapsed();
                    black_box(&queues);
                }
                total
            })
        });
    }
    g.finish();
}

fn bench_join_leave(c: &mut Criterion) {
    let hub = Hub::new();
    // A hot topic that already has members.
    for i in 0..10_000u64 {
        hub.subscribe(
            "room:hot",
            i,
            Arc::new(Mailbox::new(MailboxLimits {
                capacity: 1,
                max_bytes: 1,
                policy: SlowConsumerPolicy::Disconnect,
            })),
        );
    }
    let m = Arc::new(Mailbox::new(MailboxLimits {
        capacity: 1024,
        max_bytes: 4 << 20,
        policy: SlowConsumerPolicy::Disconnect,
    }));
    let mut g = c.benchmark_group("membership");
    g.throughput(Throughput::Elements(1));
    g.bench_function("join_leave_hot_topic", |b| {
        b.iter(|| {
            hub.subscribe("room:hot", 1_000_000, Arc::clone(&m));
            hub.unsubscribe("room:hot", 1_000_000);
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_codec,
    bench_fanout_baseline,
    bench_fanout,
    bench_join_leave
);
criterion_main!(benches);
