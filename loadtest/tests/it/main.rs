//! End-to-end tests of the `loadtest` binary against two real signal nodes sharing a
//! private redis-server: a small run of every scenario, the Redis-merged multi-process
//! path, SLO exit codes, reports, and the Kubernetes Job manifest.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use signal::{App, RunningApp, SignalConfig};
use testkit::TestRedis;

/// Two nodes on one Redis, as a deployment would run them.
struct Cluster {
    redis: TestRedis,
    nodes: Vec<RunningApp>,
}

impl Cluster {
    async fn start() -> Self {
        let redis = TestRedis::start().await;
        let mut nodes = Vec::new();
        for _ in 0..2 {
            let url = redis.url();
            let pairs = [("HOST", "127.0.0.1"), ("PORT", "0"), ("REDIS_URL", url.as_str())];
            let config = SignalConfig::from_pairs(&pairs).expect("test config");
            let node = App::build(config).await.expect("node starts").spawn();
            let addr = node.local_addr();
            testkit::wait_until(Duration::from_secs(15), "node ready", || async move {
                matches!(testkit::http_get(addr, "/readyz").await, Some((200, _)))
            })
            .await;
            nodes.push(node);
        }
        Self { redis, nodes }
    }

    fn urls(&self) -> String {
        self.nodes.iter().map(|n| format!("ws://{}/ws", n.local_addr())).collect::<Vec<_>>().join(",")
    }
}

/// Runs the binary with a clean LOADTEST_* environment, bounded in time.
async fn loadtest(args: &[&str]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_loadtest"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("LOADTEST_")) {
        cmd.env_remove(key);
    }
    cmd.args(args).kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(120), cmd.output()).await.expect("loadtest finishes in 2 minutes").unwrap()
}

/// Runs a scenario with `--json` and returns the report.
async fn run_json(cluster: &Cluster, scenario: &[&str], extra: &[&str]) -> (Output, Value) {
    run_json_at(&cluster.urls(), scenario, extra).await
}

/// Runs a scenario against `urls` with `--json` and returns the report.
async fn run_json_at(urls: &str, scenario: &[&str], extra: &[&str]) -> (Output, Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let urls = urls.to_owned();
    let mut args: Vec<&str> = scenario.to_vec();
    args.extend(["--url", &urls, "--quiet", "--json", json.to_str().unwrap()]);
    args.extend(extra);
    let out = loadtest(&args).await;
    let report = read_json(&json, &out);
    (out, report)
}

fn read_json(path: &Path, out: &Output) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| {
        panic!(
            "no report; stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(&text).expect("valid JSON report")
}

fn counter(report: &Value, name: &str) -> u64 {
    report["counters"][name].as_u64().unwrap_or(0)
}

fn assert_clean(report: &Value) {
    assert_eq!(report["errors"], serde_json::json!({}), "errors: {report:#}");
    assert_eq!(report["lost"], 0, "lost deliveries: {report:#}");
    assert_eq!(counter(report, "duplicates"), 0);
    assert_eq!(counter(report, "out_of_order"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_delivers_every_signal_across_nodes_in_order() {
    let cluster = Cluster::start().await;
    let (out, r) =
        run_json(&cluster, &["relay"], &["--peers", "20", "--room-size", "2", "--rate", "500", "--duration", "2s"])
            .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_clean(&r);
    assert_eq!(counter(&r, "sent"), 1000, "open loop: exactly rate x duration");
    assert_eq!(counter(&r, "delivered"), 1000);
    assert_eq!(r["latency"]["signal"]["count"], 1000);
    assert_eq!(counter(&r, "joined"), 20);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("relay") && summary.contains("p99"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_with_resume_loses_nothing_while_a_node_drains() {
    let mut cluster = Cluster::start().await;
    let urls = cluster.urls();
    let run = tokio::spawn(async move {
        let args = ["relay", "--resume", "--peers", "20", "--room-size", "2", "--rate", "400", "--duration", "4s"];
        run_json_at(&urls, &args, &[]).await
    });
    // Mid-run, the first node drains: its members are told to reconnect and resume on
    // the other one.
    testkit::wait_until(Duration::from_secs(30), "the run to reach its measured phase", || {
        let node = cluster.nodes[0].local_addr();
        async move { testkit::metric(node, "signal_signals_relayed_total").await > 50.0 }
    })
    .await;
    cluster.nodes.remove(0).stop().await.expect("the node drains");
    let (out, r) = run.await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_clean(&r);
    assert_eq!(counter(&r, "delivered"), 1600);
    assert_eq!(r["latency"]["resume"]["count"], 10, "the drained node's 10 members resumed: {r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_connect_run_in_the_plain_dialect() {
    // Plain clients connect to the nodes' root URL.
    relay_and_connect_run_in("plain", "/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_and_connect_run_in_the_socketio_dialect() {
    // Socket.IO clients are given the node's address; the driver adds /socket.io/.
    relay_and_connect_run_in("socketio", "").await;
}

async fn relay_and_connect_run_in(dialect: &str, path: &str) {
    let cluster = Cluster::start().await;
    let urls: Vec<String> = cluster.nodes.iter().map(|n| format!("ws://{}{path}", n.local_addr())).collect();
    let urls = urls.join(",");
    let relay = ["--dialect", dialect, "--peers", "20", "--room-size", "2", "--rate", "500", "--duration", "2s"];
    let (out, r) = run_json_at(&urls, &["relay"], &relay).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_clean(&r);
    assert_eq!((counter(&r, "sent"), counter(&r, "delivered")), (1000, 1000));
    assert_eq!(counter(&r, "joined"), 20);

    let connect = ["--dialect", dialect, "--connections", "40", "--room-size", "4", "--hold", "300ms"];
    let (out, r) = run_json_at(&urls, &["connect"], &connect).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((counter(&r, "connected"), counter(&r, "joined")), (40, 40));

    // A scenario the dialect cannot express fails clearly instead of measuring nonsense.
    let (out, r) = run_json_at(
        &urls,
        &["fanout"],
        &["--dialect", dialect, "--rooms", "1", "--room-size", "2", "--duration", "1s"],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(r["errors"]["unsupported"].as_u64() > Some(0), "{dialect} has no broadcast: {r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_opens_joins_and_reads_server_memory() {
    let cluster = Cluster::start().await;
    // The nodes run in this test process, so its PID is the server PID.
    let pid = std::process::id().to_string();
    let (out, r) = run_json(
        &cluster,
        &["connect"],
        &["--connections", "60", "--room-size", "3", "--hold", "300ms", "--server-pid", &pid],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((counter(&r, "connected"), counter(&r, "joined")), (60, 60));
    assert_eq!(r["latency"]["join"]["count"], 60);
    assert_eq!(r["server"]["connections"], 60);
    assert!(r["server"]["rss_loaded_bytes"].as_u64().unwrap() > 0);

    // The same through a node's Prometheus /metrics page instead of /proc.
    let metrics = format!("http://{}/metrics", cluster.nodes[0].local_addr());
    let (out, r) = run_json(
        &cluster,
        &["connect"],
        &["--connections", "20", "--room-size", "2", "--hold", "300ms", "--metrics-url", &metrics],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(r["server"]["connections"], 20);
    assert!(r["server"]["rss_loaded_bytes"].as_u64().unwrap() > 0, "{}", r["server"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_reaches_every_member() {
    let cluster = Cluster::start().await;
    // The nodes run in this test process, so its PID is the server PID.
    let pid = std::process::id().to_string();
    let args = ["--rooms", "2", "--room-size", "30", "--rate", "10", "--duration", "2s", "--server-pid", &pid];
    let (out, r) = run_json(&cluster, &["fanout"], &args).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(r["errors"], serde_json::json!({}), "errors: {r:#}");
    assert_eq!(counter(&r, "sent"), 20);
    assert_eq!(counter(&r, "expected"), 20 * 29, "each broadcast is due to the 29 others");
    // Every broadcast reaches every other member: the run's end waits for every send
    // and every due delivery, so nothing in flight is counted as lost.
    assert_eq!(counter(&r, "delivered"), 20 * 29, "{r:#}");
    assert_eq!(r["lost"].as_u64(), Some(0), "{r:#}");
    assert_eq!(counter(&r, "duplicates"), 0);
    // And the nodes never fell behind their bus.
    for node in &cluster.nodes {
        assert_eq!(testkit::metric(node.local_addr(), "signal_bus_lagged_messages_total").await, 0.0, "bus loss");
    }
    let complete = r["latency"]["broadcast_all"]["count"].as_u64().unwrap();
    assert!(complete >= 10, "broadcasts that reached everyone: {complete}");
    // The nodes' CPU over the measured phase, per fan-out delivery.
    assert!(r["server"]["cpu_seconds"].as_f64().is_some_and(|s| s > 0.0), "{}", r["server"]);
    assert!(r["server"]["deliveries_per_cpu_second"].as_f64().is_some_and(|d| d > 0.0), "{}", r["server"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_announcements_arrive_exactly_once() {
    let cluster = Cluster::start().await;
    let (out, r) = run_json(
        &cluster,
        &["churn"],
        &["--peers", "20", "--rooms", "3", "--stay-min", "200ms", "--stay-max", "800ms", "--duration", "3s"],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(counter(&r, "membership_violations"), 0, "{r:#}");
    assert_eq!(counter(&r, "membership_missing"), 0, "{r:#}");
    assert!(counter(&r, "expected") > 20, "the run judged real overlaps: {r:#}");
    assert!(counter(&r, "joined") > 20, "peers cycled: {r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_churns_resumes_samples_usage_and_leaves_no_keys_behind() {
    let cluster = Cluster::start().await;
    let keys_before: u64 = cluster.redis.cli(&["DBSIZE"]).await.trim().parse().unwrap();
    let (redis, pid) = (cluster.redis.url(), std::process::id().to_string());
    let (out, r) = run_json(
        &cluster,
        &["soak"],
        &[
            "--peers",
            "12",
            "--rooms",
            "3",
            "--stay-min",
            "200ms",
            "--stay-max",
            "600ms",
            "--signal-every",
            "50ms",
            "--sample-every",
            "1s",
            "--duration",
            "5s",
            "--watch-redis",
            &redis,
            "--server-pid",
            &pid,
        ],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Every way a stay ends happened, and resumes kept their member whole.
    assert!(counter(&r, "connected") > 12, "peers reconnected afresh: {r:#}");
    assert!(r["latency"]["resume"]["count"].as_u64().unwrap_or(0) > 0, "peers resumed: {r:#}");
    assert!(counter(&r, "joined") > 12, "peers left and joined other rooms: {r:#}");
    assert!(counter(&r, "delivered") > 100, "signals flowed: {r:#}");
    assert_eq!(counter(&r, "duplicates"), 0, "{r:#}");
    assert_eq!(counter(&r, "out_of_order"), 0, "{r:#}");
    for failure in ["resume-failed", "resume-timeout", "closed", "socket-error", "leave-not-acknowledged"] {
        assert!(r["errors"].get(failure).is_none(), "{failure}: {r:#}");
    }
    // Samples at the start, every second and at the end, each with every figure.
    let usage = &r["usage"];
    let samples = usage["samples"].as_array().expect("samples");
    assert!(samples.len() >= 6, "{usage:#}");
    for s in samples {
        for field in ["rss_bytes", "open_fds", "redis_used_memory_bytes", "redis_keys"] {
            assert!(s[field].as_u64().is_some_and(|v| v > 0), "{field} in {s}");
        }
    }
    // The last sample is taken before the peers close: it still shows the load (a slot
    // may be between two connections at that instant).
    assert!(samples.last().unwrap()["connections"].as_u64().unwrap() >= 9, "{usage:#}");
    let series: Vec<&str> = usage["trends"].as_array().unwrap().iter().map(|t| t["series"].as_str().unwrap()).collect();
    assert_eq!(series, ["rss_bytes", "open_fds", "redis_used_memory_bytes", "redis_keys", "members"]);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("trends after") && summary.contains("redis_keys"), "{summary}");
    // Once every peer has gone, the cluster's keys are what they were before.
    testkit::wait_until(Duration::from_secs(30), "Redis keys back to their count before the soak", || {
        let redis = &cluster.redis;
        async move { redis.cli(&["DBSIZE"]).await.trim().parse::<u64>().ok() == Some(keys_before) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meeting_mix_negotiates_chats_and_updates() {
    let cluster = Cluster::start().await;
    let (out, r) = run_json(
        &cluster,
        &["meeting"],
        &[
            "--meetings",
            "3",
            "--size",
            "3",
            "--length",
            "3s",
            "--update-every",
            "1s",
            "--chat-every",
            "1s",
            "--duration",
            "3s",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_clean(&r);
    // Each meeting of 3 has 3 pairs, each with offer + 8 candidates and answer + 8.
    assert!(r["latency"]["signal"]["count"].as_u64().unwrap() >= 3 * 3 * 18, "{r:#}");
    assert!(r["latency"]["chat"]["count"].as_u64().unwrap() > 0, "{r:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_merged_through_redis_equal_one_process() {
    let cluster = Cluster::start().await;
    let relay = ["relay"];
    let args = ["--peers", "16", "--room-size", "2", "--rate", "400", "--duration", "2s"];
    let (single_out, single) = run_json(&cluster, &relay, &args).await;
    assert!(single_out.status.success(), "{}", String::from_utf8_lossy(&single_out.stderr));
    let coordination = cluster.redis.url();
    let mut with_workers = args.to_vec();
    with_workers.extend(["--workers", "2", "--redis-url", &coordination]);
    let (out, merged) = run_json(&cluster, &relay, &with_workers).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(merged["workers"], 2);
    for name in ["sent", "expected", "delivered", "connected", "joined"] {
        assert_eq!(counter(&merged, name), counter(&single, name), "{name}");
    }
    assert_eq!(merged["latency"]["signal"]["count"], single["latency"]["signal"]["count"]);
    assert_clean(&merged);
    // The coordinator removes the run's keys.
    assert_eq!(cluster.redis.cli(&["KEYS", "loadtest:*"]).await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_decides_the_exit_status_and_reports_are_written() {
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let args = ["--peers", "4", "--rate", "200", "--duration", "1s", "--html", html.to_str().unwrap()];
    let (met, _) = run_json(&cluster, &["relay"], &[&args[..], &["--slo", "loss=0,errors=0"]].concat()).await;
    assert_eq!(met.status.code(), Some(0), "{}", String::from_utf8_lossy(&met.stdout));
    let (missed, r) = run_json(&cluster, &["relay"], &[&args[..], &["--slo", "p99<1us"]].concat()).await;
    assert_eq!(missed.status.code(), Some(3), "an impossible objective is missed");
    assert_eq!(r["slo_met"], false);
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<svg").count(), 3, "percentiles, latency over time, throughput over time");

    let bad = loadtest(&["relay", "--url", &cluster.urls(), "--slo", "p99<fast"]).await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad SLO"), "{}", String::from_utf8_lossy(&bad.stderr));
}

#[tokio::test]
async fn unreachable_servers_fail_the_run_clearly() {
    let port = testkit::free_port();
    let out = loadtest(&["relay", "--url", &format!("ws://127.0.0.1:{port}/ws"), "--peers", "2", "--quiet"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no room could be filled"));
}

#[tokio::test]
async fn the_kubernetes_job_manifest_is_valid() {
    let out = loadtest(&[
        "kube",
        "--print-manifest",
        "--namespace",
        "load",
        "relay",
        "--workers",
        "4",
        "--redis-url",
        "redis://redis.load:6379",
        "--url",
        "ws://signal.load:8080/ws",
        "--peers",
        "1000",
    ])
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8(out.stdout).unwrap();
    assert!(yaml.contains("completionMode: Indexed") && yaml.contains("completions: 4"), "{yaml}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.yaml");
    std::fs::write(&file, &yaml).unwrap();
    // kubernetes-validate (PyPI) checks it against the Kubernetes OpenAPI schemas;
    // the README test command installs it.
    let check = tokio::process::Command::new("kubernetes-validate")
        .arg("--strict")
        .arg(&file)
        .output()
        .await
        .expect("kubernetes-validate on PATH (pip install kubernetes-validate)");
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}
