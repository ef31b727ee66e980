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

/// PRESENCE_LIMIT: beyond it a room is quiet. News of a member that is not a host goes
/// to hosts only, a joiner is told of the hosts only, and everything else (broadcasts,
/// signals, the `members` list) is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_presence_limit_members_hear_of_hosts_only() {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &[("PRESENCE_LIMIT", "2")]).await;
    let join = |role: &str| json!({"type":"join","room":"webinar","name":role,"role":role});
    let mut host = cluster.client(0).await;
    host.join_with(join("host")).await;
    let mut a = cluster.client(1).await;
    assert_eq!(a.join_with(join("attendee")).await.peers.len(), 1, "two members: everyone is told");
    assert!(matches!(host.recv().await, ServerMsg::PeerJoined(_)));
    let mut b = cluster.client(0).await;
    let joined = b.join_with(join("attendee")).await;
    let told: Vec<&str> = joined.peers.iter().map(|p| p.role.as_str()).collect();
    assert_eq!(told, ["host"], "three members: a joiner is told of the hosts only");
    match host.recv().await {
        ServerMsg::PeerJoined(pj) => assert_eq!(pj.peer.peer, *b.peer()),
        other => panic!("the host hears of every join: {other:?}"),
    }
    // The attendee hears the host's broadcast and nothing of b's arrival before it.
    host.send(json!({"type":"broadcast","room":"webinar","kind":"chat","data":"welcome"})).await;
    assert!(matches!(a.recv().await, ServerMsg::Broadcast(_)), "b's join is not news to a");
    assert!(matches!(b.recv().await, ServerMsg::Broadcast(_)));
    a.send(json!({"type":"members","room":"webinar","id":1})).await;
    match a.recv().await {
        ServerMsg::Members(m) => assert_eq!(m.peers.len(), 2, "the list on request is whole"),
        other => panic!("{other:?}"),
    }
    a.signal("webinar", b.peer(), "offer", json!({})).await;
    assert_eq!(b.recv_signal().await.from, *a.peer());
    b.send(json!({"type":"leave","room":"webinar","id":2})).await;
    assert_eq!(host.recv_peer_left().await.peer, *b.peer());
    a.expect_silence(std::time::Duration::from_millis(300)).await;
}
