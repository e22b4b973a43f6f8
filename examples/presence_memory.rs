//! What presence costs per tracked member, and what a full `presence_state`
//! of a big topic weighs (BENCHMARKS.md, "Presence at scale"):
//! `cargo run --release --example presence_memory -- 100000`.
//!
//! Tracks N sessions on one topic (a phone meta each, as the chat page
//! sends), measuring the process's resident memory before and after, then
//! renders the topic's full state once (what `presence_mode = "full"` sends
//! every joiner) and a count (what `"count"` sends).

use std::time::Instant;

use myriad::process::resident_bytes;
use myriad::pubsub::presence::{Joined, Presence, Snapshot};
use serde_json::{json, Map};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let presence = Presence::new();
    let before = resident_bytes().unwrap_or(0);
    let started = Instant::now();
    for s in 0..n {
        let mut meta = Map::new();
        meta.insert("name".into(), json!(format!("user-{s}")));
        meta.insert("online_at".into(), json!("1796000000"));
        presence.track_as(
            "big:lobby",
            s,
            (&format!("user-{s}"), meta),
            usize::MAX,
            Snapshot::Count,
            |_| {},
            |_| {},
        );
    }
    let tracked_in = started.elapsed();
    let after = resident_bytes().unwrap_or(0);
    let per_member = after.saturating_sub(before) as f64 / n as f64;
    let started = Instant::now();
    let state = presence.state("big:lobby");
    let full_in = started.elapsed();
    let mut count = 0;
    let started = Instant::now();
    presence.track_as(
        "big:lobby",
        n,
        ("one-more", Map::new()),
        usize::MAX,
        Snapshot::Count,
        |j| {
            if let Joined::Count(c) = j {
                count = c;
            }
        },
        |_| {},
    );
    let count_in = started.elapsed();
    println!("members tracked            {n} in {tracked_in:?}");
    println!("resident memory per member {per_member:.0} bytes");
    println!(
        "full presence_state        {} bytes, rendered in {full_in:?}",
        state.len()
    );
    println!("count for a joiner         {count} sessions, in {count_in:?} (join included)");
}
