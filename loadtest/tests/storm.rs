//! `myriad-load storm` against a real cluster: three myriad processes on one
//! redis-server (scripts/test.sh installs it). One node is stopped under its
//! clients (drained with SIGTERM, or killed); they must all come back on the
//! other nodes and end with every message once, in order (recovery).

#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

const LOAD: &str = env!("CARGO_BIN_EXE_myriad-load");

/// The myriad binary built beside myriad-load (built here when missing, as
/// a lone `cargo test -p myriad-loadtest` leaves it).
fn myriad_bin() -> PathBuf {
    let dir = std::path::Path::new(LOAD).parent().unwrap();
    let bin = dir.join("myriad");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| String::from("cargo"));
        let profile = if dir.ends_with("release") {
            vec!["--release"]
        } else {
            vec![]
        };
        let ok = Command::new(cargo)
            .args(["build", "-p", "myriad", "--bin", "myriad"])
            .args(profile)
            .status()
            .unwrap();
        assert!(ok.success(), "building the myriad binary");
    }
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis() -> (Proc, u16) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (scripts/test.sh installs it)");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (Proc(child), port)
}

/// A node on redis `port`; its public and admin addresses.
fn node(port: u16) -> (Proc, String, String) {
    let mut child = Command::new(myriad_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--broker",
            "redis",
            "--broker-url",
            &format!("redis://127.0.0.1:{port}"),
        ])
        .args([
            "--client-rate",
            "0",
            "--drain-batch-size",
            "10",
            "--drain-batch-interval",
            "300ms",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("myriad listening") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let addr = |key: &str| {
        let at = line.find(key).unwrap() + key.len();
        line[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .trim_matches('"')
            .to_owned()
    };
    (Proc(child), addr("public="), addr("admin="))
}

async fn broker_up(admin: &str) {
    for _ in 0..100 {
        let text = reqwest::get(format!("http://{admin}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.lines().any(|l| l == "myriad_broker_connected 1") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("node {admin} never reached redis");
}

async fn storm(signal: &str) -> (std::process::Output, Value) {
    let (_redis, port) = redis();
    let nodes: Vec<_> = (0..3).map(|_| node(port)).collect();
    for (_, _, admin) in &nodes {
        broker_up(admin).await;
    }
    let urls: Vec<String> = nodes
        .iter()
        .map(|(_, public, _)| format!("ws://{public}/socket/websocket"))
        .collect();
    let victim = nodes[0].0 .0.id().to_string();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let out = tokio::process::Command::new(LOAD)
        .args([
            "storm",
            "--url",
            &urls.join(","),
            "--victim",
            "0",
            "--victim-pid",
            &victim,
        ])
        .args(["--signal", signal, "--signal-after", "1s"])
        .args([
            "-n",
            "60",
            "-k",
            "60",
            "--publish-rate",
            "30",
            "--topic",
            "chat:storm-test",
        ])
        .args([
            "--duration",
            "15s",
            "--grace",
            "10s",
            "--quiet",
            "--max-run-time",
            "60s",
        ])
        .arg("--json")
        .arg(&json)
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    let doc: Value = std::fs::read_to_string(&json)
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(Value::Null);
    (out, doc)
}

fn fig(doc: &Value, key: &str) -> u64 {
    doc["figures"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("figure {key} missing in {doc:#}"))
}

async fn moves_everyone_without_loss(signal: &str) {
    let (out, doc) = storm(signal).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A third of the 60 were on the stopped node; all came back elsewhere.
    assert_eq!(fig(&doc, "moved"), 20, "{stdout}");
    assert_eq!(doc["figures"]["reconnect"]["count"], 20, "{stdout}");
    // Every subscriber got every message once, in order, across the move.
    assert_eq!(fig(&doc, "delivered"), 60 * 60, "{stdout}");
    assert_eq!(fig(&doc, "lost"), 0, "{stdout}");
    assert_eq!(fig(&doc, "duplicated"), 0, "{stdout}");
    assert!(stdout.contains("moved clients"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_nodes_clients_come_back_elsewhere_and_lose_nothing() {
    moves_everyone_without_loss("term").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_clients_come_back_elsewhere_and_lose_nothing() {
    moves_everyone_without_loss("kill").await;
}
