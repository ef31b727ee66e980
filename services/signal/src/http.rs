//! HTTP surface: `/ws` (upgrade to the native protocol), `PLAIN_PATH` (the plain-JSON
//! dialect), `/socket.io/` (Socket.IO, [`socketio`]), `/healthz` (the process is
//! alive), `/readyz` (send traffic here: not draining, Redis reachable, and the
//! node's own subscription proven alive by a probe that came back) and `/metrics`;
//! the HTTP API; the credential routes when the node answers them itself (TURN_SECRET
//! or TURN_SOURCE); STATIC_DIR's app for anything else.

mod error;
pub mod guard;
mod rooms;
pub mod site;
mod socketio;
mod status;
mod web;

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, RawQuery, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio_util::task::TaskTracker;

use protocol::EventClass;

use crate::config::SignalConfig;
use crate::connection::{self, ConnectionSettings};
use crate::core::Core;
use crate::transport::native::Native;
use crate::transport::plain::Plain;
use crate::transport::polling::PollingSessions;
use crate::transport::ws::WsTransport;
use crate::transport::Dialect;

#[derive(Clone)]
pub struct AppState {
    pub core: Arc<Core>,
    pub config: Arc<SignalConfig>,
    pub connection: Arc<ConnectionSettings>,
    /// Sessions run on this tracker (axum's graceful shutdown does not wait for
    /// upgraded WebSockets); the core's session registry tells them to drain.
    pub sessions: TaskTracker,
    /// Socket.IO sessions on HTTP long-polling, by Engine.IO session id.
    pub polling: Arc<PollingSessions>,
    /// Per-address limits.
    pub guards: Arc<guard::EdgeGuards>,
    /// The node's open sockets under MAX_CONNECTIONS, and the refusals at the cap.
    pub gate: Arc<edge::ConnectionGate>,
    /// STATIC_DIR's app, served for whatever no route takes.
    pub site: Option<Arc<site::Site>>,
    /// The credential routes, when the node answers them itself (the credential
    /// service's own handlers and state).
    pub turn_routes: Option<Router>,
}

pub fn router(state: AppState) -> Router {
    status::note_start();
    let plain_path = state.config.plain_path.clone();
    // The HTTP API: rate-limited per address, and open to the browser origins of
    // ALLOWED_ORIGINS.
    let api = Router::new()
        .route("/anonymous-signin", post(rooms::anonymous_signin))
        .route("/create-room", post(rooms::create_room_s4))
        .route("/delete-peers-and-room", post(rooms::delete_peers_and_room))
        .route("/api/rooms", post(rooms::create_room).get(status::rooms))
        .route("/api/rooms/{id}", get(rooms::room_info).delete(rooms::delete_room))
        .route("/api/health", get(status::health))
        .route("/api/{*rest}", any(status::api_not_found))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::api_rate_limit))
        .layer(api_cors(&state.config));
    let api = edge::limit_bodies(api, state.config.http.max_body_bytes);
    // Engine.IO's own bound (maxPayload) for polling POSTs.
    let socketio = edge::limit_bodies(
        Router::new()
            .route("/socket.io/", get(socketio::get).post(socketio::post).options(socketio::preflight))
            .route("/socket.io", get(socketio::get).post(socketio::post).options(socketio::preflight)),
        crate::transport::socketio::MAX_PAYLOAD,
    );
    let site = state.site.clone();
    let turn_routes = state.turn_routes.clone();
    let router = Router::new()
        .route("/ws", get(ws))
        .route(&plain_path, get(plain))
        .merge(socketio)
        .route("/.well-known/jwks.json", get(rooms::jwks))
        .route("/health", get(status::health_alias))
        .route("/ready", get(status::ready_alias))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(api)
        .merge(web::routes(&state));
    let router = match turn_routes {
        Some(turn) => {
            credentials::http::CREDENTIAL_PATHS.iter().fold(router, |r, path| r.route_service(path, turn.clone()))
        }
        None => router,
    };
    let router = match site {
        Some(site) => router.fallback_service(site.service()),
        None => router,
    };
    router.layer(axum::middleware::map_response(edge::json_payload_too_large)).with_state(state)
}

/// CORS for the HTTP API: the origins of ALLOWED_ORIGINS (any with `*`).
fn api_cors(config: &SignalConfig) -> tower_http::cors::CorsLayer {
    use axum::http::{header, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins = if config.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(config.allowed_origins.iter().filter_map(|o| o.parse().ok()))
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
}

/// The process is alive (JSON for S1's monitors, 200 for probes).
async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({"status": "ok", "node": state.core.node().as_str()}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let core = &state.core;
    let body = |status: &str, reason: Option<&str>| {
        Json(json!({
            "status": status,
            "reason": reason,
            "node": core.node().as_str(),
            "connections": core.sessions().len(),
            "rooms": core.room_count(),
            "bus_lost_messages": core.bus_stats().lost_total(),
            "bus_gaps": core.bus_stats().gaps(),
        }))
    };
    match core.health().ready() {
        Ok(()) => (StatusCode::OK, body("ready", None)).into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, body("not-ready", Some(reason))).into_response(),
    }
}

/// Prometheus text: the process (memory, CPU, file descriptors; what loadtest reads)
/// and the node's metrics (`crate::metrics`), the ones kept elsewhere brought up to
/// date first.
async fn metrics(State(state): State<AppState>) -> Response {
    let core = &state.core;
    let stats = core.bus_stats();
    let scraped = &core.metrics().scraped;
    scraped.rooms.set(core.room_count() as i64);
    scraped.members.set(core.local_member_count() as i64);
    scraped.open_sockets.set(state.gate.open() as i64);
    crate::metrics::catch_up(&scraped.refused_connections, state.gate.refused());
    scraped.ready.set(i64::from(core.health().ready().is_ok()));
    scraped.owed_removals.set(core.owed_removals() as i64);
    crate::metrics::catch_up(&scraped.unreadable, stats.unreadable());
    crate::metrics::catch_up(&scraped.lagged, stats.lost_total());
    crate::metrics::catch_up(&scraped.gaps, stats.gaps());
    crate::metrics::catch_up(&scraped.bounces_dropped, core.dropped_bounces());
    for class in EventClass::ALL {
        crate::metrics::catch_up(&scraped.lost.with_label_values(&[class.as_str()]), stats.lost(class));
    }
    let text = telemetry::process_metrics() + &core.metrics().render();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Bytes the WebSocket layer reads per syscall (frames larger than this take several reads).
const READ_BUFFER_BYTES: usize = 1024;

async fn ws(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    match admit(&state, peer, &headers, query.as_deref()).await {
        Ok((held, identity)) => upgrade_to(Native, state, &headers, upgrade, identity, held),
        Err(refusal) => refusal,
    }
}

/// Whether a new connection may open, and as whom: its address's limits first, then
/// the identity token presented at the upgrade. A refusal is the response to send.
pub(crate) async fn admit(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(Option<edge::Held>, Option<auth::Identity>), Response> {
    let held = guard::admit_connection(state, peer, headers)?;
    let identity = identity_at_upgrade(state, headers, query).await?;
    Ok((held, identity))
}

/// The identity token presented at a WebSocket upgrade (`Authorization: Bearer`, or an
/// `access_token` query parameter for browsers, which cannot set headers there),
/// verified. A token that is presented must be valid, in every mode; none is fine
/// here (AUTH_MODE=jwt then requires one before anything else).
pub(crate) async fn identity_at_upgrade(
    state: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<auth::Identity>, Response> {
    let from_query =
        query.and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("access_token=")).filter(|t| !t.is_empty()));
    let Some(token) = auth::bearer(headers).or(from_query) else { return Ok(None) };
    match state.core.admission().verify(token).await {
        Ok(identity) => Ok(Some(identity)),
        Err(e) => {
            let body = Json(json!({"code": "unauthorized", "message": format!("token refused: {e}")}));
            Err((StatusCode::UNAUTHORIZED, body).into_response())
        }
    }
}

/// The plain-JSON dialect's WebSocket; a plain GET here (a browser, a probe) still gets
/// an answer.
async fn plain(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match upgrade {
        // S4 clients present their identity token in `register`.
        Ok(upgrade) => match guard::admit_connection(&state, peer, &headers) {
            Ok(held) => upgrade_to(Plain::default(), state, &headers, upgrade, None, held),
            Err(refusal) => refusal,
        },
        // At `/`, a browser gets the app of STATIC_DIR, or the web client's landing page.
        Err(_) if state.config.plain_path == "/" && state.site.is_some() => {
            state.site.as_ref().expect("checked").index(&headers).await
        }
        Err(_) if state.config.web.enabled && state.config.plain_path == "/" => web::index().await,
        Err(_) => "signaling node: plain-JSON WebSocket clients connect here, native clients at /ws\n".into_response(),
    }
}

/// Every WebSocket route goes through here, whatever dialect it serves: the browser
/// origin is checked against ALLOWED_ORIGINS, a draining node accepts no one, frame
/// sizes are capped, and the connection runs on the node's session tracker.
pub(crate) fn upgrade_to<D: Dialect>(
    dialect: D,
    state: AppState,
    headers: &HeaderMap,
    upgrade: WebSocketUpgrade,
    identity: Option<auth::Identity>,
    held: Option<edge::Held>,
) -> Response {
    let origin = headers.get("origin").and_then(|o| o.to_str().ok());
    if !state.config.origin_allowed(origin) {
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    if state.core.health().is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "node is draining").into_response();
    }
    let limits = &state.connection.limits;
    // Frames above the protocol limit but below this cap get a `too-large` error and
    // the connection stays; beyond the cap the WebSocket layer closes it (1009).
    let hard_cap = (limits.frame_bytes * 4).max(1024 * 1024);
    upgrade
        .max_message_size(hard_cap)
        .max_frame_size(hard_cap)
        // The WebSocket layer grows its read buffer by this much before every read
        // and zero-fills it: the 128 KiB default cost a 128 KiB memset per frame and
        // kept that much resident per connection. Signaling frames are small.
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| {
            let AppState { core, connection, sessions, .. } = state;
            let io = WsTransport::new(socket);
            // A task of its own rather than awaited here: the upgrade task would keep
            // what it captured beside the connection for as long as it runs.
            sessions.spawn(connection::serve(io, dialect, core, connection, identity, held));
            std::future::ready(())
        })
}
