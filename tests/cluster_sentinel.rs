//! Redis Sentinel (`redis+sentinel://`): two nodes find the master through a
//! real sentinel (redis-server --sentinel), the master is killed during
//! traffic, the sentinel promotes the replica, the nodes' links ask again and
//! reconnect there, and every history publish that was answered with an
//! offset (the API's answer) is still there for a client afterwards, in order.
//! The same over TLS (`rediss+sentinel://`): sentinel, master and replica
//! speak TLS only, and the nodes check their certificates against
//! `broker_tls_ca`.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::time::{Duration, Instant};

use common::cluster::{assert_kept_in_order, stored_offsets, Backend, Node};
use common::tls::TlsFiles;
use common::DEADLINE;

/// A command to the server on `port` (over TLS, checked against `tls`'s CA,
/// when given).
async fn redis_cmd(
    port: u16,
    tls: Option<&TlsFiles>,
    args: &[&str],
) -> redis::RedisResult<redis::Value> {
    let client = match tls {
        None => redis::Client::open(format!("redis://127.0.0.1:{port}"))?,
        Some(tls) => redis::Client::build_with_tls(
            format!("rediss://127.0.0.1:{port}"),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(tls.path("ca.pem")).unwrap()),
            },
        )?,
    };
    // redis-rs gives up on an answer after 500 ms by default; WAIT may take longer.
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut conn).await
}

/// Poll `check` until true or `within` passes.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < until, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Publish through node `node`'s API; the offset Redis gave it, if any.
async fn publish(node: &Node, topic: &str, i: u64) -> Option<u64> {
    node.api_broadcast("sentinel-key", topic, i).await["offset"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_sentinel_failover_no_acknowledged_history_is_lost() {
    failover_keeps_acknowledged_history(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_tls_sentinel_failover_no_acknowledged_history_is_lost() {
    let tls = TlsFiles::new();
    failover_keeps_acknowledged_history(Some(&tls)).await;
}

async fn failover_keeps_acknowledged_history(tls: Option<&TlsFiles>) {
    let dir = std::env::temp_dir().join(format!(
        "myriad-sentinel-{}-{}",
        std::process::id(),
        tls.is_some()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut master, replica) = match tls {
        None => {
            let master = Backend::redis();
            let replica = Backend::redis_replica_of(master.port);
            (master, replica)
        }
        Some(tls) => {
            let master = Backend::redis_tls(tls, false);
            let replica = Backend::redis_tls_replica_of(tls, master.port);
            (master, replica)
        }
    };
    let sentinel = Backend::redis_sentinel(&dir, "mymaster", master.port, tls);
    // The sentinel has found the replica (it can only promote one it knows).
    eventually(
        Duration::from_secs(30),
        "sentinel sees the replica",
        || async {
            matches!(
                redis_cmd(sentinel.port, tls, &["SENTINEL", "replicas", "mymaster"]).await,
                Ok(redis::Value::Array(r)) if !r.is_empty()
            )
        },
    )
    .await;

    let scheme = if tls.is_some() { "rediss" } else { "redis" };
    let url = format!("{scheme}+sentinel://127.0.0.1:{}/mymaster", sentinel.port);
    let ca = tls.map(|t| t.path("ca.pem"));
    let mut args = vec![
        "--broker",
        "redis",
        "--broker-url",
        &url,
        "--api-keys",
        "sentinel-key",
    ];
    if let Some(ca) = &ca {
        args.extend(["--broker-tls-ca", ca.as_str()]);
    }
    let (a, b) = (Node::spawn(&args), Node::spawn(&args));
    for n in [&a, &b] {
        assert!(
            n.broker_connected(DEADLINE).await,
            "link up through the sentinel"
        );
    }
    let topic = "chat:sentinel";
    let mut acked = a.sequenced("sentinel-key", topic, 0..5).await;
    assert_eq!(acked, [1, 2, 3, 4, 5]);
    // Acknowledged writes are on the replica before the master dies (Redis
    // replicates asynchronously; WAIT is what an operator's durability
    // check would do).
    let synced = redis_cmd(master.port, tls, &["WAIT", "1", "5000"])
        .await
        .unwrap();
    assert_eq!(synced, redis::Value::Int(1));

    master.kill();
    // The links notice, and while they are down the nodes keep serving (a
    // history publish then gets a local offset under a local epoch, which
    // recovery across answers `recovered: false`, never a gap).
    eventually(Duration::from_secs(20), "the links notice", || async {
        a.metric("myriad_broker_connected").await == Some(0.0)
    })
    .await;
    for i in 5..8 {
        publish(&a, topic, i).await;
    }
    // The sentinel promotes the replica; the links ask it again and reconnect.
    for n in [&a, &b] {
        assert!(
            n.broker_connected(Duration::from_secs(60)).await,
            "link back through the sentinel"
        );
    }
    acked.extend(a.sequenced("sentinel-key", topic, 8..13).await);
    // The new master carried on from the replicated sequence.
    assert_eq!(acked[5], 6, "{acked:?}");
    assert!(acked.windows(2).all(|w| w[1] == w[0] + 1), "{acked:?}");
    let promoted = redis_cmd(replica.port, tls, &["ROLE"]).await.unwrap();
    assert!(format!("{promoted:?}").contains("master"), "{promoted:?}");

    // Node B (its link went through the same failover) has every acknowledged
    // publication for a client that asks for the history.
    let last = *acked.last().unwrap();
    eventually(
        Duration::from_secs(20),
        "node B stores the last publish",
        || async { stored_offsets(&b, topic).await.contains(&last) },
    )
    .await;
    let stored = stored_offsets(&b, topic).await;
    assert_kept_in_order(&acked, &stored);
    drop(sentinel);
    let _ = std::fs::remove_dir_all(&dir);
}
