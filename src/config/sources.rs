//! `myriad config print`: the effective configuration, each key with the
//! layer its value came from (default, file, environment variable, flag) and
//! every secret redacted.
//!
//! This module only explains a loaded configuration; it never decides a
//! value (config::mod layers them) and never prints a secret.

use std::fmt::Write as _;

use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};

use super::{keys, redacted_url, Config};

/// The names the layers go by in `config print`.
pub const DEFAULTS: &str = "default";
pub const FLAGS: &str = "flag";

/// A provider under a name of our choosing (figment names every serialized
/// provider alike, so defaults and flags could not be told apart).
pub struct Labeled<P> {
    pub inner: P,
    pub name: &'static str,
}

impl<P: Provider> Provider for Labeled<P> {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.inner.data()
    }
}

/// Keys whose values are secrets wherever they appear (top level or inside
/// `[hooks]` / `[webhooks]`).
const SECRET_KEYS: [&str; 5] = [
    "jwt_secret",
    "cluster_secret",
    "api_keys",
    "broker_nats_nkey",
    "secret",
];

/// Where `key`'s value came from, in words.
fn source_of(fig: &Figment, key: &str) -> String {
    let Some(meta) = fig.find_metadata(key) else {
        return String::from(DEFAULTS);
    };
    let name = meta.name.as_ref();
    if name == DEFAULTS || name == FLAGS {
        return if name == FLAGS {
            format!("flag --{}", key.replace('_', "-"))
        } else {
            name.to_owned()
        };
    }
    if name.contains("environment") {
        return format!("env {}{}", keys::ENV_PREFIX, key.to_ascii_uppercase());
    }
    match &meta.source {
        Some(src) => format!("file {src}"),
        None => name.to_owned(),
    }
}

/// Replace secrets by a marker and credentials in URLs by `***`.
fn redact(key: &str, value: &mut toml::Value) {
    if SECRET_KEYS.contains(&key) {
        match value {
            toml::Value::Array(items) => {
                for item in items.iter_mut() {
                    *item = toml::Value::String(String::from("<redacted>"));
                }
            }
            other => *other = toml::Value::String(String::from("<redacted>")),
        }
        return;
    }
    match value {
        toml::Value::String(s) if key.ends_with("url") => *s = redacted_url(s),
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                redact(k, v);
            }
        }
        toml::Value::Array(items) => {
            for item in items.iter_mut() {
                redact(key, item);
            }
        }
        _ => {}
    }
}

/// The effective configuration as TOML, every key annotated with its
/// source; secrets redacted; unset optional keys listed as comments.
pub fn render(config: &Config, fig: &Figment) -> String {
    let mut out = String::from(
        "# The configuration in effect (defaults < file < MYRIAD_* env < flags); secrets redacted.\n",
    );
    let table = match toml::Value::try_from(config) {
        Ok(toml::Value::Table(t)) => t,
        _ => return out,
    };
    let mut nested = String::new();
    for key in keys::known() {
        let source = source_of(fig, &key);
        let Some(value) = table.get(&key) else {
            let _ = writeln!(out, "# {key} is not set  # {source}");
            continue;
        };
        let mut value = value.clone();
        redact(&key, &mut value);
        let is_table = matches!(value, toml::Value::Table(_))
            || matches!(&value, toml::Value::Array(a) if a.iter().any(|v| v.is_table()));
        if is_table {
            let mut one = toml::map::Map::new();
            one.insert(key.clone(), value);
            let _ = writeln!(nested, "\n# {key}: {source}");
            nested.push_str(&toml::to_string(&one).unwrap_or_default());
        } else {
            let _ = writeln!(out, "{key} = {value}  # {source}");
        }
    }
    out.push_str(&nested);
    out
}
