//! A private Prometheus (Debian's `prometheus`, installed by the test command) on a
//! free loopback port, and the check every dashboard test makes with it: each query of
//! each panel of a dashboard in deploy/grafana/dashboards returns data.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::{free_port, wait_until};

/// The dashboards fed by signal nodes (checked by the signal crate's test).
pub const SIGNAL_DASHBOARDS: [&str; 2] = ["signal-cluster.json", "signal-node.json"];
/// The dashboards fed by the credential service and coturn (checked by its test).
pub const TURN_DASHBOARDS: [&str; 1] = ["signal-turn.json"];

pub fn dashboards_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/dashboards")
}

/// Every panel's queries in dashboard `file`, with the template variables set to
/// "all". Panics if a panel has no description or unit.
pub fn panel_queries(file: &str) -> Vec<(String, String)> {
    let path = dashboards_dir().join(file);
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        assert!(panel["description"].as_str().is_some_and(|d| !d.is_empty()), "{file}: {title} has no description");
        assert!(panel["fieldConfig"]["defaults"]["unit"].is_string(), "{file}: {title} has no unit");
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap().replace("$namespace", ".*").replace("$instance", ".*");
            out.push((format!("{file} / {title}"), expr));
        }
    }
    assert!(!out.is_empty(), "{file} has no queries");
    out
}

pub struct TestPrometheus {
    pub port: u16,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl TestPrometheus {
    /// Scrapes `targets` (job name, host:port list) every second.
    pub async fn start(targets: &[(&str, Vec<String>)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        let jobs: Vec<Value> = targets
            .iter()
            .map(|(job, hosts)| json!({"job_name": job, "static_configs": [{"targets": hosts}]}))
            .collect();
        let scrape = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": jobs,
        });
        // JSON is YAML.
        std::fs::write(&config, scrape.to_string()).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus is installed (the README test command installs it)");
        wait_until(Duration::from_secs(20), "prometheus to be ready", || async move {
            reqwest::get(format!("http://127.0.0.1:{port}/-/ready")).await.is_ok_and(|r| r.status().is_success())
        })
        .await;
        Self { port, _child: child, _dir: dir }
    }

    /// Runs an instant query through the HTTP API.
    pub async fn query(&self, expr: &str) -> Value {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let response =
            reqwest::Client::new().get(url).query(&[("query", expr)]).send().await.expect("prometheus answers");
        let result: Value = response.json().await.expect("a JSON answer");
        assert_eq!(result["status"], "success", "{expr}: {result}");
        result
    }

    /// Waits (bounded by `deadline`) until every query returns at least one number;
    /// fails naming the panels still without data.
    pub async fn expect_data(&self, queries: Vec<(String, String)>, deadline: Duration) {
        let until = tokio::time::Instant::now() + deadline;
        let mut missing = queries;
        while !missing.is_empty() {
            assert!(tokio::time::Instant::now() < until, "panels without data after {deadline:?}: {missing:#?}");
            let mut still = Vec::new();
            for (title, expr) in missing {
                if !has_data(&self.query(&expr).await) {
                    still.push((title, expr));
                }
            }
            missing = still;
            if !missing.is_empty() {
                // The next scrapes (every second) bring the rates.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Whether a query result holds at least one number (NaN: no data in the window).
fn has_data(result: &Value) -> bool {
    result["data"]["result"].as_array().is_some_and(|series| {
        series.iter().any(|s| s["value"][1].as_str().is_some_and(|v| v.parse::<f64>().is_ok_and(|v| !v.is_nan())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dashboard_is_checked_by_one_test() {
        let mut files: Vec<String> = std::fs::read_dir(dashboards_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".json"))
            .collect();
        files.sort();
        let mut covered: Vec<String> =
            SIGNAL_DASHBOARDS.iter().chain(TURN_DASHBOARDS.iter()).map(|s| s.to_string()).collect();
        covered.sort();
        assert_eq!(files, covered, "a dashboard is not checked against a real Prometheus");
        for file in &files {
            panel_queries(file);
        }
    }
}
