//! A node's room index in Redis (`sig:{node:N}:rooms`, where a reaper looks for a dead
//! node's members) lists the rooms the node has members in, and no others: rooms
//! its members left (by `leave`, by closing, or by resuming on another node) leave
//! the index, so it does not grow with every room the node ever served.

use std::time::Duration;

use crate::helpers::{wait_until, Backend, Client, InProcessNode, TestCluster, TestRedis};

async fn index_of(redis: &TestRedis, node: &str) -> Vec<String> {
    let text = redis.cli(&["SMEMBERS", &format!("sig:{{node:{node}}}:rooms")]).await;
    let mut rooms: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    rooms.sort();
    rooms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_leave_the_node_index_when_their_last_local_member_goes() {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 1, &[("NODE_ID", "n1")]).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(0).await;
    a.join("by-leave").await;
    b.join("by-close").await;
    a.join_pair(&mut b, "shared").await;
    assert_eq!(index_of(&redis, "n1").await, ["by-close", "by-leave", "shared"]);

    a.send(serde_json::json!({"type": "leave", "room": "by-leave"})).await;
    wait_until(Duration::from_secs(5), "by-leave out of the index", || async {
        index_of(&redis, "n1").await == ["by-close", "shared"]
    })
    .await;
    // One of two local members goes: the room stays.
    let a_peer = a.peer().clone();
    a.close().await;
    assert_eq!(b.recv_peer_left().await.peer, a_peer);
    assert_eq!(index_of(&redis, "n1").await, ["by-close", "shared"]);
    b.close().await;
    wait_until(Duration::from_secs(5), "an empty index once every member has gone", || async {
        index_of(&redis, "n1").await.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_leaves_the_index_of_the_node_its_members_resumed_away_from() {
    let redis = TestRedis::start().await;
    let backend = Backend::Redis(redis.url());
    let grace = ("RESUME_GRACE_MS", "5000");
    let n1 = InProcessNode::start(&backend, &[("NODE_ID", "n1"), grace]).await;
    let n2 = InProcessNode::start(&backend, &[("NODE_ID", "n2"), grace]).await;
    let mut a = Client::connect(n1.addr).await;
    let mut b = Client::connect(n1.addr).await;
    a.join_pair(&mut b, "moving").await;
    assert_eq!(index_of(&redis, "n1").await, ["moving"]);

    // Both connections drop and resume on n2: n1 serves nobody in the room any more.
    let (a_token, b_token) = (a.resume_token(), b.resume_token());
    a.close_with(4000).await;
    b.close_with(4000).await;
    let (_a, _) = Client::resume(n2.addr, &a_token).await.expect("a resumed");
    let (_b, _) = Client::resume(n2.addr, &b_token).await.expect("b resumed");
    assert_eq!(index_of(&redis, "n2").await, ["moving"]);
    wait_until(Duration::from_secs(5), "the room out of n1's index", || async {
        index_of(&redis, "n1").await.is_empty()
    })
    .await;
}
