//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process is
//! alive), `/readyz` (503 while draining, overloaded, cut off from a
//! required broker, or before the identity provider's keys are loaded), and
//! with `admin_ui` the console (`/console`) and the HTTP API it calls. Never
//! serves WebSockets.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;

pub fn router(state: Arc<AppState>) -> Router {
    let base = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Arc::clone(&state));
    if !state.config.admin_ui {
        return base;
    }
    // The console and the API it calls (same keys) on the admin listener.
    base.merge(super::console::router(Arc::clone(&state)))
        .merge(super::api::router(state))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    state.metrics.topics.set(state.node.topic_count() as f64);
    state
        .metrics
        .history_bytes
        .set(state.node.history_bytes() as f64);
    state
        .metrics
        .history_unstored
        .absolute(state.node.history_unstored());
    state
        .metrics
        .history_gaps
        .absolute(state.node.history_gaps());
    state
        .metrics
        .fanout_splits
        .absolute(state.node.fanout_splits());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if state.config.broker_required && !state.node.is_ready() {
        // broker_required: a node cut off from the cluster sends clients elsewhere.
        (StatusCode::SERVICE_UNAVAILABLE, "broker unreachable\n")
    } else if state.auth.jwks().is_some_and(|keys| !keys.is_loaded()) {
        // jwt_jwks_url: every token would be refused until the keys arrive.
        (StatusCode::SERVICE_UNAVAILABLE, "token keys not loaded\n")
    } else if state.admission.overloaded() {
        // At the connection cap or over the memory watermark: send new
        // clients elsewhere; existing sessions are untouched.
        (StatusCode::SERVICE_UNAVAILABLE, "overloaded\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}
