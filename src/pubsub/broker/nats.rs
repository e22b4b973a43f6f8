//! The NATS link: cross-node broadcast over NATS core subjects, one subject per
//! topic with local members (`myriad.<hex of the topic>`: topic names may hold
//! `.` or `*`, which are subject syntax). Presence is replicated the same way
//! as over Redis, on subject `myriad-control`. History stays node-local: NATS
//! core keeps nothing, and JetStream is not used (README, "Run a cluster").
//!
//! async-nats reconnects and resubscribes on its own; this task forwards the
//! queue to it, keeps one subscription task per topic, and mirrors the client's
//! connection state into the broker's health. A publish while NATS is away is
//! dropped and counted, never awaited by a session.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::cluster::{drop_queued, Backoff, Envelope, LinkParts, CONTROL};

fn subject(topic: &str) -> String {
    let mut s = String::with_capacity(7 + topic.len() * 2);
    s.push_str("myriad.");
    for b in topic.bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Presence-sync replies waiting for the link task (one per peer asking, so
/// rarely more than the cluster's size).
const CONTROL_REPLY_QUEUE: usize = 64;

/// Run the link until the process ends.
pub async fn run(url: String, mut parts: LinkParts) {
    let mut backoff = Backoff::default();
    let client = loop {
        match async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(url.as_str())
            .await
        {
            Ok(c) => break c,
            Err(err) => {
                parts.link.metrics.broker_errors.increment(1);
                tracing::warn!(error = %err, url = %url, "cannot reach nats");
                drop_queued(&mut parts);
                tokio::time::sleep(backoff.next_wait()).await;
            }
        }
    };
    let mut subs: HashMap<Arc<str>, JoinHandle<()>> = HashMap::new();
    for topic in parts.link.hub.topic_names() {
        subscribe(&client, &parts, &mut subs, topic).await;
    }
    // Control messages come in on their own task; replies go out through ours.
    // Bounded: when replies back up, the control task waits (NATS buffers its
    // subscription) instead of this node queueing state syncs without limit.
    let (reply_tx, mut reply_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CONTROL_REPLY_QUEUE);
    match client.subscribe(CONTROL).await {
        Ok(mut sub) => {
            let link = std::sync::Arc::clone(&parts.link);
            tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    for reply in link.on_control(&msg.payload) {
                        if reply_tx.send(reply).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
        Err(err) => {
            parts.link.metrics.broker_errors.increment(1);
            tracing::warn!(error = %err, "nats control subscription failed; presence stays node-local");
        }
    }
    let mut health = tokio::time::interval(Duration::from_millis(250));
    let mut beat = tokio::time::interval(parts.link.timing.heartbeat);
    let mut was_up = false;
    loop {
        tokio::select! {
            env = parts.out.recv() => {
                let Some(env) = env else { return };
                parts.link.metrics.broker_queue_depth.decrement(1.0);
                if !parts.link.is_connected() {
                    parts.link.metrics.broker_dropped_disconnected.increment(1);
                    continue;
                }
                let (subject, payload) = match env {
                    Envelope::Frame { topic, frame } => (subject(&topic), parts.link.encode(frame.as_str())),
                    Envelope::Control(payload) => (CONTROL.to_string(), payload),
                    // Never queued: this link does not sequence history.
                    Envelope::History { .. } => continue,
                };
                match client.publish(subject, payload.into()).await {
                    Ok(()) => parts.link.metrics.broker_published.increment(1),
                    Err(_) => parts.link.metrics.broker_errors.increment(1),
                }
            }
            reply = reply_rx.recv() => {
                if let Some(payload) = reply {
                    if client.publish(CONTROL, payload.into()).await.is_err() {
                        parts.link.metrics.broker_errors.increment(1);
                    }
                }
            }
            _ = beat.tick() => {
                if parts.link.is_connected() {
                    let _ = client.publish(CONTROL, parts.link.heartbeat().into()).await;
                }
                parts.link.sweep_peers();
            }
            change = parts.changes.recv() => {
                if change.is_none() { return }
                for topic in parts.link.take_changed() {
                    let wanted = parts.link.hub.subscriber_count(&topic) > 0;
                    if wanted && !subs.contains_key(&topic) {
                        subscribe(&client, &parts, &mut subs, topic).await;
                    } else if !wanted {
                        if let Some(task) = subs.remove(&topic) {
                            task.abort();
                        }
                    }
                }
            }
            _ = health.tick() => {
                let up = client.connection_state() == async_nats::connection::State::Connected;
                parts.link.set_connected(up);
                if up && !was_up {
                    let _ = client.publish(CONTROL, parts.link.sync_request().into()).await;
                    let _ = client.flush().await;
                } else if !up && was_up {
                    parts.link.metrics.broker_reconnects.increment(1);
                }
                was_up = up;
            }
        }
    }
}

async fn subscribe(
    client: &async_nats::Client,
    parts: &LinkParts,
    subs: &mut HashMap<Arc<str>, JoinHandle<()>>,
    topic: Arc<str>,
) {
    match client.subscribe(subject(&topic)).await {
        Ok(mut sub) => {
            let link = Arc::clone(&parts.link);
            let t = Arc::clone(&topic);
            let task = tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    link.deliver_remote(&t, &msg.payload);
                }
            });
            subs.insert(topic, task);
        }
        Err(err) => {
            parts.link.metrics.broker_errors.increment(1);
            tracing::warn!(error = %err, topic = %topic, "nats subscribe failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_hide_subject_syntax() {
        assert_eq!(subject("a.b"), "myriad.612e62");
        assert!(!subject("room:*>")
            .trim_start_matches("myriad.")
            .contains(['.', '*', '>']));
    }
}
