//! What an `/api` request body must be, checked field by field so a 400 names
//! the field at fault: pure functions from bytes to typed requests, no state
//! and no I/O (the fuzz target and the property tests call them directly).
//!
//! Must never let through what a client push could not carry: a topic over
//! `max_topic_length`, a reserved or over-long event, a payload that is not an
//! object or is nested deeper than `max_payload_depth`.

use serde_json::{Map, Value};

use crate::config::Config;
use crate::protocol::limits::{is_reserved_event, json_deeper_than};

/// Why a body was refused; `field` is the one at fault, when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct BodyError {
    pub field: Option<&'static str>,
    pub why: String,
}

fn bad(field: &'static str, why: &str) -> BodyError {
    BodyError {
        field: Some(field),
        why: format!("{field}: {why}"),
    }
}

/// `POST /api/broadcast`, checked.
#[derive(Debug, PartialEq, Eq)]
pub struct Broadcast {
    pub topic: String,
    pub event: String,
    /// The payload object, re-encoded compactly.
    pub payload: String,
}

/// A JSON object body.
fn object(body: &[u8]) -> Result<Map<String, Value>, BodyError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(BodyError {
            field: None,
            why: String::from("body must be a JSON object"),
        }),
        Err(e) => Err(BodyError {
            field: None,
            why: format!("body is not valid JSON: {e}"),
        }),
    }
}

fn string_field(map: &mut Map<String, Value>, field: &'static str) -> Result<String, BodyError> {
    match map.remove(field) {
        None => Err(bad(field, "missing")),
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(bad(field, "must not be empty")),
        Some(_) => Err(bad(field, "must be a string")),
    }
}

/// A topic within `max_topic_length` (checked before it is routed, quoted or
/// used as a key).
pub fn bounded_topic<'a>(config: &Config, topic: &'a str) -> Result<&'a str, BodyError> {
    if topic.len() > config.max_topic_length {
        return Err(bad("topic", "longer than max_topic_length"));
    }
    Ok(topic)
}

pub fn broadcast(body: &[u8], config: &Config) -> Result<Broadcast, BodyError> {
    let mut map = object(body)?;
    let topic = string_field(&mut map, "topic")?;
    bounded_topic(config, &topic)?;
    let event = string_field(&mut map, "event")?;
    // The same rule as client pushes: names phoenix.js acts on are the server's.
    if is_reserved_event(&event) {
        return Err(bad(
            "event",
            "reserved: names starting with phx_, presence_ or chan_reply_ are phoenix.js control events",
        ));
    }
    if event.len() > config.max_event_length {
        return Err(bad("event", "longer than max_event_length"));
    }
    let payload = match map.get("payload") {
        None => return Err(bad("payload", "missing")),
        Some(p @ Value::Object(_)) => p.to_string(),
        Some(_) => return Err(bad("payload", "must be a JSON object")),
    };
    if json_deeper_than(&payload, config.max_payload_depth) {
        return Err(bad("payload", "nested deeper than max_payload_depth"));
    }
    Ok(Broadcast {
        topic,
        event,
        payload,
    })
}

/// `POST /api/disconnect`, checked: the user to revoke.
pub fn disconnect(body: &[u8]) -> Result<String, BodyError> {
    string_field(&mut object(body)?, "user")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_names_its_field() {
        let c = Config::default();
        let field = |body: &str| broadcast(body.as_bytes(), &c).err().and_then(|e| e.field);
        assert_eq!(field(r#"{"event":"e","payload":{}}"#), Some("topic"));
        assert_eq!(
            field(r#"{"topic":"","event":"e","payload":{}}"#),
            Some("topic")
        );
        let long = "t".repeat(c.max_topic_length + 1);
        let body = format!(r#"{{"topic":"{long}","event":"e","payload":{{}}}}"#);
        assert_eq!(field(&body), Some("topic"));
        assert_eq!(
            field(r#"{"topic":"a","event":"phx_close","payload":{}}"#),
            Some("event")
        );
        assert_eq!(
            field(r#"{"topic":"a","event":7,"payload":{}}"#),
            Some("event")
        );
        assert_eq!(
            field(r#"{"topic":"a","event":"e","payload":[1]}"#),
            Some("payload")
        );
        let deep = format!(
            r#"{{"topic":"a","event":"e","payload":{{"x":{}1{}}}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert_eq!(field(&deep), Some("payload"));
        assert_eq!(field("[]"), None);
        assert_eq!(field("{"), None);
        let ok = broadcast(br#"{"topic":"room:a","event":"m","payload":{"b":1}}"#, &c).unwrap();
        assert_eq!(
            (ok.topic.as_str(), ok.payload.as_str()),
            ("room:a", r#"{"b":1}"#)
        );
        assert_eq!(disconnect(br#"{"user":"u"}"#).unwrap(), "u");
        assert_eq!(
            disconnect(br#"{"user":3}"#).err().and_then(|e| e.field),
            Some("user")
        );
    }
}
