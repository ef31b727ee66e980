//! STATIC_DIR: a customer's built single-page app, served the way S0/S1 served theirs
//! (express.static and a `*` fallback to index.html):
//!
//! - its files, brotli or gzip when the client accepts them (a precompressed `.br` or
//!   `.gz` beside a file is sent as it is, anything else compressed on the way);
//! - index.html for any other GET, so client-side routes load the app; a missing asset
//!   (a last path segment with an extension, `/app.js`) is a 404, not the index;
//! - caching: HTML revalidated on every load (a new release is picked up at once),
//!   fingerprinted build output under `/assets/` or `/static/` kept for a year, other
//!   files for an hour.
//!
//! Routes of the node itself (the API, WebSockets, Socket.IO, probes, metrics) are
//! matched first; this answers only what none of them does.

use std::convert::Infallible;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt;
use tower_http::compression::CompressionLayer;
use tower_http::services::{ServeDir, ServeFile};

/// Build output whose names carry a content hash (Vite's `/assets/`, Create React
/// App's `/static/`): a changed file gets a new name, so it may be cached for good.
const FINGERPRINTED: [&str; 2] = ["/assets/", "/static/"];
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const AN_HOUR: &str = "public, max-age=3600";
const REVALIDATE: &str = "no-cache";

/// The app's directory and its index page.
#[derive(Debug)]
pub struct Site {
    dir: PathBuf,
    index: PathBuf,
}

impl Site {
    pub fn new(dir: &Path) -> Self {
        Site { dir: dir.to_owned(), index: dir.join("index.html") }
    }

    /// The service answering every request no route of the node took.
    pub fn service(self: std::sync::Arc<Self>) -> Router {
        Router::new().fallback(serve).with_state(self).layer(CompressionLayer::new().br(true).gzip(true))
    }

    /// The app's index page, for a GET with these headers.
    pub async fn index(&self, headers: &HeaderMap) -> Response {
        let mut request = Request::new(Body::empty());
        *request.headers_mut() = headers.clone();
        let response = ServeFile::new(&self.index).precompressed_br().precompressed_gzip().oneshot(request).await;
        with_cache_policy(into_response(response), REVALIDATE)
    }
}

async fn serve(State(site): State<std::sync::Arc<Site>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    let files = ServeDir::new(&site.dir).precompressed_br().precompressed_gzip().append_index_html_on_directories(true);
    let response = into_response(files.oneshot(request).await);
    if response.status() == StatusCode::NOT_FOUND && reads && !is_asset(&path) {
        return site.index(&headers).await;
    }
    let policy = if is_html(&response) {
        REVALIDATE
    } else if FINGERPRINTED.iter().any(|prefix| path.starts_with(prefix)) {
        IMMUTABLE
    } else {
        AN_HOUR
    };
    with_cache_policy(response, policy)
}

/// Whether a path names a file (its last segment has an extension) rather than a
/// client-side route.
fn is_asset(path: &str) -> bool {
    path.rsplit('/').next().is_some_and(|last| last.contains('.'))
}

fn is_html(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|t| t.to_str().ok())
        .is_some_and(|t| t.starts_with("text/html"))
}

fn into_response<B>(served: Result<axum::http::Response<B>, Infallible>) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    match served {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    }
}

/// Sets the cache policy of a file that was found.
fn with_cache_policy(mut response: Response, policy: &'static str) -> Response {
    if response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED {
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
        response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    }
    response.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_with_an_extension_is_an_asset_and_a_route_is_not() {
        assert!(is_asset("/assets/app-3f2a.js"));
        assert!(is_asset("/favicon.ico"));
        assert!(!is_asset("/rooms/standup"));
        assert!(!is_asset("/"));
        assert!(!is_asset("/v1.2/room"), "only the last segment counts");
    }
}
