//! Every name myriad uses in a broker backend, in one place: Redis channels
//! and keys, NATS subjects. Topic names are client input, so each scheme keeps
//! them from colliding with our own names (a prefix) or with backend syntax
//! (NATS subjects hex-encode the topic).

/// The channel (Redis) / subject (NATS) every node listens on for membership
/// and presence replication; never a topic's (those carry a prefix).
pub const CONTROL: &str = "myriad-control";

/// Redis: a plain topic's Pub/Sub channel.
const TOPIC_PREFIX: &str = "myriad:";
/// Redis: a history topic's sequenced frames, pattern-subscribed by every node.
const HISTORY_PREFIX: &str = "myriad-history:";
/// Redis: the stream of a history topic (what survives a node's death).
const STREAM_PREFIX: &str = "myriad-stream:{";

pub fn redis_topic_channel(topic: &str) -> String {
    format!("{TOPIC_PREFIX}{topic}")
}

/// The topic a Redis topic channel carries.
pub fn redis_topic_of(channel: &str) -> Option<&str> {
    channel.strip_prefix(TOPIC_PREFIX)
}

pub fn redis_history_channel(topic: &str) -> String {
    format!("{HISTORY_PREFIX}{topic}")
}

/// The pattern matching every history channel.
pub fn redis_history_pattern() -> String {
    format!("{HISTORY_PREFIX}*")
}

/// The topic a Redis history channel carries.
pub fn redis_history_topic_of(channel: &str) -> Option<&str> {
    channel.strip_prefix(HISTORY_PREFIX)
}

/// The three keys of a history topic: offset counter, epoch, stream. The
/// `{topic}` hash tag keeps them in one Redis Cluster slot.
pub fn redis_history_keys(topic: &str) -> [String; 3] {
    [
        format!("myriad-seq:{{{topic}}}"),
        format!("myriad-epoch:{{{topic}}}"),
        format!("{STREAM_PREFIX}{topic}}}"),
    ]
}

/// The SCAN pattern for every history stream.
pub fn redis_stream_pattern() -> String {
    format!("{STREAM_PREFIX}*")
}

/// The topic a history stream key belongs to.
pub fn redis_stream_topic_of(key: &str) -> Option<&str> {
    key.strip_prefix(STREAM_PREFIX)?.strip_suffix('}')
}

/// NATS: a topic's subject, `myriad.<hex of the topic>` (topic names may hold
/// `.`, `*` or `>`, which are subject syntax).
pub fn nats_subject(topic: &str) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(7 + topic.len() * 2);
    s.push_str("myriad.");
    for b in topic.bytes() {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_hide_subject_syntax() {
        assert_eq!(nats_subject("a.b"), "myriad.612e62");
        assert!(!nats_subject("room:*>")
            .trim_start_matches("myriad.")
            .contains(['.', '*', '>']));
    }

    #[test]
    fn names_read_back_their_topic() {
        assert_eq!(
            redis_topic_of(&redis_topic_channel("room:1")),
            Some("room:1")
        );
        assert_eq!(
            redis_history_topic_of(&redis_history_channel("chat:1")),
            Some("chat:1")
        );
        let [_, _, stream] = redis_history_keys("chat:{x}");
        assert_eq!(redis_stream_topic_of(&stream), Some("chat:{x}"));
        assert_eq!(redis_topic_of(CONTROL), None);
    }
}
