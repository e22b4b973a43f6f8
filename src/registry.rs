//! Every live session on this node, by id, in a sharded map.
//!
//! The registry is how anything outside a session (the HTTP API, admin tools)
//! finds it; it holds only the session's mailbox and identity, never its
//! socket. Entries are added when a session starts and removed by the
//! session's drop guard on every exit path.

use std::net::SocketAddr;
use std::sync::Arc;

use dashmap::DashMap;

use crate::protocol::CloseReason;
use crate::protocol::Endpoint;
use crate::pubsub::mailbox::Mailbox;
use crate::pubsub::mailbox::SessionId;

pub struct SessionEntry {
    pub peer: SocketAddr,
    pub endpoint: Endpoint,
    pub user: Option<Arc<str>>,
    pub mailbox: Arc<Mailbox>,
}

#[derive(Default)]
pub struct Registry {
    sessions: DashMap<SessionId, SessionEntry>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    pub fn insert(&self, id: SessionId, entry: SessionEntry) {
        self.sessions.insert(id, entry);
    }

    pub fn remove(&self, id: SessionId) {
        self.sessions.remove(&id);
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn contains(&self, id: SessionId) -> bool {
        self.sessions.contains_key(&id)
    }

    /// Every session's id, in no particular order (a snapshot).
    pub fn ids(&self) -> Vec<SessionId> {
        self.sessions.iter().map(|e| *e.key()).collect()
    }

    /// Ask the sessions `ids` (those still here) to close with `reason`;
    /// returns how many were asked.
    pub fn request_close(&self, ids: &[SessionId], reason: CloseReason) -> usize {
        ids.iter()
            .filter_map(|id| self.sessions.get(id))
            .map(|entry| entry.mailbox.request_close(reason))
            .count()
    }

    /// Ask every session of `user` to close with `reason`; returns how many.
    /// A scan of all sessions: an admin operation, not a hot path.
    pub fn close_user(&self, user: &str, reason: CloseReason) -> usize {
        let mut n = 0;
        for entry in self.sessions.iter() {
            if entry.user.as_deref() == Some(user) {
                entry.mailbox.request_close(reason);
                n += 1;
            }
        }
        n
    }
}
