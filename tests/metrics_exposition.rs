//! `/metrics` after real traffic: every required metric is present, described,
//! and the exposition passes `promtool check metrics` (Debian package
//! `prometheus`, installed by scripts/test.sh).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::TestServer;
use serde_json::json;

/// Some of everything; returns the clients so their sessions stay open.
async fn traffic(server: &TestServer) -> Vec<common::Client> {
    let mut a = server.client().await;
    let mut b = server.client().await;
    let jr = a.join_ok("room:m").await;
    b.join_ok("room:m").await;
    a.push(&jr, "room:m", "hello", json!({"x": 1})).await;
    b.sync().await;
    let mut bad = server.client().await;
    bad.send_text("[1,2").await;
    bad.ended().await;
    server
        .wait_metric("myriad_malformed_frames_total{kind=\"bad_json\"}", 1.0)
        .await;
    vec![a, b]
}

#[tokio::test]
async fn required_metrics_are_exposed_with_help() {
    let server = TestServer::start().await;
    let _clients = traffic(&server).await;
    let text = server.metrics().await;
    for name in [
        "myriad_sessions_active",
        "myriad_sessions_opened_total",
        "myriad_sessions_closed_total",
        "myriad_channel_joins_total",
        "myriad_channel_crashes_total",
        "myriad_session_panics_total",
        "myriad_messages_received_total",
        "myriad_messages_sent_total",
        "myriad_received_bytes_total",
        "myriad_sent_bytes_total",
        "myriad_mailbox_depth_messages",
        "myriad_broadcasts_total",
        "myriad_fanout_subscribers",
        "myriad_process_resident_memory_bytes",
        "myriad_process_open_fds",
        "myriad_runtime_alive_tasks",
        "myriad_runtime_global_queue_depth",
        "myriad_malformed_frames_total",
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
        assert!(
            text.lines()
                .any(|l| !l.starts_with('#') && l.starts_with(name)),
            "no sample for {name}"
        );
    }
    let rss = common::metric_value(&text, "myriad_process_resident_memory_bytes").unwrap();
    assert!(rss > 1_000_000.0, "RSS should be read from /proc: {rss}");
    let fds = common::metric_value(&text, "myriad_process_open_fds").unwrap();
    assert!(fds >= 3.0, "fds {fds}");
    assert_eq!(
        common::metric_value(&text, "myriad_sessions_active"),
        Some(2.0)
    );
    assert_eq!(
        common::metric_value(&text, "myriad_broadcasts_total"),
        Some(1.0)
    );
}

#[tokio::test]
async fn exposition_passes_promtool_check_metrics() {
    let server = TestServer::start().await;
    let _clients = traffic(&server).await;
    let text = server.metrics().await;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "promtool must be installed (scripts/test.sh installs Debian package `prometheus`)",
        );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool failed:\n{report}\n---\n{text}"
    );
    assert!(
        report.trim().is_empty(),
        "promtool lint findings:\n{report}"
    );
}
