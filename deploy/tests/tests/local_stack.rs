//! The compose topology as local processes (deploy/local/run.sh: Redis, 3 signal nodes,
//! the credential service, coturn, HAProxy and Prometheus from the compose files), driven
//! through its load balancer:
//! - Socket.IO clients on HTTP long-polling only (several requests per session, each of
//!   which must reach the node holding the session) work through the sticky balancer,
//!   spread over the nodes, and signal each other across them;
//! - the same balancer without its affinity cookie breaks them: the stickiness is what
//!   makes polling work;
//! - a native relay run through the balancer loses nothing;
//! - the credential paths reach the credential service through the same origin.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use testkit::socketio::SioAgent;
use testkit::{free_port, wait_until};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::paths::{repo, workspace_binary};

/// run.sh in its own process group, stopped (with everything it started) on drop.
struct Stack {
    child: Child,
    lb: String,
    base: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // run.sh stops its children on TERM.
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            let _ = std::process::Command::new("kill").args(["-TERM", "--", &format!("-{pid}")]).status();
        }
    }
}

/// A base port with the 41 ports run.sh uses above it free a moment ago.
fn free_base() -> u16 {
    for _ in 0..50 {
        let base = free_port();
        if base < 65_000 && (base..base + 41).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no free block of ports");
}

async fn start_stack() -> Stack {
    let bin_dir = workspace_binary("signal").parent().unwrap().to_path_buf();
    workspace_binary("credentials");
    let dir = tempfile::tempdir().unwrap();
    let base = free_base();
    let mut child = Command::new("bash")
        .arg(repo().join("deploy/local/run.sh"))
        .args(["--base-port", &base.to_string(), "--no-prometheus", "--bin"])
        .arg(&bin_dir)
        .arg("--dir")
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("bash runs deploy/local/run.sh");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix("ready lb=") {
                return rest.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("run.sh exited before the stack was ready (logs in {})", dir.path().display());
    })
    .await
    .expect("the local stack is ready within 60 s");
    Stack { child, lb: ready, base, _dir: dir }
}

/// Socket.IO connections open on a node, from its metrics.
async fn socketio_connections(port: u16) -> f64 {
    testkit::metric(([127, 0, 0, 1], port).into(), r#"signal_connections{dialect="socketio"}"#).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_clients_work_through_the_sticky_balancer_and_fail_without_it() {
    let stack = start_stack().await;
    let mut agent = SioAgent::start().await;

    // Six polling-only clients through the balancer: least-connections spreads them.
    let mut ids = Vec::new();
    for i in 0..6 {
        let id = agent
            .connect_polling_with_cookies(&format!("c{i}"), &stack.lb)
            .await
            .unwrap_or_else(|e| panic!("c{i} could not connect through the balancer: {e}"));
        ids.push(id);
    }
    let per_node = connections_per_node(stack.base).await;
    assert_eq!(per_node.iter().sum::<f64>(), 6.0, "{per_node:?}");
    assert!(per_node.iter().filter(|n| **n > 0.0).count() >= 2, "clients spread over the nodes: {per_node:?}");

    // They share a room and signal each other across nodes, all over polling.
    for i in 0..6 {
        let ack = agent
            .emit_ack(
                &format!("c{i}"),
                "join-room",
                json!({"roomId": "lb-room", "userName": format!("user {i}"), "userRole": "observer"}),
            )
            .await;
        assert_eq!(ack["ok"], true, "{ack}");
    }
    for i in 1..6 {
        agent
            .emit(
                &format!("c{i}"),
                "offer",
                json!({"targetUserId": ids[0], "roomId": "lb-room", "offer": {"type": "offer", "sdp": format!("v=0 {i}")}}),
            )
            .await;
    }
    let mut got = Vec::new();
    for _ in 1..6 {
        let offer = agent.event("c0", "offer").await;
        got.push(offer["offer"]["sdp"].as_str().unwrap().to_owned());
    }
    got.sort();
    assert_eq!(got, (1..6).map(|i| format!("v=0 {i}")).collect::<Vec<_>>());

    // The same balancer without the affinity cookie: a polling session's requests are
    // spread round-robin and land on nodes that do not know the session.
    let config = std::fs::read_to_string(repo().join("deploy/compose/haproxy.cfg")).unwrap();
    let unsticky: String = config
        .lines()
        .filter(|l| !l.trim_start().starts_with("cookie ") && !l.trim_start().starts_with('#'))
        .map(|l| match l.find(" cookie signal-") {
            Some(at) if l.trim_start().starts_with("server ") => l[..at].to_owned(),
            _ => l.replace("balance leastconn", "balance roundrobin"),
        })
        .map(|l| l + "\n")
        .collect::<String>();
    assert!(!unsticky.contains("cookie") && unsticky.contains("balance roundrobin"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unsticky.cfg");
    std::fs::write(&path, unsticky).unwrap();
    let port = free_port();
    let base = stack.base;
    let _haproxy = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .env("LB_BIND", format!("127.0.0.1:{port}"))
        .env("SIGNAL_1", format!("127.0.0.1:{}", base + 1))
        .env("SIGNAL_2", format!("127.0.0.1:{}", base + 2))
        .env("SIGNAL_3", format!("127.0.0.1:{}", base + 3))
        .env("CREDENTIALS", format!("127.0.0.1:{}", base + 4))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    wait_until(Duration::from_secs(10), "the unsticky balancer", || async {
        reqwest::get(format!("{url}/readyz")).await.is_ok_and(|r| r.status().is_success())
    })
    .await;
    let mut failed = 0;
    for i in 0..3 {
        if agent.connect_polling_with_cookies(&format!("x{i}"), &url).await.is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 3, "polling without stickiness cannot hold a session");
}

/// Socket.IO connections on each of the three nodes.
async fn connections_per_node(base: u16) -> Vec<f64> {
    let mut out = Vec::new();
    for port in [base + 1, base + 2, base + 3] {
        out.push(socketio_connections(port).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_relay_run_and_the_credential_paths_go_through_the_balancer() {
    let stack = start_stack().await;
    let ws = stack.lb.replace("http://", "ws://") + "/ws";
    let loadtest: PathBuf = workspace_binary("loadtest");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(loadtest)
            .args(["relay", "--url", &ws, "--peers", "20", "--rate", "500", "--duration", "3s", "--quiet"])
            .args(["--slo", "loss=0"])
            .output(),
    )
    .await
    .expect("the relay run ends")
    .unwrap();
    assert!(
        out.status.success(),
        "relay through the balancer: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // One origin: TURN credentials from the balancer's address.
    let body: serde_json::Value =
        reqwest::get(format!("{}/api/turn/config", stack.lb)).await.unwrap().json().await.unwrap();
    let urls = body["iceServers"].to_string();
    assert!(urls.contains(&format!("turn:127.0.0.1:{}", stack.base + 5)), "{body}");

    // S4's flow out of the box: a token signed by one node opens a room on another
    // (run.sh generated the shared development secret).
    let http = reqwest::Client::new();
    let signin: serde_json::Value =
        http.post(format!("{}/anonymous-signin", stack.lb)).send().await.unwrap().json().await.unwrap();
    let id_token = signin["id_token"].as_str().unwrap_or_else(|| panic!("{signin}"));
    for node in 1..=3 {
        let url = format!("http://127.0.0.1:{}/create-room", stack.base + node);
        let created = http.post(url).bearer_auth(id_token).send().await.unwrap();
        assert_eq!(created.status().as_u16(), 200, "signal-{node} knows the secret");
    }
}
