//! Serving HTTP/1 (and the WebSockets upgraded from it) with limits that keep slow or
//! idle clients from pinning a node:
//! - the request head must arrive within `header_timeout`, and the same bound closes a
//!   keep-alive connection that stays idle between requests (hyper starts the clock
//!   when it waits for the next head);
//! - a head is at most `max_header_bytes` and `max_headers` headers;
//! - at most `max_connections` sockets are open at once; beyond that a connection gets
//!   `503 Service Unavailable` with `Retry-After` and is closed, and the refusal is
//!   counted. A socket keeps its place for its whole life, WebSocket included: the place
//!   travels with the stream into the upgraded connection.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// The limits of [`serve`]; documented in each service's configuration table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// HTTP_HEADER_TIMEOUT_MS: a request head (and the gap between keep-alive requests).
    pub header_timeout: Duration,
    /// HTTP_MAX_HEADER_BYTES.
    pub max_header_bytes: usize,
    /// HTTP_MAX_HEADERS.
    pub max_headers: usize,
    /// MAX_CONNECTIONS: sockets open at once (0: no cap).
    pub max_connections: usize,
    /// Seconds a refused client is told to wait (Retry-After).
    pub retry_after_secs: u64,
    /// HTTP_MAX_BODY_BYTES: the largest request body an endpoint reads (413 beyond).
    pub max_body_bytes: usize,
}

impl HttpLimits {
    /// Reads the limits from the service's settings (the variables named above).
    pub fn read(s: &mut config::Settings) -> HttpLimits {
        let d = HttpLimits::default();
        HttpLimits {
            header_timeout: Duration::from_millis(s.ranged("HTTP_HEADER_TIMEOUT_MS", 10_000u64, 500, 300_000)),
            max_header_bytes: s.ranged("HTTP_MAX_HEADER_BYTES", d.max_header_bytes, 1024, 1024 * 1024),
            max_headers: s.ranged("HTTP_MAX_HEADERS", d.max_headers, 8, 1000),
            max_connections: s.ranged("MAX_CONNECTIONS", d.max_connections, 0, 10_000_000),
            retry_after_secs: d.retry_after_secs,
            max_body_bytes: s.ranged("HTTP_MAX_BODY_BYTES", d.max_body_bytes, 1024, 64 * 1024 * 1024),
        }
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_connections: default_max_connections(),
            retry_after_secs: 5,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Memory a connection costs in the worst case we plan for: the node's measured 8 KiB
/// per idle joined connection (docs/benchmarks.md) plus the kernel's socket buffers
/// under load, rounded up.
pub const PLANNED_BYTES_PER_CONNECTION: u64 = 64 * 1024;
/// File descriptors kept for everything but clients (Redis, files, the listener).
const RESERVED_FDS: u64 = 256;

/// The default cap: what the file descriptor limit allows, and what the memory limit of
/// the process's cgroup allows at [`PLANNED_BYTES_PER_CONNECTION`], whichever is lower
/// (at least 256).
pub fn default_max_connections() -> usize {
    let fds = fd_limit().map(|n| n.saturating_sub(RESERVED_FDS));
    let memory = cgroup_memory_limit().map(|bytes| bytes * 8 / 10 / PLANNED_BYTES_PER_CONNECTION);
    let cap = match (fds, memory) {
        (Some(f), Some(m)) => f.min(m),
        (Some(f), None) => f,
        (None, Some(m)) => m,
        (None, None) => 10_000,
    };
    cap.max(256) as usize
}

fn fd_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn cgroup_memory_limit() -> Option<u64> {
    // cgroup v2; "max" means none.
    std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok()?.trim().parse().ok()
}

/// The node-wide count of open sockets, and of the ones refused at the cap.
#[derive(Debug, Default)]
pub struct ConnectionGate {
    open: AtomicUsize,
    refused: AtomicU64,
}

impl ConnectionGate {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn try_enter(self: &Arc<Self>, max: usize) -> Option<Place> {
        let entered = self.open.fetch_add(1, Ordering::AcqRel);
        if max > 0 && entered >= max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Place(self.clone()))
    }
}

/// One socket's place under the node's cap, given back when the socket is dropped.
struct Place(Arc<ConnectionGate>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A TCP stream that holds its place under the cap for as long as it exists.
pub struct CountedStream {
    inner: TcpStream,
    _place: Place,
}

impl AsyncRead for CountedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` resolves; then stops
/// accepting, lets requests in flight finish (at most `drain`), and returns. Handlers
/// see the peer address as `ConnectInfo<SocketAddr>`. Upgraded WebSockets are not
/// waited for: their owners drain them.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    gate: Arc<ConnectionGate>,
    shutdown: impl Future<Output = ()> + Send,
    drain: Duration,
) -> io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(limits.max_headers)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    // Connections in flight: told to finish their request and close at shutdown.
    let connections = TaskTracker::new();
    let stopping = CancellationToken::new();
    let refusal = Arc::new(refusal(limits.retry_after_secs));
    let refusing = Arc::new(AtomicUsize::new(0));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Signaling is many small frames that must leave at once: without TCP_NODELAY a
        // second small write waits for the client's delayed ACK (about 40 ms).
        let _ = tcp.set_nodelay(true);
        let Some(place) = gate.try_enter(limits.max_connections) else {
            // A flood past the cap must not become a flood of tasks: beyond
            // MAX_REFUSING answers in flight, the socket is just closed.
            if let Some(slot) = Refusing::enter(&refusing) {
                tokio::spawn(refuse(tcp, refusal.clone(), slot));
            }
            continue;
        };
        let stream = CountedStream { inner: tcp, _place: place };
        let service =
            TowerToHyperService::new(router.clone().map_request(move |mut req: axum::http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                req
            }));
        let connection = http.serve_connection(TokioIo::new(stream), service).with_upgrades();
        let stopping = stopping.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stopping.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    stopping.cancel();
    connections.close();
    if tokio::time::timeout(drain, connections.wait()).await.is_err() {
        tracing::warn!("HTTP requests still in flight after the drain timeout; closing them");
    }
    Ok(())
}

/// Bodies larger than `max_bytes` are refused with 413 (and a JSON error, with
/// [`json_payload_too_large`] as a layer) before a handler reads them.
pub fn limit_bodies<S: Clone + Send + Sync + 'static>(router: Router<S>, max_bytes: usize) -> Router<S> {
    router.layer(axum::extract::DefaultBodyLimit::max(max_bytes))
}

/// Middleware (`axum::middleware::map_response`): a 413 that is not JSON yet (the body
/// limit's own rejection) becomes the services' JSON error.
pub async fn json_payload_too_large(response: axum::response::Response) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE || json {
        return response;
    }
    let body = r#"{"error":"payload-too-large","message":"the request body is larger than this endpoint accepts"}"#;
    (StatusCode::PAYLOAD_TOO_LARGE, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The answer to a connection over the cap.
fn refusal(retry_after_secs: u64) -> Vec<u8> {
    let body =
        r#"{"error":"unavailable","message":"this node is at its connection limit; retry later or on another node"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {retry_after_secs}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Refusals being written at once, at most.
const MAX_REFUSING: usize = 256;

/// One refusal in flight, counted until it is dropped.
struct Refusing(Arc<AtomicUsize>);

impl Refusing {
    fn enter(count: &Arc<AtomicUsize>) -> Option<Refusing> {
        if count.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Refusing(count.clone()))
    }
}

impl Drop for Refusing {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn refuse(mut tcp: TcpStream, response: Arc<Vec<u8>>, _slot: Refusing) {
    // Bounded: a client that does not read does not keep the socket.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = tcp.write_all(&response).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_counts_places_and_refusals() {
        let gate = Arc::new(ConnectionGate::default());
        let a = gate.try_enter(2).unwrap();
        let _b = gate.try_enter(2).unwrap();
        assert!(gate.try_enter(2).is_none());
        assert_eq!((gate.open(), gate.refused()), (2, 1));
        drop(a);
        let _c = gate.try_enter(2).expect("a place is free again");
        assert_eq!(gate.open(), 2);
        let unlimited: Vec<Place> = (0..10).filter_map(|_| gate.try_enter(0)).collect();
        assert_eq!(unlimited.len(), 10);
    }

    #[test]
    fn refusals_in_flight_are_bounded() {
        let count = Arc::new(AtomicUsize::new(0));
        let held: Vec<Refusing> = (0..MAX_REFUSING).filter_map(|_| Refusing::enter(&count)).collect();
        assert_eq!(held.len(), MAX_REFUSING);
        assert!(Refusing::enter(&count).is_none(), "one more is just closed");
        drop(held);
        assert_eq!(count.load(Ordering::Relaxed), 0);
        assert!(Refusing::enter(&count).is_some());
    }

    #[test]
    fn the_default_cap_is_bounded_below() {
        assert!(default_max_connections() >= 256);
    }
}
