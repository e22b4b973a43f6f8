//! Namespaces, presence and history with recovery.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use common::{Client, TestServer};
use myriad::config::{NamespaceConfig, Publish};
use serde_json::{json, Value};
use std::time::Duration;

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.namespaces = vec![
            NamespaceConfig::new("room:*"),
            NamespaceConfig {
                presence: true,
                history_size: 50,
                ..NamespaceConfig::new("chat:*")
            },
            NamespaceConfig {
                publish: Publish::Server,
                ..NamespaceConfig::new("events:*")
            },
            NamespaceConfig {
                broadcast_from: true,
                ..NamespaceConfig::new("from:*")
            },
        ]
    })
    .await
}

/// `"<offset>:<epoch>"` in a broadcast's ref slot.
fn offset_of(frame: &Value) -> (u64, String) {
    let (o, e) = frame[1].as_str().unwrap().split_once(':').unwrap();
    (o.parse().unwrap(), e.to_owned())
}

#[tokio::test]
async fn topics_outside_every_namespace_are_unmatched() {
    let server = server().await;
    let mut c = server.client().await;
    let (_, reply) = c.join("nope:1", json!({})).await;
    assert_eq!(reply[0], Value::Null);
    assert_eq!(reply[4]["response"]["reason"], "unmatched topic");
}

#[tokio::test]
async fn server_publish_namespaces_refuse_client_pushes() {
    let server = server().await;
    let mut c = server.client().await;
    let jr = c.join_ok("events:feed").await;
    let (reply, _) = c.push(&jr, "events:feed", "x", json!({})).await;
    assert_eq!(
        reply[4],
        json!({"status": "error", "response": {"reason": "publish not allowed"}})
    );
}

#[tokio::test]
async fn broadcast_from_skips_the_sender() {
    let server = server().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    let jr = a.join_ok("from:1").await;
    b.join_ok("from:1").await;
    a.push(&jr, "from:1", "hi", json!({})).await;
    assert!(
        a.sync().await.is_empty(),
        "the sender does not get its own broadcast"
    );
    assert_eq!(b.sync().await.len(), 1);
}

/// Frames until the presence_state push for this join.
async fn presence_state(c: &mut Client) -> Value {
    c.recv_until(|v| v[3] == "presence_state").await.0
}

#[tokio::test]
async fn presence_state_and_diffs_follow_joins_leaves_and_disconnects() {
    let server = server().await;
    let mut a = server.client().await;
    let (jr, reply) = a.join("chat:p", json!({"meta": {"name": "Ann"}})).await;
    assert_eq!(reply[4]["status"], "ok");
    let state = presence_state(&mut a).await;
    assert_eq!(
        state[0],
        json!(jr),
        "presence_state is a push with the join_ref"
    );
    assert!(state[1].is_null());
    let me = state[4].as_object().unwrap();
    assert_eq!(me.len(), 1);
    let (a_key, a_entry) = me.iter().next().unwrap();
    assert_eq!(a_entry["metas"][0]["name"], "Ann");
    assert_eq!(a_entry["metas"][0]["phx_ref"].as_str().unwrap().len(), 16);

    let mut b = server.client().await;
    b.join("chat:p", json!({"meta": {"name": "Bob"}})).await;
    let b_state = presence_state(&mut b).await;
    assert_eq!(
        b_state[4].as_object().unwrap().len(),
        2,
        "B sees A and itself"
    );
    let a_key = a_key.clone();
    let (diff, _) = a
        .recv_until(|v| {
            v[3] == "presence_diff"
                && v[4]["joins"]
                    .as_object()
                    .is_some_and(|j| !j.is_empty() && !j.contains_key(&a_key))
        })
        .await;
    assert_eq!(diff[0], Value::Null);
    let (b_key, b_join) = diff[4]["joins"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    assert_ne!(b_key, a_key);
    assert_eq!(b_join["metas"][0]["name"], "Bob");

    // B disconnects: A gets a leave with the very meta B joined with.
    drop(b);
    let (leave, _) = a
        .recv_until(|v| v[3] == "presence_diff" && v[4]["leaves"] != json!({}))
        .await;
    assert_eq!(leave[4]["leaves"][&b_key], b_join);
    assert_eq!(leave[4]["joins"], json!({}));

    // C joins and leaves explicitly.
    let mut c = server.client().await;
    let (jc, _) = c.join("chat:p", json!({})).await;
    let (cj, _) = a
        .recv_until(|v| v[3] == "presence_diff" && v[4]["joins"] != json!({}))
        .await;
    c.send(json!([jc, "9", "chat:p", "phx_leave", {}])).await;
    let (cl, _) = a
        .recv_until(|v| v[3] == "presence_diff" && v[4]["leaves"] != json!({}))
        .await;
    assert_eq!(cj[4]["joins"], cl[4]["leaves"]);
}

#[tokio::test]
async fn history_broadcasts_carry_offsets_and_recovery_replays_exactly_what_was_missed() {
    let server = server().await;
    let mut publisher = server.client().await;
    let (pjr, preply) = publisher.join("chat:h", json!({})).await;
    assert_eq!(preply[4]["response"]["offset"], 0);
    let epoch = preply[4]["response"]["epoch"].as_str().unwrap().to_owned();
    let mut seen = Vec::new();
    for i in 1..=5 {
        let (reply, before) = publisher.push(&pjr, "chat:h", "m", json!({"i": i})).await;
        assert_eq!(reply[4]["response"], json!({"offset": i}));
        seen.extend(before);
    }
    seen.extend(publisher.sync().await);
    let mine: Vec<_> = seen.iter().filter(|v| v[3] == "m").map(offset_of).collect();
    assert_eq!(
        mine.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(mine.iter().all(|(_, e)| *e == epoch));

    // A client that saw up to 2 recovers 3, 4, 5 in order, then gets live 6.
    let mut late = server.client().await;
    let (_, reply) = late
        .join("chat:h", json!({"since": {"offset": 2, "epoch": epoch}}))
        .await;
    assert_eq!(
        reply[4]["response"],
        json!({"recovered": true, "offset": 5, "epoch": epoch})
    );
    publisher.push(&pjr, "chat:h", "m", json!({"i": 6})).await;
    let got: Vec<u64> = late
        .sync()
        .await
        .iter()
        .filter(|v| v[3] == "m")
        .map(|v| offset_of(v).0)
        .collect();
    assert_eq!(got, [3, 4, 5, 6]);

    // Wrong epoch or a position the ring no longer holds: recovered false, no replay.
    let mut other = server.client().await;
    let (_, reply) = other
        .join(
            "chat:h",
            json!({"since": {"offset": 2, "epoch": "not-the-epoch"}}),
        )
        .await;
    assert_eq!(reply[4]["response"]["recovered"], false);
    assert_eq!(reply[4]["response"]["epoch"], json!(epoch));
    assert!(other.sync().await.iter().all(|v| v[3] != "m"));
}

#[tokio::test]
async fn history_outside_the_ring_is_not_recovered() {
    let server = TestServer::start_with(|c| {
        c.namespaces = vec![NamespaceConfig {
            history_size: 3,
            ..NamespaceConfig::new("chat:*")
        }]
    })
    .await;
    let mut p = server.client().await;
    let (jr, reply) = p.join("chat:r", json!({})).await;
    let epoch = reply[4]["response"]["epoch"].clone();
    for i in 0..6 {
        p.push(&jr, "chat:r", "m", json!({"i": i})).await;
    }
    let mut c = server.client().await;
    let (_, reply) = c
        .join("chat:r", json!({"since": {"offset": 1, "epoch": epoch}}))
        .await;
    assert_eq!(
        reply[4]["response"]["recovered"], false,
        "offsets 2..3 were evicted"
    );
    let (_, reply) = c
        .join("chat:r", json!({"since": {"offset": 3, "epoch": epoch}}))
        .await;
    assert_eq!(reply[4]["response"]["recovered"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_while_publishing_has_no_gap_and_no_duplicate() {
    let server = TestServer::start_with(|c| {
        c.client_rate = 0; // the publisher floods on purpose
        c.namespaces = vec![NamespaceConfig {
            history_size: 1000,
            ..NamespaceConfig::new("chat:*")
        }]
    })
    .await;
    let mut publisher = server.client().await;
    let (pjr, reply) = publisher.join("chat:race", json!({})).await;
    let epoch = reply[4]["response"]["epoch"].as_str().unwrap().to_owned();
    let total = 300u64;
    let publishing = tokio::spawn(async move {
        for i in 0..total {
            publisher
                .send(json!([pjr, format!("p{i}"), "chat:race", "m", {"i": i}]))
                .await;
        }
        publisher
    });
    // Join, read a while, disconnect, rejoin with since, many times over.
    let mut offsets = Vec::new();
    let mut last = 0u64;
    let deadline = tokio::time::Instant::now() + common::DEADLINE * 3;
    while last < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck at offset {last}"
        );
        let mut c = server.client().await;
        let (_, reply) = c
            .join(
                "chat:race",
                json!({"since": {"offset": last, "epoch": epoch}}),
            )
            .await;
        assert_eq!(reply[4]["response"]["recovered"], true, "{reply}");
        for _ in 0..37 {
            match c.recv_opt(Duration::from_secs(5)).await {
                Some(v) if v[3] == "m" => {
                    let (o, _) = offset_of(&v);
                    offsets.push(o);
                    last = o;
                    if last == total {
                        break;
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
    }
    assert_eq!(offsets, (1..=total).collect::<Vec<_>>());
    drop(publishing.await.unwrap());
}

#[tokio::test]
async fn history_true_replays_what_is_stored_to_a_new_client() {
    let server = server().await;
    let mut p = server.client().await;
    let jr = p.join_ok("chat:stored").await;
    for i in 0..3 {
        p.push(&jr, "chat:stored", "m", json!({"i": i})).await;
    }
    let mut c = server.client().await;
    let (_, reply) = c.join("chat:stored", json!({"history": true})).await;
    assert_eq!(reply[4]["response"]["recovered"], false);
    assert_eq!(reply[4]["response"]["offset"], 3);
    let replayed: Vec<Value> = c
        .sync()
        .await
        .into_iter()
        .filter(|v| v[3] == "m")
        .map(|v| v[4]["i"].clone())
        .collect();
    assert_eq!(replayed, [json!(0), json!(1), json!(2)]);
}

#[tokio::test]
async fn the_chat_page_and_its_script_are_served() {
    let server = server().await;
    let (status, html) = common::http_get(&format!("http://{}/", server.public)).await;
    assert_eq!(status, 200);
    assert!(html.contains("myriad chat") && html.contains("/chat.js"));
    let (status, js) = common::http_get(&format!("http://{}/chat.js", server.public)).await;
    assert_eq!(status, 200);
    assert!(js.contains("phx_join") && js.contains("presence_diff"));
}

#[tokio::test]
async fn history_memory_stays_under_history_max_bytes() {
    let server = TestServer::start_with(|c| {
        c.client_rate = 0;
        c.history_max_bytes = 4096;
        c.namespaces = vec![NamespaceConfig {
            history_size: 1000,
            ..NamespaceConfig::new("chat:*")
        }];
    })
    .await;
    let mut p = server.client().await;
    for topic in ["chat:b1", "chat:b2"] {
        let jr = p.join_ok(topic).await;
        for i in 0..100 {
            p.push(&jr, topic, "m", json!({"i": i, "pad": "x".repeat(100)}))
                .await;
        }
    }
    let text = server.metrics().await;
    let bytes = common::metric_value(&text, "myriad_history_bytes").unwrap();
    assert!(bytes > 0.0 && bytes <= 4096.0, "history bytes {bytes}");
}
