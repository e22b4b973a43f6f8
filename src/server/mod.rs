//! The listeners (public and admin), the HTTP routers, and graceful shutdown.
//!
//! `run` takes bound listeners and a shutdown future, so tests start a server on
//! port 0 and stop it with their own signal. Shutdown order: stop accepting,
//! `/readyz` answers 503, every session gets close 1001, wait for sessions up to
//! `drain_timeout`, then stop the admin listener and return.

mod accept;
mod admin;
pub mod api;
mod chat;
pub mod protect;
mod upgrade;

pub use upgrade::spawn_stream_session;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::auth::Authenticator;
use crate::channel::ChannelRouter;
use crate::config::Config;
use crate::history::History;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::pubsub::broker::local::LocalBroker;
use crate::pubsub::{Broker, Topics};
use crate::registry::Registry;
use crate::supervisor::Supervisor;

/// Everything the routes share; one per server.
pub struct AppState {
    pub config: Arc<Config>,
    pub admission: Arc<Admission>,
    pub auth: Authenticator,
    pub metrics: Arc<Metrics>,
    pub topics: Arc<Topics>,
    pub supervisor: Arc<Supervisor>,
    pub registry: Arc<Registry>,
}

/// Build the configured broker; cluster brokers start their link task here
/// (in the background: a node starts, and serves, while the broker is away).
fn broker_for(
    config: &Config,
    metrics: &Arc<Metrics>,
    presence: &Arc<Presence>,
    history: &Arc<History>,
) -> Result<Arc<dyn Broker>, ServerError> {
    use crate::config::BrokerKind;
    use crate::pubsub::broker::cluster::{ClusterBroker, ClusterTiming};
    use crate::pubsub::broker::{nats, redis};
    let default_url = match config.broker {
        BrokerKind::Local => return Ok(Arc::new(LocalBroker::new(Arc::clone(metrics)))),
        BrokerKind::Redis => "redis://127.0.0.1:6379",
        BrokerKind::Nats => "nats://127.0.0.1:4222",
    };
    let url = config
        .broker_url
        .clone()
        .unwrap_or_else(|| default_url.to_string());
    let (broker, parts) = ClusterBroker::new(
        Arc::clone(metrics),
        Arc::clone(presence),
        Arc::clone(history),
        ChannelRouter::new(config),
        config.broker == BrokerKind::Redis,
        ClusterTiming {
            heartbeat: config.cluster_heartbeat,
            node_timeout: config.cluster_node_timeout,
        },
        config.broker_queue,
    );
    match config.broker {
        BrokerKind::Redis => {
            ::redis::Client::open(url.as_str())
                .map_err(|e| ServerError::Broker(format!("broker_url {url:?}: {e}")))?;
            tokio::spawn(redis::run(url, parts));
        }
        BrokerKind::Nats => {
            if !url.starts_with("nats://") && !url.starts_with("tls://") {
                return Err(ServerError::Broker(format!(
                    "broker_url {url:?}: expected nats://HOST:PORT"
                )));
            }
            tokio::spawn(nats::run(url, parts));
        }
        BrokerKind::Local => {}
    }
    Ok(Arc::new(broker))
}

impl AppState {
    pub fn new(config: Arc<Config>) -> Result<Arc<AppState>, ServerError> {
        let auth = Authenticator::new(&config).map_err(ServerError::Auth)?;
        let metrics = Metrics::new();
        let presence = Arc::new(Presence::new());
        let history = Arc::new(History::new(config.history_max_bytes));
        let broker = broker_for(&config, &metrics, &presence, &history)?;
        Ok(Arc::new(AppState {
            admission: Admission::new(&config),
            auth,
            topics: Arc::new(Topics::new(
                ChannelRouter::new(&config),
                broker,
                presence,
                history,
            )),
            supervisor: Arc::new(Supervisor::new(Arc::clone(&metrics))),
            registry: Arc::new(Registry::new()),
            metrics,
            config,
        }))
    }

    pub fn is_draining(&self) -> bool {
        self.supervisor.is_draining()
    }
}

/// The two bound sockets.
pub struct Listeners {
    pub public: TcpListener,
    pub admin: TcpListener,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("auth configuration: {0}")]
    Auth(String),
    #[error("broker configuration: {0}")]
    Broker(String),
    #[error("cannot bind {what} listener on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{what} listener failed: {source}")]
    Serve {
        what: &'static str,
        source: std::io::Error,
    },
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Listeners, ServerError> {
        let public =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    what: "public",
                    addr: config.listen,
                    source,
                })?;
        let admin = TcpListener::bind(config.admin_listen)
            .await
            .map_err(|source| ServerError::Bind {
                what: "admin",
                addr: config.admin_listen,
                source,
            })?;
        Ok(Listeners { public, admin })
    }

    pub fn public_addr(&self) -> Option<SocketAddr> {
        self.public.local_addr().ok()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.local_addr().ok()
    }
}

/// The public router: WebSocket endpoints.
pub fn public_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/socket/websocket", get(upgrade::phoenix))
        .route("/ws/echo", get(upgrade::echo))
        .with_state(Arc::clone(&state))
        .merge(protect::protect(
            api::router(Arc::clone(&state)),
            state.config.http_concurrency_limit,
            state.config.http_timeout,
            Arc::clone(&state.metrics),
        ))
        .merge(chat::router())
}

/// Serve until `shutdown` resolves, then drain. Returns once sessions are gone
/// or `drain_timeout` has passed.
pub async fn run(
    listeners: Listeners,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let config = Arc::clone(&state.config);
    let stop_accepting = CancellationToken::new();
    let stop_admin = CancellationToken::new();

    let public = {
        let router = public_router(Arc::clone(&state));
        let stop = stop_accepting.clone();
        let metrics = Arc::clone(&state.metrics);
        let opts = accept::ConnOptions {
            handshake_timeout: config.handshake_timeout,
            send_buffer: config.socket_send_buffer,
        };
        tokio::spawn(async move {
            accept::serve(listeners.public, router, opts, metrics, stop).await;
            Ok::<(), std::io::Error>(())
        })
    };
    let admin = {
        let app = protect::protect(
            admin::router(Arc::clone(&state)),
            config.http_concurrency_limit,
            config.http_timeout,
            Arc::clone(&state.metrics),
        );
        let stop = stop_admin.clone();
        tokio::spawn(async move {
            axum::serve(listeners.admin, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        })
    };
    let upkeep = {
        let metrics = Arc::clone(&state.metrics);
        let topics = Arc::clone(&state.topics);
        let stop = stop_admin.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {
                        metrics.upkeep();
                        topics.sweep_history();
                    }
                }
            }
        })
    };

    // A public listener that dies before shutdown is fatal: drain and report it.
    tokio::pin!(public);
    let mut public_done = None;
    tokio::select! {
        _ = shutdown => {}
        result = &mut public => public_done = Some(result),
    }

    tracing::info!(
        sessions = state.registry.len(),
        "shutdown requested; draining"
    );
    state.metrics.draining.set(1.0);
    stop_accepting.cancel();
    let graceful = state.supervisor.drain(config.drain_timeout).await;
    if graceful {
        tracing::info!("all sessions closed");
    } else {
        tracing::warn!(
            remaining = state.supervisor.live_sessions(),
            "drain timeout passed; remaining sessions stopped"
        );
    }
    let public_result = match public_done {
        Some(result) => listener_result(result, "public"),
        None => wait_listener(public, "public").await,
    };
    stop_admin.cancel();
    let admin_result = wait_listener(admin, "admin").await;
    let _ = upkeep.await;
    public_result.and(admin_result)
}

type ListenerTask = tokio::task::JoinHandle<std::io::Result<()>>;

async fn wait_listener(
    task: impl Future<Output = <ListenerTask as Future>::Output>,
    what: &'static str,
) -> Result<(), ServerError> {
    // Keep-alive HTTP connections get a moment to finish; then stop waiting.
    match tokio::time::timeout(Duration::from_secs(2), task).await {
        Ok(result) => listener_result(result, what),
        Err(_) => Ok(()),
    }
}

fn listener_result(
    result: <ListenerTask as Future>::Output,
    what: &'static str,
) -> Result<(), ServerError> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(ServerError::Serve { what, source }),
        Err(join) => Err(ServerError::Serve {
            what,
            source: std::io::Error::other(join.to_string()),
        }),
    }
}
