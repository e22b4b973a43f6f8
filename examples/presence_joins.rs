//! What a burst of joins into a big presence topic costs the members already
//! there, with presence diffs merged (`presence_batch_members`, the default)
//! and without (0): `cargo run --release --example presence_joins -- 20000 1000`
//! (BENCHMARKS.md, "Presence at scale").
//!
//! N sessions (real mailboxes, drained like sessions drain them) are members
//! of one `presence_mode = "count"` topic on one node; K more join, with a flush every 50 joins (at
//! 250 joins/s, the default 200 ms interval). Reports the `presence_diff`
//! frames queued for the members and the time the joins and flushes took.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use myriad::config::{Config, NamespaceConfig, PresenceMode, SlowConsumerPolicy};
use myriad::metrics::Metrics;
use myriad::pubsub::broker::local::LocalBroker;
use myriad::pubsub::mailbox::{Mailbox, MailboxLimits};
use myriad::pubsub::{JoinRequest, Node, Since};
use serde_json::Map;

const TOPIC: &str = "chat:big";

fn mailbox() -> Arc<Mailbox> {
    Arc::new(Mailbox::new(MailboxLimits {
        capacity: 1 << 20,
        max_bytes: 1 << 30,
        policy: SlowConsumerPolicy::DropOldest,
    }))
}

fn join(node: &Node, session: u64, m: &Arc<Mailbox>) {
    let ns = node.route(TOPIC).map(|r| Arc::clone(&r.namespace));
    let Some(ns) = ns else { return };
    let key = format!("user-{session}");
    node.join(JoinRequest {
        topic: TOPIC,
        namespace: &ns,
        join_ref: Some("1"),
        session,
        mailbox: Arc::clone(m),
        since: Since::Now,
        presence: Some((&key, Map::new())),
    });
}

fn run(batch_members: usize, n: u64, k: u64) -> (usize, Duration) {
    // Count mode: joiners get a count, not the whole member list (which at
    // this size would dwarf what is measured here: the members' diffs).
    let mut ns = NamespaceConfig::new("chat:*");
    ns.presence = true;
    ns.presence_mode = PresenceMode::Count;
    let config = Config {
        presence_batch_members: batch_members,
        presence_max_members: usize::MAX,
        namespaces: vec![ns],
        ..Config::default()
    };
    let node = Node::new(&config, Metrics::new(), Arc::new(LocalBroker));
    let members: Vec<Arc<Mailbox>> = (0..n).map(|_| mailbox()).collect();
    for (s, m) in members.iter().enumerate() {
        join(&node, s as u64, m);
    }
    let mut q = VecDeque::new();
    for m in &members {
        m.drain(&mut q);
        q.clear();
    }
    let started = Instant::now();
    for j in 0..k {
        join(&node, n + j, &mailbox());
        if j % 50 == 49 {
            node.flush_presence_diffs();
        }
    }
    node.flush_presence_diffs();
    let took = started.elapsed();
    let mut frames = 0;
    for m in &members {
        m.drain(&mut q);
        frames += q.len();
        q.clear();
    }
    (frames, took)
}

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>().ok());
    let n = args.next().flatten().unwrap_or(20_000);
    let k = args.next().flatten().unwrap_or(1_000);
    let (merged_frames, merged_in) = run(1000, n, k);
    let (single_frames, single_in) = run(0, n, k);
    println!("members {n}, joins {k}");
    println!("diff per change (presence_batch_members = 0)  {single_frames} frames queued, {single_in:?}");
    println!("merged (presence_batch_members = 1000)         {merged_frames} frames queued, {merged_in:?}");
    println!(
        "merged / per change                            {:.3}× frames, {:.3}× time",
        merged_frames as f64 / single_frames.max(1) as f64,
        merged_in.as_secs_f64() / single_in.as_secs_f64().max(1e-9)
    );
}
