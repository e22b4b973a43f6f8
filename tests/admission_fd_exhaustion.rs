//! Running out of file descriptors: the server runs in a child process whose
//! RLIMIT_NOFILE is lowered with `prlimit` (util-linux). Connections beyond the
//! limit wait in the kernel backlog; existing sessions keep chatting; accept
//! backs off instead of spinning, counts, and resumes once descriptors free.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{http_get, metric_value, Client};

const NOFILE: u32 = 48;

struct Server {
    child: Child,
    public: String,
    admin: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={NOFILE}:{NOFILE}"))
        .arg(env!("CARGO_BIN_EXE_myriad"))
        .args(common::SERVE_ON_FREE_PORTS)
        .args(["--handshake-timeout", "60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    common::without_myriad_env(&mut cmd);
    let mut child = cmd.spawn().expect("prlimit (util-linux) must be installed");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let line = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("myriad listening"))
        .expect("server started");
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap()
            .to_owned()
    };
    Server {
        public: field("public="),
        admin: field("admin="),
        child,
    }
}

async fn try_connect(url: &str, wait: Duration) -> Option<Client> {
    let attempt = tokio_tungstenite::connect_async_with_config(url, None, true);
    match tokio::time::timeout(wait, attempt).await {
        Ok(Ok((ws, _))) => Some(Client::from_ws(ws)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_exhaustion_backs_off_and_recovers() {
    let server = start();
    let url = format!("ws://{}/socket/websocket?vsn=2.0.0", server.public);

    // Fill the descriptor table: connect until a handshake no longer completes.
    let mut clients = Vec::new();
    let mut refused = 0;
    for _ in 0..(NOFILE as usize + 16) {
        match try_connect(&url, Duration::from_millis(500)).await {
            Some(mut c) => {
                c.join_ok("room:fd").await;
                clients.push(c);
            }
            None => {
                refused += 1;
                if refused == 3 {
                    break;
                }
            }
        }
    }
    assert!(refused > 0, "the descriptor limit was never reached");
    assert!(clients.len() >= 10, "only {} sessions fit", clients.len());

    // Existing sessions keep chatting while the node is out of descriptors.
    let jr = clients[0].join_ok("room:chat").await;
    clients[1].join_ok("room:chat").await;
    let (reply, _) = clients[0]
        .push(&jr, "room:chat", "hi", serde_json::json!({}))
        .await;
    assert_eq!(reply[4]["status"], "ok");
    let seen = clients[1].sync().await;
    assert!(seen.iter().any(|v| v[3] == "hi"), "{seen:?}");

    // Free descriptors: new sessions succeed again.
    let keep = clients.split_off(clients.len() - 4);
    drop(clients);
    let mut fresh = None;
    for _ in 0..50 {
        if let Some(c) = try_connect(&url, Duration::from_secs(2)).await {
            fresh = Some(c);
            break;
        }
    }
    let mut fresh = fresh.expect("a new session once descriptors were freed");
    fresh.join_ok("room:after").await;

    let (status, text) = http_get(&format!("http://{}/metrics", server.admin)).await;
    assert_eq!(status, 200);
    let errors = metric_value(&text, "myriad_accept_errors_total{kind=\"fd_exhausted\"}").unwrap();
    assert!(errors >= 1.0, "descriptor exhaustion was counted");
    // Backing off (10 ms doubling to 1 s) bounds the failed accepts; a loop
    // that spun would have failed thousands of times.
    assert!(errors < 200.0, "accept spun: {errors} failed accepts");
    drop(keep);
}
