//! Identity and the room registry over HTTP (docs/rooms-and-auth.md):
//!
//! - `POST /anonymous-signin`: a short-lived token of the cluster's own (S4's flow).
//! - `GET /.well-known/jwks.json`: the public key of those tokens, when ES256.
//! - `POST /create-room`: S4's shape, `{"room_id","token"}` for the bearer of a token.
//! - `POST /api/rooms`, `GET /api/rooms/{id}`: the same registry with its options.
//!
//! Room tokens are returned once and stored only as their SHA-256.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bus::RoomRecord;
use protocol::RoomId;
use serde::Deserialize;
use serde_json::json;

use super::error::{ApiError, S4Error};
use super::AppState;
use crate::core::now_ms;

fn random_text(bytes: usize) -> String {
    let random: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    URL_SAFE_NO_PAD.encode(random)
}

fn iso(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64).map(|t| t.to_rfc3339()).unwrap_or_default()
}

/// The verified subject of the request's token (`Authorization: Bearer`, or the bare
/// token S4's clients send).
async fn caller(state: &AppState, headers: &HeaderMap) -> Result<auth::Identity, ApiError> {
    let token =
        auth::bearer_or_bare(headers).ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer <id_token>"))?;
    state.core.admission().verify(token).await.map_err(|e| ApiError::unauthorized(format!("token refused: {e}")))
}

#[derive(Deserialize, Default)]
pub(super) struct SigninRequest {
    username: Option<String>,
}

pub(super) async fn anonymous_signin(
    State(state): State<AppState>,
    body: Option<Json<SigninRequest>>,
) -> Result<Json<serde_json::Value>, S4Error> {
    let issuer = state.core.admission().issuer().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "anonymous sign-in is not configured: set ANON_TOKEN_SECRET or ANON_TOKEN_KEY_FILE",
        )
    })?;
    let suffix = format!("{:04}", rand::random::<u16>() % 10_000);
    let username = body
        .and_then(|Json(b)| b.username)
        .map(|u| u.trim().chars().take(protocol::DisplayName::DEFAULT_MAX_CHARS).collect::<String>())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("Guest-{suffix}"));
    let subject = format!("anon-{}", random_text(12));
    let (id_token, expires_at) = issuer.issue(&subject, &username);
    Ok(Json(json!({"id_token": id_token, "username": username, "subject": subject, "expires_at": expires_at})))
}

pub(super) async fn jwks(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let keys = state.core.admission().issuer().and_then(|i| i.jwks());
    keys.map(Json).ok_or_else(|| ApiError::not_found("no public key: anonymous tokens are not ES256"))
}

#[derive(Deserialize, Default)]
pub(super) struct CreateRoom {
    room_id: Option<String>,
    ttl_secs: Option<u64>,
    capacity: Option<u32>,
    #[serde(default)]
    hosts: Vec<String>,
}

/// Longest room lifetime a request may ask for.
const MAX_ROOM_TTL: Duration = Duration::from_secs(30 * 86_400);

/// Creates a room; its id, token and record.
async fn create(state: &AppState, creator: &str, req: CreateRoom) -> Result<(RoomId, String, RoomRecord), ApiError> {
    let bad = ApiError::bad_request;
    let limits = &state.connection.limits;
    let room = match req.room_id {
        Some(id) => RoomId::parse_with_max(&id, limits.room_id_chars).map_err(|e| bad(format!("room_id: {e}")))?,
        None => RoomId::parse(&random_text(16)).expect("base64url text is a valid room id"),
    };
    let ttl = match req.ttl_secs {
        Some(0) => return Err(bad("ttl_secs: at least 1".into())),
        Some(secs) => Duration::from_secs(secs).min(MAX_ROOM_TTL),
        None => state.core.admission().room_ttl,
    };
    if req.capacity == Some(0) {
        return Err(bad("capacity: at least 1".into()));
    }
    if req.hosts.len() > 64 || req.hosts.iter().any(|h| h.is_empty() || h.len() > 256) {
        return Err(bad("hosts: at most 64 subjects of 1 to 256 bytes".into()));
    }
    let token = random_text(24);
    let created_ms = now_ms();
    let record = RoomRecord {
        token_hash: crate::core::token_hash(&token),
        creator: creator.to_owned(),
        created_ms,
        expires_ms: created_ms + ttl.as_millis() as u64,
        capacity: req.capacity,
        hosts: req.hosts,
    };
    let created = state.core.registry().create(&room, &record).await?;
    if !created {
        return Err(ApiError::new(StatusCode::CONFLICT, "a room with this id exists"));
    }
    tracing::info!(%room, creator, ttl_secs = ttl.as_secs(), "room created");
    Ok((room, token, record))
}

/// S4's `POST /create-room`: `{"room_id","token"}`.
pub(super) async fn create_room_s4(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, S4Error> {
    let who = caller(&state, &headers).await?;
    let (room, token, _) = create(&state, &who.subject, CreateRoom::default()).await?;
    Ok(Json(json!({"room_id": room, "token": token})))
}

/// `POST /api/rooms {room_id?, ttl_secs?, capacity?, hosts?}`.
pub(super) async fn create_room(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Option<Json<CreateRoom>>,
) -> Result<Response, ApiError> {
    let who = caller(&state, &headers).await?;
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let (room, token, record) = create(&state, &who.subject, req).await?;
    let url = state.core.admission().frontend_url.as_ref().map(|base| format!("{base}/meeting/{room}"));
    let body = json!({
        "room_id": room,
        "token": token,
        "expires_at": iso(record.expires_ms),
        "capacity": record.capacity,
        "url": url,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /api/rooms/{id}`: a created room's public record (never its token).
pub(super) async fn room_info(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller(&state, &headers).await?;
    let room = RoomId::parse_with_max(&id, state.connection.limits.room_id_chars)
        .map_err(|e| ApiError::bad_request(format!("room id: {e}")))?;
    let record = state.core.registry().record(&room).await?.ok_or_else(|| ApiError::not_found("Room not found"))?;
    Ok(Json(json!({
        "room_id": room,
        "creator": record.creator,
        "hosts": record.hosts,
        "created_at": iso(record.created_ms),
        "expires_at": iso(record.expires_ms),
        "expired": record.expires_ms <= now_ms(),
        "capacity": record.capacity,
    })))
}

/// `DELETE /api/rooms/{id}`: closes a created room for everyone, on every node (each
/// member is told in its dialect and removed), and deletes its registration. Only its
/// creator or a host named at its creation may.
pub(super) async fn delete_room(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let who = caller(&state, &headers).await?;
    let room = RoomId::parse_with_max(&id, state.connection.limits.room_id_chars)
        .map_err(|e| ApiError::bad_request(format!("room id: {e}")))?;
    let record = state.core.registry().record(&room).await?.ok_or_else(|| ApiError::not_found("Room not found"))?;
    close_as(&state, &who, &room, &record).await?;
    Ok(Json(json!({"room_id": room, "closed": true})))
}

/// Closes a created room and forgets it, if `who` is its creator or one of its hosts.
async fn close_as(state: &AppState, who: &auth::Identity, room: &RoomId, record: &RoomRecord) -> Result<(), ApiError> {
    if record.creator != who.subject && !record.hosts.contains(&who.subject) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "only the room's creator or its hosts may close it"));
    }
    Ok(state.core.close_room(room, protocol::CloseReason::Ended, true).await?)
}

#[derive(Deserialize)]
pub(super) struct DeletePeers {
    peer_id: String,
}

/// S4's `POST /delete-peers-and-room {"peer_id"}`: the room that member is in is closed
/// (every member told and removed, on every node) and deleted, if the caller created
/// it or hosts it. Answers as S4 did: `{"status":"peer deleted successfully"}`, or 404
/// `{"detail":"peer not found"}` / `{"detail":"room not found"}` (the member is in a
/// room that was never created through the API). The room is found by asking Redis
/// about each active room in turn: an operation for hosts, not a hot path.
pub(super) async fn delete_peers_and_room(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<DeletePeers>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, S4Error> {
    let who = caller(&state, &headers).await?;
    let Json(body) = body.map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()))?;
    let peer = protocol::PeerId::parse(&body.peer_id).map_err(|e| ApiError::bad_request(format!("peer_id: {e}")))?;
    let room = state.core.registry().room_of(&peer).await?.ok_or_else(|| ApiError::not_found("peer not found"))?;
    let record = state.core.registry().record(&room).await?.ok_or_else(|| ApiError::not_found("room not found"))?;
    close_as(&state, &who, &room, &record).await?;
    Ok(Json(json!({"status": "peer deleted successfully", "room_id": room})))
}
