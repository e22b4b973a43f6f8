//! Decoding client frames `[join_ref, ref, topic, event, payload]`.
//!
//! Decoding borrows from the frame text wherever the JSON has no escapes, and the
//! payload stays raw JSON so that a broadcast can be re-emitted without parsing
//! it into a value tree.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::close::MalformedKind;

/// One decoded client frame. Extra elements after the fifth are ignored, as
/// Phoenix does (docs/protocol.md §2.1).
#[derive(Debug)]
pub struct InFrame<'a> {
    pub join_ref: Option<Cow<'a, str>>,
    pub ref_: Option<Cow<'a, str>>,
    pub topic: Cow<'a, str>,
    pub event: Cow<'a, str>,
    pub payload: &'a RawValue,
}

impl InFrame<'_> {
    /// Whether the payload is a JSON object (broadcasts must carry one).
    pub fn payload_is_object(&self) -> bool {
        self.payload.get().trim_start().starts_with('{')
    }
}

/// Why a text frame is not a V2 frame. Each variant is a `kind` label of
/// `myriad_malformed_frames_total`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("frame is not valid JSON")]
    NotJson,
    #[error("frame is not a JSON array")]
    NotArray,
    #[error("frame has {0} elements, expected 5: [join_ref, ref, topic, event, payload]")]
    WrongArity(usize),
    #[error("{field} must be {expected}")]
    BadField {
        field: &'static str,
        expected: &'static str,
    },
}

impl DecodeError {
    /// Metric label for this error.
    pub fn kind(&self) -> MalformedKind {
        match self {
            DecodeError::NotJson => MalformedKind::BadJson,
            DecodeError::NotArray => MalformedKind::NotArray,
            DecodeError::WrongArity(_) => MalformedKind::WrongArity,
            DecodeError::BadField { .. } => MalformedKind::BadField,
        }
    }
}

/// Decode one text frame.
pub fn decode(text: &str) -> Result<InFrame<'_>, DecodeError> {
    let shape = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let frame = (&mut de)
        .deserialize_any(FrameVisitor { shape: &shape })
        .map_err(|_| match shape.take() {
            // The visitor judges the shape as it streams, before the whole text
            // was parsed; a text that is not JSON at all is reported as such.
            Some(_) if serde_json::from_str::<IgnoredAny>(text).is_err() => DecodeError::NotJson,
            Some(err) => err,
            None => DecodeError::NotJson,
        })?;
    de.end().map_err(|_| DecodeError::NotJson)?;
    Ok(frame)
}

/// Shape errors are recorded in `shape` (serde_json's error type cannot carry
/// them); an error with nothing recorded is a JSON syntax error.
struct FrameVisitor<'c> {
    shape: &'c Cell<Option<DecodeError>>,
}

impl FrameVisitor<'_> {
    fn fail<E: de::Error>(&self, err: DecodeError) -> E {
        let msg = err.to_string();
        self.shape.set(Some(err));
        E::custom(msg)
    }

    fn next_field<'de, A, T>(
        &self,
        seq: &mut A,
        index: usize,
        field: &'static str,
        expected: &'static str,
    ) -> Result<T, A::Error>
    where
        A: SeqAccess<'de>,
        T: serde::Deserialize<'de>,
    {
        match seq.next_element::<T>() {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(self.fail(DecodeError::WrongArity(index))),
            // serde_json reports a type mismatch as "invalid type"; anything else
            // inside the element is a syntax error, i.e. bad JSON.
            Err(err) if err.to_string().starts_with("invalid type") => {
                Err(self.fail(DecodeError::BadField { field, expected }))
            }
            Err(err) => Err(err),
        }
    }
}

/// A string field that borrows from the frame text when it has no escapes
/// (serde's own `Cow<str>` always copies).
struct CowStr<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

const NULLABLE: &str = "a string or null";
const STRING: &str = "a string";

impl<'de> Visitor<'de> for FrameVisitor<'_> {
    type Value = InFrame<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Phoenix V2 frame [join_ref, ref, topic, event, payload]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let join_ref: Option<CowStr> = self.next_field(&mut seq, 0, "join_ref", NULLABLE)?;
        let ref_: Option<CowStr> = self.next_field(&mut seq, 1, "ref", NULLABLE)?;
        let topic: CowStr = self.next_field(&mut seq, 2, "topic", STRING)?;
        let event: CowStr = self.next_field(&mut seq, 3, "event", STRING)?;
        let payload = self.next_field(&mut seq, 4, "payload", "any JSON value")?;
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(InFrame {
            join_ref: join_ref.map(|s| s.0),
            ref_: ref_.map(|s| s.0),
            topic: topic.0,
            event: event.0,
            payload,
        })
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _map: A) -> Result<Self::Value, A::Error> {
        Err(self.fail(DecodeError::NotArray))
    }
    fn visit_str<E: de::Error>(self, _v: &str) -> Result<Self::Value, E> {
        Err(self.fail(DecodeError::NotArray))
    }
    fn visit_bool<E: de::Error>(self, _v: bool) -> Result<Self::Value, E> {
        Err(self.fail(DecodeError::NotArray))
    }
    fn visit_i64<E: de::Error>(self, _v: i64) -> Result<Self::Value, E> {
        Err(self.fail(DecodeError::NotArray))
    }
    fn visit_u64<E: de::Error>(self, _v: u64) -> Result<Self::Value, E> {
        Err(self.fail(DecodeError::NotArray))
    }
    fn visit_f64<E: de::Error>(self, _v: f64) -> Result<Self::Value, E> {
        Err(self.fail(DecodeError::NotArray))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Err(self.fail(DecodeError::NotArray))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_join() {
        let f = decode(r#"["1","1","room:lobby","phx_join",{"user":"a"}]"#).unwrap();
        assert_eq!(f.join_ref.as_deref(), Some("1"));
        assert_eq!(f.ref_.as_deref(), Some("1"));
        assert_eq!(f.topic, "room:lobby");
        assert_eq!(f.event, "phx_join");
        assert_eq!(f.payload.get(), r#"{"user":"a"}"#);
        assert!(
            matches!(f.topic, Cow::Borrowed(_)),
            "unescaped fields borrow"
        );
        assert!(f.payload_is_object());
    }

    #[test]
    fn nulls_and_extra_elements() {
        let f = decode(r#"[null,"7","phoenix","heartbeat",{},"extra",[1]]"#).unwrap();
        assert!(f.join_ref.is_none());
        assert_eq!(f.ref_.as_deref(), Some("7"));
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let f = decode(r#"[null,null,"room:\u00e9","ev\"t",[1,2]]"#).unwrap();
        assert_eq!(f.topic, "room:é");
        assert_eq!(f.event, "ev\"t");
        assert!(!f.payload_is_object());
    }

    #[test]
    fn malformed_frames_are_classified() {
        assert_eq!(decode("not json").unwrap_err(), DecodeError::NotJson);
        assert_eq!(decode(r#"["1","1""#).unwrap_err(), DecodeError::NotJson);
        assert_eq!(
            decode(r#"{"topic":"x"}"#).unwrap_err(),
            DecodeError::NotArray
        );
        assert_eq!(decode(r#""str""#).unwrap_err(), DecodeError::NotArray);
        assert_eq!(decode("{not json").unwrap_err(), DecodeError::NotJson);
        assert_eq!(decode("[1,2").unwrap_err(), DecodeError::NotJson);
        assert_eq!(decode("42").unwrap_err(), DecodeError::NotArray);
        assert_eq!(
            decode(r#"["1","1","t"]"#).unwrap_err(),
            DecodeError::WrongArity(3)
        );
        assert_eq!(decode("[]").unwrap_err(), DecodeError::WrongArity(0));
        assert_eq!(
            decode(r#"["1","1",5,"ev",{}]"#).unwrap_err(),
            DecodeError::BadField {
                field: "topic",
                expected: "a string"
            }
        );
        assert_eq!(
            decode(r#"[1,"1","t","ev",{}]"#).unwrap_err(),
            DecodeError::BadField {
                field: "join_ref",
                expected: "a string or null"
            }
        );
        assert_eq!(
            decode(r#"["1","1","t",null,{}]"#).unwrap_err(),
            DecodeError::BadField {
                field: "event",
                expected: "a string"
            }
        );
        assert_eq!(
            decode(r#"["1","1","t","e",{}] x"#).unwrap_err(),
            DecodeError::NotJson
        );
    }
}
