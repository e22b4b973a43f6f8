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
//! With `cluster_secret` each also carries `"seq"` and `"ts"` (the sender's
//! message counter and clock, see `replay`) and `"sig"`, the HMAC over the
//! origin, the stamp and the content (`sign`).
//!
//! Rolling upgrades: readers ignore fields and control kinds they do not know,
//! so a newer node may add either without a new version; a message with a
//! version above [`VERSION`] is refused (counted as a broker error), so a
//! format change that older nodes cannot read needs a new version, and nodes
//! keep sending the old one until every node reads the new (ARCHITECTURE.md).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::replay::Stamp;
use super::sign::{Domain, Signer};
use crate::protocol::{BrokerRefusal, RefSlotFrame};
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
    #[error("replayed or stale message: {0}")]
    Replay(#[from] super::replay::Replay),
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
            WireError::Replay(_) => BrokerRefusal::Replay,
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

/// A node's own figures, sent every few heartbeats for the admin console.
/// Display only: nothing is decided from them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFigures {
    #[serde(default)]
    pub sessions: u64,
    #[serde(default)]
    pub topics: u64,
    /// Memory in use, bytes (RSS or the limited cgroup's usage).
    #[serde(default)]
    pub memory: u64,
    #[serde(default)]
    pub draining: bool,
}

/// One topic in a presence digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDigest {
    pub topic: String,
    pub hash: u64,
    pub count: u32,
}

fn one_part() -> u32 {
    1
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
    /// Members this node tracks (the answer to a sync request): every topic,
    /// or only `topics`. A large state travels in `parts` messages of one
    /// answer `id`, applied once all arrived (`pubsub::node::sync`).
    State {
        members: Vec<Member>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topics: Option<Vec<String>>,
        #[serde(default)]
        id: u64,
        #[serde(default)]
        part: u32,
        #[serde(default = "one_part")]
        parts: u32,
    },
    /// Per topic with members on this node: a hash of them and their count
    /// (anti-entropy). `complete`: every such topic is listed here.
    Digest {
        topics: Vec<TopicDigest>,
        complete: bool,
    },
    /// "Node `to`, send me your members of `topics` again" (a digest disagreed).
    TopicSync { to: String, topics: Vec<String> },
    /// One presence change on `topic` (a `presence_diff` payload).
    Diff { topic: String, diff: Box<RawValue> },
    /// `user`'s tokens issued at or before `before` are refused until `until`
    /// (Unix seconds), and its sessions are closed, on every node.
    Revoke {
        user: String,
        before: u64,
        until: u64,
    },
    /// Where this node's public listener is reachable from the others (for
    /// long-poll requests that land on the wrong node).
    Advertise { url: String },
    /// This node's figures (the admin console's cluster view).
    Figures(NodeFigures),
    /// A kind this node does not know (sent by a newer node): ignored.
    #[serde(skip)]
    Unknown,
}

#[derive(Deserialize)]
struct ControlIn<'a> {
    v: u32,
    origin: String,
    #[serde(default, borrow)]
    sig: Option<&'a str>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    ts: Option<u64>,
    #[serde(borrow)]
    body: &'a RawValue,
}

/// The kinds this node reads; any other is a newer node's (ignored).
const KNOWN_KINDS: [&str; 9] = [
    "heartbeat",
    "sync_request",
    "state",
    "diff",
    "revoke",
    "advertise",
    "digest",
    "topic_sync",
    "figures",
];

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
    #[serde(default, borrow)]
    sig: Option<&'a str>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    ts: Option<u64>,
    /// 1: a history frame members get as binary.
    #[serde(default)]
    b: u8,
    #[serde(borrow)]
    frame: &'a RawValue,
}

/// A publication or sequenced frame, read (not yet verified: see
/// `verify_publication` / `verify_sequenced`).
#[derive(Debug, PartialEq, Eq)]
pub struct InboundFrame<'a> {
    pub origin: std::borrow::Cow<'a, str>,
    /// The session the origin excluded (history under `broadcast_from`).
    pub exclude: Option<SessionId>,
    /// The origin's signature (with `cluster_secret`).
    pub sig: Option<&'a str>,
    /// The origin's counter and clock (with `cluster_secret`; signed).
    pub stamp: Option<Stamp>,
    /// The Phoenix frame, as the origin encoded it.
    pub frame: &'a str,
    /// The frame is the JSON form of a V2 binary broadcast (history only).
    pub binary: bool,
}

impl InboundFrame<'_> {
    /// What its history signature covers besides the frame.
    pub fn history_meta(&self) -> HistoryMeta {
        HistoryMeta {
            exclude: self.exclude,
            stamp: self.stamp,
            binary: self.binary,
        }
    }
}

fn check_version(v: u32) -> Result<(), WireError> {
    if v > VERSION {
        return Err(WireError::Version(v));
    }
    Ok(())
}

fn stamp_of(seq: Option<u64>, ts: Option<u64>) -> Option<Stamp> {
    Some(Stamp { seq: seq?, ts: ts? })
}

/// A stamp as the signature covers it (empty without one).
pub fn stamp_text(stamp: Option<Stamp>) -> String {
    stamp.map_or_else(String::new, |s| format!("{}.{}", s.seq, s.ts))
}

/// The stamp stored beside a history frame, read back.
pub fn parse_stamp(text: &str) -> Option<Stamp> {
    let (seq, ts) = text.split_once('.')?;
    Some(Stamp {
        seq: seq.parse().ok()?,
        ts: ts.parse().ok()?,
    })
}

fn write_stamp(out: &mut String, stamp: Option<Stamp>) {
    use std::fmt::Write;
    if let Some(Stamp { seq, ts }) = stamp {
        let _ = write!(out, "\"seq\":{seq},\"ts\":{ts},");
    }
}

fn check_origin(origin: &str) -> Result<(), WireError> {
    if origin.is_empty() || origin.len() > MAX_ORIGIN {
        return Err(WireError::Origin);
    }
    Ok(())
}

/// The opening of a frame message up to its `"frame":` value; the frame and
/// `}` follow. The Redis script writes sequenced frames the same way.
///
/// `binary`: the frame is the JSON form of a V2 binary broadcast
/// (`protocol::binary::json_payload`), which members get as binary (`"b":1`).
pub fn frame_header(
    origin: &str,
    exclude: Option<SessionId>,
    stamp: Option<Stamp>,
    sig: Option<&str>,
    binary: bool,
) -> String {
    use std::fmt::Write;
    let origin = serde_json::to_string(origin).unwrap_or_else(|_| String::from("\"\""));
    let mut out = format!("{{\"v\":{VERSION},\"origin\":{origin},");
    if let Some(id) = exclude {
        let _ = write!(out, "\"exclude\":{id},");
    }
    write_stamp(&mut out, stamp);
    if binary {
        out.push_str("\"b\":1,");
    }
    if let Some(sig) = sig {
        // Hex: nothing to escape.
        let _ = write!(out, "\"sig\":\"{sig}\",");
    }
    out.push_str("\"frame\":");
    out
}

fn exclude_text(exclude: Option<SessionId>) -> String {
    exclude.map_or_else(String::new, |id| id.to_string())
}

/// What a binary history frame's signature covers besides a JSON one's
/// (nothing is added for JSON frames, so their signatures are unchanged).
const BINARY_MARK: &[u8] = b"binary";

/// The signature of a history publish, made by its origin before the backend
/// fills the frame's ref slot: it covers the frame around the slot, and
/// whether members get it as binary.
pub fn sign_history(
    signer: &Signer,
    origin: &str,
    topic: &str,
    meta: HistoryMeta,
    frame: &RefSlotFrame,
) -> Option<String> {
    with_history_parts(origin, topic, meta, frame, |parts| {
        signer.sign(Domain::History, parts)
    })
}

/// What a history signature covers, handed to `f`: origin, topic, excluded
/// session, stamp, the frame around its slot, and the binary mark when set.
fn with_history_parts<R>(
    origin: &str,
    topic: &str,
    meta: HistoryMeta,
    frame: &RefSlotFrame,
    f: impl FnOnce(&[&[u8]]) -> R,
) -> R {
    let ex = exclude_text(meta.exclude);
    let st = stamp_text(meta.stamp);
    let parts: [&[u8]; 7] = [
        origin.as_bytes(),
        topic.as_bytes(),
        ex.as_bytes(),
        st.as_bytes(),
        frame.prefix.as_bytes(),
        frame.suffix.as_bytes(),
        BINARY_MARK,
    ];
    f(&parts[..if meta.binary { 7 } else { 6 }])
}

/// What travels beside a history frame, under its signature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryMeta {
    /// The session the origin excluded (`broadcast_from`).
    pub exclude: Option<SessionId>,
    /// The origin's counter and clock (with `cluster_secret`).
    pub stamp: Option<Stamp>,
    /// The frame is the JSON form of a V2 binary broadcast.
    pub binary: bool,
}

/// Check a sequenced frame (live, or read back from the backend's store)
/// against its origin's signature: the frame with its ref slot emptied again.
pub fn verify_history(
    signer: &Signer,
    origin: &str,
    topic: &str,
    meta: HistoryMeta,
    frame: &str,
    sig: Option<&str>,
) -> Result<(), WireError> {
    if !signer.is_enabled() {
        return Ok(());
    }
    let Some(cut) = RefSlotFrame::unfill(frame) else {
        return Err(WireError::Frame);
    };
    if with_history_parts(origin, topic, meta, &cut, |parts| {
        signer.verify(Domain::History, parts, sig)
    }) {
        Ok(())
    } else {
        Err(WireError::Signature)
    }
}

/// What closes a frame message after the frame.
pub const FRAME_TRAILER: &str = "}";

/// A publication for `topic`'s channel. The frame is raw JSON our own encoder
/// wrote, embedded as it is.
pub fn encode_publication(
    signer: &Signer,
    origin: &str,
    stamp: Option<Stamp>,
    topic: &str,
    frame: &str,
) -> Vec<u8> {
    let st = stamp_text(stamp);
    let sig = signer.sign(
        Domain::Publication,
        &[
            origin.as_bytes(),
            st.as_bytes(),
            topic.as_bytes(),
            frame.as_bytes(),
        ],
    );
    let header = frame_header(origin, None, stamp, sig.as_deref(), false);
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
        sig: msg.sig,
        stamp: stamp_of(msg.seq, msg.ts),
        frame,
        binary: msg.b == 1,
    })
}

/// A V2 binary broadcast for `topic`'s channel: `{"v":1,"origin",..,"bin":
/// "<base64 frame>"}`. Signed like a JSON publication over the base64 text
/// (a JSON frame starts with `[`, base64 never does).
pub fn encode_binary_publication(
    signer: &Signer,
    origin: &str,
    stamp: Option<Stamp>,
    topic: &str,
    frame: &[u8],
) -> Vec<u8> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(frame);
    let st = stamp_text(stamp);
    let sig = signer.sign(
        Domain::Publication,
        &[
            origin.as_bytes(),
            st.as_bytes(),
            topic.as_bytes(),
            b64.as_bytes(),
        ],
    );
    let origin_json = serde_json::to_string(origin).unwrap_or_else(|_| String::from("\"\""));
    let mut out = format!("{{\"v\":{VERSION},\"origin\":{origin_json},");
    write_stamp(&mut out, stamp);
    if let Some(sig) = sig {
        out.push_str(&format!("\"sig\":\"{sig}\","));
    }
    out.push_str(&format!("\"bin\":\"{b64}\"}}"));
    out.into_bytes()
}

/// Whether a message on a topic channel is a binary publication (cheap: the
/// field name, which a JSON publication never has at the top level).
pub fn is_binary_publication(bytes: &[u8]) -> bool {
    bytes.ends_with(b"\"}") && bytes.windows(7).any(|w| w == b"\"bin\":\"")
}

/// A binary publication read and its signature checked.
#[derive(Debug)]
pub struct InboundBinary {
    pub origin: String,
    pub stamp: Option<Stamp>,
    pub frame: bytes::Bytes,
}

/// Read a binary publication from `topic`'s channel (signature checked).
pub fn decode_binary_publication(
    signer: &Signer,
    topic: &str,
    bytes: &[u8],
) -> Result<InboundBinary, WireError> {
    use base64::Engine as _;
    #[derive(Deserialize)]
    struct BinIn<'a> {
        v: u32,
        origin: String,
        #[serde(default, borrow)]
        sig: Option<&'a str>,
        #[serde(default)]
        seq: Option<u64>,
        #[serde(default)]
        ts: Option<u64>,
        #[serde(borrow)]
        bin: &'a str,
    }
    let msg: BinIn<'_> =
        serde_json::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    check_version(msg.v)?;
    check_origin(&msg.origin)?;
    let stamp = stamp_of(msg.seq, msg.ts);
    let st = stamp_text(stamp);
    let parts: [&[u8]; 4] = [
        msg.origin.as_bytes(),
        st.as_bytes(),
        topic.as_bytes(),
        msg.bin.as_bytes(),
    ];
    if !signer.verify(Domain::Publication, &parts, msg.sig) {
        return Err(WireError::Signature);
    }
    let frame = base64::engine::general_purpose::STANDARD
        .decode(msg.bin)
        .map_err(|_| WireError::Frame)?;
    Ok(InboundBinary {
        origin: msg.origin,
        stamp,
        frame: bytes::Bytes::from(frame),
    })
}

/// Check a publication read from `topic`'s channel against its signature.
pub fn verify_publication(
    signer: &Signer,
    topic: &str,
    msg: &InboundFrame<'_>,
) -> Result<(), WireError> {
    let st = stamp_text(msg.stamp);
    let parts: [&[u8]; 4] = [
        msg.origin.as_bytes(),
        st.as_bytes(),
        topic.as_bytes(),
        msg.frame.as_bytes(),
    ];
    if signer.verify(Domain::Publication, &parts, msg.sig) {
        Ok(())
    } else {
        Err(WireError::Signature)
    }
}

/// A control message from `origin`: the body is serialized first, so the
/// signature covers exactly the bytes the reader will see.
pub fn encode_control(
    signer: &Signer,
    origin: &str,
    stamp: Option<Stamp>,
    control: &Control,
) -> Vec<u8> {
    // Serializing plain data (strings, numbers, JSON values) cannot fail.
    let body = serde_json::to_string(control).unwrap_or_default();
    let st = stamp_text(stamp);
    let sig = signer.sign(
        Domain::Control,
        &[origin.as_bytes(), st.as_bytes(), body.as_bytes()],
    );
    let origin_json = serde_json::to_string(origin).unwrap_or_else(|_| String::from("\"\""));
    let mut out = format!("{{\"v\":{VERSION},\"origin\":{origin_json},");
    write_stamp(&mut out, stamp);
    if let Some(sig) = sig {
        out.push_str(&format!("\"sig\":\"{sig}\","));
    }
    out.push_str("\"body\":");
    out.push_str(&body);
    out.push('}');
    out.into_bytes()
}

/// A control message read and its signature checked.
#[derive(Debug)]
pub struct InboundControl {
    pub origin: String,
    pub stamp: Option<Stamp>,
    pub control: Control,
}

/// Read a control message (signature checked).
pub fn decode_control(signer: &Signer, bytes: &[u8]) -> Result<InboundControl, WireError> {
    let msg: ControlIn<'_> =
        serde_json::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    check_version(msg.v)?;
    check_origin(&msg.origin)?;
    let stamp = stamp_of(msg.seq, msg.ts);
    let st = stamp_text(stamp);
    let parts: [&[u8]; 3] = [
        msg.origin.as_bytes(),
        st.as_bytes(),
        msg.body.get().as_bytes(),
    ];
    if !signer.verify(Domain::Control, &parts, msg.sig) {
        return Err(WireError::Signature);
    }
    let malformed = |e: serde_json::Error| WireError::Malformed(e.to_string());
    let kind: KindOnly<'_> = serde_json::from_str(msg.body.get()).map_err(malformed)?;
    let control = if KNOWN_KINDS.contains(&kind.kind.as_ref()) {
        serde_json::from_str(msg.body.get()).map_err(malformed)?
    } else {
        Control::Unknown
    };
    Ok(InboundControl {
        origin: msg.origin,
        stamp,
        control,
    })
}

#[cfg(test)]
mod tests;
