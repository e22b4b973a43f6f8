//! The node against a recording broker: what it sends other nodes, what it
//! does with what they send, and the fan-out it does for local members.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::*;
use crate::config::SlowConsumerPolicy;
use crate::pubsub::broker::{BrokerHandler, SendError};
use crate::pubsub::mailbox::MailboxLimits;

/// A cluster broker that records what the node asks of it.
#[derive(Default)]
struct Recording {
    sent: Mutex<Vec<Envelope>>,
    subscribed: Mutex<Vec<String>>,
    unsubscribed: Mutex<Vec<String>>,
    sequences: bool,
    down: AtomicBool,
}

impl Broker for Recording {
    fn send(&self, envelope: Envelope) -> Result<(), SendError> {
        self.sent.lock().push(envelope);
        Ok(())
    }
    fn subscribe_topic(&self, topic: &str) {
        self.subscribed.lock().push(topic.into());
    }
    fn unsubscribe_topic(&self, topic: &str) {
        self.unsubscribed.lock().push(topic.into());
    }
    fn is_ready(&self) -> bool {
        !self.down.load(Ordering::Relaxed)
    }
    fn node_id(&self) -> Option<&str> {
        Some("me")
    }
    fn sequences_history(&self) -> bool {
        self.sequences
    }
}

impl Recording {
    fn take(&self) -> Vec<Envelope> {
        std::mem::take(&mut *self.sent.lock())
    }
}

fn node_with(broker: Arc<Recording>) -> (Node, Arc<Metrics>) {
    let config = Config {
        cluster_heartbeat: Duration::from_secs(1),
        cluster_node_timeout: Duration::from_secs(3),
        ..Config::default()
    };
    let metrics = Metrics::new();
    (Node::new(&config, Arc::clone(&metrics), broker), metrics)
}

fn mailbox() -> Arc<Mailbox> {
    Arc::new(Mailbox::new(MailboxLimits {
        capacity: 64,
        max_bytes: 1 << 20,
        policy: SlowConsumerPolicy::Disconnect,
    }))
}

fn frames(m: &Mailbox) -> Vec<Value> {
    let mut q = VecDeque::new();
    m.drain(&mut q);
    q.into_iter()
        .map(|f| match f {
            Outbound::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
            Outbound::Binary(_) => panic!("binary"),
        })
        .collect()
}

fn join(node: &Node, topic: &str, session: SessionId, key: &str) -> (Arc<Mailbox>, JoinOutcome) {
    let m = mailbox();
    let ns = Arc::clone(&node.route(topic).unwrap().namespace);
    let out = node.join(JoinRequest {
        topic,
        namespace: &ns,
        join_ref: Some("1"),
        session,
        mailbox: Arc::clone(&m),
        since: Since::Now,
        presence: Some((key, Map::new())),
    });
    (m, out)
}

/// Node n2's state: bob on chat:p.
fn bob_on_n2() -> Control {
    Control::State {
        members: vec![crate::pubsub::broker::wire::Member {
            topic: "chat:p".into(),
            key: "bob".into(),
            meta: json!({"phx_ref": "r1"}),
        }],
        topics: None,
        id: 0,
        part: 0,
        parts: 1,
    }
}

fn publish(node: &Node, topic: &str, payload: &str, exclude: Option<SessionId>) -> Published {
    let ns = Arc::clone(&node.route(topic).unwrap().namespace);
    node.publish(Publication {
        namespace: &ns,
        topic,
        event: "m",
        payload,
        exclude,
    })
}

#[test]
fn the_first_member_subscribes_the_topic_and_the_last_unsubscribes_it() {
    let broker = Arc::new(Recording::default());
    let (node, _) = node_with(Arc::clone(&broker));
    join(&node, "room:a", 1, "u1");
    join(&node, "room:a", 2, "u2");
    assert_eq!(*broker.subscribed.lock(), ["room:a"]);
    let ns = Arc::clone(&node.route("room:a").unwrap().namespace);
    node.leave("room:a", &ns, 1);
    assert!(broker.unsubscribed.lock().is_empty());
    node.leave("room:a", &ns, 2);
    assert_eq!(*broker.unsubscribed.lock(), ["room:a"]);
    assert!(!node.has_local_members("room:a"));
}

#[test]
fn a_publish_reaches_local_members_once_and_goes_to_the_other_nodes() {
    let broker = Arc::new(Recording::default());
    let (node, metrics) = node_with(Arc::clone(&broker));
    let (a, _) = join(&node, "room:a", 1, "u1");
    let (b, _) = join(&node, "room:a", 2, "u2");
    let p = publish(&node, "room:a", r#"{"x":1}"#, Some(1));
    assert_eq!(p.fanout.delivered, 1);
    assert!(frames(&a).is_empty(), "excluded");
    assert_eq!(frames(&b), [json!([null, null, "room:a", "m", {"x": 1}])]);
    let sent = broker.take();
    assert!(
        matches!(&sent[..], [Envelope::Publication { topic, .. }] if &**topic == "room:a"),
        "{sent:?}"
    );
    let text = metrics.render();
    assert!(text.contains("myriad_broadcasts_total 1"), "{text}");
    assert!(text.contains("myriad_fanout_subscribers_count 1"), "{text}");
}

#[test]
fn another_nodes_publication_is_delivered_to_every_local_member() {
    let broker = Arc::new(Recording::default());
    let (node, metrics) = node_with(Arc::clone(&broker));
    let (a, _) = join(&node, "room:a", 1, "u1");
    node.on_publication("room:a", Utf8Bytes::from(r#"[null,null,"room:a","m",{}]"#));
    assert_eq!(frames(&a).len(), 1);
    assert!(broker.take().is_empty(), "never sent back out");
    assert!(metrics
        .render()
        .contains("myriad_fanout_subscribers_count 1"));
}

#[test]
fn a_sequencing_cluster_gets_history_publishes_and_they_land_when_sequenced() {
    let broker = Arc::new(Recording {
        sequences: true,
        ..Recording::default()
    });
    let (node, _) = node_with(Arc::clone(&broker));
    let (a, _) = join(&node, "chat:h", 1, "u1");
    let (b, _) = join(&node, "chat:h", 2, "u2");
    frames(&a);
    frames(&b);
    broker.take();
    let p = publish(&node, "chat:h", "{}", Some(1));
    assert_eq!(p.offset, None, "the cluster assigns it");
    assert!(frames(&b).is_empty(), "nothing delivered before sequencing");
    let sent = broker.take();
    let Some(Envelope::History { frame, exclude, .. }) = sent.first() else {
        panic!("{sent:?}")
    };
    assert_eq!(*exclude, Some(1));
    // The backend fills the slot and every node (this one too) gets it back.
    node.on_sequenced("chat:h", &frame.fill(1, "E"), Some(1), false);
    assert!(frames(&a).is_empty(), "the excluded sender");
    assert_eq!(frames(&b)[0][1], "1:E");
    let (position, entries) = node.history("chat:h", None).unwrap();
    assert_eq!(
        (position.offset, position.epoch.as_str(), entries.len()),
        (1, "E", 1)
    );
    // The same offset again (a repeat) is dropped.
    node.on_sequenced("chat:h", &frame.fill(1, "E"), None, false);
    assert!(frames(&b).is_empty());
}

/// A client moves here from a node that was further along the cluster's
/// history (this one lags, say its link blinked): it joins with a position
/// ahead of this node's ring. When the frames it already has reach this
/// node, the other members get them; the mover does not get them twice.
#[test]
fn a_member_that_moved_here_ahead_of_this_node_gets_no_frame_twice() {
    let broker = Arc::new(Recording {
        sequences: true,
        ..Recording::default()
    });
    let (node, _) = node_with(Arc::clone(&broker));
    let (stayer, _) = join(&node, "chat:h", 1, "u1");
    let frame = |o: u64| format!("[null,\"{o}:E\",\"chat:h\",\"m\",{{\"o\":{o}}}]");
    for o in 1..=3 {
        node.on_sequenced("chat:h", &frame(o), None, false);
    }
    let mover = mailbox();
    let ns = Arc::clone(&node.route("chat:h").unwrap().namespace);
    let joined = node.join(JoinRequest {
        topic: "chat:h",
        namespace: &ns,
        join_ref: Some("1"),
        session: 2,
        mailbox: Arc::clone(&mover),
        since: Since::Position(Position {
            offset: 5,
            epoch: "E".into(),
        }),
        presence: Some(("u2", Map::new())),
    });
    assert!(!joined.recovery.unwrap().recovered);
    frames(&stayer);
    frames(&mover);
    for o in 4..=6 {
        node.on_sequenced("chat:h", &frame(o), None, false);
    }
    let offsets = |m: &Mailbox| -> Vec<u64> {
        frames(m)
            .iter()
            .filter(|f| f[3] == "m")
            .filter_map(|f| f[4]["o"].as_u64())
            .collect()
    };
    assert_eq!(offsets(&stayer), [4, 5, 6]);
    assert_eq!(offsets(&mover), [6], "4 and 5 it had already");
}

#[test]
fn while_the_cluster_is_down_history_is_sequenced_here() {
    let broker = Arc::new(Recording {
        sequences: true,
        ..Recording::default()
    });
    broker.down.store(true, Ordering::Relaxed);
    let (node, _) = node_with(Arc::clone(&broker));
    let (a, _) = join(&node, "chat:h", 1, "u1");
    frames(&a);
    assert_eq!(publish(&node, "chat:h", "{}", None).offset, Some(1));
    assert_eq!(frames(&a).len(), 1);
}

#[test]
fn presence_changes_are_replicated_and_a_state_sync_delivers_what_is_missing() {
    let broker = Arc::new(Recording::default());
    let (node, _) = node_with(Arc::clone(&broker));
    let (a, joined) = join(&node, "chat:p", 1, "alice");
    assert_eq!(joined.tracked, Some(true));
    let own = frames(&a);
    assert_eq!(
        own[0][3], "presence_state",
        "the state first, then the own join's diff"
    );
    assert!(own[0][4]["alice"].is_object());
    let sent = broker.take();
    assert!(
        sent.iter().any(
            |e| matches!(e, Envelope::Control(Control::Diff { topic, .. }) if topic == "chat:p")
        ),
        "{sent:?}"
    );
    // A node it has never heard from: ask everyone for their members.
    node.on_control("n2", bob_on_n2());
    assert!(broker
        .take()
        .iter()
        .any(|e| matches!(e, Envelope::Control(Control::SyncRequest))));
    let diff = frames(&a);
    assert_eq!(diff[0][3], "presence_diff");
    assert_eq!(diff[0][4]["joins"]["bob"]["metas"][0]["phx_ref"], "r1");
    assert!(node.presence_state("chat:p").contains("bob"));
    // Asked for its members, it answers with its own (not the replica).
    node.on_control("n2", Control::SyncRequest);
    let sent = broker.take();
    let Some(Envelope::Control(Control::State { members, .. })) = sent.first() else {
        panic!("{sent:?}")
    };
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].key, "alice");
}

#[tokio::test(start_paused = true)]
async fn a_silent_node_is_dropped_and_its_members_leave() {
    let broker = Arc::new(Recording::default());
    let (node, metrics) = node_with(Arc::clone(&broker));
    let (a, _) = join(&node, "chat:p", 1, "alice");
    node.on_control("n2", bob_on_n2());
    frames(&a);
    node.cluster_tick();
    assert!(frames(&a).is_empty(), "n2 is alive");
    assert!(broker
        .take()
        .iter()
        .any(|e| matches!(e, Envelope::Control(Control::Heartbeat))));
    tokio::time::advance(Duration::from_secs(4)).await;
    node.cluster_tick();
    let diff = frames(&a);
    assert_eq!(diff[0][4]["leaves"]["bob"]["metas"][0]["phx_ref"], "r1");
    assert!(!node.presence_state("chat:p").contains("bob"));
    assert!(metrics
        .render()
        .contains("myriad_broker_peers_lost_total 1"));
}

#[test]
fn a_full_broker_queue_drops_the_remote_copy_not_the_local_delivery() {
    use crate::pubsub::broker::link::ClusterBroker;
    let metrics = Metrics::new();
    let (broker, _link) = ClusterBroker::new(
        Arc::clone(&metrics),
        crate::pubsub::broker::link::LinkOptions {
            sequences_history: false,
            queue: 1,
            secret: None,
            replay_window: std::time::Duration::from_secs(60),
            occupancy: None,
            timeout: std::time::Duration::from_secs(5),
        },
    );
    let node = Node::new(&Config::default(), Arc::clone(&metrics), Arc::new(broker));
    let (m, _) = join(&node, "room:a", 1, "u1");
    for _ in 0..3 {
        assert_eq!(publish(&node, "room:a", "{}", None).fanout.delivered, 1);
    }
    assert_eq!(m.depth(), 3);
    let text = metrics.render();
    assert!(
        text.contains("myriad_broker_dropped_total{reason=\"queue_full\"} 2"),
        "{text}"
    );
}

#[test]
fn sequenced_frames_for_topics_configured_differently_here() {
    let broker = Arc::new(Recording::default());
    let (node, _) = node_with(Arc::clone(&broker));
    let (room, _) = join(&node, "room:a", 1, "u1");
    // room:* keeps no history on this node: delivered, not stored.
    node.on_sequenced("room:a", r#"[null,"1:E","room:a","m",{}]"#, None, false);
    assert_eq!(frames(&room).len(), 1);
    assert!(node.history("room:a", None).is_none());
    // No namespace routes it here: not ours.
    node.on_sequenced("nope:a", r#"[null,"1:E","nope:a","m",{}]"#, None, false);
    assert_eq!(node.history_topic_count(), 0);
}

#[test]
fn a_peer_cannot_push_oversized_or_foreign_presence_to_local_clients() {
    let broker = Arc::new(Recording::default());
    let (node, metrics) = node_with(Arc::clone(&broker));
    let (a, _) = join(&node, "chat:p", 1, "alice");
    frames(&a);
    let member = |topic: &str, key: &str, meta: Value| crate::pubsub::broker::wire::Member {
        topic: topic.into(),
        key: key.into(),
        meta,
    };
    node.on_control(
        "n2",
        Control::State {
            members: vec![
                member("chat:p", "bob", json!({"phx_ref": "r1"})),
                member("chat:p", "huge", json!({"bio": "x".repeat(5000)})),
                member("room:nopresence", "eve", json!({})),
                member(&format!("chat:{}", "t".repeat(300)), "eve", json!({})),
                member("chat:p", &"k".repeat(2000), json!({})),
                member("chat:p", "notobject", json!("meta")),
            ],
            topics: None,
            id: 0,
            part: 0,
            parts: 1,
        },
    );
    let state: Value = serde_json::from_str(&node.presence_state("chat:p")).unwrap();
    let keys: Vec<_> = state.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["alice", "bob"], "only the admissible member");
    assert!(metrics
        .render()
        .contains("myriad_broker_refused_total{reason=\"frame\"} 1"));
    frames(&a);
    // A diff is rebuilt from what is admissible: extra fields never reach a client.
    let diff = serde_json::value::RawValue::from_string(
        json!({"joins": {"carol": {"metas": [{"phx_ref": "c"}]}}, "leaves": {}, "script": "<x>"})
            .to_string(),
    )
    .unwrap();
    node.on_control(
        "n2",
        Control::Diff {
            topic: "chat:p".into(),
            diff,
        },
    );
    let got = frames(&a);
    assert_eq!(
        got[0][4],
        json!({"joins": {"carol": {"metas": [{"phx_ref": "c"}]}}, "leaves": {}})
    );
}

#[test]
fn a_peer_cannot_revoke_a_user_for_ever() {
    let broker = Arc::new(Recording::default());
    let (node, _) = node_with(Arc::clone(&broker));
    node.on_control(
        "n2",
        Control::Revoke {
            user: "u".into(),
            before: u64::MAX,
            until: u64::MAX,
        },
    );
    let now = crate::revocation::unix_now();
    let ttl = Config::default().revocation_ttl.as_secs();
    assert!(node.revocations().is_revoked("u", Some(now), now));
    assert!(
        !node.revocations().is_revoked("u", Some(now + 5), now),
        "issued later: fine"
    );
    assert!(
        !node.revocations().is_revoked("u", Some(now), now + ttl + 1),
        "no longer than a local disconnect lasts"
    );
}

#[test]
fn topic_names_from_the_broker_are_bounded() {
    let broker = Arc::new(Recording::default());
    let (node, metrics) = node_with(Arc::clone(&broker));
    let long = format!("chat:{}", "x".repeat(1000));
    let frame = RefSlotFrame::new(&long, "m", "{}").fill(1, "E");
    node.on_sequenced(&long, &frame, None, false);
    node.on_stored_history(&long, &frame, false);
    assert_eq!(
        node.history_topic_count(),
        0,
        "no ring for an over-long topic"
    );
    assert_eq!(node.history_size(&long), 0);
    assert!(metrics
        .render()
        .contains("myriad_broker_refused_total{reason=\"frame\"} 2"));
}

#[test]
fn without_a_sequencing_broker_each_node_numbers_and_keeps_what_it_delivers() {
    let broker = Arc::new(Recording::default());
    let (node, metrics) = node_with(Arc::clone(&broker));
    let (a, _) = join(&node, "chat:n", 1, "u1");
    frames(&a);
    broker.take();
    // A local history publish goes out without this node's offset ...
    let p = publish(&node, "chat:n", r#"{"i":1}"#, None);
    assert_eq!(p.offset, Some(1));
    let sent = broker.take();
    let Some(Envelope::Publication { frame, .. }) = sent.first() else {
        panic!("{sent:?}")
    };
    assert!(frame.as_str().starts_with("[null,null,"), "{frame}");
    // ... and another node's (plain) one takes the next offset here.
    node.on_publication(
        "chat:n",
        Utf8Bytes::from(r#"[null,null,"chat:n","m",{"i":2}]"#),
    );
    let bin = binary::encode_broadcast("chat:n", "file", &[7, 8]).unwrap();
    node.on_binary_publication("chat:n", bin.clone());
    let (position, entries) = node.history("chat:n", None).unwrap();
    assert_eq!(position.offset, 3);
    assert_eq!(entries[1].offset, 2);
    assert_eq!(entries[2].binary.as_ref(), Some(&bin));
    assert!(entries[2].frame.as_str().contains(r#"{"binary":"Bwg="}"#));
    let mut q = VecDeque::new();
    a.drain(&mut q);
    assert_eq!(q.len(), 3);
    assert_eq!(q[1].text().map(|t| t.starts_with("[null,\"2:")), Some(true));
    assert!(matches!(&q[2], Outbound::Binary(b) if *b == bin));
    assert!(!metrics
        .render()
        .contains("myriad_broker_refused_total{reason=\"frame\"} 1"));
}

#[test]
fn a_binary_publish_on_a_history_topic_is_sequenced_and_lands_as_binary() {
    let broker = Arc::new(Recording {
        sequences: true,
        ..Recording::default()
    });
    let (node, _) = node_with(Arc::clone(&broker));
    let (a, _) = join(&node, "chat:b", 1, "u1");
    frames(&a);
    broker.take();
    let ns = Arc::clone(&node.route("chat:b").unwrap().namespace);
    let p = node
        .publish_binary(&ns, "chat:b", "file", &[0, 255], None)
        .unwrap();
    assert_eq!(p.offset, None, "the cluster assigns it");
    let sent = broker.take();
    let Some(Envelope::History { frame, binary, .. }) = sent.first() else {
        panic!("{sent:?}")
    };
    assert!(*binary);
    let filled = frame.fill(4, "E");
    node.on_sequenced("chat:b", &filled, None, true);
    let want = binary::encode_broadcast("chat:b", "file", &[0, 255]).unwrap();
    let mut q = VecDeque::new();
    a.drain(&mut q);
    assert!(matches!(&q[0], Outbound::Binary(b) if *b == want), "{q:?}");
    // A frame flagged binary that is not a binary payload's JSON form is refused.
    node.on_sequenced("chat:b", r#"[null,"5:E","chat:b","m",{"x":1}]"#, None, true);
    a.drain(&mut q);
    assert_eq!(q.len(), 1, "nothing more delivered");
    assert_eq!(node.history("chat:b", None).unwrap().0.offset, 4);
}

/// A broker that hands control messages, encoded on the wire, to the test
/// (which delivers them to the other nodes); diffs can be dropped on purpose.
struct Loop {
    id: String,
    out: Mutex<Vec<Vec<u8>>>,
    drop_diffs: AtomicBool,
}

impl Broker for Loop {
    fn send(&self, envelope: Envelope) -> Result<(), SendError> {
        use crate::pubsub::broker::{sign::Signer, wire};
        if let Envelope::Control(c) = envelope {
            if matches!(c, Control::Diff { .. }) && self.drop_diffs.load(Ordering::Relaxed) {
                return Ok(());
            }
            let bytes = wire::encode_control(&Signer::new(None), &self.id, None, &c);
            self.out.lock().push(bytes);
        }
        Ok(())
    }
    fn subscribe_topic(&self, _topic: &str) {}
    fn unsubscribe_topic(&self, _topic: &str) {}
    fn is_ready(&self) -> bool {
        true
    }
    fn node_id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

struct Cluster {
    nodes: Vec<(Arc<Node>, Arc<Loop>)>,
    /// The largest control message seen on the wire, and how many states.
    largest: usize,
    states: usize,
}

impl Cluster {
    fn new(n: usize, tweak: impl Fn(&mut Config)) -> Cluster {
        let nodes = (0..n)
            .map(|i| {
                let mut config = Config {
                    cluster_heartbeat: Duration::from_millis(100),
                    cluster_node_timeout: Duration::from_secs(60),
                    ..Config::default()
                };
                tweak(&mut config);
                let broker = Arc::new(Loop {
                    id: format!("n{i}"),
                    out: Mutex::new(Vec::new()),
                    drop_diffs: AtomicBool::new(false),
                });
                let node = Node::new(
                    &config,
                    Metrics::new(),
                    Arc::clone(&broker) as Arc<dyn Broker>,
                );
                (Arc::new(node), broker)
            })
            .collect();
        Cluster {
            nodes,
            largest: 0,
            states: 0,
        }
    }

    /// Deliver every queued message to the other nodes (and what they send
    /// in answer), pumping paced state parts, until nothing moves.
    fn settle(&mut self) {
        use crate::pubsub::broker::{sign::Signer, wire};
        for _ in 0..10_000 {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                self.nodes[i].0.pump_sync();
                let msgs = std::mem::take(&mut *self.nodes[i].1.out.lock());
                for bytes in msgs {
                    moved = true;
                    self.largest = self.largest.max(bytes.len());
                    let msg = wire::decode_control(&Signer::new(None), &bytes).unwrap();
                    if matches!(msg.control, Control::State { .. }) {
                        self.states += 1;
                    }
                    for (j, (node, _)) in self.nodes.iter().enumerate() {
                        if j != i {
                            node.on_control(&msg.origin, msg.control.clone());
                        }
                    }
                }
            }
            let queued = self.nodes.iter().any(|(n, _)| n.sync.queued_bytes() > 0);
            if !moved && !queued {
                return;
            }
            if !moved {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("the cluster never settled");
    }

    /// Whether every node's replica of every other node matches that node's
    /// own digest of `topic`.
    fn agrees(&self, topic: &str) -> bool {
        self.nodes.iter().all(|(origin, b)| {
            let own = origin
                .presence
                .local_digest()
                .into_iter()
                .find(|d| d.0 == topic)
                .map_or((0, 0), |d| (d.1, d.2));
            self.nodes
                .iter()
                .filter(|(n, _)| !Arc::ptr_eq(n, origin))
                .all(|(n, _)| n.presence.remote_digest(&b.id, topic) == own)
        })
    }
}

fn track_many(node: &Node, topic: &str, from: u64, n: u64) {
    for s in from..from + n {
        let mut meta = Map::new();
        meta.insert("device".into(), json!("phone"));
        node.presence
            .track_silently(topic, s, &format!("user-{s}"), meta);
    }
}

#[test]
fn a_100k_member_topic_syncs_across_three_nodes_in_bounded_parts() {
    let mut c = Cluster::new(3, |cfg| {
        cfg.presence_max_members = 200_000;
        cfg.presence_sync_rate = 64 << 20;
    });
    for (i, (node, _)) in c.nodes.iter().enumerate() {
        let i = i as u64;
        track_many(
            node,
            "chat:big",
            i * 40_000,
            if i == 2 { 20_000 } else { 40_000 },
        );
    }
    for (node, _) in &c.nodes {
        node.send_control(Control::SyncRequest);
    }
    c.settle();
    assert!(c.agrees("chat:big"), "every replica matches its node");
    let total: u32 = c.nodes[0].0.presence.remote_digest("n1", "chat:big").1
        + c.nodes[0].0.presence.remote_digest("n2", "chat:big").1
        + c.nodes[0].0.presence.local_digest()[0].2;
    assert_eq!(total, 100_000);
    // No message past the chunk size (NATS's default max payload is 1 MiB).
    let chunk = Config::default().presence_sync_chunk_bytes;
    assert!(
        c.largest <= chunk,
        "largest control message {} > {chunk}",
        c.largest
    );
    assert!(c.states > 30, "the states travelled in parts: {}", c.states);
    let parts = c.nodes[0].0.metrics.render();
    assert!(
        parts.contains("myriad_presence_sync_parts_sent_total"),
        "{parts}"
    );
}

#[test]
fn state_parts_are_paced_at_presence_sync_rate() {
    let mut c = Cluster::new(2, |cfg| {
        cfg.presence_sync_rate = 64 * 1024;
        cfg.presence_sync_chunk_bytes = 16 * 1024;
    });
    track_many(&c.nodes[0].0, "chat:paced", 0, 5_000);
    c.nodes[0].0.send_state(None);
    // One second's budget went at once; the rest waits.
    let queued = c.nodes[0].0.sync.queued_bytes();
    assert!(queued > 64 * 1024, "queued {queued}");
    assert!(c.nodes[0]
        .0
        .metrics
        .render()
        .lines()
        .any(|l| l.starts_with("myriad_presence_sync_queue_bytes ") && !l.ends_with(" 0")));
    let started = std::time::Instant::now();
    c.settle();
    assert!(c.agrees("chat:paced"));
    // ~500 KiB at 64 KiB/s, one second of it up front.
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_partial_state_is_not_applied_and_a_newer_one_replaces_it() {
    let (c, _) = (Cluster::new(1, |_| {}), ());
    let node = &c.nodes[0].0;
    let m = |k: &str| crate::pubsub::broker::wire::Member {
        topic: "chat:x".into(),
        key: k.into(),
        meta: json!({"phx_ref": k}),
    };
    let part = |id, part, parts, key: &str| Control::State {
        members: vec![m(key)],
        topics: None,
        id,
        part,
        parts,
    };
    node.on_control("n9", part(7, 0, 2, "a"));
    assert_eq!(
        node.presence.remote_digest("n9", "chat:x").1,
        0,
        "half a state"
    );
    // A newer answer starts over; the old half is forgotten.
    node.on_control("n9", part(8, 1, 2, "c"));
    node.on_control("n9", part(8, 0, 2, "b"));
    assert_eq!(node.presence.remote_digest("n9", "chat:x").1, 2);
    // Nonsense part numbers are refused.
    node.on_control("n9", part(9, 5, 2, "z"));
    node.on_control("n9", part(9, 0, 0, "z"));
    assert!(node
        .metrics
        .render()
        .contains("myriad_broker_refused_total{reason=\"frame\"} 2"));
}

#[test]
fn lost_diffs_are_repaired_by_the_next_digest() {
    let mut c = Cluster::new(3, |_| {});
    for (i, (node, _)) in c.nodes.iter().enumerate() {
        track_many(node, "chat:ae", i as u64 * 1000, 100);
    }
    for (node, _) in &c.nodes {
        node.send_control(Control::SyncRequest);
    }
    c.settle();
    assert!(c.agrees("chat:ae"));
    // Node 0's diffs are lost on the way: ten leave, five join, one topic
    // empties completely.
    c.nodes[0].1.drop_diffs.store(true, Ordering::Relaxed);
    track_many(&c.nodes[0].0, "chat:gone", 5000, 3);
    // (Answers are limited to one per peer per heartbeat: wait one out.)
    std::thread::sleep(Duration::from_millis(150));
    c.nodes[1].0.send_control(Control::SyncRequest);
    c.settle();
    assert_eq!(c.nodes[1].0.presence.remote_digest("n0", "chat:gone").1, 3);
    for s in 0..10 {
        c.nodes[0].0.presence.untrack("chat:ae", s, |_| {});
        c.nodes[0].0.presence.untrack("chat:gone", 5000 + s, |_| {});
    }
    track_many(&c.nodes[0].0, "chat:ae", 2000, 5);
    c.settle();
    assert!(!c.agrees("chat:ae"), "the replicas are stale");
    // One digest round repairs them.
    std::thread::sleep(Duration::from_millis(150));
    let started = std::time::Instant::now();
    c.nodes[0].0.send_digest();
    c.settle();
    assert!(c.agrees("chat:ae"));
    assert!(c.agrees("chat:gone"));
    assert_eq!(
        c.nodes[1].0.presence.remote_digest("n0", "chat:gone"),
        (0, 0)
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    let text = c.nodes[1].0.metrics.render();
    assert!(
        text.contains("myriad_presence_digest_mismatches_total 2"),
        "{}",
        text.lines()
            .filter(|l| l.contains("mismatch"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn count_mode_joiners_get_an_empty_state_and_the_count_across_nodes() {
    use crate::config::{NamespaceConfig, PresenceMode};
    let config = Config {
        namespaces: vec![NamespaceConfig {
            presence: true,
            presence_mode: PresenceMode::Count,
            ..NamespaceConfig::new("big:*")
        }],
        ..Config::default()
    };
    let broker = Arc::new(Recording::default());
    let node = Node::new(&config, Metrics::new(), broker);
    // Two members another node reported, one here.
    track_many(&node, "big:x", 1, 1);
    node.on_control(
        "n2",
        Control::State {
            members: (0..2)
                .map(|i| crate::pubsub::broker::wire::Member {
                    topic: "big:x".into(),
                    key: format!("remote-{i}"),
                    meta: json!({"phx_ref": format!("r{i}")}),
                })
                .collect(),
            topics: None,
            id: 1,
            part: 0,
            parts: 1,
        },
    );
    let (m, _) = join(&node, "big:x", 9, "me");
    let got = frames(&m);
    assert_eq!(got[0][3], "presence_state");
    assert_eq!(got[0][4], json!({}));
    assert_eq!(got[1][3], "presence_count");
    assert_eq!(
        got[1][4],
        json!({"count": 4}),
        "1 here + 2 reported + the joiner"
    );
    // Then the usual diff (the joiner's own join).
    assert_eq!(got[2][3], "presence_diff");
    assert!(got[2][4]["joins"]["me"].is_object());
}

#[test]
fn a_peer_naming_many_parts_costs_only_the_parts_it_sends() {
    let c = Cluster::new(1, |_| {});
    let node = &c.nodes[0].0;
    node.on_control(
        "n9",
        Control::State {
            members: Vec::new(),
            topics: None,
            id: 1,
            part: 7,
            parts: 65_536,
        },
    );
    assert_eq!(node.sync.pending("n9"), Some((65_536, 1)));
}

#[test]
fn a_newer_full_state_supersedes_the_queued_one_and_resyncs_are_bounded() {
    let c = Cluster::new(2, |cfg| {
        cfg.presence_sync_rate = 16 * 1024;
        cfg.presence_sync_chunk_bytes = 4096;
    });
    let node = &c.nodes[0].0;
    track_many(node, "chat:q", 0, 3_000);
    node.send_state(None);
    let once = node.sync.queued_bytes();
    assert!(once > 0);
    // Every peer asking again does not queue the state again: at most one
    // whole state waits (the first sent a second's budget, 16 KiB, at once).
    node.send_state(None);
    node.send_state(None);
    let again = node.sync.queued_bytes();
    assert!(again <= once + 16 * 1024 + 4096, "{again} vs {once}");
    // Past four seconds of rate queued, a topic re-sync waits for the next digest.
    node.send_state(Some(vec![String::from("chat:q")]));
    assert!(node
        .metrics
        .render()
        .contains("myriad_broker_refused_total{reason=\"sync_rate\"} 1"));
}

#[test]
fn each_node_learns_the_others_figures_from_their_ticks() {
    use crate::pubsub::broker::wire::NodeFigures;
    let mut c = Cluster::new(2, |_| {});
    c.nodes[0].0.set_figures(|| NodeFigures {
        sessions: 42,
        topics: 3,
        memory: 1 << 20,
        draining: false,
    });
    // The first tick sends the figures (every few heartbeats after that).
    c.nodes[0].0.cluster_tick();
    c.settle();
    let peers = c.nodes[1].0.peer_figures();
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert_eq!(Some(peers[0].0.clone()), c.nodes[0].0.node_id());
    assert_eq!(peers[0].1.sessions, 42);
    assert_eq!(peers[0].1.memory, 1 << 20);
    assert_eq!(c.nodes[0].0.own_figures().map(|f| f.topics), Some(3));
}

#[test]
fn a_big_topic_gets_its_presence_diffs_merged_once_per_interval() {
    let config = Config {
        presence_batch_members: 4,
        ..Config::default()
    };
    let node = Node::new(&config, Metrics::new(), Arc::new(Recording::default()));
    // Below the threshold (the joiner counted): each join is a diff at once.
    let (a, _) = join(&node, "chat:big", 1, "a");
    let (b, _) = join(&node, "chat:big", 2, "b");
    frames(&a);
    assert_eq!(frames(&b)[0][3], "presence_state");
    let (c, _) = join(&node, "chat:big", 3, "c");
    let a_saw = frames(&a);
    assert_eq!(a_saw.len(), 1, "c's join went out at once: {a_saw:?}");
    frames(&b);
    frames(&c);
    // The fourth member on: joins and leaves wait for the flush.
    let (d, _) = join(&node, "chat:big", 4, "d");
    let (e, _) = join(&node, "chat:big", 5, "e");
    let ns = Arc::clone(&node.route("chat:big").unwrap().namespace);
    node.leave("chat:big", &ns, 3);
    assert!(frames(&a).is_empty(), "nothing before the flush");
    assert_eq!(
        frames(&d)[0][3],
        "presence_state",
        "a joiner still gets the state at once"
    );
    frames(&e);
    node.flush_presence_diffs();
    let merged = frames(&a);
    assert_eq!(merged.len(), 1, "one diff for the window: {merged:?}");
    assert_eq!(merged[0][3], "presence_diff");
    let joins = merged[0][4]["joins"].as_object().unwrap();
    assert!(
        joins.contains_key("d") && joins.contains_key("e"),
        "{merged:?}"
    );
    assert!(
        merged[0][4]["leaves"]["c"]["metas"].is_array(),
        "{merged:?}"
    );
    assert_eq!(frames(&b).len(), 1);
    // Three diffs waited (d's and e's joins, c's leave).
    let text = node.metrics.render();
    let coalesced = text
        .lines()
        .find(|l| l.starts_with("myriad_presence_diffs_coalesced_total "))
        .unwrap();
    assert!(coalesced.ends_with(" 3"), "{coalesced}");
    node.flush_presence_diffs();
    assert!(frames(&a).is_empty(), "nothing waits after a flush");
}
