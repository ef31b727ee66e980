//! Every start-up detail of the integration tests: Redis servers, nodes, clients.

pub mod client;
pub mod nodes;
pub mod redis;

use std::future::Future;
use std::time::Duration;

pub use client::Client;
pub use nodes::{Backend, NodeProcess, TestCluster};
pub use redis::{TestRedis, TestRedisCluster};

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
