//! The Redis link: transport over Redis Pub/Sub, one channel per topic with
//! local members (names in `names`), shared by all of this node's sessions on
//! that topic. A node therefore receives only traffic for topics it serves,
//! and Redis fans a publish out once per interested node.
//!
//! One task owns two connections: a multiplexed one for PUBLISH and scripts
//! and a Pub/Sub one for SUBSCRIBE. When either fails the task marks the
//! broker down, drops what was queued for other nodes (counted), waits with
//! jittered exponential back-off, reconnects and resubscribes every topic that
//! has local members. History namespaces go through Redis instead: a Lua
//! script assigns the offset, appends to a Redis Stream (`XADD ... MAXLEN ~
//! history_size`) and publishes on the topic's history channel, which every
//! node pattern-subscribes, so all nodes store and deliver every history topic
//! in one order and a client can recover on any node. While Redis is away a
//! node sequences history locally under a new epoch (recovery across that
//! answers `recovered: false`, never a gap).
//!
//! Local delivery never depends on this task. Membership and presence
//! replication travel on one more channel, `names::CONTROL`.
//!
//! This module owns the link to one Redis (a fixed address, or the master
//! the sentinels name) and what every Redis link shares: the sequencing
//! script, the retry of unanswered history publishes, reading a stream back.
//! `cluster` is the link to a Redis Cluster.

pub mod cluster;

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::StreamExt;
use redis::streams::StreamRangeReply;
use redis::AsyncCommands;

use super::link::{self, LinkParts, LinkState, StoredFrame};
use super::security::LinkSecurity;
use super::sentinel::{self, SentinelUrl};
use super::{backoff::Backoff, names, wire, BrokerHandler, Envelope};
use crate::config::redacted_url;
use crate::config::redis_url::{self, ClusterUrl};
use crate::metrics::Metrics;
use crate::pubsub::mailbox::SessionId;

/// Sequences one history publish atomically: the next offset, the topic's
/// epoch, the frame with its ref slot, the stream entry (`XADD ... MAXLEN ~
/// size`, what survives a node's death, with the origin, excluded session,
/// stamp, signature and binary flag a later reader checks) and the PUBLISH that delivers it to every
/// node in this one order, wrapped in the wire format's frame message.
/// The three keys expire `history_ttl` after the topic's last publish, like
/// the rings, so Redis does not keep every topic ever used. An offset that
/// starts over (its key expired) always gets a new epoch, so no (offset,
/// epoch) pair is ever reused. KEYS[4] marks the publish done (with its
/// offset, for ARGV[14] ms): the same publish sent again after a pipeline
/// whose answer was lost returns that offset and changes nothing.
const SEQUENCE: &str = r#"
local done = redis.call('GET', KEYS[4])
if done then return tonumber(done) end
local o = redis.call('INCR', KEYS[1])
local e = redis.call('GET', KEYS[2])
if (not e) or o == 1 then e = ARGV[1]; redis.call('SET', KEYS[2], e) end
local frame = ARGV[5] .. o .. ':' .. e .. ARGV[6]
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', 'o', o, 'f', frame, 'n', ARGV[9], 'x', ARGV[10], 's', ARGV[11], 'q', ARGV[12], 'b', ARGV[13])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[7]) end
redis.call('PUBLISH', ARGV[3], ARGV[4] .. frame .. ARGV[8])
redis.call('SET', KEYS[4], o, 'PX', ARGV[14])
return o
"#;

/// A history publish not answered yet is sent again on the next connection
/// within this long; older ones are dropped (counted as
/// `myriad_broker_dropped_total{reason="disconnected"}`).
const RETRY_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);
/// How long Redis remembers a sequenced publish (its `myriad-pub:` key):
/// longer than any retry of it.
const DONE_FOR_MS: u64 = 2 * 60_000;

/// An envelope on its way to Redis, with the id its history publish keeps
/// across attempts.
struct Item {
    id: u64,
    first: std::time::Instant,
    env: Envelope,
}

/// History publishes whose pipeline failed or that were queued when the link
/// went down: Redis may or may not have sequenced them, and the publisher was
/// told nothing either way (the frame reaches members, this node's included,
/// only once sequenced). They go first on the next connection, under the
/// same ids, so each is sequenced exactly once. At most `max` wait
/// (`broker_queue`: they are publishes waiting for the broker like the
/// queue's); past it, or past `within`, the oldest are dropped and counted as
/// `myriad_broker_dropped_total{reason="disconnected"}`.
struct Retry {
    items: std::collections::VecDeque<Item>,
    next_id: u64,
    max: usize,
    within: std::time::Duration,
    /// Publishes sent again since the last report.
    resent: usize,
}

impl Retry {
    fn new(max: usize) -> Retry {
        Retry {
            items: std::collections::VecDeque::new(),
            next_id: 0,
            max: max.max(1),
            within: RETRY_WITHIN,
            resent: 0,
        }
    }

    fn item(&mut self, env: Envelope) -> Item {
        self.next_id += 1;
        Item {
            id: self.next_id,
            first: std::time::Instant::now(),
            env,
        }
    }

    /// Keep `item` for the next connection if it is a history publish; other
    /// envelopes are other nodes' traffic, lost with the link (counted).
    fn keep(&mut self, item: Item, metrics: &Metrics) {
        if matches!(item.env, Envelope::History { .. }) {
            if self.items.len() >= self.max {
                self.items.pop_front();
                metrics.broker_dropped_disconnected.increment(1);
            }
            self.items.push_back(item);
        } else {
            metrics.broker_dropped_disconnected.increment(1);
        }
    }

    /// The next batch (at most `PUBLISH_BATCH`, oldest first) to send on a
    /// new connection; publishes older than `within` are dropped (counted).
    fn next_batch(&mut self, metrics: &Metrics) -> Vec<Item> {
        let now = std::time::Instant::now();
        while self
            .items
            .front()
            .is_some_and(|i| now.duration_since(i.first) >= self.within)
        {
            self.items.pop_front();
            metrics.broker_dropped_disconnected.increment(1);
        }
        let n = self.items.len().min(PUBLISH_BATCH);
        self.items.drain(..n).collect()
    }

    /// On a new connection: the next batch of what the last one left
    /// unanswered, None when all went (counted for [`Retry::report_resent`]).
    fn unanswered(&mut self, metrics: &Metrics) -> Option<Vec<Item>> {
        let again = self.next_batch(metrics);
        self.resent += again.len();
        (!again.is_empty()).then_some(again)
    }

    /// Log how many publishes went again since the last report (a connection
    /// that failed while sending them counts toward the next one's).
    fn report_resent(&mut self, link: &str) {
        let publishes = std::mem::take(&mut self.resent);
        if publishes > 0 {
            tracing::info!(publishes, link, "sent unanswered history publishes again");
        }
    }

    /// `first` and whatever else is queued now (up to `PUBLISH_BATCH`), as
    /// items: one pipeline's worth, taken off the queue's depth.
    fn batch(&mut self, first: Envelope, parts: &mut LinkParts) -> Vec<Item> {
        let mut batch = vec![self.item(first)];
        while batch.len() < PUBLISH_BATCH {
            match parts.out.try_recv() {
                Ok(env) => batch.push(self.item(env)),
                Err(_) => break,
            }
        }
        let depth = &parts.state.metrics.broker_queue_depth;
        depth.decrement(batch.len() as f64);
        batch
    }

    /// While the link is down: history publishes from the queue are kept,
    /// everything else dropped (counted).
    fn drain_queue(&mut self, parts: &mut LinkParts) {
        let metrics = Arc::clone(&parts.state.metrics);
        link::drain_queued(parts, |env| {
            let item = self.item(env);
            self.keep(item, &metrics);
        });
    }
}

/// A history epoch the script uses when a topic starts over: random (two
/// nodes starting a topic in the same nanosecond must not share one).
fn new_epoch() -> String {
    let random = getrandom::u64().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    format!("{random:x}")
}

/// A client for `url`: rediss:// checks the server's certificate against
/// `broker_tls_ca` (the system's roots without it) and presents the client
/// certificate when one is configured.
fn client(url: &str, security: &LinkSecurity) -> redis::RedisResult<redis::Client> {
    match certificates(security) {
        None => redis::Client::open(url),
        Some(certificates) => redis::Client::build_with_tls(url, certificates),
    }
}

/// `broker_tls_ca` and the client certificate for redis-rs; None when
/// neither is configured (rediss:// then checks against the system's roots).
fn certificates(security: &LinkSecurity) -> Option<redis::TlsCertificates> {
    if security.ca.is_none() && security.client.is_none() {
        return None;
    }
    Some(redis::TlsCertificates {
        client_tls: security
            .client
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.pem.clone(),
                client_key: key.pem.clone(),
            }),
        root_cert: security.ca.as_ref().map(|ca| ca.pem.clone()),
    })
}

/// Where the link connects: one fixed address, wherever the sentinels say
/// the master is now (asked again before every connection), or a cluster.
enum Target {
    Fixed(redis::Client),
    Sentinel(SentinelUrl, LinkSecurity),
    Cluster(ClusterUrl, LinkSecurity),
}

impl Target {
    fn new(url: &str, security: LinkSecurity) -> Result<Target, String> {
        if redis_url::is_sentinel(url) {
            Ok(Target::Sentinel(SentinelUrl::parse(url)?, security))
        } else if redis_url::is_cluster(url) {
            Ok(Target::Cluster(ClusterUrl::parse(url)?, security))
        } else {
            client(url, &security)
                .map(Target::Fixed)
                .map_err(|e| e.to_string())
        }
    }

    /// One connected period at this target (see [`connected`]).
    async fn connect(&self, parts: &mut LinkParts, retry: &mut Retry) -> redis::RedisResult<()> {
        let client = match self {
            Target::Fixed(c) => c.clone(),
            Target::Sentinel(s, security) => {
                let url = sentinel::resolve(s, parts.state.timeout, |u| client(u, security))
                    .await
                    .map_err(|why| redis::RedisError::from(std::io::Error::other(why)))?;
                tracing::debug!(master = %redacted_url(&url), "sentinel named the master");
                client(&url, security)?
            }
            Target::Cluster(c, security) => {
                return cluster::connected(c, security, parts, retry).await;
            }
        };
        connected(&client, parts, retry).await
    }
}

/// Run the link until its stop token is cancelled.
pub async fn run(url: String, security: LinkSecurity, mut parts: LinkParts) {
    let target = match Target::new(&url, security) {
        Ok(t) => t,
        Err(err) => {
            // Validated with the config; a failure here is a bug, not an outage.
            tracing::error!(error = %err, url = %redacted_url(&url), "invalid redis url; cluster delivery disabled");
            return;
        }
    };
    let stop = parts.stop.clone();
    let mut backoff = Backoff::default();
    let mut streak = 0u32;
    let mut retry = Retry::new(parts.state.queue);
    loop {
        let attempt = target.connect(&mut parts, &mut retry);
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            result = attempt => result,
        };
        match result {
            Ok(()) => return,
            Err(err) => {
                parts.state.metrics.broker_errors.increment(1);
                // The first failure of a streak says why (a refused
                // certificate, a wrong password); retries repeat it at debug.
                if parts.state.is_connected() || streak == 0 {
                    tracing::warn!(error = %err, url = %redacted_url(&url), "redis link failed; retrying");
                } else {
                    tracing::debug!(error = %err, "redis link failed");
                }
                streak += 1;
            }
        }
        let wait = backoff.after_failure(parts.state.is_connected());
        parts.state.set_connected(false);
        let until = tokio::time::Instant::now() + wait;
        // Keep the queue from filling with traffic that cannot be sent.
        while tokio::time::Instant::now() < until {
            retry.drain_queue(&mut parts);
            let step =
                (until - tokio::time::Instant::now()).min(std::time::Duration::from_millis(50));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(step) => {}
            }
        }
        parts.state.metrics.broker_reconnects.increment(1);
    }
}

/// Fill this node's history rings from the Redis Streams (range reads), so a
/// node that started late, or was cut off, can still answer a recovering
/// client; entries it already has are skipped, newer ones reach its members.
async fn warm_history(
    conn: &mut redis::aio::MultiplexedConnection,
    state: &LinkState,
    handler: &dyn BrokerHandler,
) -> redis::RedisResult<()> {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(names::redis_stream_pattern())
            .arg("COUNT")
            .arg(500)
            .query_async(conn)
            .await?;
        for key in keys {
            let Some(topic) = names::redis_stream_topic_of(&key) else {
                continue;
            };
            warm_stream(conn, &key, topic, state, handler).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Read the newest entries of one history stream (`key`, `topic`'s) into
/// this node's ring; entries it already has are skipped.
async fn warm_stream<C: redis::aio::ConnectionLike + Send + Sync>(
    conn: &mut C,
    key: &str,
    topic: &str,
    state: &LinkState,
    handler: &dyn BrokerHandler,
) -> redis::RedisResult<()> {
    let size = handler.history_size(topic);
    if size == 0 {
        return Ok(());
    }
    let newest: StreamRangeReply = conn.xrevrange_count(key, "+", "-", size).await?;
    for entry in newest.ids.iter().rev() {
        let Some(frame) = entry.get::<String>("f") else {
            continue;
        };
        let origin = entry.get::<String>("n").unwrap_or_default();
        let exclude = entry
            .get::<String>("x")
            .and_then(|x| x.parse::<SessionId>().ok());
        let sig = entry.get::<String>("s").filter(|s| !s.is_empty());
        let stamp = entry.get::<String>("q").and_then(|q| wire::parse_stamp(&q));
        let binary = entry.get::<String>("b").is_some_and(|b| b == "1");
        let stored = StoredFrame {
            frame: &frame,
            origin: &origin,
            exclude,
            stamp,
            sig: sig.as_deref(),
            binary,
        };
        state.receive_stored(handler, topic, &stored);
    }
    Ok(())
}

/// Queued envelopes sent in one pipeline: one round trip for a burst instead
/// of one per message (the link would otherwise cap cross-node traffic at one
/// publish per Redis round trip).
const PUBLISH_BATCH: usize = 256;

/// Send a batch of envelopes in queue order as one pipeline; sequenced
/// history publishes tell their `ack` the offset Redis assigned.
async fn publish_batch(
    conn: &mut redis::aio::MultiplexedConnection,
    sequence: &redis::Script,
    parts: &LinkParts,
    batch: Vec<Item>,
    retry: &mut Retry,
) -> redis::RedisResult<()> {
    let state = &*parts.state;
    let mut pipe = redis::pipe();
    let mut published = 0u64;
    let mut gone = Vec::new();
    for item in &batch {
        match &item.env {
            Envelope::PeerGone(node) => gone.push(node.clone()),
            Envelope::Publication { topic, frame } => {
                pipe.publish(
                    names::redis_topic_channel(topic),
                    state.publication(topic, frame),
                )
                .ignore();
                published += 1;
            }
            Envelope::BinaryPublication { topic, frame } => {
                pipe.publish(
                    names::redis_topic_channel(topic),
                    state.binary_publication(topic, frame),
                )
                .ignore();
                published += 1;
            }
            Envelope::Control(control) => {
                if let (wire::Control::Heartbeat, Some(occ)) = (control, &state.occupancy) {
                    pipe.add_command(occ.alive_cmd(&state.node)).ignore();
                }
                pipe.publish(names::CONTROL, state.control(control))
                    .ignore();
            }
            Envelope::History { .. } => {
                let call = history_call(sequence, state, item.id, &item.env);
                pipe.invoke_script(&call);
                published += 1;
            }
        }
    }
    let offsets: Vec<u64> = match pipe.query_async(conn).await {
        Ok(offsets) => offsets,
        Err(err) => {
            // Redis may have run all, some or none of it: the history
            // publishes go again on the next connection, under their ids.
            for item in batch {
                retry.keep(item, &state.metrics);
            }
            return Err(err);
        }
    };
    answer_acks(batch, offsets);
    state.metrics.broker_published.increment(published);
    if let Some(occ) = &state.occupancy {
        for dead in &gone {
            for topic in occ.node_gone(conn, dead).await? {
                parts.handler.on_occupancy(&topic, false);
            }
        }
    }
    Ok(())
}

/// The sequencing script's call for a history publish (`id`: the publish's
/// id, kept across attempts); other envelopes get an empty call (never sent).
fn history_call<'a>(
    sequence: &'a redis::Script,
    state: &LinkState,
    id: u64,
    env: &Envelope,
) -> redis::ScriptInvocation<'a> {
    let mut call = sequence.prepare_invoke();
    let Envelope::History {
        topic,
        frame,
        size,
        ttl,
        exclude,
        binary,
        ..
    } = env
    else {
        return call;
    };
    let (exclude, binary) = (*exclude, *binary);
    for key in names::redis_history_keys(topic) {
        call.key(key);
    }
    call.key(names::redis_publish_key(topic, &state.node, id));
    let signed = state.history_header(topic, exclude, frame, binary);
    call.arg(new_epoch())
        .arg(size)
        .arg(names::redis_history_channel(topic))
        .arg(signed.header)
        .arg(&frame.prefix)
        .arg(&frame.suffix)
        .arg(ttl.as_millis().max(1) as u64)
        .arg(wire::FRAME_TRAILER)
        .arg(&*state.node)
        .arg(exclude.map_or_else(String::new, |id| id.to_string()))
        .arg(signed.sig)
        .arg(signed.stamp)
        .arg(if binary { "1" } else { "0" })
        .arg(DONE_FOR_MS);
    call
}

/// Tell each history publish's `ack` the offset Redis assigned (`offsets`
/// in the order of the batch's history publishes).
fn answer_acks(batch: Vec<Item>, offsets: impl IntoIterator<Item = u64>) {
    let acks = batch.into_iter().filter_map(|item| match item.env {
        Envelope::History { ack, .. } => Some(ack),
        _ => None,
    });
    for (ack, offset) in acks.zip(offsets) {
        if let Some(ack) = ack {
            // The publisher may have given up waiting: nothing to tell.
            let _ = ack.send(offset);
        }
    }
}

/// After (re)connecting: Redis's record of this node's topics made equal to
/// its local topics; changes that happened while away are reported.
async fn reconcile_occupancy(
    conn: &mut redis::aio::MultiplexedConnection,
    parts: &LinkParts,
    local: &HashSet<Arc<str>>,
) -> redis::RedisResult<()> {
    let Some(occ) = &parts.state.occupancy else {
        return Ok(());
    };
    let node = &*parts.state.node;
    for topic in occ.recorded(conn, node).await? {
        if !local.contains(topic.as_str()) && occ.vacate(conn, node, &topic).await? {
            parts.handler.on_occupancy(&topic, false);
        }
    }
    for topic in local {
        if occ.occupy(conn, node, topic).await? {
            parts.handler.on_occupancy(topic, true);
        }
    }
    Ok(())
}

/// One connected period; returns Err when a connection fails, Ok when the
/// node is gone (its queue closed).
async fn connected(
    client: &redis::Client,
    parts: &mut LinkParts,
    retry: &mut Retry,
) -> redis::RedisResult<()> {
    // redis-rs answers "timed out" after 500 ms by default: a node busy with
    // a reconnect storm (or a Redis busy with a big pipeline) would then tear
    // the link down and fork its history epochs over a slow answer.
    let timeout = Some(parts.state.timeout);
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(timeout)
        .set_connection_timeout(timeout);
    let mut publisher = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let (mut sink, mut stream) = client.get_async_pubsub().await?.split();
    let mut subscribed: HashSet<Arc<str>> = HashSet::new();
    let sequence = redis::Script::new(SEQUENCE);
    sink.subscribe(names::CONTROL).await?;
    sink.psubscribe(names::redis_history_pattern()).await?;
    for topic in parts.handler.local_topics() {
        sink.subscribe(names::redis_topic_channel(&topic)).await?;
        subscribed.insert(topic);
    }
    // Pipelines call the script by hash (EVALSHA), so Redis must have it; a
    // Redis that restarts or flushes scripts fails the batch and the reconnect
    // loads it again.
    sequence.prepare_invoke().load_async(&mut publisher).await?;
    warm_history(&mut publisher, &parts.state, &*parts.handler).await?;
    reconcile_occupancy(&mut publisher, parts, &subscribed).await?;
    // What the last connection left unanswered goes first, in its order,
    // in pipelines of the usual size.
    while let Some(again) = retry.unanswered(&parts.state.metrics) {
        publish_batch(&mut publisher, &sequence, parts, again, retry).await?;
    }
    retry.report_resent("redis");
    parts.state.set_connected(true);
    parts.handler.on_connected();
    loop {
        tokio::select! {
            env = parts.out.recv() => {
                let Some(env) = env else { return Ok(()) };
                let batch = retry.batch(env, parts);
                publish_batch(&mut publisher, &sequence, parts, batch, retry).await?;
            }
            change = parts.changes.recv() => {
                if change.is_none() { return Ok(()) }
                for topic in parts.state.take_changed() {
                    let wanted = parts.handler.has_local_members(&topic);
                    let occ = parts.state.occupancy.as_ref();
                    let node = &*parts.state.node;
                    if wanted && !subscribed.contains(&topic) {
                        sink.subscribe(names::redis_topic_channel(&topic)).await?;
                        if let Some(occ) = occ {
                            if occ.occupy(&mut publisher, node, &topic).await? {
                                parts.handler.on_occupancy(&topic, true);
                            }
                        }
                        subscribed.insert(topic);
                    } else if !wanted && subscribed.remove(&topic) {
                        sink.unsubscribe(names::redis_topic_channel(&topic)).await?;
                        if let Some(occ) = occ {
                            if occ.vacate(&mut publisher, node, &topic).await? {
                                parts.handler.on_occupancy(&topic, false);
                            }
                        }
                    }
                }
            }
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return Err(redis::RedisError::from((redis::ErrorKind::Io, "pub/sub connection closed")));
                };
                let name = msg.get_channel_name();
                let (state, handler) = (&parts.state, &*parts.handler);
                if let Some(topic) = names::redis_history_topic_of(name) {
                    state.receive_sequenced(handler, topic, msg.get_payload_bytes());
                } else if name == names::CONTROL {
                    state.receive_control(handler, msg.get_payload_bytes());
                } else if let Some(topic) = names::redis_topic_of(name) {
                    state.receive_publication(handler, topic, msg.get_payload_bytes());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ref_slot::RefSlotFrame;

    fn history(topic: &str) -> Envelope {
        Envelope::History {
            topic: Arc::from(topic),
            frame: RefSlotFrame::new(topic, "m", "{}"),
            size: 10,
            ttl: std::time::Duration::from_secs(60),
            exclude: None,
            ack: None,
            binary: false,
        }
    }

    fn dropped(m: &Metrics) -> u64 {
        m.render()
            .lines()
            .find(|l| l.starts_with("myriad_broker_dropped_total{reason=\"disconnected\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    }

    #[test]
    fn unanswered_history_publishes_wait_bounded_and_go_again_in_batches_under_their_ids() {
        let m = Metrics::new();
        let mut r = Retry::new(300);
        // Only history publishes are kept; other traffic is lost with the link.
        let control = r.item(Envelope::Control(wire::Control::Heartbeat));
        r.keep(control, &m);
        assert_eq!(dropped(&m), 1);
        for i in 0..310 {
            let item = r.item(history(&format!("chat:{i}")));
            r.keep(item, &m);
        }
        // broker_queue (300 here) bounds them: the 10 oldest went, counted.
        assert_eq!(r.items.len(), 300);
        assert_eq!(dropped(&m), 11);
        let first = r.next_batch(&m);
        assert_eq!(first.len(), PUBLISH_BATCH);
        // Ids are the ones given when first queued (ids 1-11 were the
        // heartbeat and the dropped publishes), oldest first.
        assert_eq!(first[0].id, 12);
        assert!(first.windows(2).all(|w| w[0].id + 1 == w[1].id));
        assert_eq!(r.unanswered(&m).map(|b| b.len()), Some(300 - PUBLISH_BATCH));
        assert!(r.unanswered(&m).is_none());
        assert_eq!(r.resent, 300 - PUBLISH_BATCH, "counted for the report");
        r.report_resent("redis");
        assert_eq!(r.resent, 0);
    }

    #[test]
    fn publishes_older_than_the_retry_window_are_dropped_and_counted() {
        let m = Metrics::new();
        let mut r = Retry::new(10);
        r.within = std::time::Duration::ZERO;
        let item = r.item(history("chat:old"));
        r.keep(item, &m);
        assert!(r.next_batch(&m).is_empty());
        assert_eq!(dropped(&m), 1);
    }
}
