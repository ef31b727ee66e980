//! The same behaviour on a 3-master Redis Cluster (sharded pub/sub).

use protocol::ServerMsg;
use serde_json::json;

use crate::helpers::{Backend, TestCluster, TestRedisCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_relay_across_nodes_on_redis_cluster() {
    let redis = TestRedisCluster::start().await;
    let cluster = TestCluster::start(&Backend::Redis(redis.url()), 2).await;
    // Several rooms, so their channels land on different shards.
    for room in ["alpha", "bravo", "charlie", "delta"] {
        let mut a = cluster.client(0).await;
        let mut b = cluster.client(1).await;
        a.join(room).await;
        assert_eq!(b.join(room).await.peers.len(), 1);
        assert!(matches!(a.recv().await, ServerMsg::PeerJoined(_)));
        a.signal(room, b.peer(), "offer", json!({"sdp": room})).await;
        assert_eq!(b.recv_signal().await.data.get(), format!(r#"{{"sdp":"{room}"}}"#));
        b.signal(room, a.peer(), "answer", json!({"sdp": "ok"})).await;
        assert_eq!(a.recv_signal().await.kind.as_str(), "answer");
        b.send(json!({"type":"broadcast","room":room,"kind":"chat","data":"hi"})).await;
        assert!(matches!(a.recv().await, ServerMsg::Broadcast(_)));
    }
}
