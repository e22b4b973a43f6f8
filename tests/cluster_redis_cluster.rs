//! Redis Cluster (`redis+cluster://`): a real cluster of three primaries with
//! a replica each (`redis-cli --cluster create`), two myriad nodes on it.
//!
//! - Broadcasts travel on shard channels: the topic's channel exists on the
//!   one shard that owns its slot (`PUBSUB SHARDCHANNELS`) and on no node as
//!   a classic channel, so broadcast traffic scales with the shards.
//! - The primary that owns a history topic is killed during traffic: the
//!   cluster promotes its replica, the links reconnect, and every history
//!   publish that was answered with an offset is there afterwards on the
//!   other node, in order, with the sequence carried on from the replica.
//! - Over TLS (`rediss+cluster://`) every node's certificate is checked
//!   against `broker_tls_ca`.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use common::cluster::{
    assert_kept_in_order, collect, stored_offsets, until_linked, Node, RedisCluster,
};
use common::tls::TlsFiles;
use common::{poll_until, DEADLINE};
use serde_json::json;

const KEY: &str = "cluster-key";

fn nodes(cluster: &RedisCluster) -> (Node, Node) {
    nodes_with(cluster, &[])
}

fn nodes_with(cluster: &RedisCluster, extra: &[&str]) -> (Node, Node) {
    let url = cluster.url();
    let mut args = vec!["--broker", "redis", "--broker-url", &url, "--api-keys", KEY];
    args.extend(extra);
    (Node::spawn(&args), Node::spawn(&args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_cross_nodes_on_the_one_shard_that_owns_the_channel() {
    let cluster = RedisCluster::start(3);
    let (a, b) = nodes(&cluster);
    for n in [&a, &b] {
        assert!(n.broker_connected(DEADLINE).await, "cluster link up");
    }
    let topic = "room:sharded";
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;
    let jr = on_a.join_ok(topic).await;
    on_b.join_ok(topic).await;
    until_linked(&mut on_a, &jr, topic, &mut [&mut on_b]).await;
    for i in 0..20 {
        on_a.push(&jr, topic, "m", json!({"i": i})).await;
    }
    let got = collect(&mut on_b, "m", 20).await;
    let order: Vec<u64> = got.iter().map(|v| v[4]["i"].as_u64().unwrap()).collect();
    assert_eq!(order, (0..20).collect::<Vec<_>>(), "once each, in order");

    // The channel is a shard channel on exactly the shard owning its slot.
    let channel = format!("myriad:{topic}");
    let owner = cluster.primary_of(&channel);
    for s in &cluster.servers {
        let shard = cluster.cli(s.port, &["PUBSUB", "SHARDCHANNELS"]);
        let classic = cluster.cli(s.port, &["PUBSUB", "CHANNELS"]);
        assert!(!classic.contains(&channel), "classic channel on {}", s.port);
        if s.port == owner {
            assert!(shard.contains(&channel), "not on its shard: {shard}");
        } else if cluster.cli(s.port, &["ROLE"]).starts_with("master") {
            assert!(!shard.contains(&channel), "on shard {} too", s.port);
        }
    }
    // The control channel is a shard channel too; history is the one
    // pattern every node keeps (it must reach every node).
    let patterns: u64 = cluster
        .servers
        .iter()
        .flat_map(|s| {
            let clients = cluster.cli(s.port, &["CLIENT", "LIST"]);
            clients
                .split_whitespace()
                .filter_map(|f| f.strip_prefix("psub=")?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum();
    assert_eq!(patterns, 2, "one history pattern per myriad node");

    // A member leaving unsubscribes its node from the shard channel.
    drop(on_a);
    drop(on_b);
    let gone = poll_until(DEADLINE, || async {
        !cluster
            .cli(owner, &["PUBSUB", "SHARDCHANNELS"])
            .contains(&channel)
    })
    .await;
    assert!(gone, "the shard channel goes away");
    // A steady link: no reconnect happened on the way.
    for n in [&a, &b] {
        let failed: Vec<String> = n
            .warnings()
            .into_iter()
            .filter(|w| w.contains("redis link failed"))
            .collect();
        assert!(failed.is_empty(), "{failed:?}");
    }
}

/// Publish through `node`'s API; the offset Redis gave it, if any.
async fn publish(node: &Node, topic: &str, i: u64) -> Option<u64> {
    node.api_broadcast(KEY, topic, i).await["offset"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_killed_during_traffic_loses_no_acknowledged_history() {
    let mut cluster = RedisCluster::start(3);
    let (a, b) = nodes(&cluster);
    for n in [&a, &b] {
        assert!(n.broker_connected(DEADLINE).await, "cluster link up");
    }
    let topic = "chat:cluster";
    // A live member on B, to see the frames arrive once each and in order.
    let mut member = b.client().await;
    member.join_ok(topic).await;
    let mut acked = a.sequenced(KEY, topic, 0..5).await;
    assert_eq!(acked, [1, 2, 3, 4, 5]);
    let primary = cluster.primary_of(&format!("myriad-seq:{{{topic}}}"));
    // Acknowledged writes are on the replica before the primary dies (Redis
    // replicates asynchronously; WAIT is an operator's durability check).
    assert_eq!(cluster.cli(primary, &["WAIT", "1", "5000"]).trim(), "1");

    cluster.kill(primary);
    // The links notice; meanwhile a history publish gets a local offset
    // under a local epoch (recovery across answers recovered:false).
    let noticed = poll_until(Duration::from_secs(20), || async {
        a.metric("myriad_broker_connected").await == Some(0.0)
    })
    .await;
    assert!(noticed, "the links notice");
    for i in 5..8 {
        publish(&a, topic, i).await;
    }
    let promoted = poll_until(Duration::from_secs(30), || async { cluster.is_ok() }).await;
    assert!(promoted, "the replica is promoted");
    for n in [&a, &b] {
        assert!(
            n.broker_connected(Duration::from_secs(60)).await,
            "link back after the failover"
        );
    }
    assert_ne!(
        cluster.primary_of(&format!("myriad-seq:{{{topic}}}")),
        primary
    );
    acked.extend(a.sequenced(KEY, topic, 8..13).await);
    assert_eq!(acked[5], 6, "the sequence carried on: {acked:?}");
    assert!(acked.windows(2).all(|w| w[1] == w[0] + 1), "{acked:?}");

    // The live member on B got every acknowledged frame, in order.
    let got = collect(&mut member, "m", acked.len()).await;
    let offsets: Vec<u64> = got
        .iter()
        .filter_map(|v| v[1].as_str()?.split(':').next()?.parse().ok())
        .collect();
    for o in &acked {
        assert!(offsets.contains(o), "offset {o} not delivered: {offsets:?}");
    }

    // A client asking B for the history finds every acknowledged publish.
    let stored = stored_offsets(&b, topic).await;
    assert_kept_in_order(&acked, &stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_rediss_every_cluster_node_is_checked_against_the_ca() {
    let tls = TlsFiles::new();
    let cluster = RedisCluster::start_tls(3, &tls);
    assert!(cluster.url().starts_with("rediss+cluster://"));
    let ca = tls.path("ca.pem");
    let (a, b) = nodes_with(&cluster, &["--broker-tls-ca", &ca]);
    for n in [&a, &b] {
        assert!(
            n.broker_connected(DEADLINE).await,
            "cluster link up over TLS"
        );
    }
    // Plain (shard channel) and history (script) traffic both cross.
    let topic = "room:tls";
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;
    let jr = on_a.join_ok(topic).await;
    on_b.join_ok(topic).await;
    until_linked(&mut on_a, &jr, topic, &mut [&mut on_b]).await;
    on_a.push(&jr, topic, "m", json!({"i": 1})).await;
    assert_eq!(collect(&mut on_b, "m", 1).await.len(), 1);
    assert_eq!(publish(&a, "chat:tls", 0).await, Some(1));
    assert_eq!(publish(&b, "chat:tls", 1).await, Some(2));

    // A node that does not trust the cluster's CA never links.
    let other = TlsFiles::new();
    let wrong = other.path("ca.pem");
    let (c, _d) = nodes_with(&cluster, &["--broker-tls-ca", &wrong]);
    assert!(!c.broker_connected(Duration::from_secs(3)).await);
    assert!(
        c.warnings().iter().any(|w| w.contains("redis link failed")),
        "{:?}",
        c.warnings()
    );
}
