//! The link to a Redis Cluster (`redis+cluster://`, `rediss+cluster://`).
//!
//! Broadcast traffic uses sharded Pub/Sub: a topic's channel is a shard
//! channel (`SSUBSCRIBE`/`SPUBLISH`), so a publish travels to the one shard
//! that owns the channel's slot and on to the nodes subscribed there, never
//! across the whole cluster: broadcast capacity grows with the shards. The
//! control channel (membership, presence) is one shard channel too, so every
//! node sees one node's control messages in the order it sent them.
//!
//! History namespaces keep the single-Redis design: the sequencing script
//! runs on the topic's shard (all its keys share one slot, see
//! `names::redis_history_keys`) and `PUBLISH`es the frame with classic
//! Pub/Sub, which the cluster carries to every shard; every node
//! pattern-subscribes once. That is on purpose: every node keeps every
//! history topic so a client recovers on whichever node it reaches, which
//! sharded Pub/Sub (no pattern subscriptions) cannot offer.
//!
//! The connection is RESP3 with a push channel. Redis-rs reconnects to a
//! failed node and resubscribes on its own, but frames published meanwhile
//! are lost to this node; so any disconnection it reports ends the connected
//! period, and the reconnect (like a single Redis's) reads the streams back
//! and sends unanswered history publishes again. Occupancy is tracked per
//! node under a cluster (its scripts span slots).
//!
//! This module owns the cluster connection, its subscriptions and its
//! per-slot pipelines; it must never hold one slot's commands back behind
//! another's answer for longer than one batch.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{PushInfo, PushKind, RedisResult, Value};
use tokio::sync::mpsc;

use super::{answer_acks, certificates, history_call, warm_stream, Item, Retry, SEQUENCE};
use crate::config::redis_url::ClusterUrl;
use crate::pubsub::broker::link::{LinkParts, LinkState};
use crate::pubsub::broker::security::LinkSecurity;
use crate::pubsub::broker::{names, BrokerHandler, Envelope};

/// The link's error for a condition redis-rs does not report as one.
fn broken(why: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, why))
}

/// The bounded queue between redis-rs's push sender and the link task:
/// `broker_queue` pushes may wait. One past it is dropped and counted
/// (`myriad_broker_dropped_total{reason="inbound_full"}`), and the link then
/// ends its connected period to read the history streams back.
struct Pushes {
    rx: mpsc::Receiver<PushInfo>,
    overflowed: Arc<AtomicBool>,
}

impl Pushes {
    fn new(
        capacity: usize,
        state: &LinkState,
    ) -> (
        Pushes,
        impl Fn(PushInfo) -> Result<(), redis::aio::SendError> + Send + Sync + 'static,
    ) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let overflowed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&overflowed);
        let metrics = Arc::clone(&state.metrics);
        let send = move |push: PushInfo| {
            if tx.try_send(push).is_err() {
                metrics.broker_dropped_inbound_full.increment(1);
                flag.store(true, Ordering::Relaxed);
            }
            Ok(())
        };
        (Pushes { rx, overflowed }, send)
    }
}

/// One connected period; returns Err when the cluster connection fails,
/// Ok when the node is gone (its queue closed).
pub(super) async fn connected(
    url: &ClusterUrl,
    security: &LinkSecurity,
    parts: &mut LinkParts,
    retry: &mut Retry,
) -> RedisResult<()> {
    let timeout = parts.state.timeout;
    let (mut pushes, push_sender) = Pushes::new(parts.state.queue, &parts.state);
    let mut builder = ClusterClientBuilder::new(url.node_urls())
        .use_protocol(redis::ProtocolVersion::RESP3)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .push_sender(push_sender);
    if let Some(certificates) = certificates(security) {
        builder = builder.certs(certificates);
    }
    let client = builder.build()?;
    let mut conn = client.get_async_connection().await?;
    let sequence = redis::Script::new(SEQUENCE);
    conn.ssubscribe(names::CONTROL).await?;
    conn.psubscribe(names::redis_history_pattern()).await?;
    let mut subscribed: HashSet<Arc<str>> = HashSet::new();
    for topic in parts.handler.local_topics() {
        conn.ssubscribe(names::redis_topic_channel(&topic)).await?;
        subscribed.insert(topic);
    }
    // SCRIPT LOAD goes to every node, so EVALSHA finds it on any shard.
    sequence.prepare_invoke().load_async(&mut conn).await?;
    warm_history(&mut conn, &parts.state, &*parts.handler).await?;
    while let Some(again) = retry.unanswered(&parts.state.metrics) {
        publish_batch(&conn, &sequence, &parts.state, again, retry).await?;
    }
    retry.report_resent("redis cluster");
    parts.state.set_connected(true);
    parts.handler.on_connected();
    loop {
        if pushes.overflowed.load(Ordering::Relaxed) {
            return Err(broken("inbound cluster traffic overflowed broker_queue"));
        }
        tokio::select! {
            env = parts.out.recv() => {
                let Some(env) = env else { return Ok(()) };
                let batch = retry.batch(env, parts);
                publish_batch(&conn, &sequence, &parts.state, batch, retry).await?;
            }
            change = parts.changes.recv() => {
                if change.is_none() { return Ok(()) }
                for topic in parts.state.take_changed() {
                    let wanted = parts.handler.has_local_members(&topic);
                    if wanted && !subscribed.contains(&topic) {
                        conn.ssubscribe(names::redis_topic_channel(&topic)).await?;
                        subscribed.insert(topic);
                    } else if !wanted && subscribed.remove(&topic) {
                        conn.sunsubscribe(names::redis_topic_channel(&topic)).await?;
                    }
                }
            }
            push = pushes.rx.recv() => {
                let Some(push) = push else {
                    return Err(broken("redis cluster push channel closed"));
                };
                receive(push, &parts.state, &*parts.handler)?;
            }
        }
    }
}

/// One push from the cluster: a message for the node, or the library's
/// word that a node connection closed (Err: the link starts over).
fn receive(push: PushInfo, state: &LinkState, handler: &dyn BrokerHandler) -> RedisResult<()> {
    let (channel, payload) = match (&push.kind, push.data.as_slice()) {
        (PushKind::Disconnection, _) => {
            return Err(broken("a redis cluster node connection closed"));
        }
        (PushKind::SMessage | PushKind::Message, [channel, payload]) => (channel, payload),
        (PushKind::PMessage, [_pattern, channel, payload]) => (channel, payload),
        // Subscription confirmations and kinds we never asked for.
        _ => return Ok(()),
    };
    let (Value::BulkString(channel), Value::BulkString(payload)) = (channel, payload) else {
        state.metrics.broker_errors.increment(1);
        return Ok(());
    };
    let Ok(name) = std::str::from_utf8(channel) else {
        state.metrics.broker_errors.increment(1);
        return Ok(());
    };
    if let Some(topic) = names::redis_history_topic_of(name) {
        state.receive_sequenced(handler, topic, payload);
    } else if name == names::CONTROL {
        state.receive_control(handler, payload);
    } else if let Some(topic) = names::redis_topic_of(name) {
        state.receive_publication(handler, topic, payload);
    }
    Ok(())
}

/// The primaries' addresses from a `CLUSTER SLOTS` answer (each slot range:
/// start, end, then the primary's host and port first); malformed entries
/// are skipped.
fn primaries(slots: &Value) -> Vec<(String, u16)> {
    let Value::Array(ranges) = slots else {
        return Vec::new();
    };
    let mut out: Vec<(String, u16)> = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            continue;
        };
        let Some(Value::Array(primary)) = fields.get(2) else {
            continue;
        };
        let (Some(Value::BulkString(host)), Some(Value::Int(port))) =
            (primary.first(), primary.get(1))
        else {
            continue;
        };
        let (Ok(host), Ok(port)) = (std::str::from_utf8(host), u16::try_from(*port)) else {
            continue;
        };
        if host.is_empty() || port == 0 {
            continue;
        }
        let addr = (host.to_owned(), port);
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

/// Every shard's history streams read back into this node's rings: `SCAN`
/// runs on each primary (a cluster has no cluster-wide SCAN), the streams
/// are read wherever their slot lives.
async fn warm_history(
    conn: &mut ClusterConnection,
    state: &LinkState,
    handler: &dyn BrokerHandler,
) -> RedisResult<()> {
    let slots = conn
        .route_command(
            redis::cmd("CLUSTER").arg("SLOTS").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await?;
    for (host, port) in primaries(&slots) {
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(names::redis_stream_pattern())
                .arg("COUNT")
                .arg(500);
            let at = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port,
            });
            let answer = conn.route_command(scan, at).await?;
            let (next, keys): (u64, Vec<String>) = redis::from_redis_value(answer)?;
            for key in keys {
                if let Some(topic) = names::redis_stream_topic_of(&key) {
                    warm_stream(conn, &key, topic, state, handler).await?;
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(())
}

/// One slot's share of a batch: its pipeline, and which of the batch's
/// items are history publishes answered by it (in pipeline order).
#[derive(Default)]
struct SlotPipe {
    pipe: redis::Pipeline,
    history: Vec<usize>,
}

/// Send a batch as one pipeline per slot, all at once (a cluster refuses a
/// pipeline that spans slots). One topic's commands share a slot, so they
/// stay in order. History publishes in a pipeline that failed are kept for
/// the next connection; the ones answered tell their `ack`.
async fn publish_batch(
    conn: &ClusterConnection,
    sequence: &redis::Script,
    state: &LinkState,
    batch: Vec<Item>,
    retry: &mut Retry,
) -> RedisResult<()> {
    let mut slots: BTreeMap<u16, SlotPipe> = BTreeMap::new();
    let mut published = 0u64;
    for (i, item) in batch.iter().enumerate() {
        let (channel, payload) = match &item.env {
            // Occupancy is per node under a cluster: nothing to release.
            Envelope::PeerGone(_) => continue,
            Envelope::Publication { topic, frame } => (
                names::redis_topic_channel(topic),
                state.publication(topic, frame),
            ),
            Envelope::BinaryPublication { topic, frame } => (
                names::redis_topic_channel(topic),
                state.binary_publication(topic, frame),
            ),
            Envelope::Control(control) => (names::CONTROL.to_owned(), state.control(control)),
            Envelope::History { topic, .. } => {
                let [seq, ..] = names::redis_history_keys(topic);
                let slot = slots.entry(names::redis_slot(&seq)).or_default();
                slot.pipe
                    .invoke_script(&history_call(sequence, state, item.id, &item.env));
                slot.history.push(i);
                published += 1;
                continue;
            }
        };
        let slot = slots.entry(names::redis_slot(&channel)).or_default();
        slot.pipe.cmd("SPUBLISH").arg(channel).arg(payload).ignore();
        if !matches!(item.env, Envelope::Control(_)) {
            published += 1;
        }
    }
    let sent = slots.into_values().map(|slot| {
        let mut conn = conn.clone();
        async move {
            let answer = slot.pipe.query_async::<Vec<u64>>(&mut conn).await;
            (slot.history, answer)
        }
    });
    let answers = futures_util::future::join_all(sent).await;
    let mut items: Vec<Option<Item>> = batch.into_iter().map(Some).collect();
    let mut failure = None;
    for (history, answer) in answers {
        let taken: Vec<Item> = history.iter().filter_map(|&i| items[i].take()).collect();
        match answer {
            Ok(offsets) => answer_acks(taken, offsets),
            Err(err) => {
                // Redis may have run all, some or none of it: the history
                // publishes go again on the next connection, under their ids.
                for item in taken {
                    retry.keep(item, &state.metrics);
                }
                failure.get_or_insert(err);
            }
        }
    }
    if let Some(err) = failure {
        return Err(err);
    }
    state.metrics.broker_published.increment(published);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::broker::link::tests::test_broker;

    fn push(kind: PushKind, data: &[&str]) -> PushInfo {
        PushInfo {
            kind,
            data: data.iter().map(|s| bulk(s)).collect(),
        }
    }

    fn counter(state: &LinkState, line: &str) -> u64 {
        state
            .metrics
            .render()
            .lines()
            .find(|l| l.starts_with(line))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn pushes_past_broker_queue_are_dropped_counted_and_force_a_resync() {
        let (_broker, parts, _) = test_broker(8);
        let (mut pushes, send) = Pushes::new(2, &parts.state);
        for _ in 0..3 {
            assert!(send(push(PushKind::SMessage, &["myriad:room:a", "x"])).is_ok());
        }
        assert_eq!(
            counter(
                &parts.state,
                "myriad_broker_dropped_total{reason=\"inbound_full\"}"
            ),
            1
        );
        assert!(
            pushes.overflowed.load(Ordering::Relaxed),
            "the link resyncs"
        );
        assert!(pushes.rx.try_recv().is_ok() && pushes.rx.try_recv().is_ok());
        assert!(pushes.rx.try_recv().is_err(), "the third was not queued");
    }

    #[test]
    fn pushes_reach_the_node_by_channel_and_a_disconnection_ends_the_period() {
        let (_sender, sending, _) = test_broker(8);
        let (_broker, parts, rec) = test_broker(8);
        let frame = r#"[null,null,"room:a","m",{}]"#;
        let payload = sending.state.publication("room:a", frame);
        let payload = String::from_utf8(payload).unwrap();
        let state = &parts.state;
        receive(
            push(PushKind::SMessage, &["myriad:room:a", &payload]),
            state,
            &*rec,
        )
        .unwrap();
        assert_eq!(rec.publications.lock().len(), 1);
        // Confirmations and kinds never asked for change nothing.
        receive(push(PushKind::SSubscribe, &["myriad:room:a"]), state, &*rec).unwrap();
        receive(push(PushKind::Other("x".into()), &[]), state, &*rec).unwrap();
        // A message that is not two bulk strings is counted, not trusted.
        let errors = counter(state, "myriad_broker_errors_total");
        let odd = PushInfo {
            kind: PushKind::SMessage,
            data: vec![Value::Int(1), Value::Int(2)],
        };
        receive(odd, state, &*rec).unwrap();
        assert_eq!(counter(state, "myriad_broker_errors_total"), errors + 1);
        assert_eq!(rec.publications.lock().len(), 1);
        // redis-rs lost a node connection: frames may have been missed.
        assert!(receive(push(PushKind::Disconnection, &[]), state, &*rec).is_err());
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn primaries_come_from_cluster_slots_and_skip_what_is_malformed() {
        let range = |start, end, host: &str, port: i64| {
            Value::Array(vec![
                Value::Int(start),
                Value::Int(end),
                Value::Array(vec![bulk(host), Value::Int(port), bulk("id")]),
                Value::Array(vec![bulk("10.0.0.9"), Value::Int(7100), bulk("replica")]),
            ])
        };
        let answer = Value::Array(vec![
            range(0, 5460, "10.0.0.1", 7000),
            range(5461, 10922, "10.0.0.2", 7001),
            // A primary serving two ranges is listed once.
            range(10923, 12000, "10.0.0.1", 7000),
            range(12001, 16383, "", 7002),
            range(1, 2, "10.0.0.3", 70_000),
            Value::Int(3),
            Value::Array(vec![Value::Int(0)]),
        ]);
        assert_eq!(
            primaries(&answer),
            [("10.0.0.1".to_owned(), 7000), ("10.0.0.2".to_owned(), 7001)]
        );
        assert!(primaries(&Value::Nil).is_empty());
    }
}
