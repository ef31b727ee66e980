//! The signal dashboards show data: a real Prometheus (Debian's `prometheus`, installed
//! by the test command) scrapes two nodes under a light load, and every query of every
//! panel of the cluster and node dashboards returns data through its HTTP API. (The
//! TURN dashboard is checked by the credential service's tests.)

use std::time::Duration;

use serde_json::json;
use testkit::prometheus::{panel_queries, SIGNAL_DASHBOARDS};
use testkit::TestPrometheus;

use crate::helpers::{Backend, Client, TestCluster, TestRedis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_shows_data_from_a_real_prometheus() {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &[("RESUME_GRACE_MS", "5000")]).await;
    let targets: Vec<String> = cluster.nodes.iter().map(|n| n.addr.to_string()).collect();
    let prometheus = TestPrometheus::start(&[("signal", targets)]).await;

    // A light, steady load with no error at all: local and cross-node signals, a
    // broadcast. Error panels must show their zeros, not "No data".
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
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (a, b, c)
    });
    // A client that drops and resumes on the other node every two seconds.
    let (first, second) = (cluster.nodes[0].addr, cluster.nodes[1].addr);
    let resumes = tokio::spawn(async move {
        for _ in 0..20 {
            let mut d = Client::connect(first).await;
            d.join("dash-resume").await;
            let token = d.resume_token();
            drop(d);
            let (d, _) = Client::resume(second, &token).await.expect("resumed");
            d.close_with(1000).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });

    let queries = SIGNAL_DASHBOARDS.iter().flat_map(|file| panel_queries(file)).collect();
    prometheus.expect_data(queries, Duration::from_secs(30)).await;
    load.abort();
    resumes.abort();
}
