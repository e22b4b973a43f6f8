//! The checks serde cannot express: each names the key it is about. Runs at
//! load, before anything else sees the config. Reads no files (connect-token
//! keys are checked with the authenticator, by the binary).

use std::time::Duration;

use super::{BrokerKind, Config, ConfigError};

impl Config {
    /// Checks that serde cannot express: the first problem, or all of them
    /// as one error when there are several.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = self.problems();
        match problems.len() {
            0 => Ok(()),
            1 => Err(problems.remove(0)),
            _ => Err(ConfigError::Several(problems)),
        }
    }

    /// Every problem serde could not express, each naming its key; checks do
    /// not stop at the first, so `config check` can report them all at once.
    pub fn problems(&self) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        fn at_least_one(key: &'static str, v: usize) -> Result<(), ConfigError> {
            if v == 0 {
                return Err(ConfigError::Invalid {
                    key,
                    why: String::from("must be at least 1"),
                });
            }
            Ok(())
        }
        errs.extend(at_least_one("mailbox_capacity", self.mailbox_capacity).err());
        errs.extend(at_least_one("listen_backlog", self.listen_backlog as usize).err());
        errs.extend(at_least_one("presence_sync_rate", self.presence_sync_rate).err());
        if self.presence_sync_chunk_bytes < 4096 {
            errs.push(ConfigError::Invalid {
                key: "presence_sync_chunk_bytes",
                why: String::from("must be at least 4096"),
            });
        }
        errs.extend(at_least_one("broker_queue", self.broker_queue).err());
        if self.presence_batch_interval < Duration::from_millis(10)
            || self.presence_batch_interval > Duration::from_secs(10)
        {
            errs.push(ConfigError::Invalid {
                key: "presence_batch_interval",
                why: String::from("must be from 10ms to 10s"),
            });
        }
        if self.broker_timeout.is_zero() {
            errs.push(ConfigError::Invalid {
                key: "broker_timeout",
                why: String::from("must be above zero"),
            });
        }
        if self.cluster_heartbeat.is_zero() || self.cluster_node_timeout <= self.cluster_heartbeat {
            errs.push(ConfigError::Invalid {
                key: "cluster_node_timeout",
                why: String::from(
                    "must be longer than cluster_heartbeat, which must be above zero",
                ),
            });
        }
        errs.extend(at_least_one("mailbox_max_bytes", self.mailbox_max_bytes).err());
        errs.extend(at_least_one("max_message_size", self.max_message_size).err());
        errs.extend(at_least_one("max_frame_size", self.max_frame_size).err());
        errs.extend(at_least_one("read_buffer_size", self.read_buffer_size).err());
        errs.extend(at_least_one("max_topics_per_session", self.max_topics_per_session).err());
        errs.extend(at_least_one("max_topic_length", self.max_topic_length).err());
        errs.extend(at_least_one("max_event_length", self.max_event_length).err());
        errs.extend(at_least_one("max_ref_length", self.max_ref_length).err());
        errs.extend(at_least_one("max_payload_depth", self.max_payload_depth).err());
        errs.extend(at_least_one("presence_max_meta_bytes", self.presence_max_meta_bytes).err());
        errs.extend(at_least_one("presence_max_members", self.presence_max_members).err());
        errs.extend(at_least_one("history_max_topics", self.history_max_topics).err());
        errs.extend(at_least_one("admin_max_connections", self.admin_max_connections).err());
        errs.extend(at_least_one("http_concurrency_limit", self.http_concurrency_limit).err());
        if self.http_timeout.is_zero() {
            errs.push(ConfigError::Invalid {
                key: "http_timeout",
                why: String::from("must be greater than 0"),
            });
        }
        if self.accept_rate > 0 && self.accept_burst == 0 {
            errs.push(ConfigError::Invalid {
                key: "accept_burst",
                why: String::from("must be at least 1 when accept_rate is set"),
            });
        }
        if self.client_rate > 0 && self.client_burst == 0 {
            errs.push(ConfigError::Invalid {
                key: "client_burst",
                why: String::from("must be at least 1 when client_rate is set"),
            });
        }
        if self.handshake_timeout.is_zero() {
            errs.push(ConfigError::Invalid {
                key: "handshake_timeout",
                why: String::from("must be greater than 0"),
            });
        }
        if self.max_seconds == 0 {
            errs.push(ConfigError::Invalid {
                key: "max_seconds",
                why: String::from("must be at least 1 (the restart-intensity window in seconds)"),
            });
        }
        if self.max_frame_size > self.max_message_size {
            errs.push(ConfigError::Invalid {
                key: "max_frame_size",
                why: format!(
                    "{} exceeds max_message_size {}: a single frame can never be larger than the message",
                    self.max_frame_size, self.max_message_size
                ),
            });
        }
        for entry in &self.trusted_proxies {
            if let Err(why) = super::Cidr::parse(entry) {
                errs.push(ConfigError::Invalid {
                    key: "trusted_proxies",
                    why,
                });
            }
        }
        if self.cluster_replay_window < Duration::from_secs(1)
            || self.cluster_replay_window > Duration::from_secs(3600)
        {
            errs.push(ConfigError::Invalid {
                key: "cluster_replay_window",
                why: String::from("must be from 1s to 1h"),
            });
        }
        if self.revocation_ttl.is_zero() {
            errs.push(ConfigError::Invalid {
                key: "revocation_ttl",
                why: String::from("must be greater than 0"),
            });
        }
        if let Some(secret) = &self.cluster_secret {
            if secret.len() < 32 {
                errs.push(ConfigError::Invalid {
                    key: "cluster_secret",
                    why: format!("must be at least 32 bytes (it is {})", secret.len()),
                });
            }
        }
        if let Err(why) = self.resolved_broker_url() {
            errs.push(ConfigError::Invalid {
                key: "broker_url",
                why,
            });
        }
        errs.extend(self.check_broker_login().err());
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            errs.push(ConfigError::Invalid {
                key: "tls_cert_file",
                why: String::from("tls_cert_file and tls_key_file go together"),
            });
        }
        if let Some(url) = &self.advertise_url {
            let ok =
                (url.starts_with("http://") || url.starts_with("https://")) && url.len() <= 256;
            if !ok {
                errs.push(ConfigError::Invalid {
                    key: "advertise_url",
                    why: String::from(
                        "must be http://HOST:PORT or https://HOST:PORT (at most 256 bytes)",
                    ),
                });
            }
        }
        if self.longpoll_hold.is_zero() || self.longpoll_hold >= Duration::from_secs(20) {
            errs.push(ConfigError::Invalid {
                key: "longpoll_hold",
                why: String::from(
                    "must be from 1ms to under 20s (phoenix.js abandons a poll at 20 s)",
                ),
            });
        }
        if self.longpoll_max_body < 1024 {
            errs.push(ConfigError::Invalid {
                key: "longpoll_max_body",
                why: String::from("must be at least 1024 bytes"),
            });
        }
        if self.longpoll_window <= self.longpoll_hold {
            errs.push(ConfigError::Invalid {
                key: "longpoll_window",
                why: String::from("must be longer than longpoll_hold"),
            });
        }
        if self.admin_ui && self.api_keys.is_empty() {
            errs.push(ConfigError::Invalid {
                key: "admin_ui",
                why: String::from("the console logs in with an API key: set api_keys"),
            });
        }
        if self.admin_tls && self.tls_cert_file.is_none() {
            errs.push(ConfigError::Invalid {
                key: "admin_tls",
                why: String::from("needs tls_cert_file and tls_key_file"),
            });
        }
        errs.extend(self.check_jwks().err());
        if let Some(why) = self.hooks.problem() {
            errs.push(ConfigError::Invalid { key: "hooks", why });
        }
        if let Some(why) = self.webhooks.problem() {
            errs.push(ConfigError::Invalid {
                key: "webhooks",
                why,
            });
        }
        for (i, ns) in self.namespaces.iter().enumerate() {
            let problem = ns.problem();
            if let Some(why) = problem {
                errs.push(ConfigError::Invalid {
                    key: "namespaces",
                    why: format!("entry {} ({:?}): {why}", i + 1, ns.pattern),
                });
            }
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            errs.push(ConfigError::Invalid {
                key: "admin_listen",
                why: format!("must differ from listen ({})", self.listen),
            });
        }
        errs
    }

    /// A JWKS comes over TLS (plain HTTP only on loopback, for tests and
    /// sidecars) and replaces the static keys.
    fn check_jwks(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, why: String| ConfigError::Invalid { key, why };
        if self.jwt_jwks_refresh < Duration::from_secs(10) {
            return Err(invalid(
                "jwt_jwks_refresh",
                String::from("must be at least 10s"),
            ));
        }
        if self.jwt_jwks_min_interval < Duration::from_secs(1)
            || self.jwt_jwks_min_interval > self.jwt_jwks_refresh
        {
            return Err(invalid(
                "jwt_jwks_min_interval",
                String::from("must be from 1s to jwt_jwks_refresh"),
            ));
        }
        let Some(url) = &self.jwt_jwks_url else {
            return Ok(());
        };
        if self.jwt_secret.is_some() || self.jwt_public_key_file.is_some() {
            return Err(invalid(
                "jwt_jwks_url",
                String::from("set jwt_jwks_url or jwt_secret/jwt_public_key_file, not both"),
            ));
        }
        let host = |rest: &str| -> String {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = authority.rsplit('@').next().unwrap_or("");
            if let Some(v6) = host.strip_prefix('[') {
                return v6.split(']').next().unwrap_or("").to_owned();
            }
            host.split(':').next().unwrap_or("").to_owned()
        };
        let ok = if let Some(rest) = url.strip_prefix("https://") {
            !host(rest).is_empty()
        } else if let Some(rest) = url.strip_prefix("http://") {
            let h = host(rest);
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        } else {
            false
        };
        if !ok {
            return Err(invalid(
                "jwt_jwks_url",
                format!(
                    "{:?}: must be https://HOST/PATH (http:// only on loopback: keys \
                     fetched in the clear could be swapped on the way)",
                    redacted_url(url)
                ),
            ));
        }
        Ok(())
    }

    /// TLS files need a TLS URL; NATS logins need NATS and exclude each
    /// other and URL credentials.
    fn check_broker_login(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, why: &str| ConfigError::Invalid {
            key,
            why: why.to_owned(),
        };
        let url = self.broker_url.as_deref().unwrap_or("");
        let tls_url = [
            "rediss://",
            super::redis_url::TLS_SCHEME,
            super::redis_url::CLUSTER_TLS_SCHEME,
            "tls://",
        ]
        .iter()
        .any(|s| url.starts_with(s));
        let tls_keys = [
            ("broker_tls_ca", self.broker_tls_ca.is_some()),
            ("broker_tls_cert", self.broker_tls_cert.is_some()),
            ("broker_tls_key", self.broker_tls_key.is_some()),
        ];
        for (key, set) in tls_keys {
            if set && !tls_url {
                return Err(invalid(
                    key,
                    "needs a TLS broker_url (rediss://, rediss+sentinel://, rediss+cluster:// or tls://)",
                ));
            }
        }
        if self.broker_tls_cert.is_some() != self.broker_tls_key.is_some() {
            return Err(invalid(
                "broker_tls_cert",
                "broker_tls_cert and broker_tls_key go together",
            ));
        }
        let nats_keys = [
            ("broker_nats_creds", self.broker_nats_creds.is_some()),
            ("broker_nats_nkey", self.broker_nats_nkey.is_some()),
        ];
        for (key, set) in nats_keys {
            if set && self.broker != BrokerKind::Nats {
                return Err(invalid(key, "is for broker = \"nats\""));
            }
            if set && redacted_url(url) != url {
                return Err(invalid(
                    key,
                    "cannot be combined with credentials in broker_url",
                ));
            }
        }
        if self.broker_nats_creds.is_some() && self.broker_nats_nkey.is_some() {
            return Err(invalid(
                "broker_nats_nkey",
                "set broker_nats_creds or broker_nats_nkey, not both",
            ));
        }
        if let Some(seed) = &self.broker_nats_nkey {
            // A user seed; never quoted back (it is the secret).
            let ok = seed.len() == 58
                && seed.starts_with("SU")
                && seed
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            if !ok {
                return Err(invalid(
                    "broker_nats_nkey",
                    "is not a NATS user nkey seed (58 characters starting with SU)",
                ));
            }
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
                if super::redis_url::is_sentinel(&url) {
                    super::redis_url::SentinelUrl::parse(&url)
                        .map_err(|e| format!("{shown:?}: {e}"))?;
                    return Ok(Some(url));
                }
                if super::redis_url::is_cluster(&url) {
                    let cluster = super::redis_url::ClusterUrl::parse(&url)
                        .map_err(|e| format!("{shown:?}: {e}"))?;
                    for node in cluster.node_urls() {
                        redis::IntoConnectionInfo::into_connection_info(node.as_str())
                            .map_err(|e| format!("{shown:?}: {e}"))?;
                    }
                    return Ok(Some(url));
                }
                let scheme_ok = ["redis://", "rediss://", "redis+unix://", "unix://"]
                    .iter()
                    .any(|s| url.starts_with(s));
                if !scheme_ok {
                    return Err(format!(
                        "{shown:?}: the redis broker needs redis://HOST:PORT, rediss://HOST:PORT \
                         (TLS), unix://PATH, redis+sentinel://HOST:PORT[,HOST:PORT]/MASTER \
                         or redis+cluster://HOST:PORT[,HOST:PORT] (rediss+... for TLS)"
                    ));
                }
                redis::IntoConnectionInfo::into_connection_info(url.as_str())
                    .map_err(|e| format!("{shown:?}: {e}"))?;
            }
            BrokerKind::Nats => {
                if !url.starts_with("nats://") && !url.starts_with("tls://") {
                    return Err(format!(
                        "{shown:?}: the nats broker needs nats://HOST:PORT or tls://HOST:PORT"
                    ));
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
