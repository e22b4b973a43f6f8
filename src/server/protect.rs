//! Tower layers in front of the HTTP API and the admin routes: a concurrency
//! limit with load shedding (excess requests get 503 + Retry-After at once
//! instead of queueing) and a per-request timeout (504). Counted in
//! `myriad_http_rejected_total{reason}`. WebSocket upgrades are not behind
//! these layers: admission control guards them.

use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use tower::{ServiceBuilder, ServiceExt};

use crate::metrics::Metrics;
use crate::protocol::HttpRejection;

/// Wrap `router` in load shedding at `concurrency` in-flight requests and a
/// `timeout` per request.
pub fn protect(
    router: Router,
    concurrency: usize,
    timeout: Duration,
    metrics: Arc<Metrics>,
) -> Router {
    let inner = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(concurrency)
        .timeout(timeout)
        .service(router);
    let service = tower::service_fn(move |req: Request| {
        let inner = inner.clone();
        let metrics = Arc::clone(&metrics);
        async move {
            match inner.oneshot(req).await {
                Ok(response) => Ok::<_, Infallible>(response),
                Err(err) => Ok(rejection(&err, &metrics)),
            }
        }
    });
    Router::new().fallback_service(service)
}

fn rejection(err: &BoxError, metrics: &Metrics) -> Response {
    if err.is::<tower::timeout::error::Elapsed>() {
        metrics.http_rejected.increment(HttpRejection::Timeout);
        (StatusCode::GATEWAY_TIMEOUT, "request timed out\n").into_response()
    } else if err.is::<tower::load_shed::error::Overloaded>() {
        metrics.http_rejected.increment(HttpRejection::Overloaded);
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "too many concurrent requests\n",
        )
            .into_response()
    } else {
        metrics.http_rejected.increment(HttpRejection::Error);
        (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response()
    }
}
