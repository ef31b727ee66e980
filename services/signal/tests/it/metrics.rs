//! /metrics: Prometheus text (the `prometheus` crate) with the process and the node's
//! metrics, moved by real traffic.

use serde_json::json;

use crate::helpers::{Backend, TestCluster, TestRedis};

/// The sample of `name` with exactly these labels (`name{a="b"}` or bare `name`).
fn value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{sample} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{sample} missing in:\n{text}"))
}

async fn scrape(addr: std::net::SocketAddr) -> String {
    let (status, text) = testkit::http_get(addr, "/metrics").await.expect("node answers");
    assert_eq!(status, 200);
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_connections_and_rooms() {
    let cluster = TestCluster::start(&Backend::Memory, 1).await;
    let addr = cluster.nodes[0].addr;
    let text = scrape(addr).await;
    assert_eq!(value(&text, "signal_ready"), 1.0);
    assert!(value(&text, "process_resident_memory_bytes") > 0.0);
    assert!(text.contains("signal_build_info{git_sha="), "{text}");

    let mut a = cluster.client(0).await;
    let mut b = cluster.client(0).await;
    a.join_pair(&mut b, "metrics-room").await;
    let text = scrape(addr).await;
    assert_eq!(value(&text, r#"signal_connections{dialect="native"}"#), 2.0);
    assert_eq!(value(&text, "signal_rooms"), 1.0);
    assert_eq!(value(&text, "signal_members"), 2.0);
    assert!(value(&text, "process_open_fds") >= 2.0);
    b.close().await;
    crate::helpers::wait_until(std::time::Duration::from_secs(5), "the connection to be counted out", || async {
        scrape(addr).await.contains(r#"signal_connections{dialect="native"} 1"#)
    })
    .await;
    let text = scrape(addr).await;
    assert_eq!(value(&text, "signal_members"), 1.0);
    assert_eq!(value(&text, r#"signal_leaves_total{reason="disconnected"}"#), 1.0);
    assert_eq!(value(&text, r#"signal_disconnects_total{reason="client"}"#), 1.0);
    assert!(value(&text, "signal_frame_handling_seconds_count") >= 2.0, "two joins were handled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_errors_and_cross_node_latency_are_counted() {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start(&Backend::Redis(redis.url()), 2).await;
    let (n1, n2) = (cluster.nodes[0].addr, cluster.nodes[1].addr);
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    let mut c = cluster.client(0).await;
    a.join_pair(&mut b, "m").await;
    c.join("m").await;
    a.recv().await; // c joined
    b.recv().await;
    a.signal("m", b.peer(), "offer", json!({"sdp": "x"})).await;
    b.recv_signal().await;
    a.signal("m", c.peer(), "candidate", json!({"c": 1})).await;
    c.recv_signal().await;
    a.send(json!({"type": "broadcast", "room": "m", "kind": "chat", "data": {}})).await;
    b.recv().await;
    a.send_text("{not json").await;
    a.recv_error("bad-request").await;

    let sender = scrape(n1).await;
    assert_eq!(value(&sender, r#"signal_signals_relayed_total{kind="offer",route="cross-node"}"#), 1.0);
    assert_eq!(value(&sender, r#"signal_signals_relayed_total{kind="candidate",route="local"}"#), 1.0);
    assert_eq!(value(&sender, "signal_broadcasts_total"), 1.0);
    assert_eq!(value(&sender, r#"signal_client_errors_total{code="bad-request"}"#), 1.0);
    assert_eq!(value(&sender, "signal_joins_total"), 2.0);
    assert!(value(&sender, "signal_outbound_queue_depth_count") >= 1.0, "a's writes of events were observed");
    // The receiving node timed the cross-node signal against the sender's stamp.
    let receiver = scrape(n2).await;
    assert_eq!(value(&receiver, "signal_cross_node_relay_seconds_count"), 1.0);
    // Every Redis call is timed by operation: the joins ran the join script.
    assert!(value(&sender, r#"signal_redis_command_seconds_count{op="join"}"#) >= 2.0);
    assert!(value(&sender, r#"signal_redis_command_seconds_count{op="publish_node"}"#) >= 1.0);
    assert_eq!(value(&sender, r#"signal_redis_errors_total{op="join"}"#), 0.0);
    assert!(value(&receiver, r#"signal_cross_node_relay_seconds_bucket{le="2.5"}"#) >= 1.0);
}
