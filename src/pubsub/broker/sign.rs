//! Node-to-node authentication: with `cluster_secret` set, every message a
//! node sends carries an HMAC-SHA256 over what it says (its kind, origin,
//! topic and content), and a message without one, or with a wrong one, is
//! dropped. Anyone who can publish on the broker (a stray client, a
//! compromised app sharing the Redis) can then no longer speak for a node.
//!
//! What it does not do: replay protection (a captured message can be sent
//! again, and is then delivered again) or confidentiality (messages stay
//! readable on the broker: use the broker's own TLS and ACLs for that).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Shortest `cluster_secret` accepted (256 bits, the hash's size).
pub const MIN_SECRET_BYTES: usize = 32;

/// What a signature covers, so one kind can never be passed off as another.
#[derive(Debug, Clone, Copy)]
pub enum Domain {
    Publication,
    History,
    Control,
}

impl Domain {
    fn tag(self) -> &'static [u8] {
        match self {
            Domain::Publication => b"myriad/1/publication",
            Domain::History => b"myriad/1/history",
            Domain::Control => b"myriad/1/control",
        }
    }
}

/// Signs and checks messages; a no-op without a secret.
#[derive(Clone)]
pub struct Signer {
    key: Option<HmacSha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("enabled", &self.key.is_some())
            .finish()
    }
}

impl Signer {
    pub fn new(secret: Option<&str>) -> Signer {
        Signer {
            key: secret.and_then(|s| HmacSha256::new_from_slice(s.as_bytes()).ok()),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.key.is_some()
    }

    fn mac(&self, domain: Domain, parts: &[&[u8]]) -> Option<HmacSha256> {
        let mut mac = self.key.clone()?;
        mac.update(domain.tag());
        for p in parts {
            // Length-prefixed, so no two part lists hash the same bytes.
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        Some(mac)
    }

    /// The hex signature of `parts` (None without a secret).
    pub fn sign(&self, domain: Domain, parts: &[&[u8]]) -> Option<String> {
        let tag = self.mac(domain, parts)?.finalize().into_bytes();
        Some(hex(&tag))
    }

    /// Whether `sig` is right for `parts`; always true without a secret.
    pub fn verify(&self, domain: Domain, parts: &[&[u8]], sig: Option<&str>) -> bool {
        let Some(mac) = self.mac(domain, parts) else {
            return true;
        };
        let Some(bytes) = sig.and_then(from_hex) else {
            return false;
        };
        // Constant time.
        mac.verify_slice(&bytes).is_ok()
    }
}

/// Lower-case hex of `bytes`, in one allocation (signatures are made per
/// message sent).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-cluster-secret-of-at-least-32-bytes";

    #[test]
    fn a_signature_covers_domain_and_every_part() {
        let s = Signer::new(Some(SECRET));
        let sig = s.sign(Domain::Publication, &[b"n1", b"room:a", b"[1]"]);
        assert!(s.verify(
            Domain::Publication,
            &[b"n1", b"room:a", b"[1]"],
            sig.as_deref()
        ));
        assert!(!s.verify(
            Domain::Publication,
            &[b"n1", b"room:b", b"[1]"],
            sig.as_deref()
        ));
        assert!(!s.verify(Domain::Control, &[b"n1", b"room:a", b"[1]"], sig.as_deref()));
        assert!(!s.verify(
            Domain::Publication,
            &[b"n1room:a", b"", b"[1]"],
            sig.as_deref()
        ));
        assert!(!s.verify(Domain::Publication, &[b"n1", b"room:a", b"[1]"], None));
        assert!(!s.verify(Domain::Publication, &[b"n1", b"room:a", b"[1]"], Some("zz")));
        let other = Signer::new(Some("another-secret-of-at-least-32-bytes!!"));
        assert!(!other.verify(
            Domain::Publication,
            &[b"n1", b"room:a", b"[1]"],
            sig.as_deref()
        ));
    }

    #[test]
    fn without_a_secret_nothing_is_signed_or_checked() {
        let s = Signer::new(None);
        assert_eq!(s.sign(Domain::Control, &[b"x"]), None);
        assert!(s.verify(Domain::Control, &[b"x"], None));
    }
}
