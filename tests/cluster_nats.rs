//! Cross-node broadcast over NATS core subjects, node processes as in the
//! Redis test. Needs `nats-server` (scripts/test.sh installs it).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use common::cluster::{collect, members_linked, Cluster};
use common::Client;
use serde_json::json;

const TOPIC: &str = "room:nats";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_on_one_node_reaches_the_other_nodes_once_and_in_order() {
    let cluster = Cluster::nats(&["--client-rate", "0"]);
    let [a, b, c] = cluster.nodes();
    let (clients, jr) = members_linked(&[&a, &b, &c], TOPIC).await;
    let Ok([mut on_a, mut on_b, mut on_c]) = <[Client; 3]>::try_from(clients) else {
        unreachable!("one member per node")
    };
    for i in 0..50 {
        on_a.push(&jr, TOPIC, "m", json!({"i": i})).await;
    }
    for (name, cl) in [("B", &mut on_b), ("C", &mut on_c)] {
        let got = collect(cl, "m", 50).await;
        let seq: Vec<i64> = got.iter().map(|v| v[4]["i"].as_i64().unwrap()).collect();
        assert_eq!(
            seq,
            (0..50).collect::<Vec<_>>(),
            "node {name}: every message once, in order"
        );
    }
    assert_eq!(a.metric("myriad_broker_connected").await, Some(1.0));
    assert!(c.metric("myriad_broker_received_total").await.unwrap() >= 50.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_broker_url_authenticate_to_nats() {
    let backend = common::cluster::Backend::nats_with_user("myriad", "s3cret-pass");
    let cluster = Cluster::on(backend, "nats", &["--client-rate", "0"]);
    let [a, b] = cluster.connected().await;
    let (clients, jr) = members_linked(&[&a, &b], TOPIC).await;
    let Ok([mut on_a, mut on_b]) = <[Client; 2]>::try_from(clients) else {
        unreachable!("one member per node")
    };
    on_a.push(&jr, TOPIC, "m", json!({"i": 1})).await;
    assert_eq!(collect(&mut on_b, "m", 1).await.len(), 1);
}
