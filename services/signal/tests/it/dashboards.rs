//! The dashboards show data: a real Prometheus (Debian's `prometheus`, installed by the
//! test command) scrapes two nodes under a light load, and every query of every panel
//! of every dashboard in deploy/grafana/dashboards returns data through its HTTP API.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::Command;

use crate::helpers::{free_port, wait_until, Backend, TestCluster, TestRedis};

fn dashboards() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/dashboards");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("deploy/grafana/dashboards") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            found.push((path.file_name().unwrap().to_string_lossy().into_owned(), dashboard));
        }
    }
    assert!(!found.is_empty());
    found
}

/// Every panel's queries, with the template variables set to "all".
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        assert!(panel["description"].as_str().is_some_and(|d| !d.is_empty()), "{title} has no description");
        assert!(panel["fieldConfig"]["defaults"]["unit"].is_string(), "{title} has no unit");
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap().replace("$namespace", ".*").replace("$instance", ".*");
            out.push((title.to_owned(), expr));
        }
    }
    out
}

async fn query(prometheus: u16, expr: &str) -> Value {
    let url = format!("http://127.0.0.1:{prometheus}/api/v1/query");
    let response = reqwest::Client::new().get(url).query(&[("query", expr)]).send().await.expect("prometheus answers");
    response.json().await.unwrap()
}

/// Whether a query result holds at least one number (NaN: no data in the window).
fn has_data(result: &Value) -> bool {
    result["data"]["result"].as_array().is_some_and(|series| {
        series.iter().any(|s| s["value"][1].as_str().is_some_and(|v| v.parse::<f64>().is_ok_and(|v| !v.is_nan())))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_shows_data_from_a_real_prometheus() {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start(&Backend::Redis(redis.url()), 2).await;
    let targets: Vec<String> = cluster.nodes.iter().map(|n| n.addr.to_string()).collect();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    let scrape = json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "signal", "static_configs": [{"targets": targets}]}],
    });
    // JSON is YAML.
    std::fs::write(&config, scrape.to_string()).unwrap();
    let port = free_port();
    let _prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus is installed (the README test command installs it)");
    wait_until(Duration::from_secs(20), "prometheus to be ready", || async {
        reqwest::get(format!("http://127.0.0.1:{port}/-/ready")).await.is_ok_and(|r| r.status().is_success())
    })
    .await;

    // A light, steady load: local and cross-node signals, a broadcast, a bad frame.
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    let mut c = cluster.client(0).await;
    a.join_pair(&mut b, "dash").await;
    c.join("dash").await;
    let load = tokio::spawn(async move {
        for i in 0..400u32 {
            a.signal("dash", b.peer(), "offer", json!({"i": i})).await;
            a.signal("dash", c.peer(), "candidate", json!({"i": i})).await;
            if i % 10 == 0 {
                a.send(json!({"type": "broadcast", "room": "dash", "kind": "chat", "data": {}})).await;
                a.send_text("{not json").await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (a, b, c)
    });

    let all: Vec<(String, String, String)> = dashboards()
        .iter()
        .flat_map(|(file, d)| queries(d).into_iter().map(move |(title, expr)| (file.clone(), title, expr)))
        .collect();
    let mut missing = all;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !missing.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "panels without data after 30 s: {missing:#?}");
        let mut still = Vec::new();
        for (file, title, expr) in missing {
            let result = query(port, &expr).await;
            assert_eq!(result["status"], "success", "{file} / {title}: {expr}: {result}");
            if !has_data(&result) {
                still.push((file, title, expr));
            }
        }
        missing = still;
        if !missing.is_empty() {
            // Waiting for the next scrapes (every second) to bring the rates.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    load.abort();
}
