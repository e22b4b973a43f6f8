//! The checks serde cannot express: each names the key it is about. Runs at
//! load, before anything else sees the config. Reads no files (connect-token
//! keys are checked with the authenticator, by the binary).

use std::time::Duration;

use super::{BrokerKind, Config, ConfigError};

impl Config {
    /// Checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn at_least_one(key: &'static str, v: usize) -> Result<(), ConfigError> {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    why: String::from("must be at least 1"),
                });
            }
            Ok(())
        }
        at_least_one("mailbox_capacity", self.mailbox_capacity)?;
        at_least_one("broker_queue", self.broker_queue)?;
        if self.cluster_heartbeat.is_zero() || self.cluster_node_timeout <= self.cluster_heartbeat {
            return Err(ConfigError::Invalid {
                key: "cluster_node_timeout",
                why: String::from(
                    "must be longer than cluster_heartbeat, which must be above zero",
                ),
            });
        }
        at_least_one("mailbox_max_bytes", self.mailbox_max_bytes)?;
        at_least_one("max_message_size", self.max_message_size)?;
        at_least_one("max_frame_size", self.max_frame_size)?;
        at_least_one("read_buffer_size", self.read_buffer_size)?;
        at_least_one("max_topics_per_session", self.max_topics_per_session)?;
        at_least_one("max_topic_length", self.max_topic_length)?;
        at_least_one("max_event_length", self.max_event_length)?;
        at_least_one("max_ref_length", self.max_ref_length)?;
        at_least_one("max_payload_depth", self.max_payload_depth)?;
        at_least_one("presence_max_meta_bytes", self.presence_max_meta_bytes)?;
        at_least_one("presence_max_members", self.presence_max_members)?;
        at_least_one("history_max_topics", self.history_max_topics)?;
        at_least_one("admin_max_connections", self.admin_max_connections)?;
        at_least_one("http_concurrency_limit", self.http_concurrency_limit)?;
        if self.http_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                key: "http_timeout",
                why: String::from("must be greater than 0"),
            });
        }
        if self.accept_rate > 0 && self.accept_burst == 0 {
            return Err(ConfigError::Invalid {
                key: "accept_burst",
                why: String::from("must be at least 1 when accept_rate is set"),
            });
        }
        if self.client_rate > 0 && self.client_burst == 0 {
            return Err(ConfigError::Invalid {
                key: "client_burst",
                why: String::from("must be at least 1 when client_rate is set"),
            });
        }
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                key: "handshake_timeout",
                why: String::from("must be greater than 0"),
            });
        }
        if self.max_seconds == 0 {
            return Err(ConfigError::Invalid {
                key: "max_seconds",
                why: String::from("must be at least 1 (the restart-intensity window in seconds)"),
            });
        }
        if self.max_frame_size > self.max_message_size {
            return Err(ConfigError::Invalid {
                key: "max_frame_size",
                why: format!(
                    "{} exceeds max_message_size {}: a single frame can never be larger than the message",
                    self.max_frame_size, self.max_message_size
                ),
            });
        }
        for entry in &self.trusted_proxies {
            if let Err(why) = super::Cidr::parse(entry) {
                return Err(ConfigError::Invalid {
                    key: "trusted_proxies",
                    why,
                });
            }
        }
        if self.cluster_replay_window < Duration::from_secs(1)
            || self.cluster_replay_window > Duration::from_secs(3600)
        {
            return Err(ConfigError::Invalid {
                key: "cluster_replay_window",
                why: String::from("must be from 1s to 1h"),
            });
        }
        if self.revocation_ttl.is_zero() {
            return Err(ConfigError::Invalid {
                key: "revocation_ttl",
                why: String::from("must be greater than 0"),
            });
        }
        if let Some(secret) = &self.cluster_secret {
            if secret.len() < 32 {
                return Err(ConfigError::Invalid {
                    key: "cluster_secret",
                    why: format!("must be at least 32 bytes (it is {})", secret.len()),
                });
            }
        }
        if let Err(why) = self.resolved_broker_url() {
            return Err(ConfigError::Invalid {
                key: "broker_url",
                why,
            });
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            let problem = ns.problem();
            if let Some(why) = problem {
                return Err(ConfigError::Invalid {
                    key: "namespaces",
                    why: format!("entry {} ({:?}): {why}", i + 1, ns.pattern),
                });
            }
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            return Err(ConfigError::Invalid {
                key: "admin_listen",
                why: format!("must differ from listen ({})", self.listen),
            });
        }
        Ok(())
    }

    /// The broker URL to use: `broker_url`, or the broker's default address;
    /// None for the local broker. Err says why the URL does not suit the broker.
    pub fn resolved_broker_url(&self) -> Result<Option<String>, String> {
        let default_url = match self.broker {
            BrokerKind::Local => return Ok(None),
            BrokerKind::Redis => "redis://127.0.0.1:6379",
            BrokerKind::Nats => "nats://127.0.0.1:4222",
        };
        let url = self
            .broker_url
            .clone()
            .unwrap_or_else(|| default_url.to_string());
        // Messages quote the URL without its credentials.
        let shown = redacted_url(&url);
        match self.broker {
            BrokerKind::Redis => {
                if url.starts_with("rediss://") {
                    return Err(format!(
                        "{shown:?}: TLS to Redis (rediss://) is not supported yet; use redis:// \
                         (through a TLS tunnel if needed)"
                    ));
                }
                let scheme_ok = ["redis://", "redis+unix://", "unix://"]
                    .iter()
                    .any(|s| url.starts_with(s));
                if !scheme_ok {
                    return Err(format!(
                        "{shown:?}: the redis broker needs redis://HOST:PORT (or unix://PATH)"
                    ));
                }
                redis::IntoConnectionInfo::into_connection_info(url.as_str())
                    .map_err(|e| format!("{shown:?}: {e}"))?;
            }
            BrokerKind::Nats => {
                if !url.starts_with("nats://") && !url.starts_with("tls://") {
                    return Err(format!("{shown:?}: the nats broker needs nats://HOST:PORT"));
                }
            }
            BrokerKind::Local => {}
        }
        Ok(Some(url))
    }
}

/// `url` with any `user:password@` or `token@` replaced by `***@`, for error
/// messages and logs.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}
