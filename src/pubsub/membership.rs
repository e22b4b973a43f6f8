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

/// Most other nodes one node keeps track of: ids come off the broker, so a
/// flood of made-up ids must not grow the table (or each trigger a sync).
pub const MAX_PEERS: usize = 1024;

/// A message from a node, as membership sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    Known,
    /// Not heard from before (or back after being declared dead).
    New,
    /// Unknown, and the table is full: ignore the message.
    Full,
}

struct Peer {
    seen: Instant,
    /// When this node last answered its sync request.
    synced: Option<Instant>,
}

pub struct Membership {
    timing: ClusterTiming,
    /// Other nodes by id.
    peers: Mutex<HashMap<String, Peer>>,
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

    /// Note a message from `node`.
    pub fn heard_from(&self, node: &str) -> Heard {
        let mut peers = self.peers.lock();
        let full = peers.len() >= MAX_PEERS;
        match peers.get_mut(node) {
            Some(peer) => {
                peer.seen = Instant::now();
                Heard::Known
            }
            None if full => Heard::Full,
            None => {
                peers.insert(
                    node.to_owned(),
                    Peer {
                        seen: Instant::now(),
                        synced: None,
                    },
                );
                Heard::New
            }
        }
    }

    /// Whether to answer `node`'s sync request now: at most once per
    /// heartbeat per node (each answer is this node's whole member list).
    pub fn may_answer_sync(&self, node: &str) -> bool {
        let now = Instant::now();
        let mut peers = self.peers.lock();
        let Some(peer) = peers.get_mut(node) else {
            return false;
        };
        if peer
            .synced
            .is_some_and(|at| now.duration_since(at) < self.timing.heartbeat)
        {
            return false;
        }
        peer.synced = Some(now);
        true
    }

    /// Forget nodes silent for longer than the node timeout; returns them.
    pub fn sweep(&self) -> Vec<String> {
        let now = Instant::now();
        let mut peers = self.peers.lock();
        let dead: Vec<String> = peers
            .iter()
            .filter(|(_, peer)| now.duration_since(peer.seen) > self.timing.node_timeout)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &dead {
            peers.remove(n);
        }
        dead
    }

    /// The ids of the nodes heard from within the timeout.
    pub fn nodes(&self) -> Vec<String> {
        self.peers.lock().keys().cloned().collect()
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
        assert_eq!(m.heard_from("a"), Heard::New);
        assert_eq!(m.heard_from("a"), Heard::Known);
        assert_eq!(m.heard_from("b"), Heard::New);
        tokio::time::advance(Duration::from_secs(4)).await;
        m.heard_from("b");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(m.sweep(), ["a"]);
        assert_eq!(m.len(), 1);
        assert_eq!(
            m.heard_from("a"),
            Heard::New,
            "a returning node is new again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn made_up_ids_cannot_grow_the_table_or_force_syncs() {
        let m = Membership::new(ClusterTiming {
            heartbeat: Duration::from_secs(1),
            node_timeout: Duration::from_secs(5),
        });
        for i in 0..MAX_PEERS {
            assert_eq!(m.heard_from(&format!("n{i}")), Heard::New);
        }
        assert_eq!(m.heard_from("one-too-many"), Heard::Full);
        assert_eq!(m.len(), MAX_PEERS);
        assert!(m.may_answer_sync("n1"));
        assert!(!m.may_answer_sync("n1"), "once per heartbeat");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(m.may_answer_sync("n1"));
        assert!(!m.may_answer_sync("unknown"));
    }
}
