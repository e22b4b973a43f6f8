//! The load messages' payload: who sent it, its sequence number in the
//! sender's stream, and when (microseconds since the Unix epoch, so latency can
//! be measured across worker processes on one machine), plus optional padding.
//!
//! This module owns the payload's JSON shape; it never touches a socket.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// The fields every load message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Stamp {
    /// The sending stream (a connection or the publisher).
    pub src: u64,
    /// 1-based sequence number within `src`'s stream.
    pub seq: u64,
    /// Send time, µs since the Unix epoch.
    pub ts: u64,
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A JSON object `{"src":..,"seq":..,"ts":..,"pad":"xxx"}` whose total length is
/// at least `size` bytes (the padding fills the rest).
pub fn encode(stamp: Stamp, size: usize) -> String {
    let mut out = format!(
        "{{\"src\":{},\"seq\":{},\"ts\":{}",
        stamp.src, stamp.seq, stamp.ts
    );
    // `,"pad":""}` is 10 bytes.
    let fill = size.saturating_sub(out.len() + 10);
    if fill > 0 || size > 0 {
        out.push_str(",\"pad\":\"");
        out.extend(std::iter::repeat_n('x', fill));
        out.push('"');
    }
    out.push('}');
    out
}

/// Read the stamp out of a payload; None when the JSON is not one of ours
/// (another client's traffic, a server greeting).
pub fn decode(json: &str) -> Option<Stamp> {
    serde_json::from_str(json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads_to_size() {
        let s = Stamp {
            src: 7,
            seq: 42,
            ts: 1_700_000_000_000_000,
        };
        let small = encode(s, 0);
        assert_eq!(decode(&small), Some(s));
        let big = encode(s, 1000);
        assert_eq!(big.len(), 1000);
        assert_eq!(decode(&big), Some(s));
    }

    #[test]
    fn foreign_json_is_not_a_stamp() {
        assert_eq!(decode(r#"{"status":"ok"}"#), None);
        assert_eq!(decode("not json"), None);
    }
}
