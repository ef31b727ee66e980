//! The web client (services/signal/web): a landing page at `/`, the meeting page at
//! `/meeting/{id}`, its scripts and styles under `/app/`, and `/app/config.json`
//! telling the page where its ICE servers come from; `/app/socketio.html` makes the
//! same call with the Socket.IO server's own client flow. The files are compiled into
//! the binary; nothing is built at run time. WEB_CLIENT=false turns all of it off;
//! STATIC_DIR replaces the pages with a customer's app ([`super::site`]) and keeps
//! `/socket.io/socket.io.js`.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;

/// The pages may load only their own scripts and styles; media and WebSockets are
/// theirs; fetches may reach the credential service wherever WEB_ICE_URL points.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   media-src 'self' blob: mediastream:; connect-src 'self' ws: wss: http: https:; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const INDEX: &str = include_str!("../../web/index.html");
const MEETING: &str = include_str!("../../web/meeting.html");

/// socket.io-client's browser build (web/vendor/README.md).
const SOCKET_IO_CLIENT: &str = include_str!("../../web/vendor/socket.io.min.js");

/// (name, content type, body) of every file under /app/.
const ASSETS: [(&str, &str, &str); 9] = [
    ("style.css", "text/css; charset=utf-8", include_str!("../../web/app/style.css")),
    ("landing.js", "text/javascript; charset=utf-8", include_str!("../../web/app/landing.js")),
    ("meeting.js", "text/javascript; charset=utf-8", include_str!("../../web/app/meeting.js")),
    ("mesh.js", "text/javascript; charset=utf-8", include_str!("../../web/app/mesh.js")),
    ("tiles.js", "text/javascript; charset=utf-8", include_str!("../../web/app/tiles.js")),
    ("signal-client.js", "text/javascript; charset=utf-8", include_str!("../../web/app/signal-client.js")),
    ("socketio.html", "text/html; charset=utf-8", include_str!("../../web/app/socketio.html")),
    ("socketio-call.js", "text/javascript; charset=utf-8", include_str!("../../web/app/socketio-call.js")),
    ("socket.io.min.js", "text/javascript; charset=utf-8", SOCKET_IO_CLIENT),
];

/// The routes, or none when the web client is off. `/` is left to the plain dialect's
/// handler when PLAIN_PATH is `/` (it answers a plain GET with [`index`]).
pub fn routes(state: &AppState) -> Router<AppState> {
    if !state.config.web.enabled {
        return Router::new();
    }
    // Where a Socket.IO server serves its client: pages written for one load it here
    // (S1's app among them, when STATIC_DIR serves it).
    let client = Router::new().route("/socket.io/socket.io.js", get(|| asset(Path("socket.io.min.js".to_owned()))));
    if state.site.is_some() {
        // STATIC_DIR's app takes `/` and every other page.
        return client;
    }
    let router = Router::new()
        .route("/meeting", get(index))
        .route("/meeting/", get(index))
        .route("/meeting/{id}", get(meeting))
        .route("/app/config.json", get(config))
        .route("/app/{file}", get(asset))
        .merge(client);
    if state.config.plain_path == "/" {
        router
    } else {
        router.route("/", get(index))
    }
}

/// The landing page: pick a meeting and a name.
pub async fn index() -> Response {
    page(INDEX)
}

async fn meeting(Path(id): Path<String>) -> Response {
    // The page reads the id from its address; refuse what no room id can be.
    if id.is_empty() || id.chars().count() > 100 || id.chars().any(char::is_control) {
        return (StatusCode::NOT_FOUND, "no such meeting address\n").into_response();
    }
    page(MEETING)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => {
            let mut response = fresh(*body);
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            if content_type.starts_with("text/html") {
                response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
            }
            response
        }
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

async fn config(State(state): State<AppState>) -> Response {
    let web = &state.config.web;
    fresh(Json(json!({ "iceUrl": web.ice_url, "iceTransportPolicy": web.ice_policy.as_str() })))
}

fn page(html: &'static str) -> Response {
    let mut response = fresh(html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// Revalidated on every load, so a new node version's client is picked up at once;
/// and never sniffed as another type.
fn fresh(body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}
