//! Resume for the plain dialect, whose clients never see a token: a registration with
//! the room's token is resumed by registering again (same peer id, same room, same
//! token) on any node within RESUME_GRACE_MS. The room hears no `peer_left` and no
//! `peer_joined`, and what was sent to the member meanwhile arrives whole and in order.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{wait_until, Backend, InProcessNode, TestCluster, TestRedis};
use crate::plain::PlainClient;

async fn two_nodes(grace_ms: &str) -> (TestRedis, TestCluster) {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &[("RESUME_GRACE_MS", grace_ms)]).await;
    (redis, cluster)
}

async fn wait_for_away(node: &InProcessNode, n: usize) {
    wait_until(Duration::from_secs(10), "the member to be held away", || async {
        node.core.resumes().away_count() == n
    })
    .await;
}

/// Everything `client` hears for `window`; fails on any arrival or departure.
async fn no_flap(client: &mut PlainClient, window: Duration) -> Vec<Value> {
    let mut heard = Vec::new();
    let until = Instant::now() + window;
    while let Some(msg) = client.try_recv(until.saturating_duration_since(Instant::now())).await {
        assert!(!["peer_left", "peer_joined"].contains(&msg["type"].as_str().unwrap_or_default()), "a flap: {msg}");
        heard.push(msg);
    }
    heard
}

/// Worker-1 on the first node and Worker-2 on the second, both in room `r` with the
/// room token; Worker-1 has heard Worker-2 arrive.
async fn registered_pair(cluster: &TestCluster) -> (PlainClient, PlainClient) {
    let mut a = PlainClient::connect(cluster.nodes[0].addr).await;
    let mut b = PlainClient::connect(cluster.nodes[1].addr).await;
    a.register("Worker-1", "r").await;
    b.register("Worker-2", "r").await;
    let joined = a.recv().await;
    assert_eq!((joined["type"].as_str(), joined["peer_id"].as_str()), (Some("peer_joined"), Some("Worker-2")));
    (a, b)
}

fn candidate(n: u32) -> String {
    format!(r#"{{"type":"candidate","sender":"Worker-1","target":"Worker-2","candidate":{{"n":{n}}}}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_registration_is_resumed_by_registering_again_on_another_node() {
    let (_redis, cluster) = two_nodes("5000").await;
    let (mut a, b) = registered_pair(&cluster).await;

    // b's connection drops without a close; a keeps sending to it.
    drop(b);
    wait_for_away(&cluster.nodes[1], 1).await;
    for n in 0..20 {
        a.send_text(&candidate(n)).await;
    }
    // b's client registers again, at the other node: the same member, with what was held.
    let mut b = PlainClient::connect(cluster.nodes[0].addr).await;
    b.register("Worker-2", "r").await;
    for n in 0..20 {
        assert_eq!(b.recv_text().await, candidate(n), "held messages arrive whole, once, in order");
    }
    let node = &cluster.nodes[0];
    let seconds = node.metric("signal_resume_seconds_sum").await / node.metric("signal_resume_seconds_count").await;
    eprintln!("the registration resumed in {:.1} ms (claim, hand-over request, room moved)", seconds * 1000.0);
    let answer = r#"{"type":"answer","sender":"Worker-2","target":"Worker-1","sdp":"v=0"}"#;
    b.send_text(answer).await;
    let heard = no_flap(&mut a, Duration::from_millis(500)).await;
    assert_eq!(heard, [serde_json::from_str::<Value>(answer).unwrap()]);
    a.send_text(&candidate(20)).await;
    assert_eq!(b.recv_text().await, candidate(20));
    a.send(json!({"type": "query"})).await;
    assert_eq!(a.recv().await, json!({"type": "available_peers", "peers": ["Worker-2"]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_again_takes_over_a_connection_the_node_still_thinks_open() {
    let (_redis, cluster) = two_nodes("5000").await;
    let (mut a, mut b) = registered_pair(&cluster).await;

    let mut b2 = PlainClient::connect(cluster.nodes[0].addr).await;
    b2.register("Worker-2", "r").await;
    // The earlier connection is closed, saying why.
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), b.ws.next()).await.expect("closed in time") {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| (u16::from(f.code), f.reason.to_string())),
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(closed, Some((1008, "resumed on another connection".to_owned())));
    a.send_text(&candidate(1)).await;
    assert_eq!(b2.recv_text().await, candidate(1));
    no_flap(&mut a, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_room_token_or_after_the_grace_the_room_hears_the_member_leave_once() {
    let (_redis, cluster) = two_nodes("1000").await;
    // No room token: nothing proves a later registration is the same client, so the
    // member leaves as soon as its connection ends, and nothing is held away.
    let mut watcher = PlainClient::connect(cluster.nodes[0].addr).await;
    let mut open = PlainClient::connect(cluster.nodes[1].addr).await;
    for (client, id) in [(&mut watcher, "Worker-1"), (&mut open, "Worker-3")] {
        client.send(json!({"type": "register", "peer_id": id, "room_id": "open"})).await;
        assert_eq!(client.recv().await["type"], "registered_auth");
    }
    assert_eq!(watcher.recv().await["peer_id"], "Worker-3");
    drop(open);
    let left = watcher.recv().await;
    assert_eq!((left["type"].as_str(), left["peer_id"].as_str()), (Some("peer_left"), Some("Worker-3")));
    assert_eq!(cluster.nodes[1].core.resumes().away_count(), 0);

    let mut a = PlainClient::connect(cluster.nodes[0].addr).await;
    a.register("Worker-1", "r").await;

    // With the token, but back after the grace: it left once, then joins afresh.
    let mut b = PlainClient::connect(cluster.nodes[1].addr).await;
    b.register("Worker-2", "r").await;
    assert_eq!(a.recv().await["peer_id"], "Worker-2");
    drop(b);
    let left = a.recv().await;
    assert_eq!(
        (left["type"].as_str(), left["peer_id"].as_str(), left["reason"].as_str()),
        (Some("peer_left"), Some("Worker-2"), Some("disconnected"))
    );
    let mut b = PlainClient::connect(cluster.nodes[0].addr).await;
    b.register("Worker-2", "r").await;
    let joined = a.recv().await;
    assert_eq!((joined["type"].as_str(), joined["peer_id"].as_str()), (Some("peer_joined"), Some("Worker-2")));
    assert!(a.try_recv(Duration::from_millis(300)).await.is_none(), "told once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_with_another_token_neither_takes_over_nor_spoils_the_resume() {
    let (_redis, cluster) = two_nodes("5000").await;
    let (mut a, mut b) = registered_pair(&cluster).await;

    // Someone who knows the room and the id but not the token: refused, and b stays.
    let mut intruder = PlainClient::connect(cluster.nodes[0].addr).await;
    intruder.send(json!({"type": "register", "peer_id": "Worker-2", "room_id": "r", "token": "guess"})).await;
    assert_eq!(intruder.recv_error().await, "Invalid token");
    a.send_text(&candidate(1)).await;
    assert_eq!(b.recv_text().await, candidate(1), "b still holds its place");

    // b's resume still works afterwards, with nothing lost and no flap.
    drop(b);
    wait_for_away(&cluster.nodes[1], 1).await;
    a.send_text(&candidate(2)).await;
    let mut b = PlainClient::connect(cluster.nodes[0].addr).await;
    b.register("Worker-2", "r").await;
    assert_eq!(b.recv_text().await, candidate(2));
    no_flap(&mut a, Duration::from_millis(300)).await;
}
