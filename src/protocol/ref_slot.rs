//! The ref slot of history broadcasts: `[null,"<offset>:<epoch>",topic,event,payload]`.
//!
//! phoenix.js hands a broadcast's ref to `on` callbacks, so unmodified clients
//! can track their position. The value is never a plain number, so it can never
//! equal one of the client's numeric push refs (a pending heartbeat's, say).
//! Everything that writes or reads this slot goes through here.

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::encode;

/// The slot's text: `<offset>:<epoch>`.
pub fn history_ref(offset: u64, epoch: &str) -> String {
    format!("{offset}:{epoch}")
}

/// Offset and epoch from a history broadcast frame; None when the frame is not
/// one (no ref slot, or a slot that does not parse).
pub fn history_position(frame: &str) -> Option<(u64, &str)> {
    let rest = frame.strip_prefix("[null,\"")?;
    let slot = &rest[..rest.find('"')?];
    let (offset, epoch) = slot.split_once(':')?;
    Some((offset.parse().ok()?, epoch))
}

/// A history broadcast cut around its ref slot: `prefix + history_ref(..) +
/// suffix` is the whole frame. Lets a backend (the Redis sequencing script)
/// fill in the offset atomically with assigning it, without parsing JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefSlotFrame {
    pub prefix: String,
    pub suffix: String,
}

impl RefSlotFrame {
    pub fn new(topic: &str, event: &str, payload: &str) -> RefSlotFrame {
        // The ref slot comes before topic, event and payload, and an empty
        // slot encodes as `""`: the first `""` after `[null,` is the slot.
        let frame = encode::frame_with_ref("", topic, event, payload);
        let prefix_len = "[null,\"".len();
        RefSlotFrame {
            prefix: frame[..prefix_len].to_owned(),
            suffix: frame[prefix_len..].to_owned(),
        }
    }

    /// A filled frame cut around its slot again (the slot's text dropped);
    /// None when `frame` has no history slot.
    pub fn unfill(frame: &str) -> Option<RefSlotFrame> {
        let prefix = "[null,\"";
        let rest = frame.strip_prefix(prefix)?;
        let end = rest.find('"')?;
        Some(RefSlotFrame {
            prefix: prefix.to_owned(),
            suffix: rest[end..].to_owned(),
        })
    }

    /// The frame with `offset` and `epoch` in its slot.
    pub fn fill(&self, offset: u64, epoch: &str) -> String {
        let slot = history_ref(offset, epoch);
        let mut out = String::with_capacity(self.prefix.len() + slot.len() + self.suffix.len());
        out.push_str(&self.prefix);
        out.push_str(&slot);
        out.push_str(&self.suffix);
        out
    }
}

/// What a broadcast's ref slot must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// A plain broadcast: `null`.
    Null,
    /// A history broadcast: `"<offset>:<epoch>"`.
    History,
}

/// Whether `frame` is a broadcast a node may deliver on `topic`: exactly
/// `[null, slot, topic, event, {payload}]` with the expected slot and an event
/// that is not reserved (phoenix.js control names never travel as broadcasts
/// between nodes). Frames from other nodes pass through here before any
/// client sees them.
pub fn check_broadcast(frame: &str, topic: &str, slot: SlotKind) -> bool {
    #[derive(Deserialize)]
    struct Frame<'a>(
        Option<IgnoredAny>,
        Option<&'a str>,
        &'a str,
        &'a str,
        &'a RawValue,
    );
    let Ok(Frame(join_ref, ref_, t, event, payload)) = serde_json::from_str::<Frame<'_>>(frame)
    else {
        return false;
    };
    let slot_ok = match slot {
        SlotKind::Null => ref_.is_none(),
        SlotKind::History => history_position(frame).is_some(),
    };
    join_ref.is_none()
        && slot_ok
        && t == topic
        && !super::limits::is_reserved_event(event)
        && payload.get().starts_with('{')
}

/// The event name and payload of a stored broadcast frame (the API's history
/// read); None when the text is not a five-element frame.
/// A broadcast frame's topic, event and payload, in one parse.
pub fn broadcast_fields(frame: &str) -> Option<(String, String, Box<RawValue>)> {
    #[derive(Deserialize)]
    struct Frame(IgnoredAny, IgnoredAny, String, String, Box<RawValue>);
    let Frame(_, _, topic, event, payload) = serde_json::from_str(frame).ok()?;
    Some((topic, event, payload))
}

pub fn broadcast_parts(frame: &str) -> Option<(String, Box<RawValue>)> {
    #[derive(Deserialize)]
    struct Frame(IgnoredAny, IgnoredAny, IgnoredAny, String, Box<RawValue>);
    let Frame(_, _, _, event, payload) = serde_json::from_str(frame).ok()?;
    Some((event, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filled_frame_reads_back_its_position() {
        let cut = RefSlotFrame::new("room:\"x\"", "msg", r#"{"a":"[null,\""}"#);
        let frame = cut.fill(42, "e1f");
        assert_eq!(
            frame,
            encode::frame_with_ref(
                &history_ref(42, "e1f"),
                "room:\"x\"",
                "msg",
                r#"{"a":"[null,\""}"#
            )
        );
        assert_eq!(history_position(&frame), Some((42, "e1f")));
        let (event, payload) = broadcast_parts(&frame).unwrap();
        assert_eq!(event, "msg");
        assert_eq!(payload.get(), r#"{"a":"[null,\""}"#);
    }

    #[test]
    fn broadcasts_from_other_nodes_are_checked_for_shape_topic_and_event() {
        let plain = r#"[null,null,"room:a","m",{"x":1}]"#;
        assert!(check_broadcast(plain, "room:a", SlotKind::Null));
        assert!(
            !check_broadcast(plain, "room:b", SlotKind::Null),
            "another topic"
        );
        assert!(
            !check_broadcast(plain, "room:a", SlotKind::History),
            "no offset"
        );
        let hist = RefSlotFrame::new("chat:a", "m", "{}").fill(3, "e");
        assert!(check_broadcast(&hist, "chat:a", SlotKind::History));
        for bad in [
            r#"[null,null,"room:a","phx_close",{}]"#,
            r#"[null,null,"room:a","presence_diff",{"joins":{},"leaves":{}}]"#,
            r#"["1",null,"room:a","m",{}]"#,
            r#"[null,null,"room:a","m",[1]]"#,
            r#"[null,null,"room:a","m",{},6]"#,
            r#"[null,null,"room:a"]"#,
            "not json",
        ] {
            assert!(!check_broadcast(bad, "room:a", SlotKind::Null), "{bad}");
        }
    }

    #[test]
    fn frames_without_a_history_slot_have_no_position() {
        assert_eq!(history_position(r#"[null,null,"t","e",{}]"#), None);
        assert_eq!(history_position(r#"[null,"12","t","e",{}]"#), None);
        assert_eq!(history_position(r#"[null,"x:e","t","e",{}]"#), None);
        assert!(broadcast_parts("[1,2]").is_none());
    }
}
