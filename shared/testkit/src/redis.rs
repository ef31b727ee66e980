//! Private redis-server processes: one standalone server, or a 3-master Cluster.
//! Never the machine's own Redis on 6379; each test gets its own.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{free_port, wait_until};

pub struct TestRedis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn spawn_redis(port: u16, dir: &std::path::Path, extra: &[&str]) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server on PATH (the README test command installs it)")
}

/// Runs a redis-cli command against `port`; returns its stdout.
pub async fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .await
        .expect("redis-cli on PATH");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn wait_for_ping(port: u16) {
    wait_until(Duration::from_secs(10), "redis-server to answer PING", || async move {
        cli(port, &["PING"]).await == "PONG"
    })
    .await;
}

impl TestRedis {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = spawn_redis(port, dir.path(), &[]);
        wait_for_ping(port).await;
        Self { child: Some(child), port, dir }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args).await
    }

    /// Kills the server (SIGKILL), losing everything it held.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    /// Starts a fresh, empty server on the same port.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.child = Some(spawn_redis(self.port, self.dir.path(), &[]));
        wait_for_ping(self.port).await;
    }
}

/// Three masters, no replicas, slots spread by redis-cli.
pub struct TestRedisCluster {
    _children: Vec<Child>,
    pub ports: Vec<u16>,
    _dirs: Vec<tempfile::TempDir>,
}

impl TestRedisCluster {
    pub async fn start() -> Self {
        let mut children = Vec::new();
        let mut ports = Vec::new();
        let mut dirs = Vec::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            children.push(spawn_redis(
                port,
                dir.path(),
                &["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"],
            ));
            wait_for_ping(port).await;
            ports.push(port);
            dirs.push(dir);
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
        args.extend(addrs);
        args.extend(["--cluster-replicas".to_owned(), "0".to_owned(), "--cluster-yes".to_owned()]);
        let out = Command::new("redis-cli").args(&args).output().await.expect("redis-cli");
        assert!(out.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        // Every node must know every slot and node before a client reads the topology
        // from whichever node it reaches first (gossip takes a moment after create).
        for &port in &ports {
            wait_until(Duration::from_secs(20), "every cluster node to see the whole cluster", || async move {
                let info = cli(port, &["CLUSTER", "INFO"]).await;
                ["cluster_state:ok", "cluster_slots_ok:16384", "cluster_known_nodes:3"].iter().all(|f| info.contains(f))
            })
            .await;
        }
        Self { _children: children, ports, _dirs: dirs }
    }

    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.ports[0]);
        for (i, p) in self.ports[1..].iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{p}"));
        }
        url
    }
}
