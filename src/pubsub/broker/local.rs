//! The in-process broker: publishes go straight to this node's hub. The
//! default; needs nothing else running.

use std::sync::Arc;

use super::Broker;
use crate::metrics::Metrics;
use crate::pubsub::{FanOut, Hub, SessionId};
use crate::session::mailbox::{Mailbox, Outbound};

pub struct LocalBroker {
    hub: Hub,
    metrics: Arc<Metrics>,
}

impl LocalBroker {
    pub fn new(metrics: Arc<Metrics>) -> LocalBroker {
        LocalBroker {
            hub: Hub::new(),
            metrics,
        }
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }
}

impl Broker for LocalBroker {
    fn subscribe(&self, topic: &str, session: SessionId, mailbox: Arc<Mailbox>) {
        self.hub.subscribe(topic, session, mailbox);
    }

    fn unsubscribe(&self, topic: &str, session: SessionId) {
        self.hub.unsubscribe(topic, session);
    }

    fn publish(&self, topic: &str, frame: Outbound, exclude: Option<SessionId>) -> FanOut {
        let started = std::time::Instant::now();
        let out = self.hub.fan_out(topic, &frame, exclude);
        self.metrics.broadcasts.increment(1);
        self.metrics.fanout_done(&out, started.elapsed());
        out
    }

    fn topic_count(&self) -> usize {
        self.hub.topic_count()
    }
}
