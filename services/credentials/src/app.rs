//! Build → bind → serve → drain: the one place that connects the parts.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fred::prelude::*;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::amqp::EventLog;
use crate::auth::{ApiKey, Authenticator};
use crate::config::{CredentialsConfig, SourceConfig};
use crate::http::{router, AppState, Shared};
use crate::keyring::{Keyring, RedisKeyring};
use crate::metrics::Metrics;
use crate::monitor::{Monitor, MonitorSettings};
use crate::source::{unix_now_ms, TurnSource};
use edge::RateLimiter;

/// Buckets kept per rate limiter (IPs or subjects), bounding its memory.
const RATE_LIMIT_KEYS: usize = 100_000;

pub struct App {
    listener: TcpListener,
    service: Service,
}

/// The service without its listener: its state, background tasks and Redis clients.
/// The App serves it on its own port; a signal node embeds it to answer the
/// credential routes on its own origin ([`Service::credential_routes`]).
pub struct Service {
    state: Shared,
    background: TaskTracker,
    stop: CancellationToken,
    redis_clients: Vec<Client>,
}

impl App {
    /// Builds the [`Service`] and binds the port. Fails with context if any of it is
    /// impossible.
    pub async fn build(config: CredentialsConfig) -> anyhow::Result<App> {
        let (host, port) = (config.host, config.port);
        let service = Service::build(config).await?;
        let listener = TcpListener::bind((host, port)).await.with_context(|| format!("binding {host}:{port}"))?;
        Ok(App { listener, service })
    }
}

impl Service {
    /// Connects to Redis (when configured), loads the secret and key sets and starts
    /// monitoring. Fails with context if any of it is impossible.
    pub async fn build(config: CredentialsConfig) -> anyhow::Result<Service> {
        for warning in &config.warnings {
            warn!("{warning}");
        }
        let metrics = Arc::new(Metrics::new(config.source.name()));
        if let Some(period) = config.rotate_every {
            metrics.rotates_every(period);
        }
        let http = reqwest::Client::builder()
            .timeout(config.provider_timeout)
            .user_agent(concat!("webrtc-signal-credentials/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        let background = TaskTracker::new();
        let stop = CancellationToken::new();
        let mut redis_clients = Vec::new();

        let userdb = match &config.redis_url {
            Some(url) => {
                let clients = crate::redis::connect(url.expose(), false)
                    .await
                    .map_err(|e| anyhow::anyhow!("connecting to REDIS_URL: {}", e.kind().to_str()))?;
                redis_clients.push(clients.client.clone());
                Some(clients.client)
            }
            None => None,
        };

        let source = match &config.source {
            SourceConfig::Rest { realm, secret, layout } => {
                let keyring = match &userdb {
                    Some(client) => {
                        let ring = RedisKeyring::new(client.clone(), realm, config.retire_after());
                        let report = ring
                            .refresh(unix_now_ms(), secret.as_ref())
                            .await
                            .context("reading the TURN secret set from REDIS_URL")?;
                        info!(secrets = report.secrets.len(), realm = %realm, "TURN secrets loaded from Redis");
                        Keyring::Redis(ring)
                    }
                    None => Keyring::Static(secret.clone().context("TURN_SECRET is required without REDIS_URL")?),
                };
                TurnSource::Rest { keyring, realm: realm.clone(), layout: layout.clone() }
            }
            SourceConfig::Static(login) => TurnSource::Static(login.clone()),
            SourceConfig::Provider(provider) => TurnSource::Provider { provider: provider.clone(), http: http.clone() },
        };

        // The TURN event log (AMQP_URL; it needs the statistics, checked at start):
        // coturn's events from the monitor, and the service's own errors.
        let event_log = match (&config.amqp, &config.statsdb_url, config.stats) {
            (Some(amqp), Some(_), true) => {
                Some(EventLog::start(amqp.clone(), metrics.clone(), &background, stop.clone()))
            }
            _ => None,
        };
        let monitor = match (&config.statsdb_url, config.stats) {
            (Some(url), true) => {
                let clients = crate::redis::connect(url.expose(), true)
                    .await
                    .map_err(|e| anyhow::anyhow!("connecting to the TURN statsdb: {}", e.kind().to_str()))?;
                redis_clients.push(clients.client.clone());
                let subscriber = clients.subscriber.context("statsdb subscriber")?;
                let realm = match &config.source {
                    SourceConfig::Rest { realm, .. } => Some(realm.clone()),
                    _ => None,
                };
                let settings =
                    MonitorSettings { stream: config.events_stream.clone(), max_len: config.events_max_len, realm };
                let monitor = Monitor::start(
                    clients.client,
                    subscriber,
                    settings,
                    metrics.clone(),
                    event_log.clone(),
                    &background,
                    stop.clone(),
                )
                .await
                .map_err(|e| anyhow::anyhow!("subscribing to TURN allocation events: {}", e.kind().to_str()))?;
                Some(monitor)
            }
            _ => None,
        };

        let auth = Authenticator {
            mode: config.auth_mode,
            api_keys: config.api_keys.iter().map(|(name, key)| ApiKey::new(name.clone(), key.expose())).collect(),
            api_key_header: config.api_key_header.clone(),
            jwt: match &config.jwt {
                Some(jwt) => Some(jwt.verifier(&http).await.map_err(|e| anyhow::anyhow!("JWT_JWKS_FILE: {e}"))?),
                None => None,
            },
        };

        let state = Arc::new(AppState {
            ip_limiter: RateLimiter::new(config.rate_ip.0, config.rate_ip.1, RATE_LIMIT_KEYS),
            subject_limiter: RateLimiter::new(config.rate_subject.0, config.rate_subject.1, RATE_LIMIT_KEYS),
            config: Arc::new(config),
            source,
            auth,
            metrics,
            monitor,
            event_log,
            redis: userdb,
            draining: AtomicBool::new(false),
            gate: Arc::default(),
        });
        background.spawn(maintain_keyring(state.clone(), stop.clone()));
        Ok(Service { state, background, stop, redis_clients })
    }

    /// The credential endpoints only (`/turn-credentials`, `/api/turn-credentials`,
    /// `/api/turn/config`, `/api/meetings/webrtc-config`, `/api/v1/turn`), with their
    /// authentication, rate limits and CORS, for another server to answer.
    pub fn credential_routes(&self) -> axum::Router {
        crate::http::credential_routes(self.state.clone())
    }

    /// Stops the background tasks and closes the Redis connections.
    pub async fn stop(self) {
        let Service { stop, background, redis_clients, .. } = self;
        stop.cancel();
        background.close();
        let _ = tokio::time::timeout(Duration::from_secs(3), background.wait()).await;
        for client in redis_clients {
            let _ = client.quit().await;
        }
    }
}

impl App {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Serves in a background task (for embedding and tests); the handle drains it.
    pub fn spawn(self) -> RunningApp {
        RunningApp::spawn(self.local_addr(), |stop| self.run_until(stop))
    }

    /// Serves until `shutdown`, then: /readyz fails, the listener closes, requests in
    /// flight finish (bounded by DRAIN_TIMEOUT_MS), background tasks stop (the stream
    /// writer hands its lease back), Redis connections close.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let App { listener, service } = self;
        let state = service.state.clone();
        let drain_timeout = state.config.drain_timeout;
        let draining = state.clone();
        let limits = state.config.http.clone();
        let gate = state.gate.clone();
        let shutdown = async move {
            shutdown.await;
            draining.draining.store(true, Ordering::Relaxed);
            info!("draining");
        };
        edge::serve(listener, router(state), limits, gate, shutdown, drain_timeout).await.context("serving HTTP")?;
        service.stop().await;
        info!("stopped");
        Ok(())
    }
}

/// Every TURN_SECRET_REFRESH_SECS: re-reads the secret set (so every replica mints with
/// the newest), rotates when TURN_SECRET_ROTATE_SECS says so, and retires what is due.
async fn maintain_keyring(state: Shared, stop: CancellationToken) {
    let TurnSource::Rest { keyring: Keyring::Redis(ring), .. } = &state.source else { return };
    let mut tick = tokio::time::interval(state.config.secret_refresh);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = unix_now_ms();
        let result = match state.config.rotate_every {
            Some(age) => ring.rotate(now, None, age).await,
            None => ring.retire_due(now).await,
        };
        match result {
            Ok(report) => {
                if failing {
                    info!("TURN secret store reachable again");
                    failing = false;
                }
                if report.seeded {
                    warn!("the TURN secret set was empty (Redis restarted or flushed); restored the current secret");
                }
                if report.rotated {
                    state.metrics.rotations.inc();
                    info!(newest = ?report.secrets.last().map(|s| &s.fingerprint), "TURN secret rotated automatically");
                }
                if report.retired > 0 {
                    state.metrics.secrets_retired.add(report.retired as u64);
                    info!(retired = report.retired, "old TURN secrets retired after their overlap");
                }
            }
            Err(e) if !failing => {
                warn!(error = %e, "could not refresh TURN secrets; minting with the last known one");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// The service serving in the background: `stop` drains it; dropping it aborts it.
pub type RunningApp = lifecycle::RunningService;
