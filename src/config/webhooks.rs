//! Settings of the events myriad posts to the application's backend (the
//! `[webhooks]` table): where, which events, how they are batched, signed,
//! retried and kept across restarts.
//!
//! Plain data and its validation: never sends anything (`webhooks` does).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a webhook event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEvent {
    SessionOpened,
    SessionClosed,
    ChannelOccupied,
    ChannelVacated,
    MemberAdded,
    MemberRemoved,
    /// Every broadcast on `broadcast_namespaces` (for archiving).
    Broadcast,
}

super::units::lenient_enum!(WebhookEvent);

impl WebhookEvent {
    pub const ALL: [WebhookEvent; 7] = [
        WebhookEvent::SessionOpened,
        WebhookEvent::SessionClosed,
        WebhookEvent::ChannelOccupied,
        WebhookEvent::ChannelVacated,
        WebhookEvent::MemberAdded,
        WebhookEvent::MemberRemoved,
        WebhookEvent::Broadcast,
    ];

    pub fn name(self) -> &'static str {
        match self {
            WebhookEvent::SessionOpened => "session_opened",
            WebhookEvent::SessionClosed => "session_closed",
            WebhookEvent::ChannelOccupied => "channel_occupied",
            WebhookEvent::ChannelVacated => "channel_vacated",
            WebhookEvent::MemberAdded => "member_added",
            WebhookEvent::MemberRemoved => "member_removed",
            WebhookEvent::Broadcast => "broadcast",
        }
    }
}

/// `[webhooks]` (TOML only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Where batches are POSTed (http:// or https://). Default none: off.
    pub url: Option<String>,
    /// The events sent. Default: every kind but `broadcast`.
    pub events: Vec<WebhookEvent>,
    /// Namespace patterns (as in `[[namespaces]]`) whose broadcasts are sent
    /// as `broadcast` events, when `events` has it. Default none.
    pub broadcast_namespaces: Vec<String>,
    /// Signs every batch (`X-Myriad-Signature`, as for hooks); at least 32
    /// bytes. Default none.
    pub secret: Option<String>,
    /// Events per POST, at most. Default 100.
    pub batch_max: usize,
    /// How long the first event of a batch waits for company. Default 1s.
    #[serde(with = "humantime_serde")]
    pub batch_interval: Duration,
    /// One POST's time limit. Default 5s.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per batch before its events are dropped (counted). Default 20.
    pub max_attempts: u32,
    /// Longest wait between attempts (they back off exponentially from
    /// 100 ms, with jitter). Default 60s.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// File that keeps undelivered events across restarts (created if
    /// missing). Default none: memory only.
    pub spool_path: Option<PathBuf>,
    /// Undelivered events kept, in bytes; past it the oldest are dropped
    /// (counted). Default 64 MiB.
    pub spool_max_bytes: usize,
    /// Events waiting to reach the spool; past it new events are dropped
    /// (counted). Default 65536.
    pub queue: usize,
}

impl Default for WebhooksConfig {
    fn default() -> WebhooksConfig {
        WebhooksConfig {
            url: None,
            events: WebhookEvent::ALL
                .into_iter()
                .filter(|e| *e != WebhookEvent::Broadcast)
                .collect(),
            broadcast_namespaces: Vec::new(),
            secret: None,
            batch_max: 100,
            batch_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            max_attempts: 20,
            max_backoff: Duration::from_secs(60),
            spool_path: None,
            spool_max_bytes: 64 << 20,
            queue: 65_536,
        }
    }
}

impl WebhooksConfig {
    /// Why this table is unusable, if it is.
    pub fn problem(&self) -> Option<String> {
        if let Some(url) = &self.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 2048 {
                return Some(String::from(
                    "url must be http:// or https:// (at most 2048 bytes)",
                ));
            }
        }
        if self.secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Some(String::from("secret must be at least 32 bytes"));
        }
        if self.batch_max == 0 || self.batch_max > 10_000 {
            return Some(String::from("batch_max must be from 1 to 10000"));
        }
        if self.timeout.is_zero() || self.batch_interval.is_zero() || self.max_backoff.is_zero() {
            return Some(String::from(
                "timeout, batch_interval and max_backoff must be greater than 0",
            ));
        }
        if self.max_attempts == 0 || self.queue == 0 || self.spool_max_bytes < 1024 {
            return Some(String::from(
                "max_attempts and queue must be at least 1, spool_max_bytes at least 1024",
            ));
        }
        None
    }

    pub fn wants(&self, event: WebhookEvent) -> bool {
        self.url.is_some() && self.events.contains(&event)
    }
}
