//! The HTTP surface: credential endpoints in every shape existing clients parse (all
//! cut from one [`Grant`]), secret rotation for operators, TURN monitoring, health and
//! metrics. Handlers validate input, ask `issue` for a grant and shape it; errors map to
//! one JSON body `{error, message}` with no secret in it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fred::prelude::*;
use serde::Deserialize;
use serde_json::{json, Value};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{token_matches, AuthError, Authenticator, Caller};
use crate::config::{CredentialsConfig, MIN_TTL};
use crate::keyring::{KeyringError, KeyringReport};
use crate::metrics::{Endpoint, LimitScope, Metrics, Outcome};
use crate::monitor::Monitor;
use crate::source::{unix_now_ms, Grant, GrantRequest, SourceError, TurnSource};
use crate::turn::user_id_from_subject;
use edge::{client_ip, retry_after_secs, RateLimiter};

/// Everything a handler may touch.
pub struct AppState {
    pub config: Arc<CredentialsConfig>,
    pub source: TurnSource,
    pub auth: Authenticator,
    pub ip_limiter: RateLimiter,
    pub subject_limiter: RateLimiter,
    pub metrics: Arc<Metrics>,
    pub monitor: Option<Monitor>,
    /// The TURN event log (AMQP_URL), told of the service's own failures as `turn_error`.
    pub event_log: Option<crate::amqp::EventLog>,
    /// The userdb connection, pinged by /readyz.
    pub redis: Option<Client>,
    pub draining: AtomicBool,
    /// Open sockets under MAX_CONNECTIONS, and the refusals at the cap.
    pub gate: Arc<edge::ConnectionGate>,
}

pub type Shared = Arc<AppState>;

/// The paths of the credential endpoints: what a signal node answers itself when it
/// embeds the service.
pub const CREDENTIAL_PATHS: [&str; 5] =
    ["/turn-credentials", "/api/turn-credentials", "/api/turn/config", "/api/meetings/webrtc-config", "/api/v1/turn"];

/// The credential endpoints only, with their CORS, body limit and state.
pub fn credential_routes(state: Shared) -> Router {
    let cors = cors_layer(&state.config);
    let routes = credential_endpoints();
    let routes = match cors {
        Some(cors) => routes.layer(cors),
        None => routes,
    };
    edge::limit_bodies(routes, state.config.http.max_body_bytes).with_state(state)
}

fn credential_endpoints() -> Router<Shared> {
    Router::new()
        .route(CREDENTIAL_PATHS[0], get(turn_credentials))
        .route(CREDENTIAL_PATHS[1], get(api_turn_credentials))
        .route(CREDENTIAL_PATHS[2], get(turn_config))
        .route(CREDENTIAL_PATHS[3], get(webrtc_config))
        .route(CREDENTIAL_PATHS[4], get(rest_draft))
}

pub fn router(state: Shared) -> Router {
    let cors = cors_layer(&state.config);
    let api = credential_endpoints()
        .route("/api/turn/stats", get(turn_stats))
        .route("/api/turn/sessions", get(turn_sessions))
        .route("/api/turn/secrets", get(list_secrets))
        .route("/api/turn/secrets/rotate", post(rotate_secret));
    let api = match cors {
        Some(cors) => api.layer(cors),
        None => api,
    };
    let max_body = state.config.http.max_body_bytes;
    let router = api
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::NotFound });
    edge::limit_bodies(router, max_body)
        .layer(axum::middleware::map_response(edge::json_payload_too_large))
        .with_state(state)
}

/// No layer at all when ALLOWED_ORIGINS is empty: browsers then refuse cross-origin reads.
fn cors_layer(config: &CredentialsConfig) -> Option<CorsLayer> {
    if config.allowed_origins.is_empty() {
        return None;
    }
    let origin = if config.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(config.allowed_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let mut headers = vec![header::AUTHORIZATION, header::CONTENT_TYPE];
    if let Ok(name) = HeaderName::from_bytes(config.api_key_header.as_bytes()) {
        headers.push(name);
    }
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers(headers)
            .max_age(Duration::from_secs(600)),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Unauthorized(AuthError),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("too many requests")]
    RateLimited(Duration),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    BadGateway(String),
    #[error("not found")]
    NotFound,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request"),
            ApiError::Unauthorized(AuthError::NotConfigured) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Unauthorized(AuthError::KeysUnavailable) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate-limited"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::BadGateway(_) => (StatusCode::BAD_GATEWAY, "bad-gateway"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not-found"),
        }
    }

    fn outcome(&self) -> Outcome {
        match self {
            ApiError::Unauthorized(AuthError::KeysUnavailable) => Outcome::Unavailable,
            ApiError::Unauthorized(_) | ApiError::Forbidden(_) => Outcome::Unauthorized,
            ApiError::RateLimited(_) => Outcome::RateLimited,
            ApiError::BadRequest(_) | ApiError::NotFound => Outcome::BadRequest,
            ApiError::Unavailable(_) | ApiError::BadGateway(_) => Outcome::Unavailable,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let mut response = (status, Json(json!({ "error": code, "message": self.to_string() }))).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::RateLimited(wait) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(*wait)));
            }
            ApiError::Unauthorized(_) if status == StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

impl From<SourceError> for ApiError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::Keyring(e) => ApiError::Unavailable(e.to_string()),
            SourceError::Provider(e) => ApiError::BadGateway(e.to_string()),
        }
    }
}

impl From<KeyringError> for ApiError {
    fn from(e: KeyringError) -> Self {
        match e {
            KeyringError::Static => ApiError::BadRequest(e.to_string()),
            other => ApiError::Unavailable(other.to_string()),
        }
    }
}

/// Query parameters every credential endpoint understands.
#[derive(Debug, Default, Deserialize)]
pub struct CredentialQuery {
    /// Seconds, within TURN_TTL's bounds and TURN_TTL_MAX.
    ttl: Option<String>,
    /// Prefer the TURN hosts of this region.
    region: Option<String>,
    /// The REST draft's `service=turn`.
    service: Option<String>,
    /// The REST draft's user hint; used only for anonymous callers.
    username: Option<String>,
}

type Peer = ConnectInfo<SocketAddr>;

/// Query parameters, with a malformed query answered as our JSON `bad-request`.
pub struct Params<T>(pub T);

impl<T, S> FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Params(q))
            .map_err(|e| ApiError::BadRequest(format!("bad query: {}", e.body_text())))
    }
}
type Q = Params<CredentialQuery>;

async fn turn_credentials(State(s): State<Shared>, ConnectInfo(peer): Peer, h: HeaderMap, Params(q): Q) -> Response {
    respond(
        &s,
        Endpoint::TurnCredentials,
        issue(&s, peer, &h, &q, false).await.map(|g| {
            json!({
                "username": g.username, "credential": g.credential, "ttl": g.ttl,
                "realm": g.realm, "iceServers": g.ice_servers,
            })
        }),
    )
}

async fn api_turn_credentials(
    State(s): State<Shared>,
    ConnectInfo(peer): Peer,
    h: HeaderMap,
    Params(q): Q,
) -> Response {
    respond(
        &s,
        Endpoint::ApiTurnCredentials,
        issue(&s, peer, &h, &q, false).await.map(|g| json!({ "iceServers": g.ice_servers, "ttl": g.ttl })),
    )
}

async fn turn_config(State(s): State<Shared>, ConnectInfo(peer): Peer, h: HeaderMap, Params(q): Q) -> Response {
    respond(
        &s,
        Endpoint::TurnConfig,
        issue(&s, peer, &h, &q, false).await.map(|g| json!({ "iceServers": g.ice_servers })),
    )
}

async fn webrtc_config(State(s): State<Shared>, ConnectInfo(peer): Peer, h: HeaderMap, Params(q): Q) -> Response {
    let pool = s.config.ice_candidate_pool_size;
    respond(
        &s,
        Endpoint::WebrtcConfig,
        issue(&s, peer, &h, &q, true)
            .await
            .map(|g| json!({ "iceServers": g.ice_servers, "iceCandidatePoolSize": pool })),
    )
}

/// draft-uberti-behave-turn-rest-00 §2.2: `{username, password, ttl, uris}`.
async fn rest_draft(State(s): State<Shared>, ConnectInfo(peer): Peer, h: HeaderMap, Params(q): Q) -> Response {
    if q.service.as_deref().is_some_and(|svc| svc != "turn") {
        return respond(&s, Endpoint::RestDraft, Err(ApiError::BadRequest("service must be \"turn\"".into())));
    }
    respond(
        &s,
        Endpoint::RestDraft,
        issue(&s, peer, &h, &q, false).await.map(|g| {
            let uris = g.turn_uris();
            json!({ "username": g.username, "password": g.credential, "ttl": g.ttl, "uris": uris })
        }),
    )
}

/// Counts the outcome; credentials are never cached by browsers or proxies.
fn respond(state: &AppState, endpoint: Endpoint, result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(body) => {
            state.metrics.request(endpoint, Outcome::Issued);
            ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
        }
        Err(e) => {
            state.metrics.request(endpoint, e.outcome());
            if matches!(e, ApiError::BadGateway(_) | ApiError::Unavailable(_)) {
                tracing::warn!(error = %e, "could not issue TURN credentials");
                if let Some(log) = &state.event_log {
                    log.offer(&crate::stats::TurnEvent::turn_error(endpoint.path(), &e.to_string()));
                }
            }
            e.into_response()
        }
    }
}

/// The one path every credential shape goes through, timed.
async fn issue(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    query: &CredentialQuery,
    jwt_required: bool,
) -> Result<Grant, ApiError> {
    let started = Instant::now();
    let result = issue_untimed(state, peer, headers, query, jwt_required, started).await;
    state.metrics.issued_in(started.elapsed());
    result
}

/// Limit by IP, authenticate, limit by subject, read the request, ask the source.
async fn issue_untimed(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    query: &CredentialQuery,
    jwt_required: bool,
    now: Instant,
) -> Result<Grant, ApiError> {
    let ip = client_ip(peer, headers, state.config.trusted_proxy_hops);
    state.ip_limiter.check(&ip.to_string(), now).map_err(|wait| {
        state.metrics.rate_limited(LimitScope::Ip);
        ApiError::RateLimited(wait)
    })?;
    let caller: Caller =
        if jwt_required { state.auth.jwt_caller(headers).await } else { state.auth.caller(headers).await }.map_err(
            |e| {
                state.metrics.auth_failure(&e);
                ApiError::Unauthorized(e)
            },
        )?;
    if let Some(subject) = &caller.subject {
        state.subject_limiter.check(subject, now).map_err(|wait| {
            state.metrics.rate_limited(LimitScope::Subject);
            ApiError::RateLimited(wait)
        })?;
    }
    let ttl = match &query.ttl {
        None => state.config.ttl,
        Some(raw) => {
            let max = state.config.ttl_max.as_secs();
            match raw.parse::<u64>() {
                Ok(n) if (MIN_TTL..=max).contains(&n) => Duration::from_secs(n),
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "ttl must be a number of seconds from {MIN_TTL} to {max}"
                    )))
                }
            }
        }
    };
    let region = match &query.region {
        Some(r) if r.len() > 64 || !r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => {
            return Err(ApiError::BadRequest("region is letters, digits and '-'".into()));
        }
        r => r.clone(),
    };
    let user_id = match (&caller.subject, &query.username) {
        (Some(subject), _) => user_id_from_subject(subject),
        (None, Some(hint)) if !hint.is_empty() => user_id_from_subject(hint),
        _ => random_user_id(),
    };
    let request = GrantRequest { user_id, ttl, region };
    let TurnSource::Provider { provider, .. } = &state.source else {
        return Ok(state.source.grant(&request).await?.with_stun_first(&state.config.stun_urls));
    };
    let called = Instant::now();
    let result = state.source.grant(&request).await;
    let failure = match &result {
        Err(SourceError::Provider(e)) => Some(e),
        _ => None,
    };
    state.metrics.provider_call(provider.name(), called.elapsed(), failure);
    Ok(result?.with_stun_first(&state.config.stun_urls))
}

fn random_user_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn require_token(expected: Option<&config::Secret>, headers: &HeaderMap, name: &'static str) -> Result<(), ApiError> {
    let expected = expected.ok_or(ApiError::Forbidden(name))?;
    if token_matches(auth::bearer(headers), expected.expose()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(AuthError::Invalid("wrong or missing bearer token".into())))
    }
}

const STATUS_DISABLED: &str = "TURN status endpoints are disabled: set STATUS_TOKEN";
const ADMIN_DISABLED: &str = "secret administration is disabled: set ADMIN_TOKEN";

fn monitor(state: &AppState) -> Result<&Monitor, ApiError> {
    state
        .monitor
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("TURN monitoring is off (set REDIS_URL or TURN_STATSDB_URL)".into()))
}

/// Counts only: without STATUS_TOKEN it answers anyone, as S1's health did; with it,
/// only the token. (`/api/turn/sessions` lists addresses: the token always.)
async fn turn_stats(State(s): State<Shared>, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    if s.config.status_token.is_some() {
        require_token(s.config.status_token.as_ref(), &h, STATUS_DISABLED)?;
    }
    let table = monitor(&s)?.table.lock().unwrap_or_else(|e| e.into_inner());
    Ok(Json(table.stats()))
}

#[derive(Debug, Deserialize)]
struct SessionsQuery {
    /// Most sessions listed (oldest first); `count` is always the total.
    #[serde(default = "default_sessions_limit")]
    limit: usize,
}

fn default_sessions_limit() -> usize {
    1000
}

async fn turn_sessions(
    State(s): State<Shared>,
    h: HeaderMap,
    Params(q): Params<SessionsQuery>,
) -> Result<Json<Value>, ApiError> {
    require_token(s.config.status_token.as_ref(), &h, STATUS_DISABLED)?;
    if !(1..=10_000).contains(&q.limit) {
        return Err(ApiError::BadRequest("limit must be from 1 to 10000".into()));
    }
    let now = unix_now_ms();
    let (count, sessions) = {
        let table = monitor(&s)?.table.lock().unwrap_or_else(|e| e.into_inner());
        (table.active(), table.sessions(q.limit))
    };
    let list: Vec<Value> = sessions
        .into_iter()
        .map(|a| {
            let age = now.saturating_sub(a.started_at_ms) / 1000;
            let mut v = serde_json::to_value(a).unwrap_or_default();
            v["ageSeconds"] = json!(age);
            v
        })
        .collect();
    Ok(Json(json!({ "count": count, "sessions": list })))
}

async fn list_secrets(State(s): State<Shared>, h: HeaderMap) -> Result<Json<KeyringReport>, ApiError> {
    require_token(s.config.admin_token.as_ref(), &h, ADMIN_DISABLED)?;
    let ring = keyring(&s)?;
    Ok(Json(ring.list(unix_now_ms()).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RotateQuery {
    /// Remove every older secret now (a leaked secret), not after the overlap.
    #[serde(default)]
    revoke_previous: bool,
}

async fn rotate_secret(
    State(s): State<Shared>,
    h: HeaderMap,
    Params(q): Params<RotateQuery>,
) -> Result<Json<KeyringReport>, ApiError> {
    require_token(s.config.admin_token.as_ref(), &h, ADMIN_DISABLED)?;
    let ring = keyring(&s)?;
    let report = ring.rotate_now(unix_now_ms(), q.revoke_previous).await?;
    s.metrics.rotations.inc();
    s.metrics.secrets_retired.add(report.retired as u64);
    tracing::info!(retired = report.retired, newest = ?report.secrets.last().map(|i| &i.fingerprint), "TURN secret rotated by the admin endpoint");
    Ok(Json(report))
}

fn keyring(state: &AppState) -> Result<&crate::keyring::RedisKeyring, ApiError> {
    match &state.source {
        TurnSource::Rest { keyring, .. } => Ok(keyring.redis()?),
        _ => Err(ApiError::BadRequest("secret rotation applies to TURN_SOURCE=rest only".into())),
    }
}

/// Ready when not draining, the secret store answers and a secret is known.
async fn readyz(State(s): State<Shared>) -> Response {
    if s.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    if let Some(redis) = &s.redis {
        let ping = tokio::time::timeout(Duration::from_secs(2), redis.ping::<String>(None)).await;
        if !matches!(ping, Ok(Ok(_))) {
            return (StatusCode::SERVICE_UNAVAILABLE, "redis unavailable").into_response();
        }
    }
    if let TurnSource::Rest { keyring, .. } = &s.source {
        if keyring.current().is_err() {
            return (StatusCode::SERVICE_UNAVAILABLE, "no TURN secret yet").into_response();
        }
    }
    "ready".into_response()
}

async fn metrics(State(s): State<Shared>) -> Response {
    if let Some(m) = &s.monitor {
        let table = m.table.lock().unwrap_or_else(|e| e.into_inner());
        s.metrics.turn_totals(table.realms());
    }
    s.metrics.connections(s.gate.open(), s.gate.refused());
    if let TurnSource::Rest { keyring: crate::keyring::Keyring::Redis(ring), .. } = &s.source {
        if let Some(ages) = ring.ages() {
            s.metrics.secret_ages(ages, unix_now_ms());
        }
    }
    let text = telemetry::process_metrics() + &s.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
