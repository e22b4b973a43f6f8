//! The signature on every request myriad sends the backend (hooks and
//! webhooks) when `[hooks] secret` is set:
//!
//! `X-Myriad-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`
//!
//! The time is inside the MAC, so a receiver that refuses signatures older
//! than a few minutes (and remembers request ids within that window) cannot
//! be fed a recorded request again. README "Your backend" shows the check.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const HEADER: &str = "x-myriad-signature";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], t: u64, body: &[u8]) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The header value for `body` sent at `t`.
pub fn sign(secret: &[u8], t: u64, body: &[u8]) -> String {
    let tag = mac(secret, t, body)
        .map(|m| format!("{:x}", m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("t={t},v1={tag}")
}

/// Whether `header` signs `body` with `secret`, at most `tolerance` seconds
/// from `now` (what a receiver checks).
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: u64, tolerance: u64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => v1 = Some(value),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if t.abs_diff(now) > tolerance || v1.len() != 64 {
        return false;
    }
    let Some(bytes) = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(v1.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    mac(secret, t, body).is_some_and(|m| m.verify_slice(&bytes).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_for_its_body_and_time_only() {
        let secret = b"a-hook-secret-of-at-least-32-bytes!!";
        let header = sign(secret, 1_000, b"{\"a\":1}");
        // The value README's Python check computes for the same input.
        assert_eq!(
            header,
            "t=1000,v1=0de65753d0abb8323bb9aaef29f3654ca88b1c6b2a813848203bad8840a92c36"
        );
        assert!(verify(secret, &header, b"{\"a\":1}", 1_010, 300));
        assert!(!verify(secret, &header, b"{\"a\":2}", 1_010, 300));
        assert!(
            !verify(secret, &header, b"{\"a\":1}", 2_000, 300),
            "too old"
        );
        assert!(!verify(
            b"another-secret-of-at-least-32-bytes!",
            &header,
            b"{\"a\":1}",
            1_010,
            300
        ));
        let moved = header.replace("t=1000", "t=1001");
        assert!(!verify(secret, &moved, b"{\"a\":1}", 1_010, 300));
        assert!(!verify(secret, "garbage", b"", 0, 300));
    }
}
