//! Revoked users: "refuse `user`'s connect tokens issued at or before
//! `before`, until `until`". Written by the HTTP API's disconnect (on the node
//! asked) and by the cluster's `revoke` control message (on every other node);
//! read by the authenticator at every connect. Bounded: at most
//! `MAX_REVOCATIONS` live entries, expired ones swept.
//!
//! A leaf: knows users and times, not sessions or nodes.

use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;

/// Live revocations kept at most; past it the one expiring soonest makes room.
pub const MAX_REVOCATIONS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    /// Tokens issued (`iat`) at or before this Unix second are refused.
    pub before: u64,
    /// Until this Unix second (then the tokens it covers have expired).
    pub until: u64,
}

#[derive(Default)]
pub struct Revocations {
    by_user: DashMap<String, Revocation>,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Revocations {
    pub fn new() -> Revocations {
        Revocations::default()
    }

    /// Record a revocation; an existing one for the user is widened, never
    /// narrowed (a replayed or older message cannot lift a newer kick).
    pub fn revoke(&self, user: &str, r: Revocation) {
        if !self.by_user.contains_key(user) && self.by_user.len() >= MAX_REVOCATIONS {
            self.sweep(unix_now());
            if self.by_user.len() >= MAX_REVOCATIONS {
                let soonest = self
                    .by_user
                    .iter()
                    .min_by_key(|e| e.value().until)
                    .map(|e| e.key().clone());
                if let Some(k) = soonest {
                    self.by_user.remove(&k);
                }
            }
        }
        self.by_user
            .entry(user.to_owned())
            .and_modify(|old| {
                old.before = old.before.max(r.before);
                old.until = old.until.max(r.until);
            })
            .or_insert(r);
    }

    /// Whether a token of `user` issued at `iat` is refused at `now`. A token
    /// without `iat` is refused while a revocation for its user lasts (its age
    /// cannot be told).
    pub fn is_revoked(&self, user: &str, iat: Option<u64>, now: u64) -> bool {
        self.by_user
            .get(user)
            .is_some_and(|r| now < r.until && iat.is_none_or(|iat| iat <= r.before))
    }

    /// Drop revocations that have run out.
    pub fn sweep(&self, now: u64) {
        self.by_user.retain(|_, r| now < r.until);
    }

    /// Live revocations (for `/api/stats`).
    pub fn len(&self) -> usize {
        self.by_user.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_user.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_issued_before_the_kick_are_refused_until_it_runs_out() {
        let r = Revocations::new();
        r.revoke(
            "u",
            Revocation {
                before: 100,
                until: 200,
            },
        );
        assert!(r.is_revoked("u", Some(100), 150));
        assert!(r.is_revoked("u", None, 150), "no iat: cannot tell, refused");
        assert!(
            !r.is_revoked("u", Some(101), 150),
            "a token issued after the kick"
        );
        assert!(!r.is_revoked("u", Some(50), 200), "expired revocation");
        assert!(!r.is_revoked("other", Some(50), 150));
        // An older message cannot narrow it.
        r.revoke(
            "u",
            Revocation {
                before: 10,
                until: 20,
            },
        );
        assert!(r.is_revoked("u", Some(100), 150));
        r.sweep(250);
        assert!(r.is_empty());
    }
}
