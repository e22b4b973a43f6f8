use super::*;

#[test]
fn publications_round_trip_with_the_frame_embedded_raw() {
    let frame = r#"[null,null,"room:\"a\"","msg",{"t":"x\ny"}]"#;
    let bytes = encode_publication(&Signer::new(None), "node-1", None, "room:\"a\"", frame);
    let text = std::str::from_utf8(&bytes).unwrap();
    assert!(text.contains(frame), "{text}");
    let read = decode_frame(&bytes).unwrap();
    assert_eq!(read.origin, "node-1");
    assert_eq!(read.frame, frame);
    assert_eq!(read.exclude, None);
}

#[test]
fn sequenced_frames_carry_the_excluded_session() {
    let mut bytes = frame_header("n2", Some(42), None, None, false).into_bytes();
    bytes.extend_from_slice(br#"[null,"3:e","t","m",{}]"#);
    bytes.extend_from_slice(FRAME_TRAILER.as_bytes());
    let read = decode_frame(&bytes).unwrap();
    assert_eq!((read.origin.as_ref(), read.exclude), ("n2", Some(42)));
}

#[test]
fn hostile_or_foreign_messages_are_refused() {
    assert!(matches!(
        decode_frame(b"n1\n[null]"),
        Err(WireError::Malformed(_))
    ));
    assert_eq!(
        decode_frame(br#"{"v":2,"origin":"n","frame":[]}"#),
        Err(WireError::Version(2))
    );
    assert_eq!(
        decode_frame(br#"{"v":1,"origin":"","frame":[]}"#),
        Err(WireError::Origin)
    );
    let long = format!(r#"{{"v":1,"origin":"{}","frame":[]}}"#, "x".repeat(200));
    assert_eq!(decode_frame(long.as_bytes()), Err(WireError::Origin));
    assert_eq!(
        decode_frame(br#"{"v":1,"origin":"n","frame":"[]"}"#),
        Err(WireError::Frame)
    );
    assert!(decode_control(&Signer::new(None), br#"{"v":1,"origin":"n"}"#).is_err());
}

#[test]
fn control_messages_round_trip_and_unknown_kinds_are_tolerated() {
    let diff =
        serde_json::value::RawValue::from_string(r#"{"joins":{},"leaves":{}}"#.into()).unwrap();
    for c in [
        Control::Heartbeat,
        Control::SyncRequest,
        Control::State {
            members: vec![Member {
                topic: "chat:1".into(),
                key: "u".into(),
                meta: serde_json::json!({"phx_ref": "r"}),
            }],
            topics: None,
            id: 0,
            part: 0,
            parts: 1,
        },
        Control::Diff {
            topic: "chat:1".into(),
            diff,
        },
        Control::Figures(NodeFigures {
            sessions: 19_000,
            topics: 7,
            memory: 1 << 30,
            draining: true,
        }),
    ] {
        let none = Signer::new(None);
        let bytes = encode_control(&none, "n1", None, &c);
        let back = decode_control(&none, &bytes).unwrap();
        assert_eq!(back.origin, "n1");
        assert_eq!(format!("{:?}", back.control), format!("{c:?}"));
    }
    // A newer node's kind, with fields this node has never seen.
    let c = decode_control(
        &Signer::new(None),
        br#"{"v":1,"origin":"n9","extra":1,"body":{"kind":"rebalance","data":{"shard":3}}}"#,
    )
    .unwrap();
    assert!(matches!(c.control, Control::Unknown));
    // A known kind with a broken body is refused, not ignored.
    assert!(decode_control(
        &Signer::new(None),
        br#"{"v":1,"origin":"n","body":{"kind":"state","data":{}}}"#
    )
    .is_err());
}

const SECRET: &str = "a-cluster-secret-of-at-least-32-bytes";

#[test]
fn with_a_secret_every_kind_is_signed_and_forgeries_are_refused() {
    let s = Signer::new(Some(SECRET));
    let frame = r#"[null,null,"room:a","m",{}]"#;
    let stamp = Some(Stamp { seq: 7, ts: 1_000 });
    let bytes = encode_publication(&s, "n1", stamp, "room:a", frame);
    let msg = decode_frame(&bytes).unwrap();
    assert_eq!(msg.stamp, stamp);
    assert!(verify_publication(&s, "room:a", &msg).is_ok());
    // The stamp is signed: a replay under a fresh counter is a forgery.
    let restamped = String::from_utf8(bytes.clone())
        .unwrap()
        .replace("\"seq\":7", "\"seq\":8");
    let msg2 = decode_frame(restamped.as_bytes()).unwrap();
    assert_eq!(
        verify_publication(&s, "room:a", &msg2),
        Err(WireError::Signature)
    );
    assert_eq!(
        verify_publication(&s, "room:b", &msg),
        Err(WireError::Signature),
        "moved topic"
    );
    let unsigned = encode_publication(&Signer::new(None), "n1", None, "room:a", frame);
    let msg = decode_frame(&unsigned).unwrap();
    assert_eq!(
        verify_publication(&s, "room:a", &msg),
        Err(WireError::Signature)
    );

    let c = encode_control(&s, "n1", stamp, &Control::SyncRequest);
    assert_eq!(decode_control(&s, &c).map(|c| c.stamp), Ok(stamp));
    let restamped = String::from_utf8(c)
        .unwrap()
        .replace("\"ts\":1000", "\"ts\":2000");
    assert_eq!(
        decode_control(&s, restamped.as_bytes()).err(),
        Some(WireError::Signature)
    );
    let forged = encode_control(&Signer::new(None), "n1", stamp, &Control::SyncRequest);
    assert_eq!(
        decode_control(&s, &forged).err(),
        Some(WireError::Signature)
    );

    // History: signed around the slot by the origin, checked once filled.
    let cut = RefSlotFrame::new("chat:a", "m", "{}");
    let meta = |exclude, stamp, binary| HistoryMeta {
        exclude,
        stamp,
        binary,
    };
    let sig = sign_history(&s, "n1", "chat:a", meta(Some(3), stamp, false), &cut);
    let filled = cut.fill(17, "ep");
    let check = |m, f: &str| verify_history(&s, "n1", "chat:a", m, f, sig.as_deref());
    assert!(check(meta(Some(3), stamp, false), &filled).is_ok());
    assert!(check(meta(None, stamp, false), &filled).is_err());
    let other_stamp = Some(Stamp { seq: 8, ts: 1_000 });
    assert!(check(meta(Some(3), other_stamp, false), &filled).is_err());
    let other = RefSlotFrame::new("chat:a", "m", "{\"x\":1}").fill(17, "ep");
    assert!(check(meta(Some(3), stamp, false), &other).is_err());
    // Whether members get it as binary is signed too: flipping the flag
    // (in the message or in the store) breaks the signature.
    assert!(check(meta(Some(3), stamp, true), &filled).is_err());
    let bin_sig = sign_history(&s, "n1", "chat:a", meta(Some(3), stamp, true), &cut);
    assert_ne!(bin_sig, sig);
    let bin_check = |m| verify_history(&s, "n1", "chat:a", m, &filled, bin_sig.as_deref());
    assert!(bin_check(meta(Some(3), stamp, true)).is_ok());
    assert!(bin_check(meta(Some(3), stamp, false)).is_err());
    // What the store keeps beside the frame reads back as the same stamp.
    assert_eq!(parse_stamp(&stamp_text(stamp)), stamp);
    assert_eq!(parse_stamp("x.1"), None);
}
