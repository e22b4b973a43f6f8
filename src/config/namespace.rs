//! Namespace settings: which topics exist and how each behaves.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Who may publish on a namespace's topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Publish {
    /// Joined clients push events, broadcast to all members (Phoenix-like).
    Members,
    /// Clients only subscribe; only the server API publishes (event streams).
    Server,
}

/// One `[[namespaces]]` entry. Topics are matched against `pattern` in order;
/// the first match wins, and a topic no pattern matches cannot be joined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// `room:*` (prefix), `lobby` (exact) or `*` (everything).
    pub pattern: String,
    /// `members` (default) or `server`.
    #[serde(default = "default_publish")]
    pub publish: Publish,
    /// Track members (Phoenix Presence wire format). Default false.
    #[serde(default)]
    pub presence: bool,
    /// Broadcasts kept per topic for recovery; 0 (default) keeps no history.
    #[serde(default)]
    pub history_size: usize,
    /// How long a broadcast stays in history. Default 5m.
    #[serde(default = "default_history_ttl", with = "humantime_serde")]
    pub history_ttl: Duration,
    /// Client broadcasts skip the sender. Default false (sender included).
    #[serde(default)]
    pub broadcast_from: bool,
}

fn default_publish() -> Publish {
    Publish::Members
}

fn default_history_ttl() -> Duration {
    Duration::from_secs(300)
}

/// Largest `history_size` accepted: history lives in memory, per topic.
pub const MAX_HISTORY_SIZE: usize = 100_000;

impl NamespaceConfig {
    pub fn new(pattern: &str) -> NamespaceConfig {
        NamespaceConfig {
            pattern: pattern.to_owned(),
            publish: Publish::Members,
            presence: false,
            history_size: 0,
            history_ttl: default_history_ttl(),
            broadcast_from: false,
        }
    }

    /// The built-in namespaces: `room:*`, plain Phoenix-style broadcast rooms,
    /// and `chat:*`, with presence and history (used by the chat page at `/`).
    pub fn defaults() -> Vec<NamespaceConfig> {
        vec![
            NamespaceConfig::new("room:*"),
            NamespaceConfig {
                presence: true,
                history_size: 100,
                history_ttl: Duration::from_secs(3600),
                ..NamespaceConfig::new("chat:*")
            },
        ]
    }

    /// Why this entry is unusable, if it is.
    pub fn problem(&self) -> Option<String> {
        if self.pattern.is_empty() {
            return Some(String::from("pattern must not be empty"));
        }
        if self.pattern == "phoenix" {
            return Some(String::from("topic \"phoenix\" is reserved for heartbeats"));
        }
        if self.pattern.trim_end_matches('*').contains('*') {
            return Some(format!(
                "pattern {:?}: `*` may only end a pattern (`room:*`) or stand alone (`*`)",
                self.pattern
            ));
        }
        if self.history_size > MAX_HISTORY_SIZE {
            return Some(format!(
                "history_size {} exceeds {MAX_HISTORY_SIZE}",
                self.history_size
            ));
        }
        if self.history_size > 0 && self.history_ttl.is_zero() {
            return Some(String::from(
                "history_ttl must be greater than 0 when history_size > 0",
            ));
        }
        None
    }
}
