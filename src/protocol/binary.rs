//! The Phoenix Channels V2 binary layout (phoenix.js's serializer), for
//! payloads that are bytes (`ArrayBuffer`) rather than JSON:
//!
//! - push, client → server: `[0][join_ref len][ref len][topic len][event len]`
//!   then those four fields and the payload;
//! - broadcast, server → client: `[2][topic len][event len]` then topic,
//!   event and the payload.
//!
//! Lengths are one byte each (fields of at most 255 bytes); the fields are
//! UTF-8. Decoding borrows from the frame; nothing here does I/O.

use bytes::{BufMut, Bytes, BytesMut};

/// Why a binary frame is not a V2 push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BinaryError {
    #[error("empty binary frame")]
    Empty,
    #[error("binary frame kind {0} is not a push (0)")]
    Kind(u8),
    #[error("binary frame shorter than its header says")]
    Truncated,
    #[error("a binary frame field is not UTF-8")]
    Utf8,
}

/// A binary push, borrowed from its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinaryPush<'a> {
    pub join_ref: Option<&'a str>,
    pub ref_: Option<&'a str>,
    pub topic: &'a str,
    pub event: &'a str,
    pub payload: &'a [u8],
}

const PUSH: u8 = 0;
const BROADCAST: u8 = 2;

fn field<'a>(frame: &'a [u8], at: &mut usize, len: u8) -> Result<&'a str, BinaryError> {
    let end = *at + usize::from(len);
    let bytes = frame.get(*at..end).ok_or(BinaryError::Truncated)?;
    *at = end;
    std::str::from_utf8(bytes).map_err(|_| BinaryError::Utf8)
}

/// Read a client's binary push. An empty `join_ref` or `ref` (or phoenix.js's
/// `"null"` for a missing one) reads as none.
pub fn decode_push(frame: &[u8]) -> Result<BinaryPush<'_>, BinaryError> {
    let (&kind, rest) = frame.split_first().ok_or(BinaryError::Empty)?;
    if kind != PUSH {
        return Err(BinaryError::Kind(kind));
    }
    let lens = rest.get(..4).ok_or(BinaryError::Truncated)?;
    let mut at = 5;
    let join_ref = field(frame, &mut at, lens[0])?;
    let ref_ = field(frame, &mut at, lens[1])?;
    let topic = field(frame, &mut at, lens[2])?;
    let event = field(frame, &mut at, lens[3])?;
    let opt = |s: &str| -> bool { !(s.is_empty() || s == "null") };
    Ok(BinaryPush {
        join_ref: opt(join_ref).then_some(join_ref),
        ref_: opt(ref_).then_some(ref_),
        topic,
        event,
        payload: &frame[at..],
    })
}

/// A binary broadcast for members (fields over 255 bytes cannot be sent:
/// None; topics and events are bounded far below that).
pub fn encode_broadcast(topic: &str, event: &str, payload: &[u8]) -> Option<Bytes> {
    let (t, e) = (
        u8::try_from(topic.len()).ok()?,
        u8::try_from(event.len()).ok()?,
    );
    let mut out = BytesMut::with_capacity(3 + topic.len() + event.len() + payload.len());
    out.put_u8(BROADCAST);
    out.put_u8(t);
    out.put_u8(e);
    out.put_slice(topic.as_bytes());
    out.put_slice(event.as_bytes());
    out.put_slice(payload);
    Some(out.freeze())
}

/// A binary broadcast's topic, event and payload, borrowed from the frame;
/// None when `frame` is not a well-formed broadcast.
pub fn decode_broadcast(frame: &[u8]) -> Option<(&str, &str, &[u8])> {
    let (&kind, rest) = frame.split_first()?;
    if kind != BROADCAST {
        return None;
    }
    let (t, e) = (usize::from(*rest.first()?), usize::from(*rest.get(1)?));
    let topic = std::str::from_utf8(frame.get(3..3 + t)?).ok()?;
    let event = std::str::from_utf8(frame.get(3 + t..3 + t + e)?).ok()?;
    Some((topic, event, &frame[3 + t + e..]))
}

/// Whether `frame` is a binary broadcast on `topic` with an event a member
/// may receive (what another node's binary publication must be).
pub fn check_broadcast(frame: &[u8], topic: &str) -> Option<()> {
    let (t, event, _) = decode_broadcast(frame)?;
    (t == topic && !super::limits::is_reserved_event(event)).then_some(())
}

/// The JSON form of a binary payload, `{"binary":"<base64>"}`: how bytes
/// travel where only text goes (a long-poll answer, an SSE event, a history
/// store that sequences text frames).
pub fn json_payload(payload: &[u8]) -> String {
    use base64::Engine as _;
    let mut out = String::with_capacity(14 + payload.len().div_ceil(3) * 4);
    out.push_str("{\"binary\":\"");
    base64::engine::general_purpose::STANDARD.encode_string(payload, &mut out);
    out.push_str("\"}");
    out
}

/// The bytes of a `json_payload`; None when `raw` is not exactly one.
pub fn from_json_payload(raw: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Payload<'a> {
        #[serde(borrow)]
        binary: &'a str,
    }
    let p: Payload<'_> = serde_json::from_str(raw).ok()?;
    base64::engine::general_purpose::STANDARD
        .decode(p.binary)
        .ok()
}

/// A binary broadcast as the JSON broadcast text-only clients get:
/// `[null,null,topic,event,{"binary":"<base64>"}]` (docs/protocol.md §2.2).
pub fn as_text_broadcast(frame: &[u8]) -> Option<tokio_tungstenite::tungstenite::Utf8Bytes> {
    let (topic, event, payload) = decode_broadcast(frame)?;
    Some(super::encode::broadcast(
        topic,
        event,
        &json_payload(payload),
    ))
}

/// A client's binary push, as phoenix.js encodes it (tests play the client).
#[cfg(test)]
pub(crate) fn encode_push(jr: &str, r: &str, topic: &str, event: &str, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![
        0,
        jr.len() as u8,
        r.len() as u8,
        topic.len() as u8,
        event.len() as u8,
    ];
    for s in [jr, r, topic, event] {
        f.extend_from_slice(s.as_bytes());
    }
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(jr: &str, r: &str, topic: &str, event: &str, payload: &[u8]) -> Vec<u8> {
        encode_push(jr, r, topic, event, payload)
    }

    #[test]
    fn a_broadcast_reads_back_and_renders_as_json() {
        let f = encode_broadcast("room:a", "file", &[0, 255, 7]).unwrap();
        assert_eq!(
            decode_broadcast(&f),
            Some(("room:a", "file", &[0u8, 255, 7][..]))
        );
        assert_eq!(check_broadcast(&f, "room:a"), Some(()));
        assert_eq!(check_broadcast(&f, "room:b"), None);
        assert_eq!(
            as_text_broadcast(&f).unwrap().as_str(),
            r#"[null,null,"room:a","file",{"binary":"AP8H"}]"#
        );
        assert_eq!(
            from_json_payload(&json_payload(&[0, 255, 7])).unwrap(),
            [0, 255, 7]
        );
        // Only exactly the JSON form reads back.
        for raw in [
            r#"{"binary":"AP8H","x":1}"#,
            r#"{"binary":"**"}"#,
            "[]",
            r#"{"b":""}"#,
        ] {
            assert_eq!(from_json_payload(raw), None, "{raw}");
        }
        // A frame shorter than its header says.
        assert_eq!(decode_broadcast(&[2, 9, 1, b'a']), None);
        assert_eq!(decode_broadcast(&[0, 0, 0]), None);
    }

    #[test]
    fn a_push_reads_as_phoenix_js_wrote_it() {
        let f = push("1", "3", "room:a", "file", &[0, 255, 7]);
        let p = decode_push(&f).unwrap();
        assert_eq!(
            p,
            BinaryPush {
                join_ref: Some("1"),
                ref_: Some("3"),
                topic: "room:a",
                event: "file",
                payload: &[0, 255, 7],
            }
        );
        let f = push("null", "", "t", "e", b"");
        let p = decode_push(&f).unwrap();
        assert_eq!((p.join_ref, p.ref_), (None, None));
    }

    #[test]
    fn malformed_frames_are_refused() {
        assert_eq!(decode_push(&[]), Err(BinaryError::Empty));
        assert_eq!(decode_push(&[2, 0, 0]), Err(BinaryError::Kind(2)));
        assert_eq!(decode_push(&[0, 1, 1]), Err(BinaryError::Truncated));
        assert_eq!(
            decode_push(&[0, 5, 0, 0, 0, b'a']),
            Err(BinaryError::Truncated)
        );
        assert_eq!(decode_push(&[0, 0, 0, 1, 0, 0xff]), Err(BinaryError::Utf8));
    }

    #[test]
    fn broadcasts_encode_and_check() {
        let b = encode_broadcast("room:a", "file", &[1, 2]).unwrap();
        assert_eq!(
            &b[..],
            &[2, 6, 4, b'r', b'o', b'o', b'm', b':', b'a', b'f', b'i', b'l', b'e', 1, 2]
        );
        assert!(check_broadcast(&b, "room:a").is_some());
        assert!(check_broadcast(&b, "room:b").is_none());
        let reserved = encode_broadcast("room:a", "phx_close", &[]).unwrap();
        assert!(check_broadcast(&reserved, "room:a").is_none());
        assert!(check_broadcast(&[0, 1], "room:a").is_none());
        assert!(encode_broadcast(&"t".repeat(300), "e", &[]).is_none());
    }
}
