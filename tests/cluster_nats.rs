//! Cross-node broadcast over NATS core subjects, node processes as in the
//! Redis test. Needs `nats-server` (scripts/test.sh installs it).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use std::time::Duration;

use common::cluster::{collect, members_linked, Backend, Cluster, Node};
use common::tls::TlsFiles;
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

/// Two nodes on `backend` with `extra` flags deliver to each other.
async fn delivers(backend: Backend, extra: &[&str]) {
    let cluster = Cluster::on(backend, "nats", extra);
    let [a, b] = cluster.connected().await;
    let (clients, jr) = members_linked(&[&a, &b], TOPIC).await;
    let Ok([mut on_a, mut on_b]) = <[Client; 2]>::try_from(clients) else {
        unreachable!("one member per node")
    };
    on_a.push(&jr, TOPIC, "m", json!({"i": 1})).await;
    assert_eq!(collect(&mut on_b, "m", 1).await.len(), 1);
}

/// A node started with `extra` against `url` never gets its link up.
async fn never_connects(url: &str, extra: &[&str]) {
    let mut args = vec!["--broker", "nats", "--broker-url", url];
    args.extend_from_slice(extra);
    let node = Node::spawn(&args);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        node.metric("myriad_broker_connected").await,
        Some(0.0),
        "{extra:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_nodes_check_the_servers_certificate_and_present_their_own() {
    let tls = TlsFiles::new();
    let backend = Backend::nats_tls(&tls, true);
    let url = backend.url();
    assert!(url.starts_with("tls://"), "{url}");
    let (ca, cert, key) = (
        tls.path("ca.pem"),
        tls.path("client.pem"),
        tls.path("client-key.pem"),
    );
    let other_ca = tls.path("other-ca.pem");
    never_connects(
        &url,
        &[
            "--broker-tls-ca",
            &other_ca,
            "--broker-tls-cert",
            &cert,
            "--broker-tls-key",
            &key,
        ],
    )
    .await;
    never_connects(&url, &["--broker-tls-ca", &ca]).await;
    delivers(
        backend,
        &[
            "--client-rate",
            "0",
            "--broker-tls-ca",
            &ca,
            "--broker-tls-cert",
            &cert,
            "--broker-tls-key",
            &key,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nkey_seed_logs_in_to_nats() {
    let tls = TlsFiles::new(); // only for its scratch directory
    let user = nkeys::KeyPair::new_user();
    let conf = format!(
        "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}",
        user.public_key()
    );
    let backend = Backend::nats_with_config(tls.dir(), &conf);
    let url = backend.url();
    never_connects(&url, &[]).await;
    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    never_connects(&url, &["--broker-nats-nkey", &stranger]).await;
    let seed = user.seed().unwrap();
    delivers(
        backend,
        &["--client-rate", "0", "--broker-nats-nkey", &seed],
    )
    .await;
}

/// A JWT as nats-server's operator mode reads it: ed25519-nkey signed by
/// `issuer`, claims `nats` for `subject`.
fn nats_jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = json!({
        "jti": format!("{:X}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()),
        "iat": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let sig = URL_SAFE_NO_PAD.encode(issuer.sign(signing_input.as_bytes()).unwrap());
    format!("{signing_input}.{sig}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creds_file_logs_in_to_an_operator_mode_nats() {
    let tls = TlsFiles::new(); // only for its scratch directory
    let (operator, account, user) = (
        nkeys::KeyPair::new_operator(),
        nkeys::KeyPair::new_account(),
        nkeys::KeyPair::new_user(),
    );
    let operator_jwt = nats_jwt(
        &operator,
        &operator.public_key(),
        "op",
        json!({"type": "operator", "version": 2}),
    );
    let unlimited = json!({"subs": -1, "data": -1, "payload": -1, "imports": -1,
        "exports": -1, "wildcards": true, "conn": -1, "leaf": -1});
    let account_jwt = nats_jwt(
        &operator,
        &account.public_key(),
        "acc",
        json!({"limits": unlimited, "type": "account", "version": 2}),
    );
    let user_jwt = nats_jwt(
        &account,
        &user.public_key(),
        "node",
        json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2}),
    );
    let conf = format!(
        "operator: \"{operator_jwt}\"\nresolver: MEMORY\nresolver_preload: {{ {}: \"{account_jwt}\" }}",
        account.public_key()
    );
    let backend = Backend::nats_with_config(tls.dir(), &conf);
    let creds = tls.dir().join("node.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    )
    .unwrap();
    let creds = creds.to_string_lossy().into_owned();
    never_connects(&backend.url(), &[]).await;
    delivers(
        backend,
        &["--client-rate", "0", "--broker-nats-creds", &creds],
    )
    .await;
}

/// NATS keeps no history: each node sequences what it delivers, so a
/// broadcast on a history namespace still reaches the other nodes, and their
/// clients see it with their node's own offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_broadcasts_cross_nodes_and_get_each_nodes_offset() {
    let topic = "chat:nats-history";
    let cluster = Cluster::nats(&["--client-rate", "0"]);
    let [a, b] = cluster.connected().await;
    let (clients, jr) = members_linked(&[&a, &b], topic).await;
    let Ok([mut on_a, mut on_b]) = <[Client; 2]>::try_from(clients) else {
        unreachable!("one member per node")
    };
    for i in 0..5 {
        on_a.push(&jr, topic, "m", json!({"i": i})).await;
    }
    let got = collect(&mut on_b, "m", 5).await;
    let seq: Vec<i64> = got.iter().map(|v| v[4]["i"].as_i64().unwrap()).collect();
    assert_eq!(seq, (0..5).collect::<Vec<_>>());
    // B's own ring has them: a client recovering on B from B's first offset
    // gets the four after it.
    let (first, epoch) = got[0][1].as_str().unwrap().split_once(':').unwrap();
    let mut late = b.client().await;
    let (_, reply) = late
        .join(
            topic,
            json!({"since": {"offset": first.parse::<u64>().unwrap(), "epoch": epoch}}),
        )
        .await;
    assert_eq!(reply[4]["response"]["recovered"], true, "{reply}");
    let replayed = collect(&mut late, "m", 4).await;
    let seq: Vec<i64> = replayed
        .iter()
        .map(|v| v[4]["i"].as_i64().unwrap())
        .collect();
    assert_eq!(seq, (1..5).collect::<Vec<_>>());
}
