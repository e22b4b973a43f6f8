//! What a client's frame may contain beyond being well-formed: event names
//! reserved for the protocol, and the JSON nesting depth of a payload. The
//! size bounds themselves are configuration (`max_topic_length`, ...); the
//! rules are here so the WebSocket and HTTP API paths share them.

/// Event-name prefixes phoenix.js interprets on a channel: a broadcast named
/// `phx_close` closes every member's channel, `phx_error` makes them all
/// rejoin, `chan_reply_<ref>` resolves someone's pending push, `presence_*`
/// feeds their Presence state. Clients and the API may never publish them.
pub const RESERVED_EVENT_PREFIXES: [&str; 3] = ["phx_", "presence_", "chan_reply_"];

/// Whether `event` is one only the server may send.
pub fn is_reserved_event(event: &str) -> bool {
    RESERVED_EVENT_PREFIXES.iter().any(|p| event.starts_with(p))
}

/// Whether the JSON text `raw` nests arrays/objects deeper than `max`. A scan of
/// the bytes (strings skipped), no parse: a 30 000-deep payload costs one pass,
/// not a recursion.
pub fn json_deeper_than(raw: &str, max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in raw.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// At most `max` bytes of `s` (on a char boundary), for log lines that quote
/// client input.
pub fn truncated(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_events_are_phoenix_js_control_names() {
        for e in [
            "phx_close",
            "phx_error",
            "phx_reply",
            "presence_diff",
            "presence_state",
            "chan_reply_7",
        ] {
            assert!(is_reserved_event(e), "{e}");
        }
        for e in ["new_msg", "phx", "presence", "heartbeat", "chan"] {
            assert!(!is_reserved_event(e), "{e}");
        }
    }

    #[test]
    fn depth_counts_nesting_outside_strings() {
        assert!(!json_deeper_than(r#"{"a":[1,{"b":2}]}"#, 3));
        assert!(json_deeper_than(r#"{"a":[1,{"b":[2]}]}"#, 3));
        assert!(!json_deeper_than(r#"{"s":"[[[[[[\"{{{{"}"#, 1));
        let deep = "[".repeat(30_000) + &"]".repeat(30_000);
        assert!(json_deeper_than(&deep, 64));
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncated("héllo", 2), "h");
        assert_eq!(truncated("abc", 10), "abc");
    }
}
