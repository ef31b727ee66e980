//! `/socket.io/`: Engine.IO's HTTP side. A GET with `transport=websocket` opens (or,
//! with a `sid`, upgrades) a WebSocket; `transport=polling` opens a long-polling
//! session (no `sid`), or polls one (GET) and writes to it (POST). Errors have
//! Engine.IO's JSON shape and codes, so clients report them as they would the
//! original server's. Browser origins are held to ALLOWED_ORIGINS, here with CORS.

use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, RawQuery, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{admit, upgrade_to, AppState};
use crate::connection;
use crate::transport::polling::PollError;
use crate::transport::socketio::{SocketIo, MAX_PAYLOAD, PING_INTERVAL};

/// A GET waits this long for packets before answering `noop`: a little longer than
/// the ping interval, so that an idle session's GET normally ends with the ping.
const POLL_WAIT: std::time::Duration = PING_INTERVAL.saturating_add(std::time::Duration::from_secs(5));

/// Engine.IO's error codes.
pub(super) enum EioError {
    TransportUnknown,
    SessionUnknown,
    BadRequest(&'static str),
    Forbidden,
    UnsupportedVersion,
}

impl IntoResponse for EioError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            EioError::TransportUnknown => (StatusCode::BAD_REQUEST, 0, "Transport unknown"),
            EioError::SessionUnknown => (StatusCode::BAD_REQUEST, 1, "Session ID unknown"),
            EioError::BadRequest(message) => (StatusCode::BAD_REQUEST, 3, message),
            EioError::Forbidden => (StatusCode::FORBIDDEN, 4, "Forbidden"),
            EioError::UnsupportedVersion => (StatusCode::BAD_REQUEST, 5, "Unsupported protocol version"),
        };
        (status, axum::Json(json!({"code": code, "message": message}))).into_response()
    }
}

/// The query parameters Engine.IO uses.
struct EioQuery {
    transport: Transport,
    sid: Option<String>,
}

#[derive(PartialEq, Eq)]
enum Transport {
    Polling,
    WebSocket,
}

impl EioQuery {
    fn parse(query: Option<&str>) -> Result<Self, EioError> {
        let (mut version, mut transport, mut sid) = (None, None, None);
        for pair in query.unwrap_or("").split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "EIO" => version = Some(value),
                "transport" => transport = Some(value),
                "sid" => sid = Some(value.to_owned()),
                _ => {}
            }
        }
        if version != Some("4") {
            return Err(EioError::UnsupportedVersion);
        }
        let transport = match transport {
            Some("polling") => Transport::Polling,
            Some("websocket") => Transport::WebSocket,
            _ => return Err(EioError::TransportUnknown),
        };
        Ok(Self { transport, sid })
    }
}

/// CORS for an allowed browser origin; a disallowed one is refused.
fn cors(state: &AppState, headers: &HeaderMap) -> Result<HeaderMap, EioError> {
    let origin = headers.get(header::ORIGIN);
    if !state.config.origin_allowed(origin.and_then(|o| o.to_str().ok())) {
        return Err(EioError::Forbidden);
    }
    let mut out = HeaderMap::new();
    if let Some(origin) = origin {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        out.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    Ok(out)
}

fn polling_body(cors: HeaderMap, body: String) -> Response {
    let mut response = (cors, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=UTF-8"));
    response
}

fn refused(err: PollError) -> EioError {
    match err {
        PollError::Overlapping => EioError::BadRequest("overlapping GET requests"),
        PollError::Upgraded => EioError::BadRequest("the session has upgraded to websocket"),
        PollError::Closed => EioError::SessionUnknown,
    }
}

pub(super) async fn get(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, EioError> {
    let query = EioQuery::parse(query.as_deref())?;
    let cors = cors(&state, &headers)?;
    match (query.transport, query.sid) {
        (Transport::WebSocket, None) => {
            let upgrade = upgrade.map_err(|_| EioError::BadRequest("expected a WebSocket upgrade"))?;
            let (held, identity) = match admit(&state, peer, &headers, None).await {
                Ok(admitted) => admitted,
                Err(refusal) => return Ok(refusal),
            };
            Ok(upgrade_to(SocketIo::over_websocket(), state, &headers, upgrade, identity, held))
        }
        (Transport::WebSocket, Some(sid)) => {
            let upgrade = upgrade.map_err(|_| EioError::BadRequest("expected a WebSocket upgrade"))?;
            let session = state.polling.get(&sid).ok_or(EioError::SessionUnknown)?;
            let tracker = state.sessions.clone();
            Ok(upgrade
                .read_buffer_size(super::READ_BUFFER_BYTES)
                .on_upgrade(move |socket| tracker.track_future(session.upgrade(socket))))
        }
        (Transport::Polling, None) => {
            if state.core.health().is_draining() {
                return Ok((StatusCode::SERVICE_UNAVAILABLE, "node is draining").into_response());
            }
            let (held, identity) = match admit(&state, peer, &headers, None).await {
                Ok(admitted) => admitted,
                Err(refusal) => return Ok(refusal),
            };
            let (session, transport) = state.polling.open();
            let AppState { core, connection, sessions, .. } = state.clone();
            let dialect = SocketIo::over_polling(session.sid());
            sessions.spawn(connection::serve(transport, dialect, core, connection, identity, held));
            let body = session.poll(POLL_WAIT).await.map_err(refused)?;
            Ok(polling_body(cors, body))
        }
        (Transport::Polling, Some(sid)) => {
            let session = state.polling.get(&sid).ok_or(EioError::SessionUnknown)?;
            let body = session.poll(POLL_WAIT).await.map_err(refused)?;
            Ok(polling_body(cors, body))
        }
    }
}

pub(super) async fn post(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, EioError> {
    let query = EioQuery::parse(query.as_deref())?;
    let cors = cors(&state, &headers)?;
    if query.transport != Transport::Polling {
        return Err(EioError::BadRequest("POST is for the polling transport"));
    }
    let sid = query.sid.ok_or(EioError::BadRequest("POST needs a sid"))?;
    let session = state.polling.get(&sid).ok_or(EioError::SessionUnknown)?;
    if body.len() > MAX_PAYLOAD {
        return Ok((StatusCode::PAYLOAD_TOO_LARGE, axum::Json(json!({"code": 3, "message": "payload too large"})))
            .into_response());
    }
    let text = std::str::from_utf8(&body).map_err(|_| EioError::BadRequest("the body is not UTF-8"))?;
    session.post(text).await.map_err(refused)?;
    let mut response = (cors, "ok").into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    Ok(response)
}

/// A browser's CORS preflight.
pub(super) async fn preflight(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, EioError> {
    let mut cors = cors(&state, &headers)?;
    cors.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
    cors.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type, authorization"));
    Ok((StatusCode::NO_CONTENT, cors).into_response())
}
