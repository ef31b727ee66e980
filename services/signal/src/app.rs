//! Build → bind → serve → drain: the one place that connects the parts.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bus::{Backend, MemoryBackend, RedisBackend, RedisOptions};
use protocol::NodeId;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::admission::Admission;
use crate::config::SignalConfig;
use crate::connection::ConnectionSettings;
use crate::core::{Core, CoreSettings};
use crate::http::{router, AppState};
use crate::metrics::NodeMetrics;
use crate::session::SessionLimits;

/// How long HTTP requests in flight may take to finish at shutdown.
const HTTP_DRAIN: Duration = Duration::from_secs(1);

/// How long a join waits for its own announcement to come back on the room channel
/// before it answers `unavailable`: far above a healthy round trip (milliseconds), and
/// below the client's patience, so a join stalled by a failing Redis fails clearly.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Bad frames tolerated per [`STRIKE_WINDOW`] before a connection is closed (1008,
/// `too many bad messages`): enough for a client with a bug to see its errors, too few
/// for a flood to cost the node.
const BAD_FRAME_STRIKES: u32 = 20;
const STRIKE_WINDOW: Duration = Duration::from_secs(10);

/// How long background tasks (heartbeat, reaper, dispatcher) get to stop after a drain.
const BACKGROUND_STOP: Duration = Duration::from_secs(2);

pub struct App {
    listener: TcpListener,
    state: AppState,
    /// The store the core runs on (the core keeps it to itself; see [`App::store`]).
    store: Arc<dyn Backend>,
    background: TaskTracker,
    background_stop: CancellationToken,
    /// The credential service's code answering the credential routes here (TURN_SECRET
    /// or TURN_SOURCE set), stopped after the drain.
    turn: Option<credentials::Service>,
}

impl App {
    /// Connects to Redis (or starts the embedded backend), subscribes, registers the
    /// node and binds the port. Fails with context if any of it is impossible.
    pub async fn build(config: SignalConfig) -> anyhow::Result<App> {
        let metrics = Arc::new(NodeMetrics::new());
        let backend: Arc<dyn Backend> = match &config.redis_url {
            None => Arc::new(MemoryBackend::new()),
            Some(url) => {
                let options = RedisOptions {
                    subscriber_buffer: config.bus_buffer,
                    // Every call to Redis timed, by operation.
                    observer: Some(Arc::new(metrics.store_timings())),
                    ..RedisOptions::default()
                };
                let redis = RedisBackend::connect(url.expose(), options).await.context("connecting to REDIS_URL")?;
                Arc::new(redis)
            }
        };
        if config.status_token.is_none() {
            warn!("STATUS_TOKEN is unset: /api/health (counts only) answers anyone; /api/rooms is off until it is set");
        }
        let admission = Admission::from_config(&config.admission, config.redis_url.is_none())
            .await
            .context("setting up identity verification")?;
        let settings = CoreSettings {
            admission: Arc::new(admission),
            room_capacity: config.room_capacity,
            presence_limit: config.presence_limit,
            rooms_per_peer: config.rooms_per_peer,
            heartbeat_interval: config.heartbeat_interval,
            node_ttl: config.node_ttl,
            join_timeout: JOIN_TIMEOUT,
            resume_grace: config.resume_grace,
            reload_grace: config.reload_grace,
        };
        let core = Core::with_metrics(config.node_id.clone(), backend.clone(), settings, metrics);
        let background = TaskTracker::new();
        let background_stop = CancellationToken::new();
        core.start(&background, background_stop.clone()).await.context("subscribing to this node's inbox")?;

        let listener = TcpListener::bind((config.host, config.port))
            .await
            .with_context(|| format!("binding {}:{}", config.host, config.port))?;
        let connection = ConnectionSettings {
            limits: config.limits.clone(),
            session: SessionLimits {
                rate_per_sec: config.rate_per_sec,
                rate_burst: config.rate_burst,
                strikes: BAD_FRAME_STRIKES,
                strike_window: STRIKE_WINDOW,
                joins_per_minute: config.abuse.joins_per_minute,
            },
            outbound_queue: config.outbound_queue,
            client_heartbeat: config.client_heartbeat,
            reconnect_after: config.reconnect_after,
            drain_spread: config.drain_spread,
        };
        let guards = Arc::new(crate::http::guard::EdgeGuards::new(&config.abuse));
        let site = config.web.static_dir.as_deref().map(|dir| Arc::new(crate::http::site::Site::new(dir)));
        let turn = match &config.turn {
            Some(turn) => Some(
                credentials::Service::build((**turn).clone())
                    .await
                    .context("setting up the TURN credential routes (TURN_SECRET / TURN_SOURCE)")?,
            ),
            None => None,
        };
        if turn.is_some() {
            info!(paths = ?credentials::http::CREDENTIAL_PATHS, "TURN credentials are answered on this node");
        }
        let state = AppState {
            core,
            config: Arc::new(config),
            connection: Arc::new(connection),
            sessions: TaskTracker::new(),
            polling: Default::default(),
            guards,
            gate: Arc::default(),
            site,
            turn_routes: turn.as_ref().map(credentials::Service::credential_routes),
        };
        Ok(App { listener, state, store: backend, background, background_stop, turn })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    pub fn node_id(&self) -> &NodeId {
        self.state.core.node()
    }

    /// The node's core (tests inspect it).
    pub fn core(&self) -> Arc<Core> {
        self.state.core.clone()
    }

    /// The store under the node, for whoever embeds it: fault-injection tests reach
    /// past the core with it. Nothing inside the node uses it but the core.
    pub fn store(&self) -> Arc<dyn Backend> {
        self.store.clone()
    }

    /// Serves in a background task (for embedding and tests); the handle drains it.
    pub fn spawn(self) -> RunningApp {
        RunningApp::spawn(self.local_addr(), |stop| self.run_until(stop))
    }

    /// Serves until `shutdown` resolves, then drains, each step bounded:
    /// 1. /readyz fails and the listener stops accepting;
    /// 2. every session sends `reconnect` (spread over DRAIN_SPREAD_MS); one that may
    ///    resume is served until its client closes it and stays away until it resumes
    ///    elsewhere, others close and leave their rooms (others hear `peer-left`);
    /// 3. sessions and away members get `drain_timeout` in all to finish (away members
    ///    left by then leave);
    /// 4. the node leaves the cluster registry; background tasks stop.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let App { listener, state, store: _, background, background_stop, turn } = self;
        let core = state.core.clone();
        let sessions = state.sessions.clone();
        let drain_timeout = state.config.drain_timeout;
        let draining = core.clone();
        // Requests in flight get a moment; Socket.IO polling requests, which wait for
        // events, are answered by the session drain below.
        let limits = state.config.http.clone();
        let gate = state.gate.clone();
        let shutdown = async move {
            shutdown.await;
            draining.health().set_draining();
            info!("draining: no new connections");
        };
        edge::serve(listener, router(state), limits, gate, shutdown, HTTP_DRAIN).await.context("serving HTTP")?;

        let open = core.sessions().len();
        let deadline = tokio::time::Instant::now() + drain_timeout;
        core.sessions().drain();
        sessions.close();
        if tokio::time::timeout_at(deadline, sessions.wait()).await.is_err() {
            warn!(open = core.sessions().len(), "drain timeout: some sessions did not close in time");
        }
        // Members whose clients were told to reconnect stay away until they resume on
        // another node and are handed over (or their grace runs out).
        if tokio::time::timeout_at(deadline, core.resumes().until_none_away()).await.is_err() {
            warn!(away = core.resumes().away_count(), "drain timeout: some members did not resume in time; they leave");
        }
        core.leave_all_away().await;
        core.leave_cluster().await;
        background_stop.cancel();
        background.close();
        let _ = tokio::time::timeout(BACKGROUND_STOP, background.wait()).await;
        if let Some(turn) = turn {
            turn.stop().await;
        }
        info!(sessions = open, "drained");
        Ok(())
    }
}

/// A node serving in the background: `stop` drains it; dropping it aborts it.
pub type RunningApp = lifecycle::RunningService;
