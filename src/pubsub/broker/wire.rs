//! The node-to-node wire format: every byte that crosses the broker, typed,
//! versioned and validated on the way in.
//!
//! Three kinds of message, each a JSON object with `"v"` (the format version)
//! and `"origin"` (the sending node's id):
//!
//! - a publication on a topic's channel: `{"v":1,"origin":"n1","frame":[..]}`,
//!   the frame embedded as raw JSON (never escaped into a string);
//! - a sequenced history frame, written by the Redis script around the frame it
//!   builds: `{"v":1,"origin":"n1","exclude":7,"frame":[..]}`;
//! - a control message: `{"v":1,"origin":"n1","body":{"kind":"diff","data":{..}}}`.
//!
//! Rolling upgrades: readers ignore fields and control kinds they do not know,
//! so a newer node may add either without a new version; a message with a
//! version above [`VERSION`] is refused (counted as a broker error), so a
//! format change that older nodes cannot read needs a new version, and nodes
//! keep sending the old one until every node reads the new (ARCHITECTURE.md).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::protocol::BrokerRefusal;
use crate::pubsub::mailbox::SessionId;

/// The format this node writes and the newest it reads.
pub const VERSION: u32 = 1;

/// Longest node id accepted from another node (ours are ~25 bytes).
pub const MAX_ORIGIN: usize = 128;

/// Why an inbound message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("not a myriad wire message: {0}")]
    Malformed(String),
    #[error("wire version {0} is newer than this node's ({VERSION})")]
    Version(u32),
    #[error("origin node id is empty or longer than {MAX_ORIGIN} bytes")]
    Origin,
    #[error("frame is not a JSON array")]
    Frame,
    #[error("missing or bad signature (cluster_secret)")]
    Signature,
}

impl WireError {
    /// Its metric label.
    pub fn refusal(&self) -> BrokerRefusal {
        match self {
            WireError::Malformed(_) => BrokerRefusal::Malformed,
            WireError::Version(_) => BrokerRefusal::Version,
            WireError::Origin => BrokerRefusal::Origin,
            WireError::Frame => BrokerRefusal::Frame,
            WireError::Signature => BrokerRefusal::Signature,
        }
    }
}

/// A member another node reports: (topic, key, meta).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub topic: String,
    pub key: String,
    pub meta: serde_json::Value,
}

/// Membership and presence replication between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Control {
    /// "I am alive" (every `cluster_heartbeat`).
    Heartbeat,
    /// "Everyone, send me your members" (after connecting, or on meeting a
    /// node this one had not heard from).
    SyncRequest,
    /// Every member this node tracks (the answer to a sync request).
    State { members: Vec<Member> },
    /// One presence change on `topic` (a `presence_diff` payload).
    Diff { topic: String, diff: Box<RawValue> },
    /// A kind this node does not know (sent by a newer node): ignored.
    #[serde(skip)]
    Unknown,
}

#[derive(Serialize)]
struct ControlOut<'a> {
    v: u32,
    origin: &'a str,
    body: &'a Control,
}

#[derive(Deserialize)]
struct ControlIn<'a> {
    v: u32,
    origin: String,
    #[serde(borrow)]
    body: &'a RawValue,
}

/// The kinds this node reads; any other is a newer node's (ignored).
const KNOWN_KINDS: [&str; 4] = ["heartbeat", "sync_request", "state", "diff"];

#[derive(Deserialize)]
struct KindOnly<'a> {
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
}

#[derive(Deserialize)]
struct FrameIn<'a> {
    v: u32,
    #[serde(borrow)]
    origin: std::borrow::Cow<'a, str>,
    #[serde(default)]
    exclude: Option<SessionId>,
    #[serde(borrow)]
    frame: &'a RawValue,
}

/// A publication or sequenced frame, read.
#[derive(Debug, PartialEq, Eq)]
pub struct InboundFrame<'a> {
    pub origin: std::borrow::Cow<'a, str>,
    /// The session the origin excluded (history under `broadcast_from`).
    pub exclude: Option<SessionId>,
    /// The Phoenix frame, as the origin encoded it.
    pub frame: &'a str,
}

fn check_version(v: u32) -> Result<(), WireError> {
    if v > VERSION {
        return Err(WireError::Version(v));
    }
    Ok(())
}

fn check_origin(origin: &str) -> Result<(), WireError> {
    if origin.is_empty() || origin.len() > MAX_ORIGIN {
        return Err(WireError::Origin);
    }
    Ok(())
}

/// The opening of a frame message up to its `"frame":` value; the frame and
/// `}` follow. The Redis script writes sequenced frames the same way.
pub fn frame_header(origin: &str, exclude: Option<SessionId>) -> String {
    let origin = serde_json::to_string(origin).unwrap_or_else(|_| String::from("\"\""));
    match exclude {
        Some(id) => format!("{{\"v\":{VERSION},\"origin\":{origin},\"exclude\":{id},\"frame\":"),
        None => format!("{{\"v\":{VERSION},\"origin\":{origin},\"frame\":"),
    }
}

/// What closes a frame message after the frame.
pub const FRAME_TRAILER: &str = "}";

/// A publication for a topic's channel. The frame is raw JSON our own encoder
/// wrote, embedded as it is.
pub fn encode_publication(origin: &str, frame: &str) -> Vec<u8> {
    let header = frame_header(origin, None);
    let mut out = Vec::with_capacity(header.len() + frame.len() + 1);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(frame.as_bytes());
    out.extend_from_slice(FRAME_TRAILER.as_bytes());
    out
}

/// Read a publication or sequenced-history message.
pub fn decode_frame(bytes: &[u8]) -> Result<InboundFrame<'_>, WireError> {
    let msg: FrameIn<'_> =
        serde_json::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    check_version(msg.v)?;
    check_origin(&msg.origin)?;
    let frame = msg.frame.get();
    if !frame.starts_with('[') {
        return Err(WireError::Frame);
    }
    Ok(InboundFrame {
        origin: msg.origin,
        exclude: msg.exclude,
        frame,
    })
}

/// A control message from `origin`.
pub fn encode_control(origin: &str, control: &Control) -> Vec<u8> {
    let msg = ControlOut {
        v: VERSION,
        origin,
        body: control,
    };
    // Serializing plain data (strings, numbers, JSON values) cannot fail.
    serde_json::to_vec(&msg).unwrap_or_default()
}

/// Read a control message: (origin, control).
pub fn decode_control(bytes: &[u8]) -> Result<(String, Control), WireError> {
    let msg: ControlIn<'_> =
        serde_json::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    check_version(msg.v)?;
    check_origin(&msg.origin)?;
    let malformed = |e: serde_json::Error| WireError::Malformed(e.to_string());
    let kind: KindOnly<'_> = serde_json::from_str(msg.body.get()).map_err(malformed)?;
    if !KNOWN_KINDS.contains(&kind.kind.as_ref()) {
        return Ok((msg.origin, Control::Unknown));
    }
    let body = serde_json::from_str(msg.body.get()).map_err(malformed)?;
    Ok((msg.origin, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publications_round_trip_with_the_frame_embedded_raw() {
        let frame = r#"[null,null,"room:\"a\"","msg",{"t":"x\ny"}]"#;
        let bytes = encode_publication("node-1", frame);
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.contains(frame), "{text}");
        let read = decode_frame(&bytes).unwrap();
        assert_eq!(read.origin, "node-1");
        assert_eq!(read.frame, frame);
        assert_eq!(read.exclude, None);
    }

    #[test]
    fn sequenced_frames_carry_the_excluded_session() {
        let mut bytes = frame_header("n2", Some(42)).into_bytes();
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
        assert!(decode_control(br#"{"v":1,"origin":"n"}"#).is_err());
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
            },
            Control::Diff {
                topic: "chat:1".into(),
                diff,
            },
        ] {
            let bytes = encode_control("n1", &c);
            let (origin, back) = decode_control(&bytes).unwrap();
            assert_eq!(origin, "n1");
            assert_eq!(format!("{back:?}"), format!("{c:?}"));
        }
        // A newer node's kind, with fields this node has never seen.
        let (_, c) = decode_control(
            br#"{"v":1,"origin":"n9","extra":1,"body":{"kind":"revoke","data":{"user":"u"}}}"#,
        )
        .unwrap();
        assert!(matches!(c, Control::Unknown));
        // A known kind with a broken body is refused, not ignored.
        assert!(
            decode_control(br#"{"v":1,"origin":"n","body":{"kind":"state","data":{}}}"#).is_err()
        );
    }
}
