//! What a `phx_join` payload asks for beyond the channel's own params: where
//! to start on a history topic, the presence meta, and the presence key of a
//! connection without a token. Also the reply's extra fields.

use serde_json::{Map, Value};

use crate::pubsub::history::Position;
use crate::pubsub::mailbox::SessionId;
use crate::pubsub::Since;

/// The presence key of a connection without a token: session ids are only
/// unique within a node, so in a cluster the node's id is part of the key.
pub fn anonymous_key(node: Option<&str>, session: SessionId) -> String {
    match node {
        Some(node) => format!("anon-{node}-{session}"),
        None => format!("anon-{session}"),
    }
}

/// Where a join starts on a history topic: `{"since": {"offset": N, "epoch":
/// "E"}}` recovers, `{"history": true}` replays what is stored.
pub fn since_of(params: Option<&Value>) -> Since {
    let Some(params) = params else {
        return Since::Now;
    };
    let position = params.get("since").and_then(|since| {
        Some(Position {
            offset: since.get("offset")?.as_u64()?,
            epoch: since.get("epoch")?.as_str()?.to_owned(),
        })
    });
    match position {
        Some(p) => Since::Position(p),
        None if params.get("history").and_then(Value::as_bool) == Some(true) => Since::Stored,
        None => Since::Now,
    }
}

/// The presence meta for a join: the join's `meta` object, plus `online_at`.
pub fn presence_meta(params: Option<&Value>) -> Map<String, Value> {
    let mut meta = params
        .and_then(|p| p.get("meta"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    meta.insert(String::from("online_at"), Value::String(now.to_string()));
    meta
}

/// Bytes of the join's `meta` as JSON (0 without one): what presence would
/// store and send to every member.
pub fn meta_len(params: Option<&Value>) -> usize {
    params
        .and_then(|p| p.get("meta"))
        .map_or(0, |m| m.to_string().len())
}

/// `response` (a JSON object) with `fields` added.
pub fn with_fields<const N: usize>(response: &str, fields: [(&str, Value); N]) -> String {
    let mut map: Map<String, Value> = serde_json::from_str(response).unwrap_or_default();
    for (k, v) in fields {
        map.insert(k.to_owned(), v);
    }
    Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn since_reads_recovery_and_stored_history_requests() {
        let p = json!({"since": {"offset": 4, "epoch": "e"}});
        assert_eq!(
            since_of(Some(&p)),
            Since::Position(Position {
                offset: 4,
                epoch: "e".into()
            })
        );
        assert_eq!(since_of(Some(&json!({"history": true}))), Since::Stored);
        assert_eq!(
            since_of(Some(&json!({"since": {"offset": "x"}}))),
            Since::Now
        );
        assert_eq!(since_of(None), Since::Now);
    }

    #[test]
    fn anonymous_keys_are_qualified_by_the_node_in_a_cluster() {
        assert_eq!(anonymous_key(None, 7), "anon-7");
        assert_eq!(anonymous_key(Some("n1"), 7), "anon-n1-7");
    }
}
