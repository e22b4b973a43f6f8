//! Which channel serves a topic: an ordered list of namespace patterns
//! (`room:*`, `crash:*`, an exact topic, or `*`), first match wins. The topic
//! `phoenix` is reserved for heartbeats and never routed.

use super::{BroadcastChannel, Channel, CrashChannel};
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

#[derive(Debug, Clone)]
pub struct ChannelRouter {
    routes: Vec<(Pattern, ChannelKind)>,
}

impl ChannelRouter {
    /// The built-in routes: `crash:*` when fault injection is on, then every
    /// other topic to the broadcast channel.
    pub fn new(fault_injection: bool) -> ChannelRouter {
        let mut routes = Vec::new();
        if fault_injection {
            routes.push((Pattern::parse("crash:*"), ChannelKind::Crash));
        }
        routes.push((Pattern::Any, ChannelKind::Broadcast));
        ChannelRouter { routes }
    }

    pub fn route(&self, topic: &str) -> Option<ChannelKind> {
        if topic == PHOENIX_TOPIC || topic.is_empty() {
            return None;
        }
        self.routes
            .iter()
            .find(|(pattern, _)| pattern.matches(topic))
            .map(|(_, kind)| *kind)
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
        let r = ChannelRouter::new(true);
        assert_eq!(r.route("crash:1"), Some(ChannelKind::Crash));
        assert_eq!(r.route("room:1"), Some(ChannelKind::Broadcast));
        assert_eq!(r.route("phoenix"), None);
        assert_eq!(r.route(""), None);
        let r = ChannelRouter::new(false);
        assert_eq!(r.route("crash:1"), Some(ChannelKind::Broadcast));
    }

    #[test]
    fn patterns() {
        assert!(Pattern::parse("room:*").matches("room:lobby"));
        assert!(!Pattern::parse("room:*").matches("rooms"));
        assert!(Pattern::parse("x").matches("x"));
        assert!(!Pattern::parse("x").matches("xy"));
    }
}
