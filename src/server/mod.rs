//! The listeners (public and admin), the HTTP routers, and graceful shutdown.
//!
//! `run` takes bound listeners and a shutdown future, so tests start a server on
//! port 0 and stop it with their own signal. Shutdown order: stop accepting,
//! `/readyz` answers 503, every session gets close 1001, wait for sessions up to
//! `drain_timeout`, then stop the admin listener and return.

mod accept;
mod admin;
pub mod api;
pub mod api_body;
mod api_throttle;
mod chat;
pub mod client_addr;
mod connect_hook;
mod console;
pub mod fd_limit;
mod jwks_refresher;
mod listener;
mod longpoll;
pub mod protect;
mod proxy_protocol;
mod sse;
pub mod tls;
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
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::auth::Authenticator;
use crate::config::{BrokerKind, Config};
use crate::hooks::Hooks;
use crate::metrics::Metrics;
use crate::protocol::CloseReason;
use crate::pubsub::broker::link::{ClusterBroker, LinkOptions};
use crate::pubsub::broker::local::LocalBroker;
use crate::pubsub::broker::security::LinkSecurity;
use crate::pubsub::broker::{nats, redis, Broker, BrokerHandler};
use crate::pubsub::Node;
use crate::registry::Registry;
use crate::supervisor::Supervisor;
use crate::webhooks::Webhooks;

/// Everything the routes share; one per server.
pub struct AppState {
    pub config: Arc<Config>,
    pub admission: Arc<Admission>,
    pub auth: Authenticator,
    /// Calls to the application's backend; None without hooks.
    pub hooks: Option<Arc<Hooks>>,
    /// Events for the application's backend; None without `[webhooks]`.
    pub webhooks: Option<Arc<Webhooks>>,
    /// This node's long-poll sessions.
    pub longpoll: longpoll::Sessions,
    pub metrics: Arc<Metrics>,
    pub node: Arc<Node>,
    pub supervisor: Arc<Supervisor>,
    pub registry: Arc<Registry>,
    /// The server's own background tasks (broker link, cluster heartbeat,
    /// upkeep); stopped after the sessions on shutdown.
    pub background: Background,
    /// `trusted_proxies`, parsed once.
    pub trusted_proxies: Vec<crate::config::Cidr>,
    /// Addresses sending wrong API keys.
    api_throttle: api_throttle::ApiThrottle,
}

/// Background tasks owned by the server: each watches `stop` and ends when it
/// is cancelled; `run` cancels it after draining and waits on the tracker.
#[derive(Clone, Default)]
pub struct Background {
    pub tracker: TaskTracker,
    pub stop: CancellationToken,
}

impl Background {
    /// Stop every background task and wait (at most `within`) for them.
    pub async fn shutdown(&self, within: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        tokio::time::timeout(within, self.tracker.wait())
            .await
            .is_ok()
    }
}

/// Big topics' merged presence diffs go out every `presence_batch_interval`
/// (any broker: a single node coalesces too).
fn spawn_presence_flusher(config: &Config, node: &Arc<Node>, background: &Background) {
    if config.presence_batch_members == 0 {
        return;
    }
    let flusher = Arc::clone(node);
    let stop = background.stop.clone();
    let every = config.presence_batch_interval;
    background.tracker.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => flusher.flush_presence_diffs(),
            }
        }
    });
}

/// The node with its configured broker; cluster brokers' link tasks and the
/// heartbeat start on `background` (a node starts, and serves, while the
/// broker is away).
fn node_for(
    config: &Config,
    metrics: &Arc<Metrics>,
    background: &Background,
) -> Result<Arc<Node>, ServerError> {
    let url = config
        .resolved_broker_url()
        .map_err(|why| ServerError::Broker(format!("broker_url {why}")))?;
    let (Some(url), true) = (url, config.broker != BrokerKind::Local) else {
        return Ok(Arc::new(Node::new(
            config,
            Arc::clone(metrics),
            Arc::new(LocalBroker),
        )));
    };
    let security = LinkSecurity::load(config)
        .map_err(|why| ServerError::Broker(format!("broker security: {why}")))?;
    use crate::config::webhooks::WebhookEvent;
    let channel_webhooks = config.webhooks.wants(WebhookEvent::ChannelOccupied)
        || config.webhooks.wants(WebhookEvent::ChannelVacated);
    // Cluster-wide occupancy's scripts touch keys in many slots, which a
    // Redis Cluster refuses: each node then reports its own.
    let redis_cluster = crate::config::redis_url::is_cluster(&url);
    if channel_webhooks && redis_cluster {
        tracing::warn!(
            "channel_occupied/channel_vacated are reported by each node under Redis Cluster \
             (once per node, not once per cluster)"
        );
    }
    let (broker, link) = ClusterBroker::new(
        Arc::clone(metrics),
        LinkOptions {
            sequences_history: config.broker == BrokerKind::Redis,
            queue: config.broker_queue,
            secret: config.cluster_secret.as_deref(),
            replay_window: config.cluster_replay_window,
            // The liveness key only matters when nobody saw a node die (the
            // whole cluster restarted): generous, so a loaded node that
            // misses a few heartbeats is not dropped from its channels.
            occupancy: (channel_webhooks && !redis_cluster)
                .then_some((config.cluster_node_timeout * 3).max(Duration::from_secs(30))),
            timeout: config.broker_timeout,
        },
    );
    let broker: Arc<dyn Broker> = Arc::new(broker);
    let node = Arc::new(Node::new(config, Arc::clone(metrics), broker));
    let handler: Arc<dyn BrokerHandler> = Arc::clone(&node) as Arc<dyn BrokerHandler>;
    let parts = link.into_parts(handler, background.stop.clone());
    match config.broker {
        BrokerKind::Redis => {
            background.tracker.spawn(redis::run(url, security, parts));
        }
        BrokerKind::Nats => {
            background.tracker.spawn(nats::run(url, security, parts));
        }
        BrokerKind::Local => {}
    }
    let ticker = Arc::clone(&node);
    let stop = background.stop.clone();
    background.tracker.spawn(async move {
        let mut beat = tokio::time::interval(ticker.heartbeat_interval());
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = beat.tick() => ticker.cluster_tick(),
            }
        }
    });
    Ok(node)
}

/// One info line for the sessions opened and closed since the last one
/// (nothing when nothing happened).
fn log_session_summary(metrics: &Metrics, every: Duration) {
    let (opened, closed) = metrics.session_tally.take();
    if opened == 0 && closed.is_empty() {
        return;
    }
    let total: u64 = closed.iter().map(|(_, n)| n).sum();
    let by_reason = closed
        .iter()
        .map(|(r, n)| format!("{r}={n}"))
        .collect::<Vec<_>>()
        .join(" ");
    tracing::info!(opened, closed = total, reasons = %by_reason, over = ?every, "sessions");
}

/// An id for this process when it has no cluster node id (request ids must
/// not repeat across restarts: backends deduplicate by them).
fn process_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}-{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

impl AppState {
    pub fn new(config: Arc<Config>) -> Result<Arc<AppState>, ServerError> {
        let metrics = Metrics::new();
        let background = Background::default();
        let node = node_for(&config, &metrics, &background)?;
        spawn_presence_flusher(&config, &node, &background);
        let auth = Authenticator::new(&config, Arc::clone(node.revocations()))
            .map_err(ServerError::Auth)?;
        if let (Some(keys), Some(url)) = (auth.jwks(), &config.jwt_jwks_url) {
            let schedule = jwks_refresher::Schedule {
                url: url.clone(),
                refresh: config.jwt_jwks_refresh,
                min_interval: config.jwt_jwks_min_interval,
            };
            background.tracker.spawn(jwks_refresher::run(
                Arc::clone(keys),
                schedule,
                Arc::clone(&metrics),
                background.stop.clone(),
            ));
        }
        let hooks_node = node.id().map_or_else(process_tag, |id| id.to_owned());
        let hooks =
            Hooks::new(&config, &hooks_node, Arc::clone(&metrics)).map_err(ServerError::Auth)?;
        let webhooks = match Webhooks::new(&config.webhooks, &hooks_node, Arc::clone(&metrics))
            .map_err(|e| ServerError::Auth(e.to_string()))?
        {
            Some((webhooks, sender)) => {
                node.set_webhooks(Arc::clone(&webhooks));
                background
                    .tracker
                    .spawn(sender.run(background.stop.clone(), config.drain_timeout));
                Some(webhooks)
            }
            None => None,
        };
        let registry = Arc::new(Registry::new());
        {
            // A revocation from any node closes this node's sessions of the user.
            let registry = Arc::clone(&registry);
            node.set_on_revoked(move |user| registry.close_user(user, CloseReason::Disconnected));
        }
        let admission = Admission::new(&config);
        metrics
            .memory_watermark
            .set(admission.watermark_bytes() as f64);
        if config.memory_high_watermark != crate::config::units::MemoryWatermark::Off
            && admission.watermark_bytes() == 0
        {
            tracing::warn!(
                "memory_high_watermark is a percentage but no memory limit could be read: the watermark is off"
            );
        }
        let state = Arc::new(AppState {
            admission,
            auth,
            hooks,
            webhooks,
            longpoll: longpoll::Sessions::new(&hooks_node)
                .map_err(|e| ServerError::Randomness(e.to_string()))?,
            node,
            supervisor: Arc::new(Supervisor::new(Arc::clone(&metrics))),
            registry,
            metrics,
            trusted_proxies: config.trusted_proxy_blocks(),
            api_throttle: api_throttle::ApiThrottle::default(),
            config,
            background,
        });
        // What this node tells the others about itself (the console's cluster view).
        let weak = Arc::downgrade(&state);
        state.node.set_figures(move || match weak.upgrade() {
            Some(s) => crate::pubsub::broker::wire::NodeFigures {
                sessions: s.registry.len() as u64,
                topics: s.node.topic_count() as u64,
                memory: crate::process::memory_in_use().unwrap_or(0),
                draining: s.is_draining(),
            },
            None => Default::default(),
        });
        Ok(state)
    }

    pub fn is_draining(&self) -> bool {
        self.supervisor.is_draining()
    }
}

/// The two bound sockets.
pub struct Listeners {
    pub public: TcpListener,
    pub admin: TcpListener,
    /// The public accept queue: `listen_backlog` capped by the kernel.
    pub backlog: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("auth configuration: {0}")]
    Auth(String),
    #[error("broker configuration: {0}")]
    Broker(String),
    #[error("no OS randomness for long-poll session tokens: {0}")]
    Randomness(String),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
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
        let public = listener::bind(config.listen, config.listen_backlog).map_err(|source| {
            ServerError::Bind {
                what: "public",
                addr: config.listen,
                source,
            }
        })?;
        let somaxconn = crate::process::somaxconn();
        let backlog = listener::effective_backlog(config.listen_backlog, somaxconn);
        if backlog < config.listen_backlog {
            tracing::warn!(
                listen_backlog = config.listen_backlog,
                somaxconn = backlog,
                "the kernel caps the accept queue below listen_backlog: raise net.core.somaxconn (deploy/README.md)"
            );
        }
        let admin = TcpListener::bind(config.admin_listen)
            .await
            .map_err(|source| ServerError::Bind {
                what: "admin",
                addr: config.admin_listen,
                source,
            })?;
        Ok(Listeners {
            public,
            admin,
            backlog,
        })
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
        .route("/sse", get(sse::sse))
        .route("/socket/longpoll", get(longpoll::get).post(longpoll::post))
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
    state
        .metrics
        .listen_backlog
        .set(f64::from(listeners.backlog));
    state.metrics.count_listen_overflows_from_now();
    if !config.session_log_interval.is_zero() {
        let metrics = Arc::clone(&state.metrics);
        let every = config.session_log_interval;
        let stop = state.background.stop.clone();
        state.background.tracker.spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => log_session_summary(&metrics, every),
                }
            }
        });
    }
    // Where the other nodes send long-poll requests for this node's sessions.
    let scheme = if config.tls_cert_file.is_some() {
        "https"
    } else {
        "http"
    };
    let advertise = config.advertise_url.clone().or_else(|| {
        let addr = listeners.public_addr()?;
        (!addr.ip().is_unspecified()).then(|| format!("{scheme}://{addr}"))
    });
    if let Some(url) = advertise {
        state.node.set_advertise(url);
    }
    let tls = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => {
            let tls = tls::Tls::load(cert, key)?;
            state.background.tracker.spawn(
                Arc::clone(&tls).watch(Arc::clone(&state.metrics), state.background.stop.clone()),
            );
            Some(tls)
        }
        _ => None,
    };

    let public = {
        let router = public_router(Arc::clone(&state));
        let stop = stop_accepting.clone();
        let metrics = Arc::clone(&state.metrics);
        let opts = accept::ConnOptions {
            handshake_timeout: config.handshake_timeout,
            send_buffer: config.socket_send_buffer,
            max_connections: None,
            proxy_protocol: config.proxy_protocol,
            tls: tls.clone(),
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
        let metrics = Arc::clone(&state.metrics);
        // The same accept loop as the public listener: a header timeout (idle
        // or half-sent requests would otherwise hold descriptors forever) and
        // a small connection cap of its own.
        let opts = accept::ConnOptions {
            handshake_timeout: config.handshake_timeout,
            send_buffer: 0,
            max_connections: Some(config.admin_max_connections),
            proxy_protocol: false,
            tls: tls.clone().filter(|_| config.admin_tls),
        };
        tokio::spawn(async move {
            accept::serve(listeners.admin, app, opts, metrics, stop).await;
            Ok::<(), std::io::Error>(())
        })
    };
    {
        let metrics = Arc::clone(&state.metrics);
        let node = Arc::clone(&state.node);
        let admission = Arc::clone(&state.admission);
        let app = Arc::clone(&state);
        let stop = state.background.stop.clone();
        state.background.tracker.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {
                        metrics.upkeep();
                        node.sweep_history();
                        node.revocations().sweep(crate::revocation::unix_now());
                        admission.sweep();
                        app.api_throttle.sweep();
                    }
                }
            }
        });
    }

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
    let plan = crate::supervisor::DrainPlan {
        timeout: config.drain_timeout,
        batch_size: config.drain_batch_size,
        batch_interval: config.drain_batch_interval,
    };
    let graceful = state.supervisor.drain(&state.registry, plan).await;
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
    // Sessions are gone: the broker link, heartbeat and upkeep stop next (a
    // link may be mid-reconnect; it gets a moment, then is left behind).
    // Webhooks flush for up to drain_timeout after the sessions are gone.
    let wait = match state.webhooks {
        Some(_) => state.config.drain_timeout + Duration::from_secs(1),
        None => Duration::from_secs(2),
    };
    if !state.background.shutdown(wait).await {
        tracing::warn!(waited = ?wait, "background tasks still running; leaving them");
    }
    stop_admin.cancel();
    let admin_result = wait_listener(admin, "admin").await;
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
