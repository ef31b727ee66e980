//! Members Redis still lists after the node stopped serving them ("ghosts"): a removal
//! Redis refused is retried until it lands, a node restarted under the same NODE_ID
//! sweeps what its previous run left, and a resync removes members listed for this
//! node that it no longer serves. Signals that race a departure are bounced to their
//! sender as `peer-unavailable`.

use std::time::{Duration, Instant};

use bus::{MemberWrite, Membership as _, RedisBackend, RedisOptions};
use bytes::Bytes;
use protocol::{
    BusEvent, DisplayName, Envelope, LeftReason, MemberInfo, NodeId, Payload, PeerId, Role, RoomId, ServerMsg,
};
use serde_json::json;

use crate::helpers::nodes::{process_pair_in_room, DEFAULT_TIMINGS};
use crate::helpers::{wait_until, Backend, NodeProcess, TestCluster, TestRedis};

/// Makes every script (joins, leaves) fail with NOPERM while plain commands
/// (heartbeats, publishes) still work: the removal fails, nothing else does.
async fn refuse_scripts(redis: &TestRedis) {
    assert_eq!(redis.cli(&["ACL", "SETUSER", "default", "-eval", "-evalsha"]).await, "OK");
}

async fn allow_everything(redis: &TestRedis) {
    assert_eq!(redis.cli(&["ACL", "SETUSER", "default", "+@all"]).await, "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_redis_refused_is_retried_and_the_others_hear_peer_left() {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start(&Backend::Redis(redis.url()), 2).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    let b_peer = b.peer().clone();
    a.join_pair(&mut b, "r").await;

    refuse_scripts(&redis).await;
    b.close().await;
    let owed = &cluster.nodes[1];
    wait_until(Duration::from_secs(5), "the failed removal to be owed", || async {
        owed.metric("signal_owed_removals").await == 1.0
    })
    .await;
    assert_eq!(redis.cli(&["HEXISTS", "sig:{room:r}:members", b_peer.as_str()]).await, "1", "b is a ghost");
    assert!(owed.metric(r#"signal_redis_errors_total{op="leave"}"#).await >= 1.0, "the refused call is counted");

    // a's node still lists b: the signal goes to b's old node, which bounces it.
    a.send(json!({"type":"signal","room":"r","to":b_peer,"kind":"offer","data":{}})).await;
    let err = a.recv_error("peer-unavailable").await;
    assert!(err.message.contains(b_peer.as_str()), "{err:?}");

    allow_everything(&redis).await;
    let allowed = Instant::now();
    let left = a.recv_peer_left().await;
    assert_eq!((&left.peer, left.reason), (&b_peer, LeftReason::Disconnected));
    // FAST timings: one heartbeat is 300 ms; the retry runs on every one.
    assert!(allowed.elapsed() < Duration::from_secs(3), "peer-left took {:?}", allowed.elapsed());
    assert_eq!(redis.cli(&["HLEN", "sig:{room:r}:members"]).await, "1");
    assert_eq!(owed.metric("signal_owed_removals").await, 0.0);
    assert_eq!(redis.cli(&["HEXISTS", "sig:{room:r}:members", a.peer().as_str()]).await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leave_redis_refused_lands_before_the_same_peer_joins_again() {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, DEFAULT_TIMINGS).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    a.join_pair(&mut b, "r").await;

    refuse_scripts(&redis).await;
    b.send(json!({"type":"leave","room":"r","id":1})).await;
    b.recv_error("unavailable").await;
    allow_everything(&redis).await;
    // Before the next heartbeat's retry (2 s), b joins again: the owed leave lands
    // first, so a hears b leave and then join, and b stays a member.
    let joined = b.join("r").await;
    assert_eq!(joined.peers.len(), 1);
    assert!(matches!(a.recv().await, ServerMsg::PeerLeft(l) if &l.peer == b.peer()));
    assert!(matches!(a.recv().await, ServerMsg::PeerJoined(j) if &j.peer.peer == b.peer()));
    assert_eq!(redis.cli(&["HEXISTS", "sig:{room:r}:members", b.peer().as_str()]).await, "1");
    // The later retry finds nothing owed: b is not removed behind its back.
    a.expect_silence(Duration::from_millis(2500)).await;
    assert_eq!(redis.cli(&["HEXISTS", "sig:{room:r}:members", b.peer().as_str()]).await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_under_the_same_id_removes_what_its_previous_run_left() {
    let redis = TestRedis::start().await;
    let (_n1, mut n2, mut a, b) = process_pair_in_room(&redis, "r").await;

    // Killed and back before its heartbeat expires: nobody ever reaps the first run.
    n2.kill9().await;
    let _n2_again = NodeProcess::start(&redis.url(), "n2", &[]).await;
    let restarted = Instant::now();
    let left = a.recv_peer_left().await;
    assert_eq!((&left.peer, left.reason), (b.peer(), LeftReason::Disconnected));
    assert!(restarted.elapsed() < Duration::from_secs(2), "took {:?}", restarted.elapsed());
    assert_eq!(redis.cli(&["HLEN", "sig:{room:r}:members"]).await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_removes_members_listed_for_this_node_that_it_does_not_serve() {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start(&Backend::Redis(redis.url()), 2).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    a.join_pair(&mut b, "r").await;

    // A member of node 1 that node 1 has never served, written the way a join writes.
    let node1 = NodeId::parse(&b.node).unwrap();
    let ghost = PeerId::new_on(&node1);
    let room = RoomId::parse("r").unwrap();
    let record = MemberInfo {
        peer: ghost.clone(),
        name: DisplayName::parse("ghost").unwrap(),
        role: Role::parse("participant").unwrap(),
        meta: Payload::empty_object(),
        // As a record written before members named their node: the id's prefix says it.
        node: None,
    };
    let writer = RedisBackend::connect(&redis.url(), RedisOptions::default()).await.unwrap();
    let announcement = Envelope::new(node1, BusEvent::Joined { room: room.clone(), member: record.clone(), nonce: 0 });
    let write = MemberWrite {
        room: &room,
        peer: &ghost,
        record: Bytes::from(record.encode()),
        announcement: Bytes::from(announcement.encode()),
    };
    assert!(matches!(
        writer
            .join(
                write,
                bus::JoinPolicy {
                    capacity: 100,
                    token_hash: None,
                    require_registered: false,
                    now_ms: 0,
                    with_others: true
                }
            )
            .await
            .unwrap(),
        bus::JoinOutcome::Joined { .. }
    ));
    assert!(matches!(a.recv().await, ServerMsg::PeerJoined(j) if j.peer.peer == ghost));

    // A subscriber reconnect makes both nodes resync.
    assert_ne!(redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).await, "0");
    let left = a.recv_peer_left().await;
    assert_eq!((&left.peer, left.reason), (&ghost, LeftReason::Disconnected));
    assert_eq!(redis.cli(&["HEXISTS", "sig:{room:r}:members", ghost.as_str()]).await, "0");
    assert_eq!(redis.cli(&["HLEN", "sig:{room:r}:members"]).await, "2");
}
