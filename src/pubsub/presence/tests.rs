use super::*;

fn meta(name: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("name".into(), Value::String(name.into()));
    m
}

#[test]
fn remote_members_stay_in_their_topic() {
    let p = Presence::new();
    let member = |topic: &str, key: &str, r: &str| RemoteMember {
        topic: topic.into(),
        key: key.into(),
        meta: serde_json::json!({"phx_ref": r}),
    };
    let diffs = p.replace_remote(
        "n1",
        vec![member("t", "ann", "r1"), member("u", "ben", "r2")],
        usize::MAX,
    );
    assert_eq!(diffs.len(), 2, "one join per member");
    let t: Value = serde_json::from_str(&p.state("t")).unwrap();
    let u: Value = serde_json::from_str(&p.state("u")).unwrap();
    assert!(t.get("ann").is_some() && t.get("ben").is_none());
    assert!(u.get("ben").is_some() && u.get("ann").is_none());
    // The same snapshot again: nothing changed, nothing to deliver.
    let same = vec![member("t", "ann", "r1"), member("u", "ben", "r2")];
    assert!(p.replace_remote("n1", same, usize::MAX).is_empty());
    let leave = serde_json::json!({"joins": {}, "leaves": {"ann": {"metas": [{"phx_ref": "r1"}]}}});
    p.apply_remote_diff("n1", "t", &leave, usize::MAX);
    assert_eq!(p.state("t"), "{}");
    assert_eq!(p.drop_node("n1").len(), 1, "only ben is left to leave");
}

#[test]
fn remote_members_merge_into_state_and_leave_with_their_node() {
    let p = Presence::new();
    p.track("t", 1, "alice", meta("A"), usize::MAX, |_| {}, |_| {});
    let bob = serde_json::json!({"name": "B", "phx_ref": "r1"});
    let diff = serde_json::json!({"joins": {"bob": {"metas": [bob]}}, "leaves": {}});
    p.apply_remote_diff("node-b", "t", &diff, usize::MAX);
    let state: Value = serde_json::from_str(&p.state("t")).unwrap();
    assert_eq!(state["bob"]["metas"][0]["name"], "B");
    assert_eq!(state["alice"]["metas"][0]["name"], "A");
    // A snapshot that already holds bob yields no diff; a new member does.
    let carol = RemoteMember {
        topic: "t".into(),
        key: "carol".into(),
        meta: serde_json::json!({"phx_ref": "r2"}),
    };
    let bob_m = RemoteMember {
        topic: "t".into(),
        key: "bob".into(),
        meta: serde_json::json!({"name": "B", "phx_ref": "r1"}),
    };
    let diffs = p.replace_remote("node-b", vec![bob_m, carol], usize::MAX);
    assert_eq!(diffs.len(), 1);
    assert!(diffs[0].1.contains("carol"));
    let leaves = p.drop_node("node-b");
    assert_eq!(leaves.len(), 2);
    let state: Value = serde_json::from_str(&p.state("t")).unwrap();
    assert!(state.get("bob").is_none() && state.get("carol").is_none());
    // A leave diff removes exactly the meta with that phx_ref.
    p.apply_remote_diff("node-c", "t", &diff, usize::MAX);
    let leave = serde_json::json!({"joins": {}, "leaves": {"bob": {"metas": [{"phx_ref": "r1"}]}}});
    p.apply_remote_diff("node-c", "t", &leave, usize::MAX);
    assert!(serde_json::from_str::<Value>(&p.state("t"))
        .unwrap()
        .get("bob")
        .is_none());
    assert_eq!(p.local_members().len(), 1);
}

#[test]
fn refs_are_16_url_safe_chars_and_unique() {
    let p = Presence::new();
    let a = p.new_ref(1);
    let b = p.new_ref(1);
    assert_eq!(a.len(), 16);
    assert!(a
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    assert_ne!(a, b);
}

#[test]
fn track_untrack_diffs_carry_the_same_meta() {
    let p = Presence::new();
    let mut diffs = Vec::new();
    p.track(
        "t",
        1,
        "alice",
        meta("A"),
        usize::MAX,
        |_| {},
        |d| diffs.push(d),
    );
    p.track(
        "t",
        2,
        "alice",
        meta("A2"),
        usize::MAX,
        |_| {},
        |d| diffs.push(d),
    );
    p.track(
        "t",
        3,
        "bob",
        meta("B"),
        usize::MAX,
        |_| {},
        |d| diffs.push(d),
    );
    let state: Value = serde_json::from_str(&p.state("t")).unwrap();
    assert_eq!(state["alice"]["metas"].as_array().unwrap().len(), 2);
    assert_eq!(state["bob"]["metas"][0]["name"], "B");
    let join: Value = serde_json::from_str(&diffs[2]).unwrap();
    let bob_ref = join["joins"]["bob"]["metas"][0]["phx_ref"].clone();
    p.untrack("t", 3, |d| diffs.push(d));
    let leave: Value = serde_json::from_str(&diffs[3]).unwrap();
    assert_eq!(leave["leaves"]["bob"]["metas"][0]["phx_ref"], bob_ref);
    assert_eq!(leave["joins"], serde_json::json!({}));
    p.untrack("t", 3, |_| panic!("second untrack must be a no-op"));
    p.untrack("t", 1, |_| {});
    p.untrack("t", 2, |_| {});
    assert_eq!(p.state("t"), "{}");
    assert!(p.topics.is_empty());
}

#[test]
fn a_leave_is_one_removal_and_members_are_capped() {
    let p = Presence::new();
    let mut states = Vec::new();
    for i in 0..3 {
        let tracked = p.track(
            "t",
            i,
            &format!("u{i}"),
            meta("x"),
            2,
            |s| states.push(s),
            |_| {},
        );
        assert_eq!(tracked, i < 2, "session {i}");
    }
    assert!(
        states[2].contains("u0") && !states[2].contains("u2"),
        "the third joiner still gets the state"
    );
    let mut left = Vec::new();
    p.untrack("t", 0, |d| left.push(d));
    p.untrack("t", 2, |d| left.push(d));
    assert_eq!(left.len(), 1, "an untracked session leaves nothing");
    assert!(
        p.track("t", 2, "u2", meta("x"), 2, |_| {}, |_| {}),
        "room again"
    );
}

#[test]
fn another_nodes_members_are_capped_per_topic_and_diffs_rebuilt() {
    let p = Presence::new();
    let join =
        |k: &str| serde_json::json!({"joins": {k: {"metas": [{"phx_ref": k}]}}, "leaves": {}});
    assert_eq!(p.apply_remote_diff("n1", "t", &join("a"), 2), 0);
    assert_eq!(p.apply_remote_diff("n1", "t", &join("b"), 2), 0);
    assert_eq!(
        p.apply_remote_diff("n1", "t", &join("c"), 2),
        1,
        "over the cap: ignored"
    );
    let state: Value = serde_json::from_str(&p.state("t")).unwrap();
    assert_eq!(state.as_object().unwrap().len(), 2);
    let many: Vec<RemoteMember> = (0..10)
        .map(|i| RemoteMember {
            topic: "u".into(),
            key: format!("k{i}"),
            meta: serde_json::json!({"phx_ref": i.to_string()}),
        })
        .collect();
    // One diff for the topic, with the three members kept.
    let diffs = p.replace_remote("n2", many, 3);
    assert_eq!(diffs.len(), 1);
    let diff: Value = serde_json::from_str(&diffs[0].1).unwrap();
    assert_eq!(diff["joins"].as_object().unwrap().len(), 3);
    // Only Phoenix's shape survives, and only entries the filter keeps.
    let dirty = serde_json::json!({
        "joins": {"ok": {"metas": [{"phx_ref": "1"}]}, "big": {"metas": [{"x": "y".repeat(99)}]}},
        "leaves": {},
        "extra": "forwarded verbatim?"
    });
    let clean = filter_diff(&dirty, |_, meta| meta.to_string().len() < 50).unwrap();
    assert_eq!(
        clean,
        serde_json::json!({"joins": {"ok": {"metas": [{"phx_ref": "1"}]}}, "leaves": {}})
    );
    assert!(filter_diff(&dirty, |_, _| false).is_none());
}

#[test]
fn digests_agree_with_a_faithful_replica_and_topic_replaces_leave_other_topics() {
    let local = Presence::new();
    for (i, topic) in ["a", "a", "b"].iter().enumerate() {
        local.track(
            topic,
            i as u64 + 1,
            &format!("u{i}"),
            Map::new(),
            100,
            |_| {},
            |_| {},
        );
    }
    let mut digest = local.local_digest();
    digest.sort();
    assert_eq!(
        digest
            .iter()
            .map(|d| (d.0.as_str(), d.2))
            .collect::<Vec<_>>(),
        [("a", 2), ("b", 1)]
    );
    // A peer's replica built from a state sync digests the same.
    let peer = Presence::new();
    peer.replace_remote("n1", local.local_members(), 100);
    for (topic, hash, count) in &digest {
        assert_eq!(peer.remote_digest("n1", topic), (*hash, *count));
    }
    // A lost leave on "a": the replica disagrees on "a" only.
    local.untrack("a", 1, |_| {});
    let fresh = local.local_digest();
    let a = fresh.iter().find(|d| d.0 == "a").unwrap();
    assert_ne!(peer.remote_digest("n1", "a"), (a.1, a.2));
    // Replacing just "a" repairs it (one diff: the leave), "b" untouched.
    let only_a = vec![String::from("a")];
    let diffs = peer.replace_remote_topics(
        "n1",
        Some(&only_a),
        local.local_members_of(Some(&only_a)),
        100,
    );
    assert_eq!(diffs.len(), 1);
    let diff: Value = serde_json::from_str(&diffs[0].1).unwrap();
    assert_eq!(diff["leaves"].as_object().unwrap().len(), 1);
    assert_eq!(peer.remote_digest("n1", "a"), (a.1, a.2));
    assert_eq!(peer.remote_digest("n1", "b").1, 1);
    let mut topics = peer.remote_topics("n1");
    topics.sort();
    assert_eq!(topics, ["a", "b"]);
}
