use super::*;

const TTL: Duration = Duration::from_secs(60);

/// Topic `t` keeps 5 entries, every other topic 100.
fn history(max_bytes: usize) -> History {
    History::new(max_bytes, usize::MAX, |topic| {
        Some(RingLimits {
            size: if topic == "t" { 5 } else { 100 },
            ttl: TTL,
        })
    })
}

impl Default for History {
    fn default() -> History {
        history(usize::MAX)
    }
}

fn publish(h: &History, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| {
            h.publish("t", "e", &format!("{{\"i\":{i}}}"), None, |_| {})
                .unwrap()
        })
        .collect()
}

#[test]
fn offsets_increase_and_the_ref_slot_carries_them() {
    let h = History::default();
    let mut seen = Vec::new();
    h.publish("t", "e", "{}", None, |f| seen.push(f));
    let v: serde_json::Value = serde_json::from_str(seen[0].text().unwrap()).unwrap();
    let slot = v[1].as_str().unwrap();
    assert!(slot.starts_with("1:"));
    assert!(v[0].is_null());
    assert_eq!(publish(&h, 2), [2, 3]);
}

#[test]
fn recovery_replays_exactly_the_missed_offsets() {
    let h = History::default();
    publish(&h, 4);
    let pos = h.join("t", None, |_| true).position;
    assert_eq!(pos.offset, 4);
    let since = Position {
        offset: 2,
        epoch: pos.epoch.clone(),
    };
    let r = h.join("t", Some(&since), |_| true);
    assert!(r.recovered);
    let offsets: Vec<String> = r
        .frames
        .iter()
        .map(|f| {
            serde_json::from_str::<serde_json::Value>(f.text().unwrap()).unwrap()[1]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        offsets[0].starts_with("3:") && offsets[1].starts_with("4:"),
        "{offsets:?}"
    );
    let up_to_date = h.join(
        "t",
        Some(&Position {
            offset: 4,
            epoch: pos.epoch.clone(),
        }),
        |_| true,
    );
    assert!(up_to_date.recovered && up_to_date.frames.is_empty());
}

#[test]
fn recovery_fails_past_the_ring_or_on_another_epoch() {
    let h = History::default();
    publish(&h, 10); // ring keeps 6..=10
    let epoch = h.join("t", None, |_| true).position.epoch;
    assert!(
        h.join(
            "t",
            Some(&Position {
                offset: 5,
                epoch: epoch.clone()
            }),
            |_| true
        )
        .recovered
    );
    let r = h.join(
        "t",
        Some(&Position {
            offset: 4,
            epoch: epoch.clone(),
        }),
        |_| true,
    );
    assert!(!r.recovered && r.frames.is_empty());
    assert!(
        !h.join(
            "t",
            Some(&Position {
                offset: 9,
                epoch: "other".into()
            }),
            |_| true
        )
        .recovered
    );
    assert!(
        !h.join("t", Some(&Position { offset: 11, epoch }), |_| true)
            .recovered
    );
}

#[test]
fn the_node_wide_byte_bound_holds_and_never_leaves_a_silent_gap() {
    let h = history(300);
    let frame_len = |h: &History| {
        let mut len = 0;
        h.publish("a", "e", "{}", None, |f| len = f.len());
        len
    };
    let one = frame_len(&h);
    for _ in 0..50 {
        h.publish("a", "e", "{}", None, |_| {});
        assert!(h.bytes() <= 300);
    }
    // The ring's own overhead counts in the budget too.
    let kept = (300 - RING_OVERHEAD - "a".len()) / one;
    let epoch_a = h.join("a", None, |_| true).position.epoch;
    let last_a = 51;
    // Topic a holds the whole budget: b stores nothing, and says so.
    let b_epoch = h.join("b", None, |_| true).position.epoch;
    h.publish("b", "e", "{}", None, |_| {});
    assert!(h.bytes() <= 300);
    let r = h.join(
        "b",
        Some(&Position {
            offset: 0,
            epoch: b_epoch,
        }),
        |_| true,
    );
    assert!(
        !r.recovered,
        "nothing stored for b: no recovery, no silent gap"
    );
    // a still recovers within what it kept.
    let since = Position {
        offset: last_a - kept as u64,
        epoch: epoch_a,
    };
    assert!(h.join("a", Some(&since), |_| true).recovered);
    h.sweep_at(Instant::now() + TTL);
    assert_eq!(h.bytes(), 0, "sweeping frees the accounting");
}

#[test]
fn sequenced_frames_follow_the_cluster_and_local_publishes_fork() {
    let h = history(usize::MAX);
    let frame = |o: u64| Utf8Bytes::from(format!("[null,\"{o}:E1\",\"t\",\"m\",{{}}]"));
    assert_eq!(
        crate::protocol::history_position(frame(7).as_str()),
        Some((7, "E1"))
    );
    // A node that starts listening at offset 5 keeps 5.. and cannot recover before.
    for o in 5..=8 {
        assert!(h.append_sequenced("t", o, "E1", frame(o), None, |_, _| {}));
    }
    assert!(
        !h.append_sequenced("t", 8, "E1", frame(8), None, |_, _| panic!(
            "repeat delivered"
        ))
    );
    let since = |o: u64| Position {
        offset: o,
        epoch: "E1".into(),
    };
    let r = h.join("t", Some(&since(6)), |_| true);
    assert!(r.recovered);
    assert_eq!(r.frames.len(), 2);
    assert!(!h.join("t", Some(&since(2)), |_| true).recovered);
    // The cluster is away: a local publish forks to a new epoch.
    h.publish("t", "m", "{}", None, |_| {});
    let r = h.join("t", Some(&since(8)), |_| true);
    assert!(!r.recovered, "offsets after a fork are not the cluster's");
    assert_ne!(r.position.epoch, "E1");
    // The cluster returns: its epoch takes over again. The node reads the
    // stream back (6..=9): what it delivered before the outage (..=8) is
    // stored again but not delivered twice; 9, sequenced while away, is new.
    let mut delivered = Vec::new();
    for o in 6..=9 {
        assert!(h.append_sequenced("t", o, "E1", frame(o), None, |_, _| delivered.push(o)));
    }
    assert_eq!(delivered, [9]);
    assert_eq!(h.join("t", None, |_| true).position.epoch, "E1");
    let r = h.join("t", Some(&since(6)), |_| true);
    assert!(r.recovered);
    assert_eq!(r.frames.len(), 3, "7, 8 and 9 are kept for recovery");
    // A new cluster epoch (its keys expired) is all new.
    assert!(h.append_sequenced("t", 1, "E2", frame(1), None, |_, _| delivered.push(100)));
    assert_eq!(delivered, [9, 100]);
}

#[test]
fn a_hole_in_sequenced_offsets_is_never_replayed_across() {
    let h = history(usize::MAX);
    let frame = |o: u64| Utf8Bytes::from(format!("[null,\"{o}:E1\",\"t\",\"m\",{{}}]"));
    for o in 1..=3 {
        assert!(h.append_sequenced("t", o, "E1", frame(o), None, |_, _| {}));
    }
    // 4 and 5 were lost on the way; 6 arrives.
    let mut delivered = Vec::new();
    assert!(h.append_sequenced("t", 6, "E1", frame(6), None, |_, _| delivered.push(6)));
    assert_eq!(delivered, [6], "the frame itself is still delivered");
    assert_eq!(h.gaps(), 1);
    let since = |o: u64| Position {
        offset: o,
        epoch: "E1".into(),
    };
    // Without the gap check this answered recovered:true with 3 then 6.
    let r = h.join("t", Some(&since(2)), |_| true);
    assert!(!r.recovered, "{:?}", r.frames.len());
    assert!(r.frames.is_empty());
    // From just before the new frame, recovery works again.
    let r = h.join("t", Some(&since(5)), |_| true);
    assert!(r.recovered);
    assert_eq!(r.frames.len(), 1);
    // Contiguous offsets are not gaps.
    assert!(h.append_sequenced("t", 7, "E1", frame(7), None, |_, _| {}));
    assert_eq!(h.gaps(), 1);
    assert_eq!(
        h.bytes(),
        frame(6).len() + frame(7).len() + RING_OVERHEAD + 1
    );
}

#[test]
fn a_member_that_joined_ahead_of_this_node_is_not_sent_what_it_has() {
    let h = history(usize::MAX);
    let frame = |o: u64| Utf8Bytes::from(format!("[null,\"{o}:E1\",\"t\",\"m\",{{}}]"));
    for o in 1..=3 {
        assert!(h.append_sequenced("t", o, "E1", frame(o), None, |_, _| {}));
    }
    // Session 7 comes from a node that had offset 5 already.
    let at = |o: u64| Position {
        offset: o,
        epoch: "E1".into(),
    };
    let r = h.join_as("t", Some(&at(5)), 7, |_| true);
    assert!(!r.recovered, "this node cannot vouch for 4 and 5");
    assert_eq!(r.position.offset, 3);
    // Session 8 is not ahead; session 9 joins ahead too, then leaves.
    h.join_as("t", Some(&at(3)), 8, |_| true);
    h.join_as("t", Some(&at(9)), 9, |_| true);
    h.forget("t", 9);
    let mut skipped = Vec::new();
    for o in 4..=6 {
        h.append_sequenced("t", o, "E1", frame(o), None, |_, skip| {
            skipped.push((o, skip.to_vec()));
        });
    }
    // Without the check every member got 4 and 5 again.
    assert_eq!(skipped, [(4, vec![7]), (5, vec![7]), (6, vec![])]);
    // A second join of the same session replaces its entry; a new epoch
    // makes every old position moot.
    h.join_as("t", Some(&at(8)), 7, |_| true);
    h.join_as("t", Some(&at(10)), 7, |_| true);
    let mut skip_e2 = None;
    h.append_sequenced("t", 1, "E2", frame(1), None, |_, skip| {
        skip_e2 = Some(skip.len())
    });
    assert_eq!(skip_e2, Some(0));
    // A position of another epoch is never "ahead".
    h.join_as("t", Some(&at(50)), 11, |_| true);
    let mut skip_next = None;
    h.append_sequenced("t", 2, "E2", frame(2), None, |_, skip| {
        skip_next = Some(skip.len())
    });
    assert_eq!(skip_next, Some(0));
}

/// The attacker: clients that name an offset of the current epoch far in
/// the future (to be skipped for ever, or to make every fan-out search a
/// long list) are not recorded; those within the window are, sorted, and
/// are gone once the topic passes them.
#[test]
fn joining_far_ahead_is_not_remembered_and_near_ahead_is_bounded_by_the_window() {
    let h = history(usize::MAX);
    let frame = |o: u64| Utf8Bytes::from(format!("[null,\"{o}:E1\",\"t\",\"m\",{{}}]"));
    assert!(h.append_sequenced("t", 1, "E1", frame(1), None, |_, _| {}));
    let at = |o: u64| Position {
        offset: o,
        epoch: "E1".into(),
    };
    // "t" keeps 5 entries: positions up to 1 + 5 count as ahead.
    h.join_as("t", Some(&at(u64::MAX)), 1, |_| true);
    h.join_as("t", Some(&at(7)), 2, |_| true);
    for session in (10..1010).rev() {
        h.join_as("t", Some(&at(6)), session, |_| true);
    }
    let mut skipped = Vec::new();
    h.append_sequenced("t", 2, "E1", frame(2), None, |_, skip| {
        skipped = skip.to_vec()
    });
    assert!(!skipped.contains(&1), "a far-future position is not kept");
    assert!(!skipped.contains(&2), "past the window of 5");
    assert_eq!(skipped.len(), 1000);
    assert!(
        skipped.windows(2).all(|w| w[0] < w[1]),
        "sorted for the fan-out"
    );
    // Once the topic passes them, nothing is skipped and nothing is kept.
    for o in 3..=7 {
        h.append_sequenced("t", o, "E1", frame(o), None, |_, skip| {
            skipped = skip.to_vec()
        });
    }
    assert!(skipped.is_empty());
}

#[test]
fn sweep_drops_idle_empty_rings() {
    let h = History::default();
    h.join("quiet", None, |_| true);
    publish(&h, 1);
    h.sweep_at(Instant::now() + TTL);
    assert_eq!(h.topic_count(), 0);
    publish(&h, 1);
    h.sweep();
    assert_eq!(h.topic_count(), 1);
}

#[test]
fn rings_are_made_on_first_publish_with_the_epoch_joins_were_told() {
    let h = history(usize::MAX);
    let r = h.join("t", None, |_| true);
    assert_eq!(h.topic_count(), 0, "a join creates no ring");
    assert_eq!(r.position.offset, 0);
    let told = r.position;
    // Already at the start: nothing missed.
    assert!(h.join("t", Some(&told), |_| true).recovered);
    h.publish("t", "e", "{}", None, |_| {});
    assert_eq!(h.topic_count(), 1);
    let r = h.join("t", Some(&told), |_| true);
    assert!(
        r.recovered,
        "the first publish used the epoch the join was told"
    );
    assert_eq!(r.frames.len(), 1);
}

#[test]
fn the_number_of_rings_is_bounded_and_overflow_is_never_a_silent_gap() {
    let h = History::new(usize::MAX, 2, |_| Some(RingLimits { size: 10, ttl: TTL }));
    for t in ["a", "b"] {
        assert!(h.publish(t, "e", "{}", None, |_| {}).is_some());
    }
    let told = h.join("c", None, |_| true).position;
    let mut delivered = None;
    assert_eq!(
        h.publish("c", "e", "{}", None, |f| delivered = Some(f)),
        None
    );
    let delivered = delivered.unwrap();
    assert!(
        delivered.text().unwrap().starts_with("[null,null,"),
        "delivered, without an offset"
    );
    assert_eq!((h.topic_count(), h.refused()), (2, 1));
    assert!(
        !h.join("c", Some(&told), |_| true).recovered,
        "a client at the old start learns it missed something"
    );
    // Each ring's overhead counts in the byte bound too.
    assert!(h.bytes() >= 2 * RING_OVERHEAD);
    h.sweep_at(Instant::now() + TTL);
    assert_eq!((h.topic_count(), h.bytes()), (0, 0));
}

#[test]
fn two_histories_started_together_name_different_epochs() {
    let (a, b) = (History::default(), History::default());
    assert_ne!(a.pending_epoch("t"), b.pending_epoch("t"));
    assert_ne!(a.new_epoch(), b.new_epoch());
}
