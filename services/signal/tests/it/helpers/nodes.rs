//! Signal nodes for tests: in-process (`App::build`, port 0) for speed, and the real
//! binary for signals, kill -9 and restarts. Both report their real address.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use signal::core::Core;
use signal::{App, RunningApp, SignalConfig};
use tokio::process::{Child, Command};

pub use testkit::{http_get, metric};

use super::{free_port, wait_until, Client};

/// Which store the nodes share.
#[derive(Debug, Clone)]
pub enum Backend {
    Memory,
    Redis(String),
}

/// Fast liveness for tests that are not about the default timings.
pub const FAST: &[(&str, &str)] = &[("HEARTBEAT_INTERVAL_MS", "300"), ("NODE_TTL_MS", "1200")];

/// Test nodes run without resume unless a test turns it on (RESUME_GRACE_MS): most tests
/// are about what a dropped connection's room hears at once.
pub const NO_RESUME: (&str, &str) = ("RESUME_GRACE_MS", "0");

/// The documented defaults, for tests that prove the documented bounds.
pub const DEFAULT_TIMINGS: &[(&str, &str)] = &[("HEARTBEAT_INTERVAL_MS", "2000"), ("NODE_TTL_MS", "6000")];

pub struct InProcessNode {
    pub addr: SocketAddr,
    pub core: Arc<Core>,
    /// The node's store, for fault injection.
    pub store: Arc<dyn bus::Backend>,
    /// Dropping it stops the node.
    _running: RunningApp,
}

impl InProcessNode {
    pub async fn start(backend: &Backend, extra: &[(&str, &str)]) -> Self {
        telemetry::init_for_tests();
        let mut pairs: Vec<(&str, &str)> = vec![("HOST", "127.0.0.1"), ("PORT", "0")];
        if let Backend::Redis(url) = backend {
            pairs.push(("REDIS_URL", url.as_str()));
        }
        pairs.extend_from_slice(FAST);
        pairs.push(NO_RESUME);
        pairs.extend_from_slice(extra);
        let config = SignalConfig::from_pairs(&pairs).expect("test config");
        let app = App::build(config).await.expect("node starts");
        let (core, store) = (app.core(), app.store());
        let running = app.spawn();
        let addr = running.local_addr();
        wait_ready(addr).await;
        Self { addr, core, store, _running: running }
    }

    /// One of the node's /metrics values, summed over its label sets.
    pub async fn metric(&self, name: &str) -> f64 {
        metric(self.addr, name).await
    }
}

/// The reason /readyz gives, or None when the node is ready.
pub async fn not_ready_reason(addr: SocketAddr) -> Option<String> {
    match http_get(addr, "/readyz").await {
        Some((200, _)) => None,
        Some((_, body)) => Some(
            serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["reason"].as_str().map(str::to_owned))
                .unwrap_or(body),
        ),
        None => Some("no answer".into()),
    }
}

/// Several in-process nodes sharing one backend.
pub struct TestCluster {
    pub nodes: Vec<InProcessNode>,
}

impl TestCluster {
    pub async fn start(backend: &Backend, n: usize) -> Self {
        Self::start_with(backend, n, &[]).await
    }

    pub async fn start_with(backend: &Backend, n: usize, extra: &[(&str, &str)]) -> Self {
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(InProcessNode::start(backend, extra).await);
        }
        Self { nodes }
    }

    pub async fn client(&self, i: usize) -> Client {
        Client::connect(self.nodes[i].addr).await
    }
}

pub async fn ready(addr: SocketAddr) -> bool {
    matches!(http_get(addr, "/readyz").await, Some((200, _)))
}

pub async fn wait_ready(addr: SocketAddr) {
    wait_until(Duration::from_secs(15), "node /readyz to say ready", || ready(addr)).await;
}

/// Two real node processes, n1 and n2, on `redis`, with a client on each joined to
/// `room` (and told of each other): the start of every process-level fault test.
pub async fn process_pair_in_room(
    redis: &testkit::TestRedis,
    room: &str,
) -> (NodeProcess, NodeProcess, Client, Client) {
    let n1 = NodeProcess::start(&redis.url(), "n1", &[]).await;
    let n2 = NodeProcess::start(&redis.url(), "n2", &[]).await;
    let mut a = Client::connect(n1.addr).await;
    let mut b = Client::connect(n2.addr).await;
    a.join_pair(&mut b, room).await;
    (n1, n2, a, b)
}

/// The real `signal` binary.
pub struct NodeProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl NodeProcess {
    pub async fn start(redis_url: &str, node_id: &str, extra: &[(&str, &str)]) -> Self {
        Self::start_with_log(redis_url, node_id, extra, None).await
    }

    /// Like [`NodeProcess::start`], with the node's log (stdout and stderr) written to `log`.
    pub async fn start_with_log(
        redis_url: &str,
        node_id: &str,
        extra: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> Self {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_signal"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env("REDIS_URL", redis_url)
            .env("NODE_ID", node_id)
            .env(NO_RESUME.0, NO_RESUME.1)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let (stdout, stderr) = match log {
            Some(path) => {
                let file = std::fs::File::create(path).expect("create the log file");
                (Stdio::from(file.try_clone().unwrap()), Stdio::from(file))
            }
            None if std::env::var_os("TEST_LOG").is_some() => (Stdio::null(), Stdio::inherit()),
            None => (Stdio::null(), Stdio::null()),
        };
        let child = cmd.stdout(stdout).stderr(stderr).kill_on_drop(true).spawn().expect("spawn signal binary");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_ready(addr).await;
        Self { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub async fn kill9(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running");
        let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await.unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("exit within 20 s of SIGTERM")
            .unwrap()
    }
}
