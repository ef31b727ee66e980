//! Fixtures for integration tests: private redis-server processes, free loopback
//! ports, private coturn servers, a private Prometheus, bounded polling and a tiny HTTP
//! GET. Never the machine's own Redis.

pub mod coturn;
pub mod prometheus;
pub mod rabbitmq;
pub mod redis;
pub mod socketio;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use coturn::{CoturnOptions, TestCoturn};
pub use prometheus::TestPrometheus;
pub use redis::{key_slot, TestRedis, TestRedisCluster, TestRedisSentinel};

/// A port that was free a moment ago (bind :0, then release: racy, fine here).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` until it holds, failing the test after `deadline`.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > end {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// GET `path` over plain HTTP/1.0; returns (status, body), or None if the server
/// does not answer within a few seconds.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await.ok()?.ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Some((status, body))
}

/// A value from the Prometheus text at `addr`/metrics, summed over its label sets; name
/// one sample with its labels (`name{kind="x"}`). Panics if the metric is missing.
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (status, text) = http_get(addr, "/metrics").await.expect("node answers /metrics");
    assert_eq!(status, 200);
    metric_sum(&text, name).unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
}

/// The sum of the samples of `name` (a metric, or one series with its labels) in a
/// Prometheus text; None when there is none.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let samples: Vec<f64> = text
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}
