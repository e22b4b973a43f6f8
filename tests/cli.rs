//! The `myriad` binary: configuration commands, startup errors, SIGTERM drain.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn myriad() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_myriad"));
    common::without_myriad_env(&mut cmd);
    cmd
}

/// `myriad config check` on a file holding `text`.
fn config_check(name: &str, text: &str) -> std::process::Output {
    let path = write_config(name, text);
    myriad()
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap()
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("myriad-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn config_check_accepts_a_good_file() {
    let out = config_check(
        "good.toml",
        "idle_timeout = \"30s\"\nmailbox_capacity = 64\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

#[test]
fn config_check_names_the_bad_key_and_why() {
    for (text, key) in [
        ("idle_timout = \"30s\"\n", "idle_timout"),
        ("mailbox_capacity = \"lots\"\n", "mailbox_capacity"),
        ("mailbox_capacity = 0\n", "mailbox_capacity"),
        ("listen = \"not an address\"\n", "listen"),
        ("max_frame_size = 999999\n", "max_frame_size"),
    ] {
        let out = config_check("bad.toml", text);
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{text}: error {err:?} must name {key}");
    }
}

#[test]
fn a_misspelled_file_key_gets_the_closest_real_one_not_the_whole_list() {
    let out = config_check("typo.toml", "idle_timout = \"30s\"\n");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown key `idle_timout`; did you mean `idle_timeout`?"),
        "{err}"
    );
    assert!(
        !err.contains("max_connections"),
        "no list of every key: {err}"
    );
}

#[test]
fn unknown_myriad_env_variables_are_warnings_and_the_node_starts() {
    let mut child = myriad()
        .args(common::SERVE_ON_FREE_PORTS)
        .env("MYRIAD_BIN", "/usr/local/bin/myriad")
        .env("MYRIAD_IDLE_TIMOUT", "30s")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        let done = line.contains("myriad listening");
        seen.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = seen.join("\n");
    assert!(text.contains("myriad listening"), "{text}");
    assert!(
        text.contains("MYRIAD_BIN is not a setting and is ignored"),
        "{text}"
    );
    assert!(text.contains("did you mean MYRIAD_IDLE_TIMEOUT?"), "{text}");
}

#[test]
fn config_check_refuses_a_broker_url_for_another_broker_and_unreadable_keys() {
    for (text, key) in [
        (
            "broker = \"redis\"\nbroker_url = \"nats://127.0.0.1:4222\"\n",
            "broker_url",
        ),
        (
            "broker = \"nats\"\nbroker_url = \"redis://127.0.0.1:6379\"\n",
            "broker_url",
        ),
        (
            "broker = \"redis\"\nbroker_url = \"redis://cache:6380\"\nbroker_tls_ca = \"/etc/ca.pem\"\n",
            "broker_tls_ca",
        ),
        (
            "broker = \"redis\"\nbroker_url = \"rediss://cache:6380\"\nbroker_tls_ca = \"/nonexistent/ca.pem\"\n",
            "broker_tls_ca",
        ),
        (
            "broker = \"redis\"\nbroker_url = \"rediss://cache:6380\"\nbroker_tls_key = \"/etc/key.pem\"\n",
            "broker_tls_cert",
        ),
        (
            "broker = \"redis\"\nbroker_nats_nkey = \"SUAAA\"\n",
            "broker_nats_nkey",
        ),
        (
            "broker = \"nats\"\nbroker_nats_nkey = \"not-a-seed\"\n",
            "broker_nats_nkey",
        ),
        (
            "broker = \"nats\"\nbroker_url = \"nats://u:p@h:4222\"\nbroker_nats_creds = \"/etc/x.creds\"\n",
            "broker_nats_creds",
        ),
        (
            "jwt_algorithm = \"RS256\"\njwt_public_key_file = \"/nonexistent/key.pem\"\n",
            "jwt_public_key_file",
        ),
    ] {
        let out = config_check("broker.toml", text);
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{text}: error {err:?} must name {key}");
    }
    let ok = write_config(
        "broker-ok.toml",
        "broker = \"redis\"\nbroker_url = \"rediss://cache:6380/2\"\n",
    );
    let out = myriad()
        .args(["config", "check"])
        .arg(&ok)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn serve_refuses_an_invalid_env_value_at_startup() {
    let out = myriad()
        .args(["serve"])
        .env("MYRIAD_IDLE_TIMEOUT", "forever")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("idle_timeout"), "{err}");
}

#[test]
fn serve_help_documents_every_option_with_its_default() {
    let out = myriad().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--admin-listen",
        "--idle-timeout",
        "--drain-timeout",
        "--max-restarts",
        "--enable-echo",
        "--enable-fault-injection",
        "--config",
    ] {
        assert!(help.contains(flag), "{flag} missing from help");
    }
    assert!(help.contains("[default: 127.0.0.1:4000]"));
    assert!(help.contains("[default: 1m]"));
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let mut child = myriad()
        .args(common::SERVE_ON_FREE_PORTS)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut listening = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("myriad listening") {
            listening = true;
            break;
        }
        assert!(Instant::now() < deadline, "no listening line");
    }
    assert!(listening);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "log after SIGTERM: {rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("SIGTERM received")),
        "{rest:?}"
    );
}

#[test]
fn a_short_jwt_secret_is_a_configuration_error() {
    let out = config_check("short-secret.toml", "jwt_secret = \"change-me\"\n");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("jwt_secret") && err.contains("32 bytes"),
        "{err}"
    );
}

#[test]
fn config_check_warns_about_anonymous_access_beside_a_key() {
    let out = config_check(
        "mixed.toml",
        "jwt_secret = \"a-secret-that-is-at-least-32-bytes-long\"\nanonymous = true\n",
    );
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning") && err.contains("anonymous_topics"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_summed_up_at_info_and_logged_one_by_one_at_debug() {
    /// Kills the server even when an assertion fails first.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = myriad()
        .args(common::SERVE_ON_FREE_PORTS)
        .args(["--session-log-interval", "300ms"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _server = Killed(child);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let listening = rx.iter().find(|l| l.contains("myriad listening")).unwrap();
    let at = listening.find("public=").unwrap() + "public=".len();
    let public = listening[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_matches('"');
    for _ in 0..3 {
        let mut c =
            common::Client::connect(&format!("ws://{public}/socket/websocket?vsn=2.0.0")).await;
        c.join_ok("room:log").await;
        drop(c);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    let summary = loop {
        assert!(Instant::now() < deadline, "no summary line: {lines:?}");
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        lines.push(line.clone());
        if line.contains(" sessions ") && line.contains("opened=3") {
            break line;
        }
    };
    assert!(summary.contains("INFO"), "{summary}");
    assert!(
        summary.contains("connection_lost=3") || summary.contains("closed=3"),
        "{summary}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("session opened") || l.contains("session closed")),
        "per-session lines are debug: {lines:?}"
    );
}

#[test]
fn config_check_reports_every_problem_including_the_environment_s() {
    let path = write_config(
        "many.toml",
        "mailbox_capacity = 0\nmax_seconds = 0\nmailbox_max_bytes = \"4MiB\"\n",
    );
    let out = myriad()
        .args(["config", "check"])
        .arg(&path)
        .env("MYRIAD_MAX_TOPIC_LENGTH", "0")
        .env("MYRIAD_TOOL_VERSION", "3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["mailbox_capacity", "max_seconds", "max_topic_length"] {
        assert!(
            err.lines().any(|l| l.contains("error:") && l.contains(key)),
            "{key}: {err}"
        );
    }
    assert!(err.contains("3 problem(s)"), "{err}");
    assert!(
        err.contains("warning") && err.contains("MYRIAD_TOOL_VERSION"),
        "{err}"
    );
}

#[test]
fn config_check_warns_when_the_broker_does_not_answer() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let path = write_config(
        "unreachable.toml",
        &format!("broker = \"redis\"\nbroker_url = \"redis://:pw@127.0.0.1:{port}\"\n"),
    );
    let out = myriad()
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "a down broker is no configuration error: {out:?}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: broker") && err.contains("cannot connect"),
        "{err}"
    );
    assert!(!err.contains(":pw@"), "{err}");
}

#[test]
fn config_print_annotates_sources_and_hides_secrets() {
    let path = write_config("print.toml", "mailbox_max_bytes = \"8MiB\"\n");
    let out = myriad()
        .args(["config", "print", "--config"])
        .arg(&path)
        .args(["--max-frame-size", "32KiB"])
        .env("MYRIAD_JWT_SECRET", "0123456789abcdef0123456789abcdef")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("mailbox_max_bytes = 8388608  # file"),
        "{text}"
    );
    assert!(
        text.contains("max_frame_size = 32768  # flag --max-frame-size"),
        "{text}"
    );
    assert!(
        text.contains("jwt_secret = \"<redacted>\"  # env MYRIAD_JWT_SECRET"),
        "{text}"
    );
    assert!(!text.contains("0123456789abcdef"), "{text}");
}

#[test]
fn config_check_reads_sentinel_urls() {
    let ok = config_check(
        "sentinel-ok.toml",
        "broker = \"redis\"\nbroker_url = \"redis+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/mymaster/3\"\n",
    );
    assert!(ok.status.success(), "{ok:?}");
    let err = String::from_utf8_lossy(&ok.stderr);
    assert!(!err.contains(":pw@"), "credentials never shown: {err}");
    let bad = config_check(
        "sentinel-bad.toml",
        "broker = \"redis\"\nbroker_url = \"redis+sentinel://127.0.0.1:26379\"\n",
    );
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("broker_url") && err.contains("master"),
        "{err}"
    );
}

#[test]
fn config_check_reads_cluster_urls_and_tls_multi_server_urls() {
    let ok = config_check(
        "cluster-ok.toml",
        "broker = \"redis\"\nbroker_url = \"redis+cluster://u:pw@127.0.0.1:1,127.0.0.1:2\"\n",
    );
    assert!(ok.status.success(), "{ok:?}");
    assert!(!String::from_utf8_lossy(&ok.stderr).contains(":pw@"));
    // A database or options in a cluster URL are refused, not ignored.
    let bad = config_check(
        "cluster-bad.toml",
        "broker = \"redis\"\nbroker_url = \"redis+cluster://127.0.0.1:1/2\"\n",
    );
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("broker_url") && err.contains("nodes"), "{err}");
    // TLS files go with the TLS forms of both, and only with them.
    let ca = std::env::temp_dir().join(format!("myriad-cli-ca-{}.pem", std::process::id()));
    // A PEM block is all config check reads (the certificate is parsed by
    // the link when it connects).
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let ca = ca.to_string_lossy();
    for (url, fine) in [
        ("rediss+cluster://127.0.0.1:1", true),
        ("rediss+sentinel://127.0.0.1:1/m", true),
        ("redis+cluster://127.0.0.1:1", false),
        ("redis+sentinel://127.0.0.1:1/m", false),
    ] {
        let out = config_check(
            "tls-multi.toml",
            &format!("broker = \"redis\"\nbroker_url = \"{url}\"\nbroker_tls_ca = \"{ca}\"\n"),
        );
        assert_eq!(out.status.success(), fine, "{url}: {out:?}");
        if !fine {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("needs a TLS broker_url"), "{err}");
        }
    }
    let _ = std::fs::remove_file(&*ca);
}
