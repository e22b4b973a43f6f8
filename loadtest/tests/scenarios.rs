//! Every scenario, briefly, against an in-process myriad (and the raw
//! baseline server): the numbers must add up (delivered = sent × receivers,
//! nothing lost), the JSON must carry them, worker processes must merge, and
//! SLO violations must fail the run.

#![allow(clippy::unwrap_used)] // a test that cannot set up should fail loudly

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use myriad::config::{Config, SlowConsumerPolicy};
use myriad::server::{self, AppState, Listeners};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_myriad-load");

struct Server {
    public: SocketAddr,
    admin: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn myriad(tweak: impl FnOnce(&mut Config)) -> Server {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        // Load clients push faster than the per-client default allows.
        client_rate: 0,
        api_keys: vec!["test-key".into()],
        ..Config::default()
    };
    tweak(&mut config);
    config.validate().unwrap();
    let listeners = Listeners::bind(&config).await.unwrap();
    let (public, admin) = (
        listeners.public_addr().unwrap(),
        listeners.admin_addr().unwrap(),
    );
    let state = AppState::new(Arc::new(config)).unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(server::run(listeners, state, async move {
        token.cancelled().await
    }));
    Server {
        public,
        admin,
        stop,
    }
}

/// Run myriad-load with `args`, writing JSON to a temp file; returns the
/// process output and the parsed JSON (Null when none was written).
async fn load(args: &[&str]) -> (Output, Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let out = tokio::process::Command::new(BIN)
        .args(args)
        .args(["--quiet", "--max-run-time", "60s", "--json"])
        .arg(&json)
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    let doc = std::fs::read_to_string(&json)
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or(Value::Null);
    if doc.is_null() {
        eprintln!(
            "stdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (out, doc)
}

fn fig(doc: &Value, key: &str) -> u64 {
    doc["figures"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("figure {key} missing in {doc:#}"))
}

/// The run passed and every receiver got every message.
fn assert_delivered_all(out: &Output, doc: &Value, expected: u64) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(fig(doc, "delivered"), expected);
    assert_eq!(fig(doc, "lost"), 0);
}

/// Start a myriad-load server subcommand (`args`, plus `--listen` on a free
/// port) and wait until it accepts; its stdout is piped.
async fn serve_subcommand(args: &[&str]) -> (tokio::process::Child, String) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let child = tokio::process::Command::new(BIN)
        .args(args)
        .args(["--listen", &listen])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&listen).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    (child, listen)
}

fn url(s: &Server) -> String {
    format!("ws://{}/socket/websocket", s.public)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_holds_every_connection_and_reports_handshakes() {
    let s = myriad(|_| {}).await;
    let (out, doc) = load(&[
        "connect",
        "--url",
        &url(&s),
        "-n",
        "300",
        "--topics",
        "10",
        "--duration",
        "1s",
        "--rate",
        "1000",
    ])
    .await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(fig(&doc, "connects_ok"), 300);
    assert_eq!(fig(&doc, "joins_ok"), 300);
    assert_eq!(fig(&doc, "peak_connections"), 300);
    assert_eq!(fig(&doc, "errors"), 0);
    assert_eq!(doc["figures"]["handshake"]["count"], 300);
    // The raw histogram travels base64-encoded and decodes.
    let raw = doc["raw"]["handshake_hist"].as_str().unwrap();
    let h = myriad_load::stats::histogram_from_base64(raw).unwrap();
    assert_eq!(h.len(), 300);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("300 ok, 0 failed"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_delivers_every_message_to_every_member() {
    let s = myriad(|_| {}).await;
    let (out, doc) = load(&[
        "chat",
        "--url",
        &url(&s),
        "--rooms",
        "4",
        "--members",
        "25",
        "--msg-rate",
        "5",
        "--duration",
        "2s",
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let sent = fig(&doc, "sent");
    assert!(
        sent >= 4 * 25 * 8,
        "each member sends ~10 in 2 s at 5/s, got {sent} in all"
    );
    assert_eq!(
        fig(&doc, "delivered"),
        sent * 25,
        "every member gets every message of its room"
    );
    assert_eq!(fig(&doc, "expected"), sent * 25);
    assert_eq!(
        fig(&doc, "lost") + fig(&doc, "duplicated") + fig(&doc, "reordered"),
        0
    );
    assert_eq!(doc["figures"]["latency"]["count"], sent * 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_via_push_and_via_api_reaches_every_subscriber_in_order() {
    let s = myriad(|_| {}).await;
    for via in ["ws", "api"] {
        let (out, doc) = load(&[
            "fanout",
            "--url",
            &url(&s),
            "-n",
            "300",
            "-k",
            "50",
            "--publish-rate",
            "200",
            "--publish-via",
            via,
            "--api-key",
            "test-key",
            "--topic",
            &format!("room:fan-{via}"),
        ])
        .await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{via}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(fig(&doc, "sent"), 50, "{via}");
        assert_eq!(fig(&doc, "delivered"), 50 * 300, "{via}");
        assert_eq!(fig(&doc, "lost"), 0, "{via}");
        assert_eq!(
            doc["figures"]["publish_to_last_delivery"]["count"], 50,
            "{via}: one figure per message"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_with_side_rooms_keeps_chat_out_of_the_broadcast_figures() {
    let s = myriad(|_| {}).await;
    let (out, doc) = load(&[
        "fanout",
        "--url",
        &url(&s),
        "-n",
        "40",
        "-k",
        "30",
        "--publish-rate",
        "20",
        "--side-room-size",
        "4",
        "--side-rate",
        "10",
        "--topic",
        "room:fan-side",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    // The broadcast figures count only the publisher's messages ...
    assert_eq!(fig(&doc, "delivered"), 30 * 40);
    assert_eq!(fig(&doc, "lost"), 0);
    assert_eq!(fig(&doc, "duplicated"), 0);
    // ... while every member chatted in its room of four, and each push
    // reached the room (four receivers, the pusher included).
    let (sent, got) = (fig(&doc, "side_sent"), fig(&doc, "side_delivered"));
    assert!(sent >= 40, "every member pushed at least once: {sent}");
    assert!(got >= sent, "pushes reached their rooms: {got} of {sent}");
    assert_eq!(doc["figures"]["side_latency"]["count"], got);
    assert_eq!(doc["figures"]["joins_ok"], 80, "two joins per subscriber");
    assert!(stdout.contains("side rooms"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_stay_alive_through_a_connect_phase_longer_than_the_idle_timeout() {
    // The first connections wait ~3 s for the last ones, then the broadcasts
    // take ~2 s: silent for 5 s they would pass the server's 4 s idle timeout
    // (as no phoenix.js client would) unless they heartbeat while waiting.
    let s = myriad(|c| c.idle_timeout = std::time::Duration::from_secs(4)).await;
    let (out, doc) = load(&[
        "fanout",
        "--url",
        &url(&s),
        "-n",
        "60",
        "--rate",
        "20",
        "-k",
        "8",
        "--publish-rate",
        "4",
        "--topic",
        "room:fan-idle",
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(fig(&doc, "delivered"), 8 * 60);
    assert!(
        doc["raw"]["close_codes"]
            .as_object()
            .is_none_or(|c| c.is_empty()),
        "no idle closes: {}",
        doc["raw"]["close_codes"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_publisher_loses_nothing_with_in_process_and_child_workers() {
    let s = myriad(|_| {}).await;
    for workers in ["1", "2"] {
        let (out, doc) = load(&[
            "fanout",
            "--url",
            &url(&s),
            "-n",
            "200",
            "-k",
            "60",
            "--publish-rate",
            "0",
            "--publish-window",
            "2",
            "--workers",
            workers,
            "--topic",
            &format!("room:paced-{workers}"),
        ])
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{workers}: {stdout}");
        assert_eq!(fig(&doc, "delivered"), 60 * 200, "{workers}");
        assert_eq!(fig(&doc, "lost"), 0, "{workers}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_cycles_get_their_own_messages_back() {
    let s = myriad(|_| {}).await;
    let (out, doc) = load(&[
        "churn",
        "--url",
        &url(&s),
        "--rate",
        "50",
        "--duration",
        "2s",
        "--pushes",
        "3",
        "--push-interval",
        "20ms",
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let cycles = fig(&doc, "cycles");
    assert!(
        (90..=100).contains(&cycles),
        "50/s for 2 s starts ~100 cycles, got {cycles}"
    );
    assert_eq!(fig(&doc, "connects_ok"), cycles);
    assert_eq!(fig(&doc, "sent"), cycles * 3);
    assert_eq!(fig(&doc, "delivered"), cycles * 3);
    assert_eq!(fig(&doc, "lost"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscribers_are_cut_off_and_the_others_lose_nothing() {
    let s = myriad(|c| {
        c.mailbox_capacity = 128;
        // Without a bound the kernel would absorb ~4 MiB per stalled reader.
        c.socket_send_buffer = 16 * 1024;
        c.slow_consumer = SlowConsumerPolicy::Disconnect;
    })
    .await;
    // Few, large messages: a healthy subscriber may lag 128 messages (2.5 s
    // at 50/s) before it too would count as slow, which keeps the test honest
    // on a loaded CI machine; a stalled one overflows after ~130 messages
    // because the kernel may buffer only 16 KiB for it.
    let (out, doc) = load(&[
        "slow",
        "--url",
        &url(&s),
        "-n",
        "50",
        "--slow-share",
        "0.2",
        "-k",
        "200",
        "--size",
        "16000",
        "--publish-rate",
        "50",
        "--duration",
        "15s",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(fig(&doc, "slow_disconnected"), 10, "{stdout}");
    assert!(fig(&doc, "expected_loss") > 0);
    assert_eq!(fig(&doc, "lost"), 0, "healthy subscribers lose nothing");
    assert_eq!(fig(&doc, "delivered"), 200 * 40);
    assert_eq!(doc["raw"]["close_codes"]["1013"], 10, "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_merge_into_one_report() {
    let s = myriad(|_| {}).await;
    let (out, doc) = load(&[
        "chat",
        "--url",
        &url(&s),
        "--rooms",
        "4",
        "--members",
        "10",
        "--msg-rate",
        "5",
        "--duration",
        "1s",
        "--workers",
        "2",
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(doc["workers"], 2);
    assert_eq!(fig(&doc, "connects_ok"), 40);
    assert_eq!(
        fig(&doc, "peak_connections"),
        40,
        "gauges add up over workers"
    );
    let sent = fig(&doc, "sent");
    assert!(sent > 0);
    assert_eq!(fig(&doc, "delivered"), sent * 10);
    assert_eq!(
        doc["figures"]["latency"]["count"],
        sent * 10,
        "both workers' histograms merged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_spread_connections_over_source_addresses() {
    // A bare WebSocket server that remembers who connected.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&peers);
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            seen.lock().unwrap().push(peer.ip());
            tokio::spawn(async move {
                if let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await {
                    use futures_util::StreamExt;
                    while let Some(Ok(_)) = ws.next().await {}
                }
            });
        }
    });
    let (out, doc) = load(&[
        "connect",
        "--protocol",
        "raw",
        "--url",
        &format!("ws://{addr}/"),
        "-n",
        "40",
        "--duration",
        "300ms",
        "--workers",
        "2",
        "--source-ips",
        "127.0.0.7-127.0.0.8",
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(fig(&doc, "connects_ok"), 40);
    let peers = peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 40);
    let from = |ip: &str| peers.iter().filter(|p| p.to_string() == ip).count();
    assert_eq!(from("127.0.0.7"), 20, "worker 0 uses the first address");
    assert_eq!(from("127.0.0.8"), 20, "worker 1 the second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn violated_slo_fails_the_run_and_the_report_is_written() {
    let s = myriad(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let (out, doc) = load(&[
        "chat",
        "--url",
        &url(&s),
        "--rooms",
        "1",
        "--members",
        "5",
        "--duration",
        "1s",
        "--slo",
        "p99<1us,loss=0",
        "--report",
        report.to_str().unwrap(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(doc["slo_violations"], serde_json::json!(["p99<1us"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("SLO VIOLATED: p99<1us"));
    for f in [
        "README.md",
        "latency.svg",
        "connections.svg",
        "throughput.svg",
    ] {
        let p: &Path = &report.join(f);
        let text = std::fs::read_to_string(p).unwrap();
        assert!(text.len() > 200, "{f} is written");
    }
    let svg = std::fs::read_to_string(report.join("latency.svg")).unwrap();
    assert!(
        svg.contains("<svg") && svg.contains("polyline"),
        "a plotted line"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_protocol_against_the_baseline_server() {
    // The strong baseline (the default) and the naive one both broadcast
    // every frame to every connection, in order; with --echo each client
    // gets its own frames back.
    for variant in [&[][..], &["--naive"][..]] {
        let mut args = vec!["baseline-server", "--run-for", "60s"];
        args.extend_from_slice(variant);
        let (mut server, listen) = serve_subcommand(&args).await;
        let (out, doc) = load(&[
            "fanout",
            "--protocol",
            "raw",
            "--url",
            &format!("ws://{listen}/"),
            "-n",
            "200",
            "-k",
            "100",
            "--publish-rate",
            "500",
        ])
        .await;
        assert_delivered_all(&out, &doc, 100 * 200);
        let _ = server.kill().await;
        args.push("--echo");
        let (mut server, listen) = serve_subcommand(&args).await;
        let (out, _) = load(&[
            "churn",
            "--protocol",
            "raw",
            "--url",
            &format!("ws://{listen}/"),
            "--rate",
            "50",
            "--duration",
            "1s",
        ])
        .await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{variant:?} echo: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let _ = server.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_server_pid_are_probed() {
    let s = myriad(|_| {}).await;
    let pid = std::process::id().to_string();
    let metrics = format!("http://{}/metrics", s.admin);
    let (out, doc) = load(&[
        "connect",
        "--url",
        &url(&s),
        "-n",
        "200",
        "--duration",
        "500ms",
        "--server-pid",
        &pid,
        "--metrics-url",
        &metrics,
    ])
    .await;
    assert_eq!(out.status.code(), Some(0));
    assert!(doc["server"]["loaded"]["rss_kib"].as_u64().unwrap() > 0);
    assert!(doc["figures"]["server_rss_per_connection_kib"].is_number());
    let changed = &doc["server_metrics_changed"];
    assert!(
        changed
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("myriad_sessions_opened_total")),
        "{changed:#}"
    );
}

#[test]
fn bad_flags_are_usage_errors() {
    let out = std::process::Command::new(BIN)
        .args(["chat", "--ramp", "fast"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(BIN)
        .args(["chat", "--url", "ws://127.0.0.1:1/", "--msg-rate", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--msg-rate"));
    let out = std::process::Command::new(BIN)
        .args([
            "fanout",
            "--url",
            "ws://127.0.0.1:1/",
            "--side-room-size",
            "4",
        ])
        .args(["--protocol", "raw"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--side-room-size"));
    // HTTP readers cannot push: scenarios whose clients push refuse them.
    for scenario in ["chat", "churn", "slow"] {
        let out = std::process::Command::new(BIN)
            .args([scenario, "--url", "ws://127.0.0.1:1/", "--transport", "sse"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{scenario}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("connect and fanout scenarios only"), "{err}");
    }
}

#[test]
fn help_documents_every_scenario() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for s in [
        "connect",
        "chat",
        "fanout",
        "churn",
        "slow",
        "baseline-server",
        "backend",
        "--slo",
        "--ramp",
        "--json",
        "--report",
        "--server-pid",
    ] {
        assert!(help.contains(s), "--help mentions {s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_spread_round_robin_over_several_urls() {
    let (s1, s2) = (myriad(|_| {}).await, myriad(|_| {}).await);
    let urls = format!("{},{}", url(&s1), url(&s2));
    let (out, doc) = load(&["connect", "--url", &urls, "-n", "40", "--duration", "300ms"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(fig(&doc, "connects_ok"), 40);
    for s in [&s1, &s2] {
        let text = reqwest::get(format!("http://{}/metrics", s.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let opened = text
            .lines()
            .find(|l| l.starts_with("myriad_sessions_opened_total{endpoint=\"phoenix\"}"))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse::<f64>().ok());
        assert_eq!(opened, Some(20.0), "each server gets half");
    }
}

/// A test CA and a server certificate for 127.0.0.1 it signed, from the
/// openssl CLI (scripts/test.sh installs it): (CA PEM, certificate PEM, key PEM).
fn test_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let path = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let ok = std::process::Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "openssl {args:?} failed");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &["-days", "1", "-subj", "/CN=myriad-load test CA"],
        ]
        .concat()
        .into_iter()
        .chain(["-keyout", "ca.key", "-out", "ca.pem"])
        .collect::<Vec<_>>(),
    );
    openssl(
        &[
            &["req"],
            &ec[..],
            &["-subj", "/CN=127.0.0.1", "-keyout", "key.pem"],
        ]
        .concat()
        .into_iter()
        .chain(["-out", "server.csr"])
        .collect::<Vec<_>>(),
    );
    std::fs::write(
        path("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ]);
    (path("ca.pem"), path("cert.pem"), path("key.pem"))
}

/// A TLS terminator in front of `backend`, as nginx is in deploy/: returns
/// its address.
async fn tls_terminator(cert: &Path, key: &Path, backend: SocketAddr) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_targets_speak_tls_and_trust_the_given_ca() {
    let s = myriad(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki(dir.path());
    let tls = tls_terminator(&cert, &key, s.public).await;
    let wss = format!("wss://{tls}/socket/websocket");
    let ca = ca.to_str().unwrap();
    let (out, doc) = load(&[
        "fanout",
        "--url",
        &wss,
        "--tls-ca",
        ca,
        "-n",
        "100",
        "-k",
        "20",
        "--publish-rate",
        "200",
        "--topic",
        "room:tls",
    ])
    .await;
    assert_delivered_all(&out, &doc, 20 * 100);

    // Without the test CA the certificate is refused, and said so.
    let (out, doc) = load(&[
        "connect",
        "--url",
        &wss,
        "-n",
        "5",
        "--duration",
        "1s",
        "--rate",
        "100",
    ])
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(fig(&doc, "connects_ok"), 0, "{stdout}");
    assert_eq!(fig(&doc, "connect_errors"), 5, "{stdout}");
    assert!(stdout.contains("tls: certificate rejected"), "{stdout}");
    assert_ne!(
        out.status.code(),
        Some(0),
        "a run that could not connect fails"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_run_against_a_hooked_myriad_with_the_backend_stub() {
    use myriad::config::hooks::HookEndpoint;
    let (stub, listen) = serve_subcommand(&["backend", "--run-for", "8s"]).await;
    let hook = |name: &str| {
        Some(HookEndpoint {
            url: format!("http://{listen}/{name}"),
            timeout: None,
            concurrency: None,
        })
    };
    let s = myriad(|c| {
        for ns in &mut c.namespaces {
            ns.join_hook = hook("join");
            ns.publish_hook = hook("publish");
        }
    })
    .await;
    let (out, doc) = load(&[
        "chat",
        "--url",
        &url(&s),
        "--rooms",
        "2",
        "--members",
        "3",
        "--msg-rate",
        "5",
        "--duration",
        "1s",
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(fig(&doc, "lost"), 0);
    let sent = fig(&doc, "delivered");
    assert!(sent > 0);
    // The stub prints what it answered when it stops.
    let done = stub.wait_with_output().await.unwrap();
    let counts: Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!(counts["join"], 6, "{counts}");
    assert!(counts["publish"].as_u64().unwrap() > 0, "{counts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_reaches_sse_readers_too() {
    let s = myriad(|_| {}).await;
    let (out, doc) = load(&[
        "fanout",
        "--transport",
        "sse",
        "--url",
        &url(&s),
        "-n",
        "50",
        "-k",
        "40",
        "--publish-rate",
        "400",
    ])
    .await;
    assert_delivered_all(&out, &doc, 50 * 40);
    // The readers were the server's sse sessions.
    let metrics = reqwest::get(format!("http://{}/metrics", s.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("myriad_sessions_opened_total{endpoint=\"sse\"} 50"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_reaches_long_poll_subscribers() {
    let s = myriad(|c| c.longpoll_hold = std::time::Duration::from_millis(500)).await;
    let (out, doc) = load(&[
        "fanout",
        "--transport",
        "longpoll",
        "--url",
        &url(&s),
        "-n",
        "30",
        "-k",
        "40",
        "--publish-rate",
        "400",
    ])
    .await;
    assert_delivered_all(&out, &doc, 30 * 40);
    let metrics = reqwest::get(format!("http://{}/metrics", s.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("myriad_sessions_opened_total{endpoint=\"longpoll\"} 30"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_holds_sse_and_long_poll_readers() {
    let s = myriad(|c| c.longpoll_hold = std::time::Duration::from_millis(300)).await;
    for (transport, n) in [("sse", 120u64), ("longpoll", 40)] {
        let count = n.to_string();
        let (out, doc) = load(&[
            "connect",
            "--transport",
            transport,
            "--url",
            &url(&s),
            "-n",
            &count,
            "--topics",
            "4",
            "--duration",
            "1500ms",
            "--concurrency",
            "16",
        ])
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{transport}: {stdout}");
        assert_eq!(fig(&doc, "connects_ok"), n, "{transport}");
        assert_eq!(fig(&doc, "peak_connections"), n, "{transport}");
        // Held past several long-poll holds without the server ending them.
        assert_eq!(fig(&doc, "errors"), 0, "{transport}: {stdout}");
    }
    let metrics = reqwest::get(format!("http://{}/metrics", s.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("myriad_sessions_opened_total{endpoint=\"sse\"} 120"));
    assert!(metrics.contains("myriad_sessions_opened_total{endpoint=\"longpoll\"} 40"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_and_long_poll_readers_speak_https_to_a_wss_url() {
    let s = myriad(|c| c.longpoll_hold = std::time::Duration::from_millis(500)).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_pki(dir.path());
    let tls = tls_terminator(&cert, &key, s.public).await;
    let wss = format!("wss://{tls}/socket/websocket");
    let ca = ca.to_str().unwrap();
    for transport in ["sse", "longpoll"] {
        let topic = format!("room:https-{transport}");
        let (out, doc) = load(&[
            "fanout",
            "--transport",
            transport,
            "--url",
            &wss,
            "--tls-ca",
            ca,
            "-n",
            "20",
            "-k",
            "20",
            "--publish-rate",
            "200",
            "--topic",
            &topic,
        ])
        .await;
        assert_delivered_all(&out, &doc, 20 * 20);
    }
}
