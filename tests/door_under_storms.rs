//! What a node does at the door when everything moves at once: the listen
//! backlog it asks for, the open-file limit it raises, and drain in waves
//! (each wave's clients closed with 1001 a jittered interval apart, /readyz
//! failing from the first moment). The real binary in its own process.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use common::cluster::Node;
use common::Ended;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_closes_sessions_in_waves_while_readyz_fails() {
    let node = Node::spawn(&[
        "--drain-batch-size",
        "4",
        "--drain-batch-interval",
        "600ms",
        "--drain-timeout",
        "10s",
    ]);
    let mut clients = Vec::new();
    for _ in 0..12 {
        let mut c = node.client().await;
        c.join_ok("room:drain").await;
        clients.push(c);
    }
    assert_eq!(node.readyz().await, 200);
    let t0 = Instant::now();
    node.terminate();
    // Readiness fails at once, before the last wave: the balancer stops
    // sending new clients here.
    assert!(
        common::poll_until(Duration::from_secs(2), || async {
            node.readyz().await == 503
        })
        .await
    );
    let watchers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let ended = c.ended().await;
                let at = t0.elapsed();
                let Ended::Closed(Some((code, _))) = &ended else {
                    panic!("{ended:?}")
                };
                assert_eq!(u16::from(*code), 1001);
                at
            })
        })
        .collect();
    let mut closed = Vec::new();
    for w in watchers {
        closed.push(w.await.unwrap());
    }
    closed.sort();
    // Three waves of four, 0.45..0.75 s apart: not the whole herd at once.
    let spread = closed[11] - closed[0];
    assert!(spread >= Duration::from_millis(850), "{closed:?}");
    assert!(
        closed[3] - closed[0] < Duration::from_millis(300),
        "a wave closes together: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_file_limit_is_raised_to_the_hard_limit_and_checked() {
    let node = Node::spawn_via(&["prlimit", "--nofile=512:8192", "--"], &[]);
    assert_eq!(node.metric("myriad_process_max_fds").await, Some(8192.0));
    // max_connections (100 000 by default) does not fit in 8192 descriptors.
    let warned = node
        .warnings()
        .iter()
        .any(|l| l.contains("max_connections 100000 cannot be reached"));
    assert!(warned, "{:?}", node.warnings());

    let fits = Node::spawn_via(
        &["prlimit", "--nofile=512:8192", "--"],
        &["--max-connections", "1000"],
    );
    assert_eq!(fits.metric("myriad_process_max_fds").await, Some(8192.0));
    assert!(
        !fits
            .warnings()
            .iter()
            .any(|l| l.contains("cannot be reached")),
        "{:?}",
        fits.warnings()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_listener_asks_for_listen_backlog() {
    let node = Node::spawn(&["--listen-backlog", "37"]);
    assert_eq!(node.metric("myriad_listen_backlog").await, Some(37.0));
    assert_eq!(
        node.metric("myriad_listen_overflows_total").await,
        Some(0.0)
    );
    // `ss` shows a listening socket's backlog as its Send-Q.
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{}", node.public.port())])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.split_whitespace().nth(2), Some("37"), "{text}");
    // The default asks for 4096, which the kernel may cap (somaxconn).
    let default = Node::spawn(&[]);
    let somaxconn: f64 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        default.metric("myriad_listen_backlog").await,
        Some(somaxconn.min(4096.0))
    );
}
