//! The admin console (`admin_ui = true`, admin listener only): a page and
//! script compiled into the binary (no CDN), and `/console/overview`, the one
//! figure set the page polls: this node and the other live nodes (sessions,
//! topics, memory, broker state), and the busiest topics here. Everything
//! else the page does goes through the HTTP API (presence, history,
//! broadcast, disconnect) with the key it logged in with.
//!
//! Never serves without an API key, and never on the public listener.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::api::require_key;
use super::AppState;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
/// Topics listed as the busiest.
const BUSIEST: usize = 20;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/console", get(|| async { page("text/html", INDEX) }))
        .route(
            "/console/console.js",
            get(|| async { page("text/javascript", SCRIPT) }),
        )
        .route(
            "/console/overview",
            // The API's key check, with its per-address throttle on wrong
            // keys: the console must not be a way around it.
            get(overview).route_layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                require_key,
            )),
        )
        .with_state(state)
}

fn page(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, format!("{kind}; charset=utf-8")),
            // The page runs only its own script and talks only to this listener.
            (
                header::CONTENT_SECURITY_POLICY,
                String::from("default-src 'self'; style-src 'self' 'unsafe-inline'"),
            ),
        ],
        body,
    )
        .into_response()
}

#[derive(Serialize)]
struct NodeRow {
    node: String,
    this: bool,
    sessions: u64,
    topics: u64,
    memory: u64,
    draining: bool,
    /// "local" (no cluster broker), "connected" or "disconnected"; other
    /// nodes are listed only while heard from, so connected.
    broker: &'static str,
}

#[derive(Serialize)]
struct TopicRow {
    topic: String,
    members: usize,
    broadcasts: u64,
}

#[derive(Serialize)]
struct Overview {
    nodes: Vec<NodeRow>,
    /// Broadcasts delivered here so far (the page derives messages/s).
    broadcasts: u64,
    topics: Vec<TopicRow>,
    broker: &'static str,
}

/// Behind `require_key` (see `router`).
async fn overview(State(state): State<Arc<AppState>>) -> Response {
    let node = &state.node;
    // The same figures this node sends the others (`AppState::new` says how
    // to read them).
    let own = node.own_figures().unwrap_or_default();
    let mut nodes = vec![NodeRow {
        node: node.node_id().unwrap_or_else(|| String::from("local")),
        this: true,
        sessions: own.sessions,
        topics: own.topics,
        memory: own.memory,
        draining: own.draining,
        broker: match (state.config.broker, node.is_ready()) {
            (crate::config::BrokerKind::Local, _) => "local",
            (_, true) => "connected",
            (_, false) => "disconnected",
        },
    }];
    nodes.extend(node.peer_figures().into_iter().map(|(id, f)| NodeRow {
        node: id,
        this: false,
        sessions: f.sessions,
        topics: f.topics,
        memory: f.memory,
        draining: f.draining,
        broker: "connected",
    }));
    let topics = node
        .busiest_topics(BUSIEST)
        .into_iter()
        .map(|t| TopicRow {
            topic: t.topic.to_string(),
            members: t.members,
            broadcasts: t.broadcasts,
        })
        .collect();
    Json(Overview {
        nodes,
        broadcasts: node.broadcasts_delivered(),
        topics,
        broker: match state.config.broker {
            crate::config::BrokerKind::Local => "local",
            crate::config::BrokerKind::Redis => "redis",
            crate::config::BrokerKind::Nats => "nats",
        },
    })
    .into_response()
}
