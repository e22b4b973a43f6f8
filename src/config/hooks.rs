//! Settings of the calls myriad makes to the application's backend (the
//! `[hooks]` table, and `join_hook` / `publish_hook` / `rpc_hook` on a
//! namespace): where each goes, how long it may take, how many may run, when
//! the breaker opens, and how requests are signed.
//!
//! Plain data and its validation: never makes a call (`hooks` does).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One backend endpoint. `timeout` and `concurrency` default to the
/// `[hooks]` table's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookEndpoint {
    /// `http://` or `https://` URL the hook is POSTed to.
    pub url: String,
    /// Whole call, retries included.
    #[serde(default, with = "humantime_serde::option")]
    pub timeout: Option<Duration>,
    /// Calls to this endpoint at once (beyond: wait within the timeout).
    #[serde(default)]
    pub concurrency: Option<usize>,
}

/// `[hooks]` (TOML only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    /// Asked before an upgrade completes: allow (user, expiry, info, topics)
    /// or deny (status and reason the client sees). Default none.
    pub connect: Option<HookEndpoint>,
    /// Asked when a connection's expiry passes, instead of closing it with
    /// 4001. Default none.
    pub refresh: Option<HookEndpoint>,
    /// Default timeout of every hook call (retries included). Default 2s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Default calls at once per endpoint. Default 64.
    pub concurrency: usize,
    /// Hook calls in flight on this node, all endpoints together; beyond it
    /// a call fails at once ("backend unavailable"). Default 1024.
    pub max_in_flight: usize,
    /// Frames one session may have waiting on hook answers (in flight and
    /// queued behind them on the same topic). Default 16.
    pub max_pending_per_session: usize,
    /// Extra attempts for calls that are safe to repeat (connect, refresh,
    /// join) after a connection error or a 502/503/504. Default 2.
    pub retries: u32,
    /// Consecutive failures of an endpoint that open its breaker. Default 5.
    pub breaker_failures: u32,
    /// How long an open breaker fails calls at once before trying again.
    /// Default 5s.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    /// Signs every request (`X-Myriad-Signature: t=..,v1=HMAC-SHA256`), at
    /// least 32 bytes (keep the config file private). Default none
    /// (unsigned).
    pub secret: Option<String>,
    /// Request headers the connect hook receives from the upgrade (lower
    /// case), e.g. `["cookie"]`. Default none.
    pub forward_headers: Vec<String>,
    /// Largest backend answer read. Default 64 KiB.
    #[serde(deserialize_with = "super::units::de_bytes_usize")]
    pub max_response_bytes: usize,
    /// When the refresh hook cannot be reached, the connection lives on this
    /// long and asks again (a backend outage does not disconnect users; a
    /// refusal does). Default 30s.
    #[serde(with = "humantime_serde")]
    pub refresh_retry: Duration,
}

impl Default for HooksConfig {
    fn default() -> HooksConfig {
        HooksConfig {
            connect: None,
            refresh: None,
            timeout: Duration::from_secs(2),
            concurrency: 64,
            max_in_flight: 1024,
            max_pending_per_session: 16,
            retries: 2,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(5),
            secret: None,
            forward_headers: Vec::new(),
            max_response_bytes: 64 << 10,
            refresh_retry: Duration::from_secs(30),
        }
    }
}

/// Shortest `[hooks] secret` accepted.
pub const MIN_HOOK_SECRET_BYTES: usize = 32;

impl HookEndpoint {
    /// Why this endpoint is unusable, if it is.
    pub fn problem(&self) -> Option<String> {
        let scheme_ok = self.url.starts_with("http://") || self.url.starts_with("https://");
        if !scheme_ok || self.url.len() > 2048 {
            return Some(format!(
                "url {:?} must be http:// or https:// (at most 2048 bytes)",
                self.url.chars().take(64).collect::<String>()
            ));
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Some(String::from("timeout must be greater than 0"));
        }
        if self.concurrency == Some(0) {
            return Some(String::from("concurrency must be at least 1"));
        }
        None
    }
}

impl HooksConfig {
    /// Why this table is unusable, if it is.
    pub fn problem(&self) -> Option<String> {
        for (name, ep) in [("connect", &self.connect), ("refresh", &self.refresh)] {
            if let Some(why) = ep.as_ref().and_then(HookEndpoint::problem) {
                return Some(format!("{name}: {why}"));
            }
        }
        if self.timeout.is_zero() {
            return Some(String::from("timeout must be greater than 0"));
        }
        if self.concurrency == 0 || self.max_in_flight == 0 || self.max_pending_per_session == 0 {
            return Some(String::from(
                "concurrency, max_in_flight and max_pending_per_session must be at least 1",
            ));
        }
        if self.breaker_failures == 0 || self.breaker_cooldown.is_zero() {
            return Some(String::from(
                "breaker_failures and breaker_cooldown must be greater than 0",
            ));
        }
        if self.refresh_retry.is_zero() {
            return Some(String::from("refresh_retry must be greater than 0"));
        }
        if self.retries > 10 {
            return Some(String::from("retries must be at most 10"));
        }
        if self
            .secret
            .as_ref()
            .is_some_and(|s| s.len() < MIN_HOOK_SECRET_BYTES)
        {
            return Some(format!(
                "secret must be at least {MIN_HOOK_SECRET_BYTES} bytes"
            ));
        }
        if self.max_response_bytes == 0 || self.max_response_bytes > 16 << 20 {
            return Some(String::from("max_response_bytes must be from 1 to 16 MiB"));
        }
        if let Some(h) = self.forward_headers.iter().find(|h| {
            h.is_empty()
                || h.bytes()
                    .any(|b| !(b.is_ascii_lowercase() || b == b'-' || b.is_ascii_digit()))
        }) {
            return Some(format!(
                "forward_headers: {h:?} is not a lower-case header name"
            ));
        }
        None
    }
}
