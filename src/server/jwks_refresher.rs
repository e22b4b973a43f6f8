//! Keeps the identity provider's key set current (`jwt_jwks_url`): fetches
//! at start, every `jwt_jwks_refresh`, and when a token named a `kid` the set
//! does not have, but never twice within `jwt_jwks_min_interval` (a flood of
//! made-up `kid`s costs the provider one request per interval). Until the
//! first fetch succeeds it retries every `jwt_jwks_min_interval` and
//! `/readyz` answers 503, so a load balancer sends clients elsewhere instead
//! of to a node that refuses every token.
//!
//! Owns the fetch schedule and its metrics; the keys and their parsing are
//! `auth::jwks`'s.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::jwks::{self, JwksKeys};
use crate::config::redacted_url;
use crate::metrics::Metrics;
use crate::protocol::JwksFetch;

pub struct Schedule {
    pub url: String,
    pub refresh: Duration,
    pub min_interval: Duration,
}

pub async fn run(
    keys: Arc<JwksKeys>,
    schedule: Schedule,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let shown = redacted_url(&schedule.url);
    let client = match jwks::client() {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(error = %err, "cannot build the JWKS client; tokens will be refused");
            return;
        }
    };
    let mut failing = false;
    loop {
        let started = Instant::now();
        let fetched = tokio::select! {
            _ = stop.cancelled() => return,
            fetched = jwks::fetch(&client, &schedule.url) => fetched,
        };
        match fetched {
            Ok(set) => {
                metrics.jwks_refreshes.increment(JwksFetch::Ok);
                metrics.jwks_keys.set(set.len() as f64);
                if failing || !keys.is_loaded() {
                    tracing::info!(url = %shown, keys = set.len(), "identity provider keys loaded");
                }
                keys.replace(set);
                failing = false;
            }
            Err(err) => {
                metrics.jwks_refreshes.increment(JwksFetch::Error);
                if !failing {
                    tracing::warn!(error = %err, url = %shown, "JWKS fetch failed; keeping the previous keys");
                }
                failing = true;
            }
        }
        let next = if keys.is_loaded() {
            schedule.refresh
        } else {
            schedule.min_interval
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
            _ = keys.refresh_wanted() => {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep_until(started + schedule.min_interval) => {}
                }
            }
        }
    }
}
