//! Bursts of concurrent work against real node processes: the timing that once
//! exposed races only a load test found.

use futures::stream::{self, StreamExt};
use protocol::ServerMsg;
use serde_json::json;

use crate::helpers::{Client, NodeProcess, TestRedis};

/// Many new rooms joined at the same instant on two nodes: each node subscribes to
/// each room's channel and runs the join script right after. A subscription that is
/// not yet live in Redis when the script publishes loses the join marker and the
/// join fails with `unavailable` after its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_joins_into_new_rooms_all_succeed() {
    const ROOMS: usize = 500;
    const MEMBERS: usize = 4;
    let redis = TestRedis::start().await;
    let nodes = [
        NodeProcess::start(&redis.url(), "burst-a", &[]).await,
        NodeProcess::start(&redis.url(), "burst-b", &[]).await,
    ];
    let mut clients = Vec::new();
    for i in 0..ROOMS * MEMBERS {
        clients.push(Client::connect(nodes[(i / MEMBERS + i % MEMBERS) % 2].addr).await);
    }
    // 128 joins in flight at any moment, as a load test's ramp does.
    let answers: Vec<ServerMsg> = stream::iter(clients.iter_mut().enumerate())
        .map(|(i, c)| async move {
            c.send(json!({"type": "join", "room": format!("burst-{}", i / MEMBERS), "name": "b"})).await;
            loop {
                match c.recv().await {
                    ServerMsg::PeerJoined(_) => continue,
                    other => return other,
                }
            }
        })
        .buffer_unordered(128)
        .collect()
        .await;
    let failed: Vec<&ServerMsg> = answers.iter().filter(|m| !matches!(m, ServerMsg::Joined(_))).collect();
    assert!(failed.is_empty(), "{} of {} joins failed, first: {:?}", failed.len(), answers.len(), failed.first());
}
