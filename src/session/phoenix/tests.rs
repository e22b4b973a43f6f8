//! The dispatch rules of the Phoenix V2 handler (the conformance list in
//! docs/protocol.md), driven frame by frame without sockets: each test feeds
//! text frames to `PhoenixHandler::on_text` and reads what it answered
//! directly (`out`) and what reached each member's mailbox.

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::VecDeque;

use serde_json::{json, Value};

use super::*;
use crate::config::{NamespaceConfig, SlowConsumerPolicy};
use crate::pubsub::broker::local::LocalBroker;
use crate::pubsub::mailbox::MailboxLimits;

fn config() -> Config {
    let mut namespaces = NamespaceConfig::defaults();
    namespaces.push(NamespaceConfig {
        broadcast_from: true,
        ..NamespaceConfig::new("from:*")
    });
    namespaces.push(NamespaceConfig {
        publish: crate::config::Publish::Server,
        ..NamespaceConfig::new("feed:*")
    });
    namespaces.push(NamespaceConfig {
        publish: crate::config::Publish::Server,
        presence: true,
        ..NamespaceConfig::new("live:*")
    });
    Config {
        enable_fault_injection: true,
        max_topics_per_session: 3,
        namespaces,
        ..Config::default()
    }
}

struct World {
    config: Arc<Config>,
    node: Arc<Node>,
    metrics: Arc<Metrics>,
}

impl World {
    fn new(config: Config) -> World {
        let metrics = Metrics::new();
        let node = Arc::new(Node::new(
            &config,
            Arc::clone(&metrics),
            Arc::new(LocalBroker),
        ));
        World {
            config: Arc::new(config),
            node,
            metrics,
        }
    }

    fn connect(&self, id: SessionId, identity: Identity) -> Conn {
        let mailbox = Arc::new(Mailbox::new(MailboxLimits {
            capacity: 64,
            max_bytes: 1 << 20,
            policy: SlowConsumerPolicy::Disconnect,
        }));
        Conn {
            handler: PhoenixHandler::new(
                id,
                identity,
                Arc::clone(&mailbox),
                Arc::clone(&self.node),
                Arc::clone(&self.metrics),
                &self.config,
                None,
            ),
            mailbox,
        }
    }

    fn anonymous(&self, id: SessionId) -> Conn {
        self.connect(id, anonymous())
    }

    fn metric(&self, line: &str) -> bool {
        self.metrics.render().lines().any(|l| l == line)
    }
}

fn anonymous() -> Identity {
    Identity::default()
}

struct Conn {
    handler: PhoenixHandler,
    mailbox: Arc<Mailbox>,
}

fn text(frames: Vec<Outbound>) -> Vec<Value> {
    frames
        .into_iter()
        .map(|f| match f {
            Outbound::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
            Outbound::Binary(_) => panic!("binary frame"),
        })
        .collect()
}

impl Conn {
    /// Send one frame; what the handler answered directly.
    fn send(&mut self, frame: Value) -> Vec<Value> {
        self.try_send(frame).unwrap()
    }

    fn try_send(&mut self, frame: Value) -> Result<Vec<Value>, CloseReason> {
        let mut out = Vec::new();
        let text_frame = Utf8Bytes::from(frame.to_string());
        self.handler.on_text(&text_frame, &mut out)?;
        Ok(text(out))
    }

    /// What reached this session's mailbox (broadcasts), in order.
    fn inbox(&self) -> Vec<Value> {
        let mut q = VecDeque::new();
        self.mailbox.drain(&mut q);
        text(q.into_iter().collect())
    }

    fn join(&mut self, jr: &str, topic: &str) -> Vec<Value> {
        self.send(json!([jr, jr, topic, "phx_join", {}]))
    }
}

fn reply(jr: Value, r: &str, topic: &str, status: &str, response: Value) -> Value {
    json!([jr, r, topic, "phx_reply", {"status": status, "response": response}])
}

#[test]
fn heartbeat_is_answered_whatever_channels_exist() {
    let w = World::new(config());
    let mut c = w.anonymous(1);
    let ok = reply(Value::Null, "1", "phoenix", "ok", json!({}));
    assert_eq!(
        c.send(json!([null, "1", "phoenix", "heartbeat", {}])),
        std::slice::from_ref(&ok)
    );
    c.join("1", "room:a");
    assert_eq!(c.send(json!([null, "1", "phoenix", "heartbeat", {}])), [ok]);
}

#[test]
fn join_ok_echoes_the_refs() {
    let w = World::new(config());
    let mut c = w.anonymous(1);
    assert_eq!(
        c.join("1", "room:lobby"),
        [reply(json!("1"), "1", "room:lobby", "ok", json!({}))]
    );
    assert!(w.metric("myriad_channel_joins_total{result=\"ok\"} 1"));
}

#[test]
fn a_join_nothing_routes_is_refused_with_a_null_join_ref() {
    let w = World::new(config());
    let mut c = w.anonymous(1);
    assert_eq!(
        c.join("1", "nope"),
        [reply(
            Value::Null,
            "1",
            "nope",
            "error",
            json!({"reason": "unmatched topic"})
        )]
    );
    assert!(w.metric("myriad_join_refusals_total{reason=\"unmatched_topic\"} 1"));
}

#[test]
fn a_join_outside_the_token_topics_is_unauthorized() {
    let w = World::new(config());
    let mut c = w.connect(
        1,
        Identity {
            user: Some("u".into()),
            topics: Some(vec![Pattern::parse("room:open")]),
            ..anonymous()
        },
    );
    assert_eq!(
        c.join("1", "room:secret"),
        [reply(
            json!("1"),
            "1",
            "room:secret",
            "error",
            json!({"reason": "unauthorized"})
        )]
    );
    assert_eq!(c.join("2", "room:open")[0][4]["status"], "ok");
    // Refused joins register nothing: a push is for a topic not open.
    assert_eq!(
        c.send(json!(["1", "3", "room:secret", "x", {}])),
        [reply(
            Value::Null,
            "3",
            "room:secret",
            "error",
            json!({"reason": "unmatched topic"})
        )]
    );
}

#[test]
fn a_join_crash_is_answered_and_the_connection_lives() {
    let w = World::new(config());
    let mut c = w.anonymous(1);
    assert_eq!(
        c.send(json!(["1", "1", "crash:1", "phx_join", {"crash_on_join": true}])),
        [reply(
            json!("1"),
            "1",
            "crash:1",
            "error",
            json!({"reason": "join crashed"})
        )]
    );
    assert_eq!(c.join("2", "room:a")[0][4]["status"], "ok");
    assert!(w.metric("myriad_join_refusals_total{reason=\"crashed\"} 1"));
}

#[test]
fn the_channel_cap_refuses_with_the_join_ref_echoed() {
    let w = World::new(config());
    let mut c = w.anonymous(1);
    for i in 0..3 {
        c.join(&i.to_string(), &format!("room:{i}"));
    }
    assert_eq!(
        c.join("9", "room:9"),
        [reply(
            json!("9"),
            "9",
            "room:9",
            "error",
            json!({"reason": "too many channels joined"})
        )]
    );
    assert!(w.metric("myriad_join_refusals_total{reason=\"too_many_channels\"} 1"));
}

#[test]
fn a_push_is_replied_and_broadcast_to_every_member_sender_included() {
    let w = World::new(config());
    let (mut a, mut b) = (w.anonymous(1), w.anonymous(2));
    a.join("1", "room:lobby");
    b.join("1", "room:lobby");
    assert_eq!(
        a.send(json!(["1", "2", "room:lobby", "new_msg", {"body": "hi"}])),
        [reply(json!("1"), "2", "room:lobby", "ok", json!({}))]
    );
    let broadcast = json!([null, null, "room:lobby", "new_msg", {"body": "hi"}]);
    assert_eq!(a.inbox(), std::slice::from_ref(&broadcast));
    assert_eq!(b.inbox(), [broadcast]);
}

#[test]
fn broadcast_from_skips_the_sender() {
    let w = World::new(config());
    let (mut a, mut b) = (w.anonymous(1), w.anonymous(2));
    a.join("1", "from:x");
    b.join("1", "from:x");
    a.send(json!(["1", "2", "from:x", "m", {}]));
    assert!(a.inbox().is_empty());
    assert_eq!(b.inbox().len(), 1);
}

#[test]
fn server_only_namespaces_refuse_client_pushes_and_non_objects_are_refused() {
    let w = World::new(config());
    let mut c = w.anonymous(1);
    c.join("1", "feed:x");
    c.join("2", "room:x");
    assert_eq!(
        c.send(json!(["1", "3", "feed:x", "m", {}])),
        [reply(
            json!("1"),
            "3",
            "feed:x",
            "error",
            json!({"reason": "publish not allowed"})
        )]
    );
    assert_eq!(
        c.send(json!(["2", "4", "room:x", "m", [1]])),
        [reply(
            json!("2"),
            "4",
            "room:x",
            "error",
            json!({"reason": "payload must be a JSON object"})
        )]
    );
    assert!(c.inbox().is_empty());
}

#[test]
fn a_push_to_a_topic_not_open_is_unmatched_without_a_close() {
    let w = World::new(config());
    let mut c = w.anonymous(1);
    assert_eq!(
        c.send(json!(["1", "4", "room:lobby", "new_msg", {}])),
        [reply(
            Value::Null,
            "4",
            "room:lobby",
            "error",
            json!({"reason": "unmatched topic"})
        )]
    );
}

#[test]
fn leave_replies_then_closes_and_broadcasts_stop() {
    let w = World::new(config());
    let (mut a, mut b) = (w.anonymous(1), w.anonymous(2));
    a.join("1", "room:lobby");
    b.join("1", "room:lobby");
    assert_eq!(
        a.send(json!(["1", "3", "room:lobby", "phx_leave", {}])),
        [
            reply(json!("1"), "3", "room:lobby", "ok", json!({})),
            json!(["1", "1", "room:lobby", "phx_close", {}]),
        ]
    );
    b.send(json!(["1", "2", "room:lobby", "m", {}]));
    assert!(a.inbox().is_empty(), "a left: no more broadcasts");
}

#[test]
fn leave_of_a_topic_not_open_is_ok_without_a_close() {
    let w = World::new(config());
    let mut c = w.anonymous(1);
    assert_eq!(
        c.send(json!(["7", "5", "room:x", "phx_leave", {}])),
        [reply(json!("7"), "5", "room:x", "ok", json!({}))]
    );
}

#[test]
fn a_duplicate_join_replies_first_then_closes_the_old_channel() {
    let w = World::new(config());
    let mut c = w.anonymous(1);
    c.join("1", "room:lobby");
    assert_eq!(
        c.join("3", "room:lobby"),
        [
            reply(json!("3"), "3", "room:lobby", "ok", json!({})),
            json!(["1", "1", "room:lobby", "phx_close", {}]),
        ]
    );
}

#[test]
fn stale_join_refs_are_dropped_and_null_ones_reach_the_current_channel() {
    let w = World::new(config());
    let mut c = w.anonymous(1);
    c.join("1", "room:lobby");
    c.join("3", "room:lobby");
    assert!(c.send(json!(["1", "4", "room:lobby", "m", {}])).is_empty());
    assert!(c
        .send(json!(["1", "4", "room:lobby", "phx_leave", {}]))
        .is_empty());
    assert!(c.inbox().is_empty(), "the stale push was not delivered");
    assert_eq!(
        c.send(json!([null, "5", "room:lobby", "m", {}])),
        [reply(json!("3"), "5", "room:lobby", "ok", json!({}))]
    );
    assert_eq!(c.inbox().len(), 1);
}

#[test]
fn a_channel_crash_sends_phx_error_frees_the_topic_and_keeps_the_rest() {
    let w = World::new(config());
    let mut c = w.anonymous(1);
    c.join("1", "crash:1");
    c.join("2", "room:a");
    assert_eq!(
        c.send(json!(["1", "5", "crash:1", "panic", {}])),
        [json!(["1", "1", "crash:1", "phx_error", {"reason": "channel_crash"}])]
    );
    assert_eq!(
        c.send(json!(["1", "6", "crash:1", "m", {}]))[0][4]["response"]["reason"],
        "unmatched topic"
    );
    assert_eq!(
        c.send(json!(["2", "7", "room:a", "m", {}]))[0][4]["status"],
        "ok"
    );
    assert!(w.metric("myriad_channel_crashes_total 1"));
}

#[test]
fn crashes_past_the_restart_intensity_close_the_session_with_1011() {
    let w = World::new(Config {
        max_restarts: 2,
        ..config()
    });
    let mut c = w.anonymous(1);
    for i in 0..2 {
        c.join("1", "crash:1");
        assert!(c
            .try_send(json!(["1", i.to_string(), "crash:1", "panic", {}]))
            .is_ok());
    }
    c.join("1", "crash:1");
    assert_eq!(
        c.try_send(json!(["1", "9", "crash:1", "panic", {}])),
        Err(CloseReason::RestartIntensity)
    );
}

#[test]
fn presence_state_goes_to_the_joiner_and_diffs_to_members() {
    let w = World::new(config());
    let mut a = w.connect(
        1,
        Identity {
            user: Some("alice".into()),
            ..anonymous()
        },
    );
    let mut b = w.connect(
        2,
        Identity {
            user: Some("bob".into()),
            ..anonymous()
        },
    );
    b.join("1", "chat:x");
    b.inbox();
    let got = a.join("1", "chat:x");
    assert_eq!(got[0][4]["status"], "ok");
    assert_eq!(got.len(), 1, "the state follows through the mailbox");
    let queued = a.inbox();
    let state = &queued[0];
    assert_eq!(
        (&state[0], &state[3]),
        (&json!("1"), &json!("presence_state"))
    );
    let alice_ref = state[4]["alice"]["metas"][0]["phx_ref"].clone();
    assert_eq!(alice_ref.as_str().map(str::len), Some(16));
    assert!(state[4]["bob"].is_object());
    let diff = b.inbox();
    assert_eq!(diff[0][3], "presence_diff");
    assert_eq!(
        diff[0][4]["joins"]["alice"]["metas"][0]["phx_ref"],
        alice_ref
    );
    // Dropping the connection (any exit) leaves with the same meta.
    drop(a);
    let diff = b.inbox();
    assert_eq!(
        diff[0][4]["leaves"]["alice"]["metas"][0]["phx_ref"],
        alice_ref
    );
}

#[test]
fn a_history_join_recovers_exactly_what_it_missed() {
    let w = World::new(config());
    let mut a = w.anonymous(1);
    let joined = a.join("1", "chat:h");
    let epoch = joined[0][4]["response"]["epoch"].clone();
    assert_eq!(joined[0][4]["response"]["recovered"], false);
    for i in 0..3 {
        assert_eq!(
            a.send(json!(["1", i.to_string(), "chat:h", "m", {"i": i}]))[0][4]["response"]
                ["offset"],
            i + 1
        );
    }
    let mut b = w.anonymous(2);
    let got =
        b.send(json!(["1", "1", "chat:h", "phx_join", {"since": {"offset": 1, "epoch": epoch}}]));
    assert_eq!(got[0][4]["response"]["recovered"], true);
    assert_eq!(got.len(), 1);
    // After the reply, through the mailbox (its bounds apply): the replayed
    // frames in offset order, then presence_state (chat:* tracks).
    let got = b.inbox();
    let replayed: Vec<_> = got[0..2].iter().map(|f| f[4]["i"].clone()).collect();
    assert_eq!(replayed, [json!(1), json!(2)]);
    assert_eq!(got[2][3], "presence_state");
    assert!(got[0][1].as_str().unwrap().starts_with("2:"));
}

#[test]
fn a_replay_that_does_not_fit_the_mailbox_answers_recovered_false() {
    let w = World::new(config());
    let mut a = w.anonymous(1);
    let epoch = a.join("1", "chat:big")[0][4]["response"]["epoch"].clone();
    let big = "x".repeat(300_000);
    for i in 0..5 {
        a.send(json!(["1", i.to_string(), "chat:big", "m", {"pad": big}]));
    }
    // The test mailboxes hold 1 MiB: five 300 KB frames do not fit.
    let mut b = w.anonymous(2);
    let got =
        b.send(json!(["1", "1", "chat:big", "phx_join", {"since": {"offset": 0, "epoch": epoch}}]));
    assert_eq!(got[0][4]["response"]["recovered"], false);
    assert!(b.inbox().iter().all(|f| f[3] != "m"), "no partial replay");
    assert!(w.metric("myriad_history_replays_refused_total 1"));
}

#[test]
fn a_presence_meta_over_the_bound_refuses_the_join() {
    let w = World::new(config());
    let mut c = w.anonymous(1);
    let meta = json!({"name": "x".repeat(2000)});
    assert_eq!(
        c.send(json!(["1", "1", "chat:m", "phx_join", {"meta": meta}])),
        [reply(
            json!("1"),
            "1",
            "chat:m",
            "error",
            json!({"reason": "presence meta too large"})
        )]
    );
    assert!(w.metric("myriad_join_refusals_total{reason=\"meta_too_large\"} 1"));
    // On a namespace without presence the meta is not stored: no bound.
    assert_eq!(
        c.send(json!(["2", "2", "room:m", "phx_join", {"meta": meta}]))[0][4]["status"],
        "ok"
    );
}

#[test]
fn rate_limited_frames_get_a_reply_and_abuse_closes_with_1008() {
    let w = World::new(Config {
        client_rate: 1,
        client_burst: 1,
        abuse_window: std::time::Duration::ZERO,
        ..config()
    });
    let mut c = w.anonymous(1);
    c.join("1", "room:a");
    assert_eq!(
        c.try_send(json!(["1", "2", "room:a", "m", {}])),
        Err(CloseReason::RateLimitAbuse)
    );
    assert!(w.metric("myriad_rate_limited_total 1"));
}

#[test]
fn malformed_frames_close_with_1007_and_are_counted_by_kind() {
    let w = World::new(config());
    let mut c = w.anonymous(1);
    let mut out = Vec::new();
    let r = c.handler.on_text(&Utf8Bytes::from("{not json"), &mut out);
    assert_eq!(r, Err(CloseReason::MalformedFrame));
    assert!(w.metric("myriad_malformed_frames_total{kind=\"bad_json\"} 1"));
    let r = c
        .handler
        .on_binary(bytes::Bytes::from_static(b"x"), &mut out);
    assert_eq!(r, Err(CloseReason::MalformedFrame));
    assert!(w.metric("myriad_malformed_frames_total{kind=\"bad_binary\"} 1"));
}

/// A V2 binary push as phoenix.js encodes it.
fn binary_push(jr: &str, r: &str, topic: &str, event: &str, payload: &[u8]) -> bytes::Bytes {
    bytes::Bytes::from(crate::protocol::binary::encode_push(
        jr, r, topic, event, payload,
    ))
}

impl Conn {
    fn send_binary(&mut self, frame: bytes::Bytes) -> Result<Vec<Value>, CloseReason> {
        let mut out = Vec::new();
        self.handler.on_binary(frame, &mut out)?;
        Ok(text(out))
    }

    fn binary_inbox(&self) -> Vec<bytes::Bytes> {
        let mut q = VecDeque::new();
        self.mailbox.drain(&mut q);
        q.into_iter()
            .filter_map(|f| match f {
                Outbound::Binary(b) => Some(b),
                Outbound::Text(_) => None,
            })
            .collect()
    }
}

#[test]
fn binary_pushes_are_broadcast_as_binary_and_replied_to() {
    let w = World::new(config());
    let (mut a, mut b) = (w.anonymous(1), w.anonymous(2));
    a.join("1", "room:bin");
    b.join("1", "room:bin");
    let replies = a
        .send_binary(binary_push("1", "7", "room:bin", "file", &[0, 1, 255]))
        .unwrap();
    assert_eq!(
        replies,
        [reply(json!("1"), "7", "room:bin", "ok", json!({}))]
    );
    let expected =
        crate::protocol::binary::encode_broadcast("room:bin", "file", &[0, 1, 255]).unwrap();
    assert_eq!(b.binary_inbox(), std::slice::from_ref(&expected));
    assert_eq!(a.binary_inbox(), [expected]);
}

#[test]
fn binary_pushes_follow_the_json_rules() {
    let w = World::new(config());
    let mut c = w.anonymous(1);
    // Not joined.
    let r = c
        .send_binary(binary_push("1", "2", "room:x", "e", b""))
        .unwrap();
    assert_eq!(r[0][4]["response"]["reason"], "unmatched topic");
    c.join("1", "room:x");
    // Reserved events, and a stale join_ref (dropped silently).
    let r = c
        .send_binary(binary_push("1", "3", "room:x", "phx_close", b""))
        .unwrap();
    assert_eq!(r[0][4]["response"]["reason"], "reserved event");
    assert!(c
        .send_binary(binary_push("9", "4", "room:x", "e", b""))
        .unwrap()
        .is_empty());
    // Server-published namespaces refuse them like JSON pushes.
    c.join("3", "feed:x");
    let r = c
        .send_binary(binary_push("3", "6", "feed:x", "e", b"x"))
        .unwrap();
    assert_eq!(r[0][4]["response"]["reason"], "publish not allowed");
    // Over-long refs are not a client.
    let long = "9".repeat(100);
    assert_eq!(
        c.send_binary(binary_push(&long, "7", "room:x", "e", b"")),
        Err(CloseReason::MalformedFrame)
    );
}

#[test]
fn binary_pushes_take_history_offsets_and_are_recovered_as_binary() {
    let w = World::new(config());
    let mut c = w.anonymous(1);
    c.join("1", "chat:x");
    c.inbox();
    // chat:* keeps history: the binary push takes offset 1, a JSON one 2.
    let r = c
        .send_binary(binary_push("1", "2", "chat:x", "file", &[0, 1, 255]))
        .unwrap();
    assert_eq!(r[0][4], json!({"status": "ok", "response": {"offset": 1}}));
    let r = c.send(json!(["1", "3", "chat:x", "m", {"t": "after"}]));
    assert_eq!(r[0][4]["response"]["offset"], 2);
    // A client resuming from offset 0 gets both, the first as binary.
    let mut late = w.anonymous(2);
    // The pusher got both broadcasts too: binary, then JSON with offset 2.
    let mut q = VecDeque::new();
    c.mailbox.drain(&mut q);
    assert!(matches!(q[0], Outbound::Binary(_)), "{q:?}");
    let second: Value = serde_json::from_str(q[1].text().unwrap()).unwrap();
    let slot = second[1].as_str().unwrap().to_owned();
    let epoch = slot.split_once(':').unwrap().1.to_owned();
    let reply = late
        .send(json!(["5", "5", "chat:x", "phx_join", {"since": {"offset": 0, "epoch": epoch}}]));
    assert_eq!(reply[0][4]["response"]["recovered"], true, "{reply:?}");
    let mut q = VecDeque::new();
    late.mailbox.drain(&mut q);
    let frames: Vec<Outbound> = q.into_iter().collect();
    let Outbound::Binary(bin) = &frames[0] else {
        panic!("the binary broadcast replays as binary: {frames:?}")
    };
    assert_eq!(
        crate::protocol::binary::decode_broadcast(bin),
        Some(("chat:x", "file", &[0u8, 1, 255][..]))
    );
    let json: Value = serde_json::from_str(frames[1].text().unwrap()).unwrap();
    assert_eq!(json[1], format!("2:{epoch}"));
}

#[test]
fn on_server_published_namespaces_presence_metas_are_server_set() {
    let w = World::new(config());
    let mut c = w.anonymous(1);
    c.send(json!(["1", "1", "live:x", "phx_join", {"meta": {"spam": "hello everyone"}}]));
    let state = c
        .inbox()
        .into_iter()
        .find(|f| f[3] == "presence_state")
        .unwrap();
    let meta = &state[4]["anon-1"]["metas"][0];
    assert!(meta.get("spam").is_none(), "{meta}");
    assert!(meta.get("online_at").is_some());
}

#[test]
fn a_heartbeat_flood_is_rate_limited_like_any_frame() {
    let w = World::new(Config {
        client_rate: 1,
        client_burst: 2,
        abuse_window: std::time::Duration::from_secs(60),
        ..config()
    });
    let mut c = w.anonymous(1);
    let beat = |r: &str| json!([null, r, "phoenix", "heartbeat", {}]);
    assert_eq!(c.send(beat("1"))[0][4]["status"], "ok");
    assert_eq!(c.send(beat("2"))[0][4]["status"], "ok");
    let refused = c.send(beat("3"));
    assert_eq!(refused[0][1], "3", "still answered with its ref");
    assert_eq!(refused[0][4]["response"]["reason"], "rate_limited");
    assert!(w.metric("myriad_rate_limited_total 1"));
}
