//! The Redis link: cross-node broadcast over Redis Pub/Sub, one channel per
//! topic (`myriad:<topic>`) that has local members, shared by all of this
//! node's sessions on that topic. A node therefore receives only traffic for
//! topics it serves, and Redis fans a publish out once per interested node.
//!
//! One task owns two connections: a multiplexed one for PUBLISH and a Pub/Sub
//! one for SUBSCRIBE. When either fails the task marks the broker down, drops
//! what was queued for other nodes (counted), waits with jittered exponential
//! back-off, reconnects and resubscribes every topic that has local members.
//! Local delivery never depends on this task. Presence replication and
//! heartbeats travel on one more channel, `myriad-control`, which every node
//! subscribes to; while disconnected, a node also stops seeing heartbeats and
//! drops other nodes' members after `cluster_node_timeout` (they come back
//! with the state sync that follows the reconnect).

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::StreamExt;
use redis::AsyncCommands;

use super::cluster::{drop_queued, Backoff, Envelope, LinkParts, TopicChange, CONTROL};

const PREFIX: &str = "myriad:";

fn channel(topic: &str) -> String {
    format!("{PREFIX}{topic}")
}

/// Run the link until the process ends.
pub async fn run(url: String, mut parts: LinkParts) {
    let client = match redis::Client::open(url.as_str()) {
        Ok(c) => c,
        Err(err) => {
            // Validated at startup; a failure here is a bug, not an outage.
            tracing::error!(error = %err, url = %url, "invalid redis url; cluster delivery disabled");
            return;
        }
    };
    let mut backoff = Backoff::default();
    loop {
        match session(&client, &mut parts).await {
            Ok(()) => return,
            Err(err) => {
                parts.link.set_connected(false);
                parts.link.metrics.broker_errors.increment(1);
                tracing::debug!(error = %err, "redis link failed");
            }
        }
        let wait = backoff.next_wait();
        let until = tokio::time::Instant::now() + wait;
        // Keep the queue from filling with traffic that cannot be sent.
        while tokio::time::Instant::now() < until {
            drop_queued(&mut parts);
            tokio::time::sleep(
                (until - tokio::time::Instant::now()).min(std::time::Duration::from_millis(50)),
            )
            .await;
        }
        parts.link.metrics.broker_reconnects.increment(1);
        // A success resets the back-off only once a session was established.
        if parts.link.is_connected() {
            backoff.reset();
        }
    }
}

/// One connected period; returns Err when a connection fails, Ok when the
/// broker is being shut down (its senders are gone).
async fn session(client: &redis::Client, parts: &mut LinkParts) -> redis::RedisResult<()> {
    let mut publisher = client.get_multiplexed_async_connection().await?;
    let (mut sink, mut stream) = client.get_async_pubsub().await?.split();
    let mut subscribed: HashSet<Arc<str>> = HashSet::new();
    sink.subscribe(CONTROL).await?;
    for topic in parts.link.hub.topic_names() {
        sink.subscribe(channel(&topic)).await?;
        subscribed.insert(topic);
    }
    parts.link.set_connected(true);
    // Whatever happened while away, ask the other nodes for their members.
    let _: i64 = publisher
        .publish(CONTROL, parts.link.sync_request())
        .await?;
    let mut beat = tokio::time::interval(parts.link.timing.heartbeat);
    loop {
        tokio::select! {
            env = parts.out.recv() => {
                let Some(env) = env else { return Ok(()) };
                parts.link.metrics.broker_queue_depth.decrement(1.0);
                match env {
                    Envelope::Frame { topic, frame } => {
                        let payload = parts.link.encode(frame.as_str());
                        let _: i64 = publisher.publish(channel(&topic), payload).await?;
                        parts.link.metrics.broker_published.increment(1);
                    }
                    Envelope::Control(payload) => {
                        let _: i64 = publisher.publish(CONTROL, payload).await?;
                    }
                }
            }
            _ = beat.tick() => {
                let _: i64 = publisher.publish(CONTROL, parts.link.heartbeat()).await?;
                parts.link.sweep_peers();
            }
            change = parts.changes.recv() => {
                let Some(TopicChange::Recheck(topic)) = change else { return Ok(()) };
                let wanted = parts.link.hub.subscriber_count(&topic) > 0;
                if wanted && !subscribed.contains(&topic) {
                    sink.subscribe(channel(&topic)).await?;
                    subscribed.insert(topic);
                } else if !wanted && subscribed.remove(&topic) {
                    sink.unsubscribe(channel(&topic)).await?;
                }
            }
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return Err(redis::RedisError::from((redis::ErrorKind::Io, "pub/sub connection closed")));
                };
                let name = msg.get_channel_name();
                if name == CONTROL {
                    for reply in parts.link.on_control(msg.get_payload_bytes()) {
                        let _: i64 = publisher.publish(CONTROL, reply).await?;
                    }
                } else if let Some(topic) = name.strip_prefix(PREFIX) {
                    parts.link.deliver_remote(topic, msg.get_payload_bytes());
                }
            }
        }
    }
}
