//! Encoding server frames. Every function writes one finished text frame; the
//! payload arguments are raw JSON text (always an object on the wire).
//!
//! Which slots are null follows docs/protocol.md §2.1: replies echo the request's
//! refs, pushes carry the channel's join_ref and a null ref, broadcasts carry
//! two nulls, `phx_close`/`phx_error` carry `ref == join_ref`.

use std::fmt::Write as _;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::event;

/// Append `s` as a JSON string literal. JSON requires escaping only `"`, `\\`
/// and U+0000..U+001F; everything else is copied as is (no allocation).
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn push_opt(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.push_str("null"),
    }
}

fn frame(
    join_ref: Option<&str>,
    ref_: Option<&str>,
    topic: &str,
    event: &str,
    payload: &str,
) -> String {
    let mut out = String::with_capacity(32 + topic.len() + event.len() + payload.len());
    out.push('[');
    push_opt(&mut out, join_ref);
    out.push(',');
    push_opt(&mut out, ref_);
    out.push(',');
    push_str(&mut out, topic);
    out.push(',');
    push_str(&mut out, event);
    out.push(',');
    out.push_str(payload);
    out.push(']');
    out
}

/// `[jr, ref, topic, "phx_reply", {"status": s, "response": r}]`.
pub fn reply(
    join_ref: Option<&str>,
    ref_: Option<&str>,
    topic: &str,
    status: &str,
    response: &str,
) -> String {
    let mut payload = String::with_capacity(32 + response.len());
    payload.push_str("{\"status\":");
    push_str(&mut payload, status);
    let _ = write!(payload, ",\"response\":{response}}}");
    frame(join_ref, ref_, topic, event::REPLY, &payload)
}

/// `[jr, null, topic, event, payload]`: a push to one client's channel.
pub fn push(join_ref: Option<&str>, topic: &str, event: &str, payload: &str) -> String {
    frame(join_ref, None, topic, event, payload)
}

/// `[null, null, topic, event, payload]`: encoded once, shared by every subscriber.
pub fn broadcast(topic: &str, event: &str, payload: &str) -> Utf8Bytes {
    Utf8Bytes::from(frame(None, None, topic, event, payload))
}

/// `[null, ref, topic, event, payload]`: a broadcast whose ref slot carries
/// data for the application (history offsets; see `history::ref_slot`).
pub fn frame_with_ref(ref_: &str, topic: &str, event: &str, payload: &str) -> String {
    frame(None, Some(ref_), topic, event, payload)
}

/// `[jr, jr, topic, "phx_close", {}]`.
pub fn close(join_ref: Option<&str>, topic: &str) -> String {
    frame(join_ref, join_ref, topic, event::CLOSE, "{}")
}

/// `[jr, jr, topic, "phx_error", {"reason":"channel_crash"}]`.
pub fn error(join_ref: Option<&str>, topic: &str) -> String {
    frame(
        join_ref,
        join_ref,
        topic,
        event::ERROR,
        r#"{"reason":"channel_crash"}"#,
    )
}

/// `{"reason": "..."}` as raw JSON, for error replies.
pub fn reason(reason: &str) -> String {
    let mut out = String::with_capacity(14 + reason.len());
    out.push_str("{\"reason\":");
    push_str(&mut out, reason);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_shape() {
        assert_eq!(
            reply(Some("1"), Some("2"), "room:lobby", "ok", "{}"),
            r#"["1","2","room:lobby","phx_reply",{"status":"ok","response":{}}]"#
        );
        assert_eq!(
            reply(None, Some("4"), "x", "error", &reason("unmatched topic")),
            r#"[null,"4","x","phx_reply",{"status":"error","response":{"reason":"unmatched topic"}}]"#
        );
    }

    #[test]
    fn broadcast_close_error_push_shapes() {
        assert_eq!(
            broadcast("t", "new_msg", r#"{"a":1}"#).as_str(),
            r#"[null,null,"t","new_msg",{"a":1}]"#
        );
        assert_eq!(close(Some("1"), "t"), r#"["1","1","t","phx_close",{}]"#);
        assert_eq!(
            error(Some("3"), "t"),
            r#"["3","3","t","phx_error",{"reason":"channel_crash"}]"#
        );
        assert_eq!(push(Some("1"), "t", "e", "{}"), r#"["1",null,"t","e",{}]"#);
    }

    #[test]
    fn escaping_matches_serde_json() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "nl\n cr\r tab\t",
            "\u{1}\u{1f}",
            "é ü 😀",
            "",
        ] {
            let mut out = String::new();
            push_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn strings_are_escaped() {
        let out = broadcast("a\"b", "é\n", "{}");
        let v: serde_json::Value = serde_json::from_str(out.as_str()).unwrap();
        assert_eq!(v[2], "a\"b");
        assert_eq!(v[3], "é\n");
    }
}
