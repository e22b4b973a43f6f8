//! Namespace settings and routing: which topics exist, how each behaves, and
//! which namespace serves a topic (`[[namespaces]]` in order, first match wins;
//! `crash:*` first when fault injection is on; the topic `phoenix` is reserved
//! for heartbeats and never routed).
//!
//! Plain data and matching: never instantiates a channel (the channel layer
//! maps a [`ChannelKind`] to code) and never reads files.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::hooks::HookEndpoint;
use super::units;

/// Who may publish on a namespace's topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Publish {
    /// Joined clients push events, broadcast to all members (Phoenix-like).
    Members,
    /// Clients only subscribe; only the server API publishes (event streams).
    Server,
}

units::lenient_enum!(Publish);
units::lenient_enum!(PresenceMode);

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
    /// `full` (default) or `count`: what joiners get (see `PresenceMode`).
    #[serde(default)]
    pub presence_mode: PresenceMode,
    /// Broadcasts kept per topic for recovery; 0 (default) keeps no history.
    #[serde(default)]
    pub history_size: usize,
    /// How long a broadcast stays in history. Default 5m.
    #[serde(default = "default_history_ttl", with = "humantime_serde")]
    pub history_ttl: Duration,
    /// Client broadcasts skip the sender. Default false (sender included).
    #[serde(default)]
    pub broadcast_from: bool,
    /// Asked on every join: ok (reply payload, presence meta, channel info)
    /// or an error reason. Default none.
    #[serde(default)]
    pub join_hook: Option<HookEndpoint>,
    /// Asked on every client push before it is broadcast: accept (maybe with
    /// a new payload) or refuse. Default none.
    #[serde(default)]
    pub publish_hook: Option<HookEndpoint>,
    /// Pushes of `rpc_events` (all events when empty) go here instead of to
    /// the members; its answer is the pusher's reply. Default none.
    #[serde(default)]
    pub rpc_hook: Option<HookEndpoint>,
    /// The events `rpc_hook` answers; empty: every event. Default none.
    #[serde(default)]
    pub rpc_events: Vec<String>,
}

/// What a joiner of a presence namespace is told about who is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PresenceMode {
    /// Phoenix's `presence_state`: every member with their metas.
    #[default]
    Full,
    /// An empty `presence_state` and a `presence_count` push (sessions
    /// present), then `presence_diff`s as usual: for topics too large to send
    /// to every joiner (docs/protocol.md, "Presence").
    Count,
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
            presence_mode: PresenceMode::Full,
            history_size: 0,
            history_ttl: default_history_ttl(),
            broadcast_from: false,
            join_hook: None,
            publish_hook: None,
            rpc_hook: None,
            rpc_events: Vec::new(),
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
        let hooks = [
            ("join_hook", &self.join_hook),
            ("publish_hook", &self.publish_hook),
            ("rpc_hook", &self.rpc_hook),
        ];
        for (name, hook) in hooks {
            if let Some(why) = hook.as_ref().and_then(HookEndpoint::problem) {
                return Some(format!("{name}: {why}"));
            }
        }
        if self.publish_hook.is_some() && self.publish == Publish::Server {
            return Some(String::from(
                "publish_hook needs publish = \"members\" (clients cannot push here)",
            ));
        }
        if !self.rpc_events.is_empty() && self.rpc_hook.is_none() {
            return Some(String::from("rpc_events needs rpc_hook"));
        }
        None
    }
}

/// The topic reserved for heartbeats (never a namespace's).
const HEARTBEAT_TOPIC: &str = "phoenix";

/// A topic pattern: `*` (everything), `ns:*` (prefix) or an exact name. Used by
/// namespaces and by the `topics` claim of connect tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Any,
    Prefix(String),
    Exact(String),
}

impl Pattern {
    /// `*` matches all, `ns:*` matches by prefix, anything else exactly.
    pub fn parse(s: &str) -> Pattern {
        if s == "*" {
            Pattern::Any
        } else if let Some(prefix) = s.strip_suffix('*') {
            Pattern::Prefix(prefix.to_owned())
        } else {
            Pattern::Exact(s.to_owned())
        }
    }

    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Prefix(p) => topic.starts_with(p.as_str()),
            Pattern::Exact(e) => topic == e,
        }
    }
}

/// Which channel code serves a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// Members push events that are broadcast to the topic.
    Broadcast,
    /// Fault injection (`crash:*`, only with `enable_fault_injection`).
    Crash,
}

/// A routed topic: the channel to run and its namespace's settings.
#[derive(Debug, Clone)]
pub struct Route {
    pub kind: ChannelKind,
    pub namespace: Arc<NamespaceConfig>,
}

/// Topic → namespace, built once from the config and shared.
#[derive(Debug, Clone)]
pub struct Namespaces {
    routes: Vec<(Pattern, Route)>,
}

impl Namespaces {
    pub fn new(namespaces: &[NamespaceConfig], fault_injection: bool) -> Namespaces {
        let mut routes = Vec::new();
        if fault_injection {
            routes.push((
                Pattern::parse("crash:*"),
                Route {
                    kind: ChannelKind::Crash,
                    namespace: Arc::new(NamespaceConfig::new("crash:*")),
                },
            ));
        }
        for ns in namespaces {
            routes.push((
                Pattern::parse(&ns.pattern),
                Route {
                    kind: ChannelKind::Broadcast,
                    namespace: Arc::new(ns.clone()),
                },
            ));
        }
        Namespaces { routes }
    }

    /// The namespace serving `topic`; None for unmatched topics, the empty
    /// topic and the heartbeat topic.
    pub fn route(&self, topic: &str) -> Option<&Route> {
        if topic == HEARTBEAT_TOPIC || topic.is_empty() {
            return None;
        }
        self.routes
            .iter()
            .find(|(pattern, _)| pattern.matches(topic))
            .map(|(_, route)| route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_first_match() {
        let r = Namespaces::new(&NamespaceConfig::defaults(), true);
        assert_eq!(r.route("crash:1").map(|r| r.kind), Some(ChannelKind::Crash));
        let room = r.route("room:1").unwrap();
        assert_eq!(room.kind, ChannelKind::Broadcast);
        assert!(!room.namespace.presence);
        assert!(r.route("chat:1").unwrap().namespace.presence);
        assert!(r.route("phoenix").is_none());
        assert!(r.route("").is_none());
        assert!(r.route("nope").is_none());
        let r = Namespaces::new(&NamespaceConfig::defaults(), false);
        assert!(r.route("crash:1").is_none());
    }

    #[test]
    fn patterns() {
        assert!(Pattern::parse("room:*").matches("room:lobby"));
        assert!(!Pattern::parse("room:*").matches("rooms"));
        assert!(Pattern::parse("x").matches("x"));
        assert!(!Pattern::parse("x").matches("xy"));
        assert!(Pattern::parse("*").matches("anything"));
    }
}
