//! Spellings an operator may use for values: byte sizes with units (`64KiB`,
//! `12 GiB`, `1.5MB`, or a plain number of bytes) and enum names in any case,
//! with `-` or `_` (`drop-oldest`, `DROP_OLDEST`, `hs256`). The same parsers
//! serve the TOML file, `MYRIAD_*` variables and flags, so a value that works
//! in one place works in all three.
//!
//! This module only parses; what a value means and its bounds live with the
//! key (config::mod, config::validate).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

/// A byte size: a plain integer (bytes) or a number with a unit. Binary units
/// (KiB, MiB, GiB, TiB) are powers of 1024, SI units (kB, MB, GB, TB) powers
/// of 1000, as the `bytesize` crate reads them; case does not matter.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    t.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("`{text}` is not a byte size (examples: 65536, 64KiB, 12GiB, 1.5MB)"))
}

/// `parse_bytes` for `usize` settings (bounded by the platform's word).
pub fn parse_bytes_usize(text: &str) -> Result<usize, String> {
    let n = parse_bytes(text)?;
    usize::try_from(n).map_err(|_| format!("`{text}` is larger than this platform can address"))
}

struct BytesVisitor;

impl Visitor<'_> for BytesVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a byte size: a number of bytes or a string such as \"64KiB\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom("a byte size cannot be negative"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse_bytes(v).map_err(E::custom)
    }
}

/// serde `deserialize_with` for byte sizes stored as `usize`.
pub fn de_bytes_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = d.deserialize_any(BytesVisitor)?;
    usize::try_from(n).map_err(|_| de::Error::custom("byte size too large for this platform"))
}

/// serde `deserialize_with` for byte sizes stored as `u64`.
pub fn de_bytes_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(BytesVisitor)
}

/// An enum value by any spelling of its name: case and `-`/`_` do not matter.
pub fn parse_enum<T: clap::ValueEnum>(text: &str) -> Result<T, String> {
    let wanted = normalize(text);
    T::value_variants()
        .iter()
        .find(|v| {
            v.to_possible_value()
                .is_some_and(|p| normalize(p.get_name()) == wanted)
        })
        .cloned()
        .ok_or_else(|| {
            let names: Vec<String> = T::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value())
                .map(|p| p.get_name().replace('-', "_"))
                .collect();
            format!("`{text}` is not one of {}", names.join(", "))
        })
}

fn normalize(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Deserialize an enum that derives `clap::ValueEnum` through `parse_enum`.
macro_rules! lenient_enum {
    ($t:ty) => {
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $crate::config::units::parse_enum(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use lenient_enum;

/// `memory_high_watermark`: off, a byte size, or a percentage of the memory
/// limit (the cgroup's when it has one, else physical memory).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryWatermark {
    Off,
    Bytes(u64),
    Percent(f64),
}

impl MemoryWatermark {
    /// `0` (off), a byte size (`12GiB`), or a percentage (`80%`, above 0 and
    /// at most 100).
    pub fn parse(text: &str) -> Result<MemoryWatermark, String> {
        let t = text.trim();
        if let Some(p) = t.strip_suffix('%') {
            return match p.trim().parse::<f64>() {
                Ok(v) if v > 0.0 && v <= 100.0 => Ok(MemoryWatermark::Percent(v)),
                _ => Err(format!(
                    "`{text}`: a percentage must be above 0 and at most 100"
                )),
            };
        }
        match parse_bytes(t)? {
            0 => Ok(MemoryWatermark::Off),
            n => Ok(MemoryWatermark::Bytes(n)),
        }
    }

    /// The watermark in bytes given the memory limit; None when off, or when
    /// a percentage has no limit to apply to.
    pub fn resolve(self, limit: Option<u64>) -> Option<u64> {
        match self {
            MemoryWatermark::Off => None,
            MemoryWatermark::Bytes(n) => Some(n),
            MemoryWatermark::Percent(p) => limit.map(|l| (l as f64 * p / 100.0) as u64),
        }
    }
}

impl serde::Serialize for MemoryWatermark {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MemoryWatermark::Off => s.serialize_u64(0),
            MemoryWatermark::Bytes(n) => s.serialize_u64(*n),
            MemoryWatermark::Percent(p) => s.serialize_str(&format!("{p}%")),
        }
    }
}

impl<'de> serde::Deserialize<'de> for MemoryWatermark {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = MemoryWatermark;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("0, a byte size such as \"12GiB\", or a percentage such as \"80%\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MemoryWatermark, E> {
                Ok(if v == 0 {
                    MemoryWatermark::Off
                } else {
                    MemoryWatermark::Bytes(v)
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MemoryWatermark, E> {
                let v = u64::try_from(v).map_err(|_| E::custom("cannot be negative"))?;
                self.visit_u64(v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MemoryWatermark, E> {
                MemoryWatermark::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{JwtAlgorithm, SlowConsumerPolicy};

    #[test]
    fn byte_sizes_take_units() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("64 kib"), Ok(64 << 10));
        assert_eq!(parse_bytes("12GiB"), Ok(12 << 30));
        assert_eq!(parse_bytes("4 MiB"), Ok(4 << 20));
        assert_eq!(parse_bytes("1MB"), Ok(1_000_000));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("-5").is_err());
        assert!(parse_bytes("").is_err());
    }

    #[test]
    fn enums_take_any_spelling() {
        for s in ["drop_oldest", "drop-oldest", "DROP_OLDEST", "DropOldest"] {
            assert_eq!(
                parse_enum::<SlowConsumerPolicy>(s),
                Ok(SlowConsumerPolicy::DropOldest),
                "{s}"
            );
        }
        for s in ["HS256", "hs256", "Hs256"] {
            assert_eq!(parse_enum::<JwtAlgorithm>(s), Ok(JwtAlgorithm::HS256));
        }
        let err = parse_enum::<SlowConsumerPolicy>("drop_newest").unwrap_err();
        assert!(err.contains("disconnect, drop_oldest"), "{err}");
    }

    #[test]
    fn a_watermark_is_off_bytes_or_a_share_of_the_limit() {
        assert_eq!(MemoryWatermark::parse("0"), Ok(MemoryWatermark::Off));
        assert_eq!(
            MemoryWatermark::parse("12GiB"),
            Ok(MemoryWatermark::Bytes(12 << 30))
        );
        assert_eq!(
            MemoryWatermark::parse("80%"),
            Ok(MemoryWatermark::Percent(80.0))
        );
        for bad in ["0%", "101%", "-5%", "lots"] {
            assert!(MemoryWatermark::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            MemoryWatermark::Percent(75.0).resolve(Some(4 << 30)),
            Some(3 << 30)
        );
        assert_eq!(MemoryWatermark::Percent(75.0).resolve(None), None);
        assert_eq!(MemoryWatermark::Bytes(5).resolve(None), Some(5));
        assert_eq!(MemoryWatermark::Off.resolve(Some(1)), None);
    }
}
