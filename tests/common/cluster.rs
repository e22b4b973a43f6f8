//! Cluster test fixtures: myriad nodes as separate processes (the built
//! binary), and a Redis or NATS server on a free loopback port. Every process
//! is killed when its handle drops.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::tls::TlsFiles;
use super::{http_get, metric_value, without_myriad_env, Client, DEADLINE};

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not open port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A throwaway redis-server on loopback: no persistence, plus `extra`. Its
/// working directory is a fresh temporary one: a replica writes the RDB file
/// its master sends whatever `save` says, and a redis-server loads any
/// `dump.rdb` in its directory at start, so a shared directory would leak
/// one test's data into the next.
fn redis_args(port: u16, extra: &[&str]) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!("myriad-redis-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.to_string_lossy().into_owned();
    let port = port.to_string();
    let base = [
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir,
    ];
    base.iter().chain(extra).map(|s| s.to_string()).collect()
}

/// A broker server process (redis-server or nats-server).
pub struct Backend {
    child: Child,
    pub port: u16,
    program: &'static str,
    /// `user:password@` for the URL, when the server requires credentials.
    credentials: Option<String>,
    /// Only TLS connections (rediss:// or tls:// URLs).
    tls: bool,
}

impl Backend {
    fn spawn(program: &'static str, args: &[String], port: u16) -> Backend {
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {program} ({e}); scripts/test.sh installs it")
            });
        wait_for_port(port, program);
        Backend {
            child,
            port,
            program,
            credentials: None,
            tls: false,
        }
    }

    /// A redis-server that speaks TLS only, with `tls`'s server certificate;
    /// with `client_auth` it requires a client certificate from its CA.
    pub fn redis_tls(tls: &TlsFiles, client_auth: bool) -> Backend {
        Backend::redis_tls_with(tls, client_auth, &[])
    }

    /// The TLS settings of a TLS-only redis-server (or sentinel) on `port`,
    /// as `--name value` pairs; replication and sentinels' links use TLS too.
    fn tls_settings(tls: &TlsFiles, port: u16, client_auth: bool) -> Vec<[String; 2]> {
        [
            ["port", "0"],
            ["tls-port", &port.to_string()],
            ["tls-cert-file", &tls.path("server.pem")],
            ["tls-key-file", &tls.path("server-key.pem")],
            ["tls-ca-cert-file", &tls.path("ca.pem")],
            // What a server presents when it connects out (a replica to its
            // master, a node on the cluster bus, which always asks for one):
            // the client certificate, whose key usage allows it.
            ["tls-client-cert-file", &tls.path("client.pem")],
            ["tls-client-key-file", &tls.path("client-key.pem")],
            ["tls-auth-clients", if client_auth { "yes" } else { "no" }],
            ["tls-replication", "yes"],
        ]
        .map(|[k, v]| [k.to_string(), v.to_string()])
        .to_vec()
    }

    fn redis_tls_with(tls: &TlsFiles, client_auth: bool, extra: &[&str]) -> Backend {
        let port = free_port();
        let flags: Vec<String> = Backend::tls_settings(tls, port, client_auth)
            .into_iter()
            .flat_map(|[k, v]| [format!("--{k}"), v])
            .collect();
        let flags: Vec<&str> = flags
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .collect();
        // redis_args' own --port comes first; the TLS settings' "--port 0"
        // comes later and wins (redis-server applies options in order).
        let args = redis_args(port, &flags);
        let mut b = Backend::spawn("redis-server", &args, port);
        b.tls = true;
        b
    }

    /// A TLS-only redis-server replicating `master` (TLS-only) over TLS.
    pub fn redis_tls_replica_of(tls: &TlsFiles, master: u16) -> Backend {
        let m = master.to_string();
        Backend::redis_tls_with(tls, false, &["--replicaof", "127.0.0.1", &m])
    }

    /// A nats-server that speaks TLS only; with `client_auth` it requires a
    /// client certificate from `tls`'s CA.
    pub fn nats_tls(tls: &TlsFiles, client_auth: bool) -> Backend {
        let port = free_port().to_string();
        let mut args = vec![
            "-a",
            "127.0.0.1",
            "-p",
            &port,
            "--tls",
            "--tlscert",
            &tls.path("server.pem"),
            "--tlskey",
            &tls.path("server-key.pem"),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        if client_auth {
            args.extend([
                "--tlsverify".into(),
                "--tlscacert".into(),
                tls.path("ca.pem"),
            ]);
        }
        let mut b = Backend::spawn("nats-server", &args, port.parse().unwrap());
        b.tls = true;
        b
    }

    /// A nats-server started from a configuration file's `text` (accounts,
    /// nkey users, operator mode), written into `dir`.
    pub fn nats_with_config(dir: &std::path::Path, text: &str) -> Backend {
        let port = free_port();
        let conf = dir.join(format!("nats-{port}.conf"));
        std::fs::write(&conf, format!("listen: \"127.0.0.1:{port}\"\n{text}\n")).unwrap();
        let args = ["-c".to_string(), conf.to_string_lossy().into_owned()];
        Backend::spawn("nats-server", &args, port)
    }

    pub fn redis_on(port: u16) -> Backend {
        Backend::spawn("redis-server", &redis_args(port, &[]), port)
    }

    pub fn redis() -> Backend {
        Backend::redis_on(free_port())
    }

    /// A redis-server replicating `master`.
    pub fn redis_replica_of(master: u16) -> Backend {
        let port = free_port();
        let m = master.to_string();
        let args = redis_args(port, &["--replicaof", "127.0.0.1", &m]);
        Backend::spawn("redis-server", &args, port)
    }

    /// A redis-server in sentinel mode watching `master` as `name` (quorum 1,
    /// down after 1 s), its config (which Sentinel rewrites) in `dir`; with
    /// `tls`, the sentinel and the servers it watches speak TLS only.
    pub fn redis_sentinel(
        dir: &std::path::Path,
        name: &str,
        master: u16,
        tls: Option<&TlsFiles>,
    ) -> Backend {
        let port = free_port();
        let conf = dir.join(format!("sentinel-{port}.conf"));
        let listen = match tls {
            None => format!("port {port}\n"),
            Some(tls) => Backend::tls_settings(tls, port, false)
                .into_iter()
                .map(|[k, v]| format!("{k} {v}\n"))
                .collect(),
        };
        std::fs::write(
            &conf,
            format!(
                "{listen}bind 127.0.0.1\nsentinel monitor {name} 127.0.0.1 {master} 1\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 5000\n\
                 sentinel parallel-syncs {name} 1\n"
            ),
        )
        .unwrap();
        let args = [
            conf.to_string_lossy().into_owned(),
            "--sentinel".to_string(),
        ];
        let mut b = Backend::spawn("redis-server", &args, port);
        b.tls = tls.is_some();
        b
    }

    pub fn nats() -> Backend {
        let port = free_port();
        let args = ["-a", "127.0.0.1", "-p", &port.to_string()].map(String::from);
        Backend::spawn("nats-server", &args, port)
    }

    /// A redis-server that requires a password (`requirepass`).
    pub fn redis_with_password(password: &str) -> Backend {
        let port = free_port();
        let args = redis_args(port, &["--requirepass", password]);
        let mut b = Backend::spawn("redis-server", &args, port);
        b.credentials = Some(format!(":{password}@"));
        b
    }

    /// A nats-server that requires a user and password.
    pub fn nats_with_user(user: &str, password: &str) -> Backend {
        let port = free_port();
        let args = [
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--user",
            user,
            "--pass",
            password,
        ]
        .map(String::from);
        let mut b = Backend::spawn("nats-server", &args, port);
        b.credentials = Some(format!("{user}:{password}@"));
        b
    }

    pub fn url(&self) -> String {
        let creds = self.credentials.as_deref().unwrap_or("");
        let scheme = match (self.program, self.tls) {
            ("redis-server", false) => "redis",
            ("redis-server", true) => "rediss",
            (_, false) => "nats",
            (_, true) => "tls",
        };
        format!("{scheme}://{creds}127.0.0.1:{}", self.port)
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster on loopback: `primaries` primaries with one replica
/// each, made with `redis-cli --cluster create` (fast failover: a node is
/// failed after 1 s). Every server is killed when this drops.
pub struct RedisCluster {
    /// Every server, the primaries first (as `--cluster create` assigns them).
    pub servers: Vec<Backend>,
    primaries: usize,
    /// redis-cli's TLS flags when the cluster speaks TLS only.
    cli_tls: Vec<String>,
}

impl RedisCluster {
    pub fn start(primaries: usize) -> RedisCluster {
        RedisCluster::start_with(primaries, None)
    }

    /// Every node, and the cluster bus, on TLS only (`tls`'s certificates).
    pub fn start_tls(primaries: usize, tls: &TlsFiles) -> RedisCluster {
        RedisCluster::start_with(primaries, Some(tls))
    }

    fn start_with(primaries: usize, tls: Option<&TlsFiles>) -> RedisCluster {
        let servers: Vec<Backend> = (0..primaries * 2)
            .map(|_| {
                let port = free_port();
                // The bus port is given explicitly: port + 10000 (the default)
                // is past 65535 for most ephemeral ports.
                let bus = free_port().to_string();
                let conf = format!("nodes-{port}.conf");
                let mut flags: Vec<String> = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-port",
                    &bus,
                ]
                .map(String::from)
                .to_vec();
                if let Some(tls) = tls {
                    flags.extend(
                        Backend::tls_settings(tls, port, false)
                            .into_iter()
                            .flat_map(|[k, v]| [format!("--{k}"), v]),
                    );
                    flags.extend(["--tls-cluster".to_string(), "yes".to_string()]);
                }
                let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                let mut b = Backend::spawn("redis-server", &redis_args(port, &flags), port);
                b.tls = tls.is_some();
                b
            })
            .collect();
        let cli_tls = match tls {
            Some(tls) => vec![
                "--tls".to_string(),
                "--cacert".to_string(),
                tls.path("ca.pem"),
            ],
            None => Vec::new(),
        };
        let mut create = Command::new("redis-cli");
        create.args(&cli_tls).args(["--cluster", "create"]);
        for s in &servers {
            create.arg(format!("127.0.0.1:{}", s.port));
        }
        // redis-cli waits for the nodes to meet without a limit of its own.
        let mut creating = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-cli (scripts/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = creating.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = creating.kill();
                panic!("redis-cli --cluster create did not finish within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = RedisCluster {
            servers,
            primaries,
            cli_tls,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cluster.servers.iter().all(|s| {
            cluster
                .cli(s.port, &["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
        }) {
            assert!(Instant::now() < deadline, "the cluster never became ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// `redis-cli -p PORT args...`'s output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(&self.cli_tls)
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `redis+cluster://` naming the primaries as seeds.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.servers[..self.primaries]
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let scheme = if self.cli_tls.is_empty() {
            "redis"
        } else {
            "rediss"
        };
        format!("{scheme}+cluster://{}", seeds.join(","))
    }

    /// The port of the primary serving `key`'s slot now.
    pub fn primary_of(&self, key: &str) -> u16 {
        let any = self.servers.iter().find(|s| self.alive(s.port)).unwrap();
        let slot: u16 = self
            .cli(any.port, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap();
        // CLUSTER NODES: id addr@bus flags master - ping pong epoch state slots...
        for line in self.cli(any.port, &["CLUSTER", "NODES"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                match (lo.parse::<u16>(), hi.parse::<u16>()) {
                    (Ok(lo), Ok(hi)) => (lo..=hi).contains(&slot),
                    _ => false,
                }
            });
            if serves {
                let addr = fields[1].split('@').next().unwrap();
                return addr.rsplit(':').next().unwrap().parse().unwrap();
            }
        }
        panic!("no primary serves slot {slot}");
    }

    fn alive(&self, port: u16) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }

    /// SIGKILL the server on `port`.
    pub fn kill(&mut self, port: u16) {
        let s = self.servers.iter_mut().find(|s| s.port == port).unwrap();
        s.kill();
    }

    /// Whether every slot is served again (after a failover).
    pub fn is_ok(&self) -> bool {
        self.servers.iter().filter(|s| self.alive(s.port)).all(|s| {
            self.cli(s.port, &["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
        })
    }
}

/// A cluster's setup, in one place: a broker backend and the `serve` flags
/// that point nodes at it (plus the test's own), so every node a test starts,
/// at the beginning or later, joins the same cluster.
pub struct Cluster {
    pub backend: Backend,
    args: Vec<String>,
}

impl Cluster {
    /// Nodes on a fresh redis-server, with the test's `extra` flags.
    pub fn redis(extra: &[&str]) -> Cluster {
        Cluster::on(Backend::redis(), "redis", extra)
    }

    /// Nodes on a fresh nats-server, with the test's `extra` flags.
    pub fn nats(extra: &[&str]) -> Cluster {
        Cluster::on(Backend::nats(), "nats", extra)
    }

    /// Nodes on a broker started by the test (with credentials, say).
    pub fn on(backend: Backend, broker: &str, extra: &[&str]) -> Cluster {
        let mut args = vec![
            "--broker".to_string(),
            broker.to_string(),
            "--broker-url".to_string(),
            backend.url(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        Cluster { backend, args }
    }

    /// One more node.
    pub fn node(&self) -> Node {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        Node::spawn(&args)
    }

    /// `N` nodes.
    pub fn nodes<const N: usize>(&self) -> [Node; N] {
        std::array::from_fn(|_| self.node())
    }

    /// `N` nodes, each with its broker link up.
    pub async fn connected<const N: usize>(&self) -> [Node; N] {
        let nodes = self.nodes::<N>();
        for n in &nodes {
            assert!(n.broker_connected(DEADLINE).await, "broker link up");
        }
        nodes
    }
}

/// One member of `topic` on each node, linked across the nodes (probes reach
/// all of them); returns the clients and the first one's join_ref.
pub async fn members_linked(nodes: &[&Node], topic: &str) -> (Vec<Client>, String) {
    let mut clients = Vec::new();
    for n in nodes {
        clients.push(n.client().await);
    }
    let jr = clients[0].join_ok(topic).await;
    for c in &mut clients[1..] {
        c.join_ok(topic).await;
    }
    let (first, rest) = clients.split_at_mut(1);
    let mut rest: Vec<&mut Client> = rest.iter_mut().collect();
    until_linked(&mut first[0], &jr, topic, &mut rest).await;
    (clients, jr)
}

/// One myriad node: the real binary in its own process.
pub struct Node {
    child: Child,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    /// The node's WARN and ERROR log lines so far.
    warnings: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Node {
    pub fn spawn(extra: &[&str]) -> Node {
        Node::spawn_via(&[], extra)
    }

    /// `spawn` under a wrapper command (`prlimit --nofile=.. --`, say).
    pub fn spawn_via(wrapper: &[&str], extra: &[&str]) -> Node {
        let bin = env!("CARGO_BIN_EXE_myriad");
        let mut cmd = match wrapper.split_first() {
            None => Command::new(bin),
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
        };
        without_myriad_env(&mut cmd)
            .args(super::SERVE_ON_FREE_PORTS)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = std::sync::Arc::clone(&warnings);
        // Read the listening line, then keep draining so the pipe never fills.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && line.contains("myriad listening") {
                    let _ = tx.send(line);
                    sent = true;
                } else if line.contains("WARN") || line.contains("ERROR") {
                    // Shown with a failing test's output (the harness captures it).
                    eprintln!("node: {line}");
                    if let Ok(mut w) = kept.lock() {
                        w.push(line);
                    }
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("node started");
        let addr = |key: &str| -> SocketAddr {
            let at = line.find(key).unwrap() + key.len();
            line[at..]
                .split_whitespace()
                .next()
                .unwrap()
                .trim_matches('"')
                .parse()
                .unwrap()
        };
        Node {
            public: addr("public="),
            admin: addr("admin="),
            child,
            warnings,
        }
    }

    /// The node's WARN and ERROR log lines so far.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// Send the node SIGTERM (it drains).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/socket/websocket?vsn=2.0.0", self.public)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    /// `POST /api/broadcast` with API key `key` of `{"i": i}` as `m` on
    /// `topic`; asserts a 200 and returns the answer's body.
    pub async fn api_broadcast(&self, key: &str, topic: &str, i: u64) -> Value {
        let resp = reqwest::Client::new()
            .post(format!("http://{}/api/broadcast", self.public))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(json!({"topic": topic, "event": "m", "payload": {"i": i}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        serde_json::from_str(&resp.text().await.unwrap()).unwrap()
    }

    /// `api_broadcast` of each `i` in `is` on a history topic; the offsets
    /// the cluster assigned, asserting every publish got one.
    pub async fn sequenced(&self, key: &str, topic: &str, is: std::ops::Range<u64>) -> Vec<u64> {
        let mut offsets = Vec::new();
        for i in is {
            let offset = self.api_broadcast(key, topic, i).await["offset"].as_u64();
            offsets.push(offset.expect("sequenced by the cluster"));
        }
        offsets
    }

    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = http_get(&format!("http://{}/metrics", self.admin)).await;
        metric_value(&text, name)
    }

    /// Wait (up to `within`) until the node's broker link is up.
    pub async fn broker_connected(&self, within: Duration) -> bool {
        super::poll_until(within, || async {
            self.metric("myriad_broker_connected").await == Some(1.0)
        })
        .await
    }

    pub async fn readyz(&self) -> u16 {
        http_get(&format!("http://{}/readyz", self.admin)).await.0
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The offsets of the `m` broadcasts `node` replays to a new client that
/// joins `topic` asking for the stored history (`{"history": true}`), in the
/// order they arrive; empty when the join is refused.
pub async fn stored_offsets(node: &Node, topic: &str) -> Vec<u64> {
    let mut probe = node.client().await;
    let (_, reply) = probe.join(topic, json!({"history": true})).await;
    if reply[4]["status"] != "ok" {
        return Vec::new();
    }
    probe
        .sync()
        .await
        .iter()
        .filter(|v| v[3] == "m")
        .filter_map(|v| v[1].as_str()?.split(':').next()?.parse::<u64>().ok())
        .collect()
}

/// Every acknowledged offset is in `stored`, and `stored` is in order: what a
/// failover must leave behind.
pub fn assert_kept_in_order(acked: &[u64], stored: &[u64]) {
    for o in acked {
        assert!(stored.contains(o), "offset {o} lost: stored {stored:?}");
    }
    assert!(
        stored.windows(2).all(|w| w[0] < w[1]),
        "in order: {stored:?}"
    );
}

/// Frames with `event`: read until `expected` arrived (or the deadline), then
/// through a quiet period, so a duplicate or an extra frame would show.
pub async fn collect(c: &mut Client, event: &str, expected: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut out = Vec::new();
    while out.len() < expected && tokio::time::Instant::now() < deadline {
        if let Some(v) = c.recv_opt(Duration::from_millis(200)).await {
            if v[3] == event {
                out.push(v);
            }
        }
    }
    while let Some(v) = c.recv_opt(Duration::from_millis(300)).await {
        if v[3] == event {
            out.push(v);
        }
    }
    out
}

/// Push probes on `topic` from `from` until every `to` client saw one:
/// cross-node subscriptions are set up asynchronously after a join. Drains
/// the probes afterwards so the real traffic starts clean.
pub async fn until_linked(from: &mut Client, jr: &str, topic: &str, to: &mut [&mut Client]) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut seen = vec![false; to.len()];
    while seen.iter().any(|s| !s) {
        assert!(tokio::time::Instant::now() < deadline, "nodes never linked");
        from.push(jr, topic, "probe", json!({})).await;
        for (i, c) in to.iter_mut().enumerate() {
            while let Some(v) = c.recv_opt(Duration::from_millis(100)).await {
                seen[i] |= v[3] == "probe";
            }
        }
    }
    for c in to.iter_mut() {
        while c.recv_opt(Duration::from_millis(200)).await.is_some() {}
    }
}
