//! Which other nodes are alive: when each was last heard from, and which have
//! been silent past `cluster_node_timeout`. Pure bookkeeping: the node sends
//! the heartbeats and turns a dead peer into presence leaves.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Heartbeat and dead-node timing (`cluster_heartbeat`, `cluster_node_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct ClusterTiming {
    pub heartbeat: Duration,
    pub node_timeout: Duration,
}

pub struct Membership {
    timing: ClusterTiming,
    /// Other nodes by id, when each was last heard from.
    peers: Mutex<HashMap<String, Instant>>,
}

impl Membership {
    pub fn new(timing: ClusterTiming) -> Membership {
        Membership {
            timing,
            peers: Mutex::new(HashMap::new()),
        }
    }

    pub fn timing(&self) -> ClusterTiming {
        self.timing
    }

    /// Note a message from `node`; true when it was not known (just joined, or
    /// back after being declared dead).
    pub fn heard_from(&self, node: &str) -> bool {
        let mut peers = self.peers.lock();
        match peers.get_mut(node) {
            Some(seen) => {
                *seen = Instant::now();
                false
            }
            None => {
                peers.insert(node.to_owned(), Instant::now());
                true
            }
        }
    }

    /// Forget nodes silent for longer than the node timeout; returns them.
    pub fn sweep(&self) -> Vec<String> {
        let now = Instant::now();
        let mut peers = self.peers.lock();
        let dead: Vec<String> = peers
            .iter()
            .filter(|(_, seen)| now.duration_since(**seen) > self.timing.node_timeout)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &dead {
            peers.remove(n);
        }
        dead
    }

    /// Nodes heard from within the timeout.
    pub fn len(&self) -> usize {
        self.peers.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_node_is_dead_after_the_timeout_and_new_again_after() {
        let m = Membership::new(ClusterTiming {
            heartbeat: Duration::from_secs(1),
            node_timeout: Duration::from_secs(5),
        });
        assert!(m.heard_from("a"));
        assert!(!m.heard_from("a"));
        assert!(m.heard_from("b"));
        tokio::time::advance(Duration::from_secs(4)).await;
        m.heard_from("b");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(m.sweep(), ["a"]);
        assert_eq!(m.len(), 1);
        assert!(m.heard_from("a"), "a returning node is new again");
    }
}
