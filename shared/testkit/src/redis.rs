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

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers. It keeps its
    /// data; [`TestRedis::resume`] lets it go on.
    pub async fn pause(&self) {
        self.signal("-STOP").await;
    }

    pub async fn resume(&self) {
        self.signal("-CONT").await;
    }

    async fn signal(&self, which: &str) {
        let pid = self.child.as_ref().and_then(|c| c.id()).expect("a running server");
        let status = Command::new("kill").args([which, &pid.to_string()]).status().await.unwrap();
        assert!(status.success());
    }

    /// Starts a fresh, empty server on the same port.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.child = Some(spawn_redis(self.port, self.dir.path(), &[]));
        wait_for_ping(self.port).await;
    }
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag, or of the whole key
/// when it has none, modulo 16384.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    let mut crc: u16 = 0;
    for &byte in hashed {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16384
}

/// Three masters (and, with [`TestRedisCluster::start_with_replicas`], a replica each),
/// slots spread by redis-cli.
pub struct TestRedisCluster {
    children: Vec<Option<Child>>,
    pub ports: Vec<u16>,
    _dirs: Vec<tempfile::TempDir>,
}

impl TestRedisCluster {
    pub async fn start() -> Self {
        Self::start_with_replicas(0).await
    }

    /// Three masters with `replicas` replicas each.
    pub async fn start_with_replicas(replicas: usize) -> Self {
        let mut children = Vec::new();
        let mut ports = Vec::new();
        let mut dirs = Vec::new();
        for _ in 0..3 * (1 + replicas) {
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
        args.extend(["--cluster-replicas".to_owned(), replicas.to_string(), "--cluster-yes".to_owned()]);
        let out = Command::new("redis-cli").args(&args).output().await.expect("redis-cli");
        assert!(out.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&out.stdout));
        // Every node must know every slot and node before a client reads the topology
        // from whichever node it reaches first (gossip takes a moment after create).
        for &port in &ports {
            wait_until(Duration::from_secs(20), "every cluster node to see the whole cluster", || async move {
                let info = cli(port, &["CLUSTER", "INFO"]).await;
                let known = format!("cluster_known_nodes:{}", 3 * (1 + replicas));
                ["cluster_state:ok", "cluster_slots_ok:16384", known.as_str()].iter().all(|f| info.contains(f))
            })
            .await;
        }
        if replicas > 0 {
            // Each replica attached and in sync before anyone relies on a failover.
            for &port in &ports {
                wait_until(Duration::from_secs(20), "the replicas to sync", || async move {
                    let info = cli(port, &["INFO", "replication"]).await;
                    info.contains("role:master") || info.contains("master_link_status:up")
                })
                .await;
            }
        }
        Self { children: children.into_iter().map(Some).collect(), ports, _dirs: dirs }
    }

    /// The port of a master that holds slots, and the port of its replica.
    pub async fn master_with_replica(&self) -> (u16, u16) {
        let nodes = cli(self.ports[0], &["CLUSTER", "NODES"]).await;
        let port_of = |addr: &str| addr.split(['@', ':']).nth(1).and_then(|p| p.parse::<u16>().ok());
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 8 && f[2].contains("master") {
                let id = f[0];
                if let Some(replica) = nodes.lines().find(|l| l.split_whitespace().nth(3) == Some(id)) {
                    let replica_addr = replica.split_whitespace().nth(1).unwrap();
                    return (port_of(f[1]).unwrap(), port_of(replica_addr).unwrap());
                }
            }
        }
        panic!("no master with a replica in:\n{nodes}");
    }

    /// The slot ranges the master on `port` serves now.
    pub async fn slots_of(&self, port: u16) -> Vec<std::ops::RangeInclusive<u16>> {
        let nodes = cli(port, &["CLUSTER", "NODES"]).await;
        let Some(me) = nodes.lines().find(|l| l.contains("myself")) else { return Vec::new() };
        me.split_whitespace()
            .skip(8)
            .filter_map(|range| {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                Some(from.parse().ok()?..=to.parse().ok()?)
            })
            .collect()
    }

    /// `CLUSTER NODES` as the node on `port` sees it (for a failure's message).
    pub async fn nodes_seen_by(&self, port: u16) -> String {
        cli(port, &["CLUSTER", "NODES"]).await
    }

    /// Kills the node on `port` (SIGKILL).
    pub async fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).expect("a node of this cluster");
        if let Some(mut child) = self.children[i].take() {
            child.kill().await.unwrap();
        }
    }

    /// Whether the node on `port` now says it is a master.
    pub async fn is_master(&self, port: u16) -> bool {
        cli(port, &["ROLE"]).await.lines().next() == Some("master")
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

/// A primary, one replica and three sentinels watching them (service `mymaster`,
/// quorum 2, a primary is down after 1 s without answers).
pub struct TestRedisSentinel {
    primary: Option<Child>,
    _replica: Child,
    _sentinels: Vec<Child>,
    pub primary_port: u16,
    pub replica_port: u16,
    pub sentinel_ports: Vec<u16>,
    _dirs: Vec<tempfile::TempDir>,
}

pub const SENTINEL_SERVICE: &str = "mymaster";

impl TestRedisSentinel {
    pub async fn start() -> Self {
        let mut dirs = Vec::new();
        let (primary_port, replica_port) = (free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let primary = spawn_redis(primary_port, dir.path(), &[]);
        dirs.push(dir);
        wait_for_ping(primary_port).await;
        let dir = tempfile::tempdir().unwrap();
        let replica = spawn_redis(replica_port, dir.path(), &["--replicaof", "127.0.0.1", &primary_port.to_string()]);
        dirs.push(dir);
        wait_for_ping(replica_port).await;
        wait_until(Duration::from_secs(10), "the replica to sync", || async move {
            cli(replica_port, &["INFO", "replication"]).await.contains("master_link_status:up")
        })
        .await;
        let mut sentinels = Vec::new();
        let mut sentinel_ports = Vec::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nsentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary_port} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
                     sentinel failover-timeout {SENTINEL_SERVICE} 5000\n\
                     sentinel parallel-syncs {SENTINEL_SERVICE} 1\n"
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .current_dir(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("redis-server on PATH");
            wait_for_ping(port).await;
            sentinels.push(child);
            sentinel_ports.push(port);
            dirs.push(dir);
        }
        // Every sentinel knows the replica and the other sentinels before a failover.
        for &port in &sentinel_ports {
            wait_until(Duration::from_secs(20), "the sentinels to know each other and the replica", || async move {
                let master = cli(port, &["SENTINEL", "MASTER", SENTINEL_SERVICE]).await;
                let field = |name: &str| {
                    let lines: Vec<&str> = master.lines().collect();
                    lines.iter().position(|l| *l == name).and_then(|i| lines.get(i + 1)).map(|v| v.to_string())
                };
                field("num-slaves").as_deref() == Some("1") && field("num-other-sentinels").as_deref() == Some("2")
            })
            .await;
        }
        Self {
            primary: Some(primary),
            _replica: replica,
            _sentinels: sentinels,
            primary_port,
            replica_port,
            sentinel_ports,
            _dirs: dirs,
        }
    }

    /// `redis-sentinel://` naming every sentinel and the service.
    pub fn url(&self) -> String {
        let mut url =
            format!("redis-sentinel://127.0.0.1:{}/0?sentinelServiceName={SENTINEL_SERVICE}", self.sentinel_ports[0]);
        for port in &self.sentinel_ports[1..] {
            url.push_str(&format!("&node=127.0.0.1:{port}"));
        }
        url
    }

    /// The primary's port as the sentinels see it.
    pub async fn primary_as_seen(&self) -> Option<u16> {
        let out = cli(self.sentinel_ports[0], &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE]).await;
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// Kills the primary (SIGKILL); the sentinels then promote the replica.
    pub async fn kill_primary(&mut self) {
        if let Some(mut child) = self.primary.take() {
            child.kill().await.unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn key_slots_match_redis() {
        // Values from Redis's CLUSTER KEYSLOT.
        assert_eq!(super::key_slot("123456789"), 12739);
        assert_eq!(super::key_slot("foo"), 12182);
        assert_eq!(super::key_slot("{user1000}.following"), super::key_slot("user1000"));
        assert_ne!(super::key_slot("a{}b"), super::key_slot("a{}c"), "an empty tag hashes the whole key");
    }
}
