//! Per-address limits at the HTTP edge (docs/rooms-and-auth.md, "Limits"): new
//! connections per second and open connections per address, for every WebSocket and
//! Socket.IO route; requests per window for the HTTP API. Refusals are 429 with
//! Retry-After and a JSON reason; the address is the socket's, or the one the trusted
//! proxies saw (TRUSTED_PROXY_HOPS).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use edge::{client_ip, retry_after_secs, ConnectionCaps, Held, RateLimiter};
use serde_json::json;

use super::AppState;
use crate::config::AbuseLimits;

/// Addresses tracked at most per limiter (beyond it, idle ones are dropped first).
const TRACKED_ADDRESSES: usize = 100_000;

pub struct EdgeGuards {
    hops: usize,
    connects: Option<RateLimiter>,
    caps: ConnectionCaps,
    api: RateLimiter,
}

impl EdgeGuards {
    pub fn new(limits: &AbuseLimits) -> Self {
        let connects = (limits.ip_connects_per_sec > 0).then(|| {
            RateLimiter::per_window(
                limits.ip_connects_per_sec,
                std::time::Duration::from_secs(1),
                limits.ip_connects_burst,
                TRACKED_ADDRESSES,
            )
        });
        Self {
            hops: limits.trusted_proxy_hops,
            connects,
            caps: ConnectionCaps::new(limits.ip_max_connections),
            api: RateLimiter::per_window(
                limits.api_requests,
                limits.api_window,
                limits.api_requests,
                TRACKED_ADDRESSES,
            ),
        }
    }
}

fn too_many(message: &str, retry_after_secs: u64) -> Response {
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(json!({"error": message}))).into_response();
    response.headers_mut().insert("retry-after", HeaderValue::from(retry_after_secs));
    response
}

/// Admits one more connection from the caller, or refuses it. The returned place (none
/// when open connections are not capped: nothing to count, no lock taken) is held for
/// the connection's life.
#[allow(clippy::result_large_err)] // a refusal is the response itself, sent at once
pub fn admit_connection(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Result<Option<Held>, Response> {
    let guards: &Arc<EdgeGuards> = &state.guards;
    if guards.connects.is_none() && !guards.caps.is_capped() {
        return Ok(None);
    }
    let ip = client_ip(peer, headers, guards.hops);
    if let Some(limiter) = &guards.connects {
        if let Err(wait) = limiter.check(&ip.to_string(), Instant::now()) {
            return Err(too_many("too many new connections from this address", retry_after_secs(wait)));
        }
    }
    if !guards.caps.is_capped() {
        return Ok(None);
    }
    guards.caps.try_hold(ip).map(Some).ok_or_else(|| too_many("too many open connections from this address", 5))
}

/// Middleware for the HTTP API: requests per address per window.
pub async fn api_rate_limit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let ip = client_ip(peer, request.headers(), state.guards.hops);
    match state.guards.api.check(&ip.to_string(), Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(wait) => too_many("too many requests from this address; try again later", retry_after_secs(wait)),
    }
}
