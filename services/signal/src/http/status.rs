//! The S1 status API, cluster-wide. STATUS_TOKEN guards it (a `token` query parameter
//! as S1 had it, or a bearer header; compared in constant time):
//!
//! - `GET /api/health` -> `{status, uptime, timestamp, rooms, totalUsers, version, node}`:
//!   counts only, so without STATUS_TOKEN it answers anyone, as S1's did (the node
//!   warns at start); with it, only the token.
//! - `GET /api/rooms` -> `{rooms: [{roomId, userCount, users: [{name, role, joinedAt}], createdAt, lastActivity}]}`:
//!   it lists names, so it needs the token always (off without STATUS_TOKEN).
//!
//! A wrong token answers 401 `{"error":"Unauthorized"}`, S1's answer. Plus `/health`
//! (`OK`) and `/ready` (`READY`), S1's probes, as aliases of `/healthz` and `/readyz`.

use std::time::Instant;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use protocol::MemberInfo;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;

/// When the process started, for `uptime`.
static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

pub fn note_start() {
    STARTED.get_or_init(Instant::now);
}

/// Who may read a status route when no STATUS_TOKEN is set.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unset {
    /// Anyone (counts only).
    Open,
    /// No one: the route is off.
    Closed,
}

fn authorized(state: &AppState, headers: &HeaderMap, query: Option<&str>, unset: Unset) -> Result<(), ApiError> {
    let Some(expected) = &state.config.status_token else {
        return match unset {
            Unset::Open => Ok(()),
            Unset::Closed => {
                Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the status API is off: set STATUS_TOKEN"))
            }
        };
    };
    let from_query = query.and_then(|q| q.split('&').find_map(|p| p.strip_prefix("token=")));
    let presented = auth::bearer(headers).or(from_query);
    if auth::token_matches(presented, expected.expose()) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("Unauthorized"))
    }
}

/// Every active room with its members, cluster-wide.
async fn cluster_rooms(state: &AppState) -> Result<Vec<(protocol::RoomId, Vec<MemberInfo>)>, ApiError> {
    Ok(state.core.registry().rooms_with_members().await?)
}

fn joined_at(member: &MemberInfo) -> Value {
    serde_json::from_str::<serde_json::Map<String, Value>>(member.meta.get())
        .ok()
        .and_then(|meta| meta.get("joinedAt").cloned())
        .unwrap_or(Value::Null)
}

pub(super) async fn health(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorized(&state, &headers, query.as_deref(), Unset::Open)?;
    let rooms = cluster_rooms(&state).await?;
    let users: usize = rooms.iter().map(|(_, m)| m.len()).sum();
    let status = if state.core.health().ready().is_ok() { "healthy" } else { "degraded" };
    Ok(Json(json!({
        "status": status,
        "uptime": STARTED.get().map_or(0.0, |t| t.elapsed().as_secs_f64()),
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "rooms": rooms.len(),
        "totalUsers": users,
        "version": env!("CARGO_PKG_VERSION"),
        "node": state.core.node().as_str(),
    })))
}

pub(super) async fn rooms(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorized(&state, &headers, query.as_deref(), Unset::Closed)?;
    let mut listed = Vec::new();
    for (room, members) in cluster_rooms(&state).await? {
        let record = state.core.registry().record(&room).await?;
        let earliest = members.iter().filter_map(|m| joined_at(m).as_str().map(str::to_owned)).min();
        let users: Vec<Value> =
            members.iter().map(|m| json!({"name": m.name, "role": m.role, "joinedAt": joined_at(m)})).collect();
        let created_at = record
            .and_then(|r| chrono::DateTime::from_timestamp_millis(r.created_ms as i64))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .or(earliest.clone());
        listed.push(json!({
            "roomId": room,
            "userCount": members.len(),
            "users": users,
            "createdAt": created_at,
            // The latest join the cluster knows of (signals are not tracked per room).
            "lastActivity": members.iter().filter_map(|m| joined_at(m).as_str().map(str::to_owned)).max(),
        }));
    }
    Ok(Json(json!({"rooms": listed})))
}

/// Unknown paths under `/api/`: S1's answer, in the API's JSON shape.
pub(super) async fn api_not_found() -> ApiError {
    ApiError::not_found("API endpoint not found")
}

pub(super) async fn health_alias() -> &'static str {
    "OK"
}

pub(super) async fn ready_alias(State(state): State<AppState>) -> Response {
    match state.core.health().ready() {
        Ok(()) => "READY".into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("NOT READY: {reason}")).into_response(),
    }
}
