//! Which namespace (and so which channel and settings) serves a topic: the
//! configured `[[namespaces]]` in order, first match wins; `crash:*` goes first
//! when fault injection is on. The topic `phoenix` is reserved for heartbeats
//! and never routed.

use std::sync::Arc;

use super::{BroadcastChannel, Channel, CrashChannel};
use crate::config::{Config, NamespaceConfig};
use crate::protocol::PHOENIX_TOPIC;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Broadcast,
    Crash,
}

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

/// A routed topic: the channel to run and its namespace's settings.
#[derive(Debug, Clone)]
pub struct Route {
    pub kind: ChannelKind,
    pub namespace: Arc<NamespaceConfig>,
}

#[derive(Debug, Clone)]
pub struct ChannelRouter {
    routes: Vec<(Pattern, Route)>,
}

impl ChannelRouter {
    pub fn new(config: &Config) -> ChannelRouter {
        let mut routes = Vec::new();
        if config.enable_fault_injection {
            let ns = Arc::new(NamespaceConfig::new("crash:*"));
            routes.push((
                Pattern::parse("crash:*"),
                Route {
                    kind: ChannelKind::Crash,
                    namespace: ns,
                },
            ));
        }
        for ns in &config.namespaces {
            routes.push((
                Pattern::parse(&ns.pattern),
                Route {
                    kind: ChannelKind::Broadcast,
                    namespace: Arc::new(ns.clone()),
                },
            ));
        }
        ChannelRouter { routes }
    }

    pub fn route(&self, topic: &str) -> Option<&Route> {
        if topic == PHOENIX_TOPIC || topic.is_empty() {
            return None;
        }
        self.routes
            .iter()
            .find(|(pattern, _)| pattern.matches(topic))
            .map(|(_, route)| route)
    }

    pub fn instantiate(kind: ChannelKind) -> Box<dyn Channel> {
        match kind {
            ChannelKind::Broadcast => Box::new(BroadcastChannel),
            ChannelKind::Crash => Box::new(CrashChannel),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_first_match() {
        let config = Config {
            enable_fault_injection: true,
            ..Config::default()
        };
        let r = ChannelRouter::new(&config);
        assert_eq!(r.route("crash:1").map(|r| r.kind), Some(ChannelKind::Crash));
        let room = r.route("room:1").unwrap();
        assert_eq!(room.kind, ChannelKind::Broadcast);
        assert!(!room.namespace.presence);
        assert!(r.route("chat:1").unwrap().namespace.presence);
        assert!(r.route("phoenix").is_none());
        assert!(r.route("").is_none());
        assert!(r.route("nope").is_none());
        let r = ChannelRouter::new(&Config::default());
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
