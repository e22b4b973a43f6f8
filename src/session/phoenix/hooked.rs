//! One connection's calls to the backend (join, publish and rpc hooks, and
//! the refresh of its expiry), without ever blocking its read loop.
//!
//! A frame that needs the backend starts a call on its own task and marks
//! its topic busy; later frames for that topic wait behind it, in order
//! (bounded by `[hooks] max_pending_per_session` together with the calls
//! out), while heartbeats and other topics go on. The answer comes back
//! through the session's completion channel (`on_completion`), is applied,
//! and the topic's waiting frames are replayed until one starts another call.
//!
//! Owns only the bookkeeping of calls out; what an answer means for a
//! channel is decided by the handler (`finish_*`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::hooks::schema::{
    JoinRequest, JoinResult, PublishResult, PushRequest, RefreshRequest, RefreshResult, RpcResult,
};
use crate::hooks::{Endpoint, HookError, Hooks};
use crate::protocol::{HookKind, HookResult};
use crate::pubsub::mailbox::SessionId;

/// Longest expiry a refresh may grant (as for tokens).
const MAX_EXTENSION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A finished call, with the frame that started it.
pub enum Done {
    Join {
        text: Utf8Bytes,
        result: Result<JoinResult, HookError>,
    },
    Publish {
        text: Utf8Bytes,
        result: Result<PublishResult, HookError>,
    },
    Rpc {
        text: Utf8Bytes,
        result: Result<RpcResult, HookError>,
    },
    Refresh {
        result: Result<RefreshResult, HookError>,
    },
}

/// What a frame asks of the backend.
pub enum Ask {
    Join {
        topic: String,
        params: Value,
    },
    Push {
        kind: HookKind,
        topic: String,
        event: String,
        payload: Value,
        channel_info: Option<Value>,
    },
}

/// Why a call could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStarted {
    /// `max_pending_per_session` reached.
    TooManyPending,
    /// `max_in_flight` reached (counted as overloaded).
    Overloaded,
}

pub struct HookState {
    hooks: Arc<Hooks>,
    /// Boxed: the channel allocates its slots in blocks of 32, so a bare
    /// `Done` (~150 bytes) would cost every hooked session ~5 KiB at rest.
    tx: mpsc::UnboundedSender<Box<Done>>,
    rx: Option<mpsc::UnboundedReceiver<Box<Done>>>,
    /// The connect hook's `info`, sent with every call.
    info: Option<Value>,
    /// Busy topics → frames that arrived for them since, in order.
    waiting: HashMap<String, VecDeque<Utf8Bytes>>,
    /// Calls out plus frames waiting.
    pending: usize,
}

impl HookState {
    pub fn new(hooks: Arc<Hooks>, info: Option<Value>) -> HookState {
        let (tx, rx) = mpsc::unbounded_channel();
        HookState {
            hooks,
            tx,
            rx: Some(rx),
            info,
            waiting: HashMap::new(),
            pending: 0,
        }
    }

    pub fn hooks(&self) -> &Arc<Hooks> {
        &self.hooks
    }

    pub fn take_receiver(&mut self) -> Option<mpsc::UnboundedReceiver<Box<Done>>> {
        self.rx.take()
    }

    pub fn is_busy(&self, topic: &str) -> bool {
        self.waiting.contains_key(topic)
    }

    /// Queue a frame behind its topic's call; false when the session already
    /// has `max_pending_per_session` frames waiting.
    pub fn wait(&mut self, topic: &str, text: &Utf8Bytes) -> bool {
        if self.pending >= self.hooks.max_pending_per_session() {
            return false;
        }
        if let Some(q) = self.waiting.get_mut(topic) {
            q.push_back(text.clone());
            self.pending += 1;
        }
        true
    }

    /// A call's answer arrived: one fewer out. The topic stays busy until
    /// `take_waiting` hands its queue back.
    pub fn answered(&mut self) {
        self.pending = self.pending.saturating_sub(1);
    }

    /// The frames that waited behind `topic`'s call; the topic is free again.
    pub fn take_waiting(&mut self, topic: &str) -> VecDeque<Utf8Bytes> {
        let q = self.waiting.remove(topic).unwrap_or_default();
        self.pending = self.pending.saturating_sub(q.len());
        q
    }

    /// Frames still to replay after one of them started another call: they
    /// wait behind it, first in line.
    pub fn requeue(&mut self, topic: &str, rest: VecDeque<Utf8Bytes>) {
        self.pending += rest.len();
        match self.waiting.get_mut(topic) {
            Some(q) => q.extend(rest),
            None => {
                self.waiting.insert(topic.to_owned(), rest);
            }
        }
    }

    /// Start `ask` on `ep` for the frame `text`.
    pub fn start(
        &mut self,
        ep: Arc<Endpoint>,
        ask: Ask,
        text: Utf8Bytes,
        session: SessionId,
        user: &str,
    ) -> Result<(), NotStarted> {
        if self.pending >= self.hooks.max_pending_per_session() {
            return Err(NotStarted::TooManyPending);
        }
        let kind = ep.kind();
        let Some(slot) = self.hooks.admit(kind) else {
            return Err(NotStarted::Overloaded);
        };
        let hooks = Arc::clone(&self.hooks);
        let id = hooks.next_id();
        let node = hooks.node().to_owned();
        let tx = self.tx.clone();
        let (user, info) = (user.to_owned(), self.info.clone());
        let topic = match &ask {
            Ask::Join { topic, .. } | Ask::Push { topic, .. } => topic.clone(),
        };
        self.waiting.insert(topic, VecDeque::new());
        self.pending += 1;
        tokio::spawn(async move {
            let done = match ask {
                Ask::Join { topic, params } => {
                    let req = JoinRequest {
                        id: id.clone(),
                        node,
                        hook: "join",
                        session,
                        user,
                        info,
                        topic,
                        params,
                    };
                    Done::Join {
                        text,
                        result: hooks.call(&ep, slot, &id, &req).await,
                    }
                }
                Ask::Push {
                    kind,
                    topic,
                    event,
                    payload,
                    channel_info,
                } => {
                    let req = PushRequest {
                        id: id.clone(),
                        node,
                        hook: kind.label(),
                        session,
                        user,
                        info,
                        channel_info,
                        topic,
                        event,
                        payload,
                    };
                    match kind {
                        HookKind::Rpc => Done::Rpc {
                            text,
                            result: hooks.call(&ep, slot, &id, &req).await,
                        },
                        _ => Done::Publish {
                            text,
                            result: hooks.call(&ep, slot, &id, &req).await,
                        },
                    }
                }
            };
            // The session may be gone; then nobody needs the answer.
            let _ = tx.send(Box::new(done));
        });
        Ok(())
    }

    /// The connection's expiry passed: ask the refresh hook, if there is one.
    /// True: an answer (a `Done::Refresh`) will come.
    pub fn refresh(&mut self, session: SessionId, user: &str) -> bool {
        let Some(ep) = self.hooks.refresh().cloned() else {
            return false;
        };
        let Some(slot) = self.hooks.admit(HookKind::Refresh) else {
            let _ = self.tx.send(Box::new(Done::Refresh {
                result: Err(HookError::Unavailable(HookResult::Overloaded)),
            }));
            return true;
        };
        let hooks = Arc::clone(&self.hooks);
        let tx = self.tx.clone();
        let id = hooks.next_id();
        let req = RefreshRequest {
            id: id.clone(),
            node: hooks.node().to_owned(),
            hook: "refresh",
            session,
            user: user.to_owned(),
            info: self.info.clone(),
        };
        tokio::spawn(async move {
            let result = hooks.call(&ep, slot, &id, &req).await;
            let _ = tx.send(Box::new(Done::Refresh { result }));
        });
        true
    }

    /// The connection's new expiry after a refresh answer.
    pub fn refreshed(&self, result: Result<RefreshResult, HookError>) -> Option<Instant> {
        let now = Instant::now();
        match result {
            Ok(r) => {
                let by = Duration::from_secs(r.expires_in).min(MAX_EXTENSION);
                Some(now.checked_add(by).unwrap_or(now + MAX_EXTENSION))
            }
            // A refusal ends the connection (4001).
            Err(HookError::Denied(_)) => None,
            // An outage does not: ask again later.
            Err(HookError::Unavailable(_)) => Some(now + self.hooks.refresh_retry()),
        }
    }
}
