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
const STREAM_PREFIX: &str = "myriad-stream:";

/// `prefix` and `topic` with the topic as the key's Redis Cluster hash tag
/// (`prefix{topic}` + `rest`), so every key of one topic lands in one slot.
/// A topic that cannot be a tag (empty, or starting with `}`, which would
/// end the tag at once and hash each whole key apart) is written
/// `prefix!{~}topic` + `rest`: all such topics share the tag `~`, and the `!`
/// keeps the two forms from ever naming the same key.
fn tagged(prefix: &str, topic: &str, rest: &str) -> String {
    if topic.is_empty() || topic.starts_with('}') {
        format!("{prefix}!{{~}}{topic}{rest}")
    } else {
        format!("{prefix}{{{topic}}}{rest}")
    }
}

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

/// The three keys of a history topic: offset counter, epoch, stream. They
/// share one Redis Cluster slot (see `tagged`).
pub fn redis_history_keys(topic: &str) -> [String; 3] {
    [
        tagged("myriad-seq:", topic, ""),
        tagged("myriad-epoch:", topic, ""),
        tagged(STREAM_PREFIX, topic, ""),
    ]
}

/// Redis: one history publish already sequenced (`node`'s publish `id`),
/// holding its offset, so a publish sent again after a failed pipeline gets
/// the same offset instead of a second one. Same slot as the topic's keys.
pub fn redis_publish_key(topic: &str, node: &str, id: u64) -> String {
    tagged("myriad-pub:", topic, &format!(":{node}:{id}"))
}

/// Redis: the nodes with members on a topic (occupancy webhooks).
pub const REDIS_OCCUPANCY_PREFIX: &str = "myriad-occ:";
/// Redis: a node's liveness key, refreshed by its heartbeats.
pub const REDIS_ALIVE_PREFIX: &str = "myriad-alive:";

pub fn redis_occupancy_key(topic: &str) -> String {
    format!("{REDIS_OCCUPANCY_PREFIX}{topic}")
}

/// The topics a node has members on.
pub fn redis_occupancy_node_key(node: &str) -> String {
    format!("myriad-occ-node:{node}")
}

/// The SCAN pattern for every history stream.
pub fn redis_stream_pattern() -> String {
    format!("{STREAM_PREFIX}*")
}

/// The topic a history stream key belongs to (either form of `tagged`).
pub fn redis_stream_topic_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(STREAM_PREFIX)?;
    match rest.strip_prefix("!{~}") {
        Some(topic) => Some(topic),
        None => rest.strip_prefix('{')?.strip_suffix('}'),
    }
}

/// Redis Cluster: the hash slot of `key` (CRC16/XMODEM mod 16384 of its
/// hash tag, the part between the first `{` and the next `}` when that is
/// not empty, else of the whole key), as Redis computes it: a pipeline may
/// only hold one slot's commands.
pub fn redis_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = key.find('{').and_then(|open| {
        let close = key[open + 1..].find('}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % 16384
}

/// Topics longer than this get a hashed NATS subject.
const NATS_HEX_MAX: usize = 64;

/// NATS: a topic's subject, `myriad.<hex of the topic>` (topic names may hold
/// `.`, `*` or `>`, which are subject syntax), or `myriad.h.<sha-256 of the
/// topic>` for topics over 64 bytes: a subject is part of the NATS protocol's
/// control line, whose length the server limits (4 KiB by default); one over it
/// closes the whole connection and the client resubscribes it forever. Bounded
/// at 73 bytes whatever the topic.
pub fn nats_subject(topic: &str) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    let mut s = String::with_capacity(9 + NATS_HEX_MAX * 2);
    if topic.len() > NATS_HEX_MAX {
        s.push_str("myriad.h.");
        for b in Sha256::digest(topic.as_bytes()) {
            let _ = write!(s, "{b:02x}");
        }
        return s;
    }
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
    fn subjects_are_bounded_whatever_the_topic() {
        let long = "room:".repeat(20_000);
        let subject = nats_subject(&long);
        assert_eq!(subject.len(), 9 + 64);
        assert_ne!(subject, nats_subject(&(long.clone() + "x")));
        assert_eq!(
            nats_subject(&"a".repeat(64)).len(),
            7 + 128,
            "short ones stay readable"
        );
    }

    #[test]
    fn slots_are_the_ones_redis_computes() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(redis_slot("foo"), 12182);
        assert_eq!(redis_slot("somekey"), 11058);
        assert_eq!(redis_slot("{user1000}.following"), redis_slot("user1000"));
        // An empty tag does not count: the whole key is hashed.
        assert_eq!(redis_slot("foo{}{bar}"), 8363);
        // A history topic's keys, and its publish keys, share one slot
        // (the sequencing script touches them together), whatever the topic.
        for topic in ["chat:1", "chat:{x}", "a}b", "{", "}"] {
            let [seq, epoch, stream] = redis_history_keys(topic);
            let slot = redis_slot(&seq);
            assert_eq!(redis_slot(&epoch), slot, "{topic}");
            assert_eq!(redis_slot(&stream), slot, "{topic}");
            assert_eq!(
                redis_slot(&redis_publish_key(topic, "n", 7)),
                slot,
                "{topic}"
            );
        }
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
        for topic in ["chat:{x}", "}x", "", "a}b"] {
            let [_, _, stream] = redis_history_keys(topic);
            assert_eq!(redis_stream_topic_of(&stream), Some(topic), "{topic:?}");
        }
        // The two forms never name the same key.
        assert_ne!(redis_history_keys("}x")[0], redis_history_keys("~}}x")[0]);
        assert_eq!(redis_topic_of(CONTROL), None);
    }
}
