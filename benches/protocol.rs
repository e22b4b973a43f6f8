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

/// A hub with `n` members on `room:hot`, their mailboxes, and a broadcast frame.
fn hot_topic(n: usize) -> (Hub, Vec<Arc<Mailbox>>, Outbound) {
    let hub = Hub::new();
    let boxes = (0..n)
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
    (hub, boxes, frame)
}

/// Fan-out of one frame to `sizes` members; with `waiting`, every member's
/// session waits on its mailbox (a registered waker, as an idle session has),
/// which adds the batched push, header prefetch and wake path of
/// `pubsub::hub`. The waker is a no-op, so that measures the fan-out's side of
/// a wake-up, not a scheduler's.
fn fanout_group(c: &mut Criterion, name: &str, sizes: &[usize], waiting: bool) {
    let mut g = c.benchmark_group(name);
    let cx = std::task::Context::from_waker(std::task::Waker::noop());
    for &n in sizes {
        let (hub, boxes, frame) = hot_topic(n);
        let mut scratch = VecDeque::new();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_batched(
                || {
                    for m in &boxes {
                        m.drain(&mut scratch);
                        scratch.clear();
                        if waiting {
                            assert!(m.poll_wake(&cx).is_pending());
                        }
                    }
                },
                |_| black_box(hub.fan_out("room:hot", &frame, None)),
                criterion::BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn bench_fanout(c: &mut Criterion) {
    fanout_group(c, "fanout", &[1, 100, 1_000, 10_000, 100_000], false);
}

fn bench_fanout_waking(c: &mut Criterion) {
    fanout_group(c, "fanout_waking", &[100, 10_000, 100_000], true);
}

/// A fan-out to a topic big enough to be split across the runtime's workers
/// (`pubsub::hub`, 32 768 members and up), published from a task as a
/// session would: `one_worker` on a current-thread runtime (no split),
/// `two_workers` on a two-worker runtime (split in two). Sizes past the
/// last-level cache, as a node's sessions are: a cache-warm topic measures
/// the cache instead (`fanout/100000` stays warm from its setup). No member
/// waits here, so this is the split's cost on the pushes alone; the gain
/// comes with waiting sessions, whose wake-ups each part's worker queues
/// (`examples/million.rs` measures that, BENCHMARKS.md).
fn bench_fanout_split(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_split");
    g.sample_size(20);
    let one = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let two = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("a runtime");
    for n in [300_000usize, 1_000_000] {
        let (hub, boxes, frame) = hot_topic(n);
        let hub = Arc::new(hub);
        let mut scratch = VecDeque::new();
        g.throughput(Throughput::Elements(n as u64));
        for (name, runtime) in [("one_worker", &one), ("two_workers", &two)] {
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter_batched(
                    || {
                        for m in &boxes {
                            m.drain(&mut scratch);
                            scratch.clear();
                        }
                    },
                    |_| {
                        let (hub, frame) = (Arc::clone(&hub), frame.clone());
                        let publish =
                            runtime.spawn(async move { hub.fan_out("room:hot", &frame, None) });
                        black_box(runtime.block_on(publish).expect("the fan-out task"))
                    },
                    criterion::BatchSize::PerIteration,
                )
            });
        }
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

/// A sink that takes every byte and says it writes vectored, as a socket does.
struct Sink(u64);

impl tokio::io::AsyncWrite for Sink {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0 += buf.len() as u64;
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let n: usize = bufs.iter().map(|b| b.len()).sum();
        self.0 += n as u64;
        std::task::Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A blocking stream that drops what is written (tungstenite's side of the
/// write bench; it never reads).
struct NullIo;

impl std::io::Read for NullIo {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Ok(0)
    }
}

impl std::io::Write for NullIo {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One session's write of a batch of 10 shared broadcast frames:
/// `session::frames_out` (headers on the stack, one vectored write) against
/// tungstenite's own path (each message copied into its write buffer, then
/// written), both into a sink that costs nothing.
fn bench_write_batch(c: &mut Criterion) {
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};
    let frame = Outbound::Text(encode::broadcast(
        "room:hot",
        "new_msg",
        r#"{"body":"hello there, how is everyone doing today?"}"#,
    ));
    let mut g = c.benchmark_group("write_batch");
    g.throughput(Throughput::Elements(10));
    let mut sink = Sink(0);
    let mut batch = VecDeque::with_capacity(10);
    let mut sent = 0;
    // The sink is always ready: one poll completes the write (no runtime).
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    g.bench_function("frames_out_vectored", |b| {
        b.iter(|| {
            batch.extend(std::iter::repeat_n(frame.clone(), 10));
            let write = std::pin::pin!(myriad::session::frames_out::write(
                &mut sink, &mut batch, &mut sent
            ));
            assert!(std::future::Future::poll(write, &mut cx).is_ready());
        })
    });
    let mut ws = WebSocket::from_raw_socket(NullIo, Role::Server, None);
    g.bench_function("tungstenite_write", |b| {
        b.iter(|| {
            for _ in 0..10 {
                ws.write(frame.clone().into_message()).unwrap();
            }
            ws.flush().unwrap();
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_codec,
    bench_fanout_baseline,
    bench_fanout,
    bench_fanout_waking,
    bench_fanout_split,
    bench_join_leave,
    bench_write_batch
);
criterion_main!(benches);
