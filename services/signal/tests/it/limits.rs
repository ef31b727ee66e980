//! Configured limits apply to clients' input; what is already inside the cluster
//! (bus envelopes, member records) is read whatever limit a node was given.

use protocol::ServerMsg;
use serde_json::json;

use crate::helpers::{Backend, TestCluster, TestRedis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raised_room_and_name_limits_work_across_nodes() {
    let redis = TestRedis::start().await;
    let limits = [("ROOM_ID_CHARS", "1000"), ("NAME_CHARS", "1000")];
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &limits).await;
    let room = "r".repeat(900);
    let (long_a, long_b) = ("a".repeat(700), "b".repeat(800));
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    let joined = a.join_with(json!({"type":"join","room":room,"name":long_a})).await;
    assert!(joined.peers.is_empty());
    let joined = b.join_with(json!({"type":"join","room":room,"name":long_b})).await;
    assert_eq!(joined.peers.len(), 1, "{joined:?}");
    assert_eq!(joined.peers[0].name.as_str(), long_a);
    match a.recv().await {
        ServerMsg::PeerJoined(pj) => {
            assert_eq!((pj.room.as_str(), pj.peer.name.as_str()), (room.as_str(), long_b.as_str()))
        }
        other => panic!("{other:?}"),
    }
    a.signal(&room, b.peer(), "offer", json!({"sdp": "v=0"})).await;
    assert_eq!(b.recv_signal().await.room.as_str(), room);
}
