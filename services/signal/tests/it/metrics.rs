//! /metrics: Prometheus text with the process and the node's gauges.

use crate::helpers::{Backend, TestCluster};

fn value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_connections_and_rooms() {
    let cluster = TestCluster::start(&Backend::Memory, 1).await;
    let addr = cluster.nodes[0].addr;
    let (status, text) = testkit::http_get(addr, "/metrics").await.expect("node answers");
    assert_eq!(status, 200);
    assert_eq!(value(&text, "signal_connections"), 0.0);
    assert_eq!(value(&text, "signal_ready"), 1.0);
    assert!(value(&text, "process_resident_memory_bytes") > 0.0);

    let mut a = cluster.client(0).await;
    let mut b = cluster.client(0).await;
    a.join_pair(&mut b, "metrics-room").await;
    let (_, text) = testkit::http_get(addr, "/metrics").await.unwrap();
    assert_eq!(value(&text, "signal_connections"), 2.0);
    assert_eq!(value(&text, "signal_rooms"), 1.0);
    assert!(value(&text, "process_open_fds") >= 2.0);
}
