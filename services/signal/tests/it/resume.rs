//! Resume on any node: a member whose connection drops stays in its rooms, away, for
//! RESUME_GRACE_MS; its client comes back on any node with `resume {token}`, keeps its
//! peer id and rooms, receives what was held for it in order, and nobody sees it leave.

use std::time::{Duration, Instant};

use protocol::{LeftReason, ServerMsg};
use serde_json::json;
use testkit::TestRedis;

use crate::helpers::{Backend, Client, InProcessNode, TestCluster};

const GRACE: (&str, &str) = ("RESUME_GRACE_MS", "5000");

/// Reads `client`'s messages for `window` and fails on any membership change of `peer`.
async fn no_flap_of(client: &mut Client, peer: &protocol::PeerId, window: Duration) -> Vec<ServerMsg> {
    let mut heard = Vec::new();
    let until = Instant::now() + window;
    while let Some(msg) = client.try_recv(until.saturating_duration_since(Instant::now())).await {
        match &msg {
            ServerMsg::PeerLeft(l) if &l.peer == peer => panic!("the resumed member was seen leaving: {l:?}"),
            ServerMsg::PeerJoined(j) if &j.peer.peer == peer => panic!("the resumed member was seen joining: {j:?}"),
            _ => heard.push(msg),
        }
    }
    heard
}

fn seq(msg: &ServerMsg) -> Option<u64> {
    match msg {
        ServerMsg::Signal(s) => serde_json::from_str::<serde_json::Value>(s.data.get()).ok()?["seq"].as_u64(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_member_resumes_on_another_node_with_what_was_held_in_order() {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &[GRACE]).await;
    let (n1, n2) = (cluster.nodes[0].addr, cluster.nodes[1].addr);
    let mut a = Client::connect(n1).await;
    let mut b = Client::connect(n2).await;
    a.join_pair(&mut b, "resume-room").await;
    let (b_peer, token) = (b.peer().clone(), b.resume_token());

    // b's socket drops without a word; meanwhile a signals it, broadcasts, and c joins.
    drop(b);
    wait_for_away(&cluster.nodes[1], 1).await;
    for n in 0..20 {
        a.signal("resume-room", &b_peer, "candidate", json!({ "seq": n })).await;
    }
    a.send(json!({"type": "broadcast", "room": "resume-room", "kind": "chat", "data": {"text": "hi"}})).await;
    let mut c = Client::connect(n2).await;
    let c_joined = c.join("resume-room").await;
    assert!(c_joined.peers.iter().any(|p| p.peer == b_peer), "c sees the away member: {c_joined:?}");

    // b comes back on the other node.
    let (mut b, resumed) = Client::resume(n1, &token).await.expect("resumed");
    assert_eq!(resumed.peer, b_peer);
    assert_eq!(resumed.rooms.len(), 1);
    let others: Vec<_> = resumed.rooms[0].peers.iter().map(|p| p.peer.clone()).collect();
    assert!(others.contains(a.peer()) && others.contains(c.peer()), "{resumed:?}");
    assert_ne!(resumed.resume, token, "each token works once: a new one comes back");

    // Everything held, in order: 20 signals, the broadcast, c's arrival.
    let mut seqs = Vec::new();
    let (mut broadcast, mut c_seen) = (false, false);
    while seqs.len() < 20 || !broadcast || !c_seen {
        match b.recv().await {
            msg @ ServerMsg::Signal(_) => seqs.push(seq(&msg).expect("a numbered signal")),
            ServerMsg::Broadcast(m) => broadcast = m.from == *a.peer(),
            ServerMsg::PeerJoined(j) => c_seen = j.peer.peer == *c.peer(),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seqs, (0..20).collect::<Vec<_>>(), "held signals arrive once each, in order");

    // The route now leads to b's new node, both ways.
    a.signal("resume-room", &b_peer, "offer", json!({ "seq": 20 })).await;
    assert_eq!(seq(&ServerMsg::Signal(b.recv_signal().await)), Some(20));
    b.signal("resume-room", a.peer(), "answer", json!({"sdp": "x"})).await;
    let heard = no_flap_of(&mut a, &b_peer, Duration::from_millis(500)).await;
    assert!(
        heard.iter().any(|m| matches!(m, ServerMsg::Signal(s) if s.from == b_peer)),
        "a hears b's answer: {heard:?}"
    );
    no_flap_of(&mut c, &b_peer, Duration::from_millis(200)).await;
}

/// Waits until `node` holds `n` members away.
async fn wait_for_away(node: &InProcessNode, n: usize) {
    crate::helpers::wait_until(Duration::from_secs(10), "the member to be held away", || async {
        node.core.resumes().away_count() == n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_works_once_and_a_stale_or_forged_one_gets_a_clear_error() {
    let node = InProcessNode::start(&Backend::Memory, &[GRACE]).await;
    let mut a = Client::connect(node.addr).await;
    let mut b = Client::connect(node.addr).await;
    a.join_pair(&mut b, "once").await;
    let token = b.resume_token();
    drop(b);
    wait_for_away(&node, 1).await;

    // Resumed on the node it dropped from: same peer, same room.
    let (b, resumed) = Client::resume(node.addr, &token).await.expect("resumed");
    assert_eq!(&resumed.peer, b.peer());
    assert_eq!(resumed.rooms[0].room.as_str(), "once");
    let used = Client::resume(node.addr, &token).await.expect_err("a used token");
    assert_eq!(used.code.as_str(), "resume-failed", "{used:?}");
    assert!(used.message.contains("join afresh"), "{used:?}");
    let forged = format!("{}.{}", b.peer(), "A".repeat(43));
    let refused = Client::resume(node.addr, &forged).await.expect_err("a forged token");
    assert_eq!(refused.code.as_str(), "resume-failed");
    let malformed = Client::resume(node.addr, "not-a-token").await.expect_err("a malformed token");
    assert_eq!(malformed.code.as_str(), "resume-failed");

    // Resume comes first or not at all.
    let mut late = Client::connect(node.addr).await;
    late.join("elsewhere").await;
    late.send(json!({"type": "resume", "token": b.resume_token()})).await;
    late.recv_error("resume-failed").await;
    no_flap_of(&mut a, b.peer(), Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_resume_the_member_leaves_after_the_grace_exactly_once() {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &[("RESUME_GRACE_MS", "800")]).await;
    let mut a = Client::connect(cluster.nodes[0].addr).await;
    let mut b = Client::connect(cluster.nodes[1].addr).await;
    a.join_pair(&mut b, "grace").await;
    let (b_peer, token) = (b.peer().clone(), b.resume_token());
    let dropped = Instant::now();
    drop(b);
    let left = a.recv_peer_left().await;
    assert_eq!((&left.peer, left.reason), (&b_peer, LeftReason::Disconnected));
    assert!(dropped.elapsed() >= Duration::from_millis(800), "left after {:?}, before the grace", dropped.elapsed());
    a.expect_silence(Duration::from_millis(1500)).await;
    let stale = Client::resume(cluster.nodes[0].addr, &token).await.expect_err("the grace ran out");
    assert_eq!(stale.code.as_str(), "resume-failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_with_code_1000_leaves_at_once() {
    let node = InProcessNode::start(&Backend::Memory, &[GRACE]).await;
    let mut a = Client::connect(node.addr).await;
    let mut b = Client::connect(node.addr).await;
    a.join_pair(&mut b, "bye").await;
    let b_peer = b.peer().clone();
    let closed = Instant::now();
    b.close_with(1000).await;
    let left = a.recv_peer_left().await;
    assert_eq!((&left.peer, left.reason), (&b_peer, LeftReason::Disconnected));
    assert!(closed.elapsed() < Duration::from_secs(5), "not held for the grace: {:?}", closed.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_takes_over_a_connection_the_node_still_thinks_open() {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &[GRACE]).await;
    let mut a = Client::connect(cluster.nodes[0].addr).await;
    let mut old = Client::connect(cluster.nodes[1].addr).await;
    a.join_pair(&mut old, "takeover").await;
    let b_peer = old.peer().clone();

    // The client lost its network and reconnected elsewhere; its old socket is still
    // open as far as its node knows.
    let (mut b, resumed) = Client::resume(cluster.nodes[0].addr, &old.resume_token()).await.expect("resumed");
    assert_eq!(resumed.peer, b_peer);
    let (code, reason) = old.recv_close_frame().await;
    assert_eq!((code, reason.as_str()), (1008, "resumed on another connection"));
    a.signal("takeover", &b_peer, "offer", json!({ "seq": 1 })).await;
    assert_eq!(seq(&ServerMsg::Signal(b.recv_signal().await)), Some(1));
    no_flap_of(&mut a, &b_peer, Duration::from_millis(500)).await;
}

/// A reaper reads a dead node's member records, then removes those that name the dead
/// node: a member that resumed on a live node in between must stay. Both backends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_moved_after_a_reaper_read_its_record_stays() {
    use bus::{
        JoinOutcome, JoinPolicy, MemberWrite, Membership, MemoryBackend, MoveOutcome, RedisBackend, RedisOptions,
    };
    use bytes::Bytes;
    use protocol::{BusEvent, DisplayName, Envelope, MemberInfo, NodeId, Payload, PeerId, Role, RoomId};

    let redis = TestRedis::start().await;
    let on_redis = RedisBackend::connect(&redis.url(), RedisOptions::default()).await.unwrap();
    let in_memory = MemoryBackend::new();
    let (dead, live) = (NodeId::parse("n2").unwrap(), NodeId::parse("n1").unwrap());
    let (room, peer) = (RoomId::parse("reaped").unwrap(), PeerId::new_on(&dead));
    let announce = |event: BusEvent| Bytes::from(Envelope::new(live.clone(), event).encode());
    for backend in [&on_redis as &dyn Membership, &in_memory] {
        let read = MemberInfo {
            peer: peer.clone(),
            name: DisplayName::parse("ada").unwrap(),
            role: Role::parse("participant").unwrap(),
            meta: Payload::empty_object(),
            node: None,
        };
        let old = Bytes::from(read.encode());
        let joined = announce(BusEvent::Joined { room: room.clone(), member: read.clone(), nonce: 0 });
        let write = MemberWrite { room: &room, peer: &peer, record: old.clone(), announcement: joined };
        let policy =
            JoinPolicy { capacity: 10, token_hash: None, require_registered: false, now_ms: 0, with_others: true };
        assert!(matches!(backend.join(write, policy).await.unwrap(), JoinOutcome::Joined { .. }));

        // The member resumes on the live node after the reaper read `old`...
        let moved_record = MemberInfo { node: Some(live.clone()), ..read.clone() };
        let moved = Bytes::from(moved_record.encode());
        let event = BusEvent::Moved { room: room.clone(), member: moved_record, from: dead.clone(), nonce: 1 };
        let write = MemberWrite { room: &room, peer: &peer, record: moved.clone(), announcement: announce(event) };
        assert!(matches!(backend.move_member(write, old.clone()).await.unwrap(), MoveOutcome::Moved { .. }));

        // ...so the reaper's removal, conditional on `old`, removes nothing.
        let left = || announce(BusEvent::Left { room: room.clone(), peer: peer.clone(), reason: LeftReason::NodeLost });
        assert!(!backend.leave_if_unchanged(&room, &peer, old, left()).await.unwrap());
        assert_eq!(backend.member_record(&room, &peer).await.unwrap(), Some(moved.clone()));
        assert!(backend.leave_if_unchanged(&room, &peer, moved, left()).await.unwrap());
        assert_eq!(backend.member_record(&room, &peer).await.unwrap(), None);
    }
}
