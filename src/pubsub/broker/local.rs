//! The single-node broker: there are no other nodes, so nothing is sent and
//! the broker is always ready. The default; needs nothing else running.

use super::{Broker, Envelope, SendError};

#[derive(Debug, Default)]
pub struct LocalBroker;

impl Broker for LocalBroker {
    fn send(&self, _envelope: Envelope) -> Result<(), SendError> {
        Err(SendError::NoCluster)
    }

    fn subscribe_topic(&self, _topic: &str) {}

    fn unsubscribe_topic(&self, _topic: &str) {}

    fn is_ready(&self) -> bool {
        true
    }

    fn node_id(&self) -> Option<&str> {
        None
    }
}
