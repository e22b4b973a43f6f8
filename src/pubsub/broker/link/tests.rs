use super::*;
use crate::pubsub::broker::replay::Stamp;

/// A handler that records what the link hands it (also used by the Redis
/// Cluster link's tests).
#[derive(Default)]
pub(in crate::pubsub::broker) struct Recorder {
    pub publications: Mutex<Vec<(String, String)>>,
    pub sequenced: Mutex<Vec<(String, Option<u64>)>>,
    pub controls: Mutex<Vec<String>>,
}

impl BrokerHandler for Recorder {
    fn on_publication(&self, topic: &str, frame: Utf8Bytes) {
        self.publications
            .lock()
            .push((topic.into(), frame.as_str().into()));
    }
    fn on_sequenced(&self, _topic: &str, frame: &str, exclude: Option<u64>, _binary: bool) {
        self.sequenced.lock().push((frame.into(), exclude));
    }
    fn on_stored_history(&self, _topic: &str, _frame: &str, _binary: bool) {}
    fn on_control(&self, origin: &str, _control: wire::Control) {
        self.controls.lock().push(origin.into());
    }
    fn on_connected(&self) {}
    fn local_topics(&self) -> Vec<Arc<str>> {
        Vec::new()
    }
    fn has_local_members(&self, _topic: &str) -> bool {
        false
    }
    fn history_size(&self, _topic: &str) -> usize {
        0
    }
}

const WINDOW: Duration = Duration::from_secs(60);
const SECRET: &str = "a-cluster-secret-of-at-least-32-bytes";

fn signed_broker() -> (ClusterBroker, LinkParts, Arc<Recorder>) {
    let (broker, half) = ClusterBroker::new(Metrics::new(), options(8, Some(SECRET)));
    let rec = Arc::new(Recorder::default());
    let parts = half.into_parts(rec.clone(), CancellationToken::new());
    (broker, parts, rec)
}

fn options(queue: usize, secret: Option<&str>) -> LinkOptions<'_> {
    LinkOptions {
        sequences_history: true,
        queue,
        secret,
        replay_window: WINDOW,
        occupancy: None,
        timeout: std::time::Duration::from_secs(5),
    }
}

pub(in crate::pubsub::broker) fn test_broker(
    queue: usize,
) -> (ClusterBroker, LinkParts, Arc<Recorder>) {
    let (broker, half) = ClusterBroker::new(Metrics::new(), options(queue, None));
    let rec = Arc::new(Recorder::default());
    let parts = half.into_parts(rec.clone(), CancellationToken::new());
    (broker, parts, rec)
}

#[test]
fn membership_churn_coalesces_per_topic() {
    let (broker, mut parts, _) = test_broker(8);
    for _ in 0..1000 {
        broker.subscribe_topic("room:a");
        broker.unsubscribe_topic("room:a");
    }
    broker.subscribe_topic("room:b");
    assert!(parts.changes.try_recv().is_ok(), "one wake-up");
    assert!(parts.changes.try_recv().is_err(), "and only one");
    let mut topics: Vec<_> = parts
        .state
        .take_changed()
        .iter()
        .map(|t| t.to_string())
        .collect();
    topics.sort();
    assert_eq!(topics, ["room:a", "room:b"]);
}

fn publication(topic: &str) -> Envelope {
    Envelope::Publication {
        topic: Arc::from(topic),
        frame: Utf8Bytes::from("x"),
    }
}

#[test]
fn an_outage_drops_queued_publishes_and_membership_changes() {
    let (broker, mut parts, _) = test_broker(8);
    for t in ["room:a", "room:b", "room:c"] {
        broker.subscribe_topic(t);
        broker.unsubscribe_topic(t);
    }
    broker.send(publication("room:a")).unwrap();
    drop_queued(&mut parts);
    assert!(parts.changes.try_recv().is_err(), "changes drained");
    assert!(
        parts.state.take_changed().is_empty(),
        "changed topics dropped"
    );
    assert!(parts.out.try_recv().is_err(), "publishes drained");
    let text = parts.state.metrics.render();
    assert!(
        text.contains("myriad_broker_dropped_total{reason=\"disconnected\"} 1"),
        "{text}"
    );
}

#[test]
fn a_full_queue_refuses_and_counts() {
    let (broker, _parts, _) = test_broker(1);
    assert!(broker.send(publication("room:a")).is_ok());
    for _ in 0..2 {
        assert_eq!(
            broker.send(publication("room:a")),
            Err(SendError::QueueFull)
        );
    }
    let text = broker.state().metrics.render();
    assert!(
        text.contains("myriad_broker_dropped_total{reason=\"queue_full\"} 2"),
        "{text}"
    );
}

#[test]
fn own_publications_are_not_delivered_twice() {
    let (_broker, parts, rec) = test_broker(8);
    let frame = "[null,null,\"room:a\",\"e\",{}]";
    let state = &parts.state;
    state.receive_publication(&*rec, "room:a", &state.publication("room:a", frame));
    assert!(
        rec.publications.lock().is_empty(),
        "own node's echo is ignored"
    );
    state.receive_publication(
        &*rec,
        "room:a",
        &wire::encode_publication(&state.signer, "other-node", None, "room:a", frame),
    );
    assert_eq!(
        rec.publications.lock().len(),
        1,
        "another node's is delivered"
    );
    state.receive_publication(&*rec, "room:a", b"garbage-without-separator");
    assert_eq!(rec.publications.lock().len(), 1);
    assert!(state
        .metrics
        .render()
        .contains("myriad_broker_refused_total{reason=\"malformed\"} 1"));
}

#[test]
fn only_the_origin_honours_the_excluded_session() {
    let (_broker, parts, rec) = test_broker(8);
    let state = &parts.state;
    let frame = "[null,\"1:e\",\"chat:a\",\"m\",{}]";
    let msg = |origin: &str| {
        let mut b = wire::frame_header(origin, Some(7), None, None, false).into_bytes();
        b.extend_from_slice(frame.as_bytes());
        b.extend_from_slice(wire::FRAME_TRAILER.as_bytes());
        b
    };
    state.receive_sequenced(&*rec, "chat:a", &msg(&state.node));
    state.receive_sequenced(&*rec, "chat:a", &msg("other"));
    assert_eq!(
        *rec.sequenced.lock(),
        [(frame.to_string(), Some(7)), (frame.to_string(), None)]
    );
    state.receive_control(&*rec, &state.control(&wire::Control::Heartbeat));
    assert!(rec.controls.lock().is_empty(), "own control ignored");
}

#[test]
fn with_a_secret_a_captured_message_is_delivered_once() {
    let (_a, sender, _) = signed_broker();
    let (_b, receiver, rec) = signed_broker();
    let (a, b) = (&sender.state, &receiver.state);
    let frame = "[null,null,\"room:a\",\"e\",{}]";

    let first = a.publication("room:a", frame);
    let second = a.publication("room:a", frame);
    b.receive_publication(&*rec, "room:a", &second);
    // Overtaken by a later message: still accepted, once.
    b.receive_publication(&*rec, "room:a", &first);
    b.receive_publication(&*rec, "room:a", &first);
    b.receive_publication(&*rec, "room:a", &second);
    assert_eq!(rec.publications.lock().len(), 2);

    let heartbeat = a.control(&wire::Control::Heartbeat);
    b.receive_control(&*rec, &heartbeat);
    b.receive_control(&*rec, &heartbeat);
    assert_eq!(rec.controls.lock().len(), 1);

    let cut = RefSlotFrame::new("chat:a", "m", "{}");
    let signed = a.history_header("chat:a", None, &cut, false);
    let mut live = signed.header.into_bytes();
    live.extend_from_slice(cut.fill(1, "ep").as_bytes());
    live.extend_from_slice(wire::FRAME_TRAILER.as_bytes());
    b.receive_sequenced(&*rec, "chat:a", &live);
    b.receive_sequenced(&*rec, "chat:a", &live);
    assert_eq!(rec.sequenced.lock().len(), 1);

    assert!(b
        .metrics
        .render()
        .contains("myriad_broker_refused_total{reason=\"replay\"} 4"));
}

#[test]
fn with_a_secret_an_unstamped_or_stale_message_is_refused() {
    let (_b, receiver, rec) = signed_broker();
    let b = &receiver.state;
    let frame = "[null,null,\"room:a\",\"e\",{}]";
    let signer = Signer::new(Some(SECRET));
    // Validly signed, but without a stamp (or from long ago): refused.
    let unstamped = wire::encode_publication(&signer, "n9", None, "room:a", frame);
    let old = Some(Stamp { seq: 1, ts: 1_000 });
    let stale = wire::encode_publication(&signer, "n9", old, "room:a", frame);
    b.receive_publication(&*rec, "room:a", &unstamped);
    b.receive_publication(&*rec, "room:a", &stale);
    assert!(rec.publications.lock().is_empty());
    assert!(b
        .metrics
        .render()
        .contains("myriad_broker_refused_total{reason=\"replay\"} 2"));
}

#[test]
fn node_ids_come_from_the_random_source() {
    // Two processes started together (same PID 1 in every container, same
    // clock second) must not share an id.
    let (a, b) = (super::node_id(), super::node_id());
    assert_ne!(a, b);
    let (pid, random) = a.split_once('-').unwrap();
    assert_eq!(pid, format!("{:x}", std::process::id()));
    assert_eq!(random.len(), 12);
}
