//! Calls to the application's backend: the connect, refresh, join, publish
//! and rpc hooks (README "Your backend"). One pooled HTTP/1.1 client (keep-
//! alive), and for every call the same discipline:
//!
//! - a node-wide bound (`max_in_flight`): past it a call fails at once, so a
//!   slow backend costs a bounded number of waiting calls, never memory;
//! - per endpoint, `concurrency` calls at once (later ones wait, within the
//!   timeout) and a circuit breaker (`breaker`);
//! - one deadline for the whole call (`timeout`), retries only for calls that
//!   are safe to repeat, with exponential back-off and jitter;
//! - a unique request id (header `x-myriad-request-id`, and `id` in the body)
//!   for the backend to deduplicate, and a signature with `[hooks] secret`;
//! - the answer read up to `max_response_bytes` and parsed into the typed
//!   result of `schema`, or counted as garbage.
//!
//! Owns no session state: callers decide what an answer means for the client.

pub mod breaker;
pub mod schema;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::hooks::{HookEndpoint, HooksConfig};
use crate::config::{Config, NamespaceConfig};
use crate::metrics::Metrics;
use crate::protocol::{HookKind, HookResult};
use crate::webhooks::signature;
use breaker::{Breaker, Change};
use schema::{Answer, Denial};

/// Longest refusal reason passed on to a client.
pub const MAX_REASON_BYTES: usize = 256;

/// Why a call did not return a result.
#[derive(Debug, Clone, PartialEq)]
pub enum HookError {
    /// The backend answered with a refusal.
    Denied(Denial),
    /// No usable answer (timeout, error, garbage, breaker open, overloaded).
    Unavailable(HookResult),
}

/// One backend endpoint with its limits.
pub struct Endpoint {
    kind: HookKind,
    url: String,
    timeout: Duration,
    permits: Semaphore,
    breaker: Breaker,
}

impl Endpoint {
    fn new(kind: HookKind, ep: &HookEndpoint, defaults: &HooksConfig) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            kind,
            url: ep.url.clone(),
            timeout: ep.timeout.unwrap_or(defaults.timeout),
            permits: Semaphore::new(ep.concurrency.unwrap_or(defaults.concurrency)),
            breaker: Breaker::new(defaults.breaker_failures, defaults.breaker_cooldown),
        })
    }

    pub fn kind(&self) -> HookKind {
        self.kind
    }
}

/// A slot in the node-wide in-flight bound, held for a call's life.
pub struct InFlight {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.hooks.in_flight.decrement(1.0);
    }
}

/// The backend client of one node.
pub struct Hooks {
    client: reqwest::Client,
    node: Arc<str>,
    seq: AtomicU64,
    in_flight: Arc<Semaphore>,
    secret: Option<Vec<u8>>,
    metrics: Arc<Metrics>,
    retries: u32,
    max_response_bytes: usize,
    connect: Option<Arc<Endpoint>>,
    refresh: Option<Arc<Endpoint>>,
    /// (namespace pattern, hook) → endpoint.
    /// Namespace pattern → its join, publish and rpc endpoints (looked up by
    /// `&str` on every hooked frame: no key is built per lookup).
    namespaced: HashMap<String, [Option<Arc<Endpoint>>; 3]>,
    forward_headers: Vec<String>,
    max_pending_per_session: usize,
    refresh_retry: Duration,
}

impl Hooks {
    /// The client for `config`'s hooks; None when none is configured.
    pub fn new(
        config: &Config,
        node: &str,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Arc<Hooks>>, String> {
        let h = &config.hooks;
        let mut namespaced = HashMap::new();
        for ns in &config.namespaces {
            let hooks = [
                (HookKind::Join, &ns.join_hook),
                (HookKind::Publish, &ns.publish_hook),
                (HookKind::Rpc, &ns.rpc_hook),
            ];
            let endpoints =
                hooks.map(|(kind, ep)| ep.as_ref().map(|ep| Endpoint::new(kind, ep, h)));
            if endpoints.iter().any(Option::is_some) {
                namespaced.insert(ns.pattern.clone(), endpoints);
            }
        }
        if h.connect.is_none() && h.refresh.is_none() && namespaced.is_empty() {
            return Ok(None);
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .user_agent(concat!("myriad/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the hook client: {e}"))?;
        Ok(Some(Arc::new(Hooks {
            client,
            node: Arc::from(node),
            seq: AtomicU64::new(0),
            in_flight: Arc::new(Semaphore::new(h.max_in_flight)),
            secret: h.secret.as_ref().map(|s| s.as_bytes().to_vec()),
            metrics,
            retries: h.retries,
            max_response_bytes: h.max_response_bytes,
            connect: h
                .connect
                .as_ref()
                .map(|ep| Endpoint::new(HookKind::Connect, ep, h)),
            refresh: h
                .refresh
                .as_ref()
                .map(|ep| Endpoint::new(HookKind::Refresh, ep, h)),
            namespaced,
            forward_headers: h.forward_headers.clone(),
            max_pending_per_session: h.max_pending_per_session,
            refresh_retry: h.refresh_retry,
        })))
    }

    pub fn connect(&self) -> Option<&Arc<Endpoint>> {
        self.connect.as_ref()
    }

    pub fn refresh(&self) -> Option<&Arc<Endpoint>> {
        self.refresh.as_ref()
    }

    /// The namespace's endpoint for `kind` (join, publish or rpc).
    pub fn endpoint(&self, ns: &NamespaceConfig, kind: HookKind) -> Option<Arc<Endpoint>> {
        let slot = match kind {
            HookKind::Join => 0,
            HookKind::Publish => 1,
            HookKind::Rpc => 2,
            HookKind::Connect | HookKind::Refresh => return None,
        };
        self.namespaced.get(ns.pattern.as_str())?[slot].clone()
    }

    pub fn forward_headers(&self) -> &[String] {
        &self.forward_headers
    }

    pub fn max_pending_per_session(&self) -> usize {
        self.max_pending_per_session
    }

    pub fn refresh_retry(&self) -> Duration {
        self.refresh_retry
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// A request id unique across the cluster (node ids are).
    pub fn next_id(&self) -> String {
        format!(
            "{}-{}",
            self.node,
            self.seq.fetch_add(1, Ordering::Relaxed) + 1
        )
    }

    /// A slot for one call, or None when `max_in_flight` calls are out (the
    /// caller fails the call at once; counted as overloaded).
    pub fn admit(&self, kind: HookKind) -> Option<InFlight> {
        match Arc::clone(&self.in_flight).try_acquire_owned() {
            Ok(permit) => {
                self.metrics.hooks.in_flight.increment(1.0);
                Some(InFlight {
                    _permit: permit,
                    metrics: Arc::clone(&self.metrics),
                })
            }
            Err(_) => {
                self.metrics
                    .hooks
                    .record(kind, HookResult::Overloaded, Duration::ZERO);
                None
            }
        }
    }

    /// Call `ep` with `request`; `slot` is the caller's `admit`.
    pub async fn call<T: DeserializeOwned>(
        &self,
        ep: &Endpoint,
        _slot: InFlight,
        id: &str,
        request: &impl Serialize,
    ) -> Result<T, HookError> {
        let started = Instant::now();
        let result = self.call_once_admitted(ep, id, request, started).await;
        let label = match &result {
            Ok(_) => HookResult::Ok,
            Err(HookError::Denied(_)) => HookResult::Denied,
            Err(HookError::Unavailable(r)) => *r,
        };
        self.metrics.hooks.record(ep.kind, label, started.elapsed());
        result
    }

    async fn call_once_admitted<T: DeserializeOwned>(
        &self,
        ep: &Endpoint,
        id: &str,
        request: &impl Serialize,
        started: Instant,
    ) -> Result<T, HookError> {
        if !ep.breaker.allow(started) {
            return Err(HookError::Unavailable(HookResult::BreakerOpen));
        }
        let body = match serde_json::to_vec(request) {
            Ok(b) => b,
            // Plain data always serializes; a bug, reported as an error.
            Err(_) => return Err(HookError::Unavailable(HookResult::Error)),
        };
        let deadline = started + ep.timeout;
        let attempts = async {
            let _permit = ep.permits.acquire().await;
            let mut attempt = 0u32;
            loop {
                match self.attempt::<T>(ep, id, &body).await {
                    Err(Failure::Retryable(_))
                        if ep.kind.is_repeatable() && attempt < self.retries =>
                    {
                        attempt += 1;
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                    Err(Failure::Retryable(r)) | Err(Failure::Final(r)) => {
                        return Err(HookError::Unavailable(r))
                    }
                    Ok(answer) => return answer,
                }
            }
        };
        let result = match tokio::time::timeout_at(deadline, attempts).await {
            Ok(r) => r,
            Err(_) => Err(HookError::Unavailable(HookResult::Timeout)),
        };
        let change = match &result {
            Ok(_) | Err(HookError::Denied(_)) => ep.breaker.success(),
            Err(HookError::Unavailable(_)) => ep.breaker.failure(Instant::now()),
        };
        match change {
            Change::Opened => {
                self.metrics.hooks.breaker(ep.kind, true);
                tracing::warn!(hook = ep.kind.label(), url = %ep.url, "backend failing; hook breaker open");
            }
            Change::Closed => {
                self.metrics.hooks.breaker(ep.kind, false);
                tracing::info!(hook = ep.kind.label(), url = %ep.url, "backend answering again; hook breaker closed");
            }
            Change::None => {}
        }
        result
    }

    /// One HTTP exchange.
    async fn attempt<T: DeserializeOwned>(
        &self,
        ep: &Endpoint,
        id: &str,
        body: &[u8],
    ) -> Result<Result<T, HookError>, Failure> {
        let mut req = self
            .client
            .post(&ep.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-myriad-hook", ep.kind.label())
            .header("x-myriad-request-id", id)
            .body(body.to_vec());
        if let Some(secret) = &self.secret {
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            req = req.header(signature::HEADER, signature::sign(secret, t, body));
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(hook = ep.kind.label(), error = %e.without_url(), "hook call failed");
                return Err(Failure::Retryable(HookResult::Error));
            }
        };
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            tracing::debug!(
                hook = ep.kind.label(),
                status,
                "hook answered with an error status"
            );
            return Err(if matches!(status, 502..=504) {
                Failure::Retryable(HookResult::Error)
            } else {
                Failure::Final(HookResult::Error)
            });
        }
        let mut bytes = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > self.max_response_bytes {
                        return Err(Failure::Final(HookResult::Garbage));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) => return Err(Failure::Retryable(HookResult::Error)),
            }
        }
        match serde_json::from_slice::<Answer<T>>(&bytes) {
            Ok(Answer::Result(t)) => Ok(Ok(t)),
            Ok(Answer::Error(mut denial)) => {
                if denial.reason.len() > MAX_REASON_BYTES {
                    let cut = (0..=MAX_REASON_BYTES)
                        .rev()
                        .find(|i| denial.reason.is_char_boundary(*i))
                        .unwrap_or(0);
                    denial.reason.truncate(cut);
                }
                Ok(Err(HookError::Denied(denial)))
            }
            Err(e) => {
                tracing::debug!(hook = ep.kind.label(), error = %e, "hook answer is not the documented JSON");
                Err(Failure::Final(HookResult::Garbage))
            }
        }
    }
}

enum Failure {
    /// Worth another attempt if the call is repeatable.
    Retryable(HookResult),
    Final(HookResult),
}

/// 50 ms, 100 ms, 200 ms, ... (capped at 1 s), each with up to 50 % jitter.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(50u64 << attempt.saturating_sub(1).min(5))
        .min(Duration::from_secs(1));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    base + base.mul_f64(f64::from(nanos % 1000) / 2000.0)
}
