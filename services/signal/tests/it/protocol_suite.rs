//! The native protocol, end to end, against both backends: the embedded one (one
//! node) and Redis (two nodes, with the peers of each test on different nodes).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::future::join_all;
use protocol::{LeftReason, ServerMsg};
use serde_json::json;

use crate::helpers::{Backend, Client, TestCluster, TestRedis};

/// Runs `$body(backend, nodes)` once on the embedded backend (1 node) and once on
/// Redis (2 nodes).
macro_rules! on_both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                let cluster = TestCluster::start(&Backend::Memory, 1).await;
                ($body)(cluster).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                let redis = TestRedis::start().await;
                let cluster = TestCluster::start(&Backend::Redis(redis.url()), 2).await;
                ($body)(cluster).await;
            }
        }
    };
}

/// Client `i` of the test, on node `i % nodes`.
async fn client(cluster: &TestCluster, i: usize) -> Client {
    cluster.client(i % cluster.nodes.len()).await
}

on_both_backends!(join_lists_existing_peers_and_announces_the_newcomer, |cluster: TestCluster| async move {
    let mut a = client(&cluster, 0).await;
    let mut b = client(&cluster, 1).await;
    let joined =
        a.join_with(json!({"type":"join","room":"r1","name":"Ada","role":"host","meta":{"video":true},"id":1})).await;
    assert!(joined.peers.is_empty());
    assert_eq!(joined.id, Some(protocol::RequestId::Num(1.into())));

    let joined = b.join("r1").await;
    assert_eq!(joined.peers.len(), 1);
    let ada = &joined.peers[0];
    assert_eq!((&ada.peer, ada.name.as_str(), ada.role.as_str()), (a.peer(), "Ada", "host"));
    assert_eq!(ada.meta.get(), r#"{"video":true}"#);

    match a.recv().await {
        ServerMsg::PeerJoined(pj) => assert_eq!(&pj.peer.peer, b.peer()),
        other => panic!("{other:?}"),
    }
});

on_both_backends!(offer_answer_and_candidates_relay_both_ways_byte_for_byte, |cluster: TestCluster| async move {
    let mut a = client(&cluster, 0).await;
    let mut b = client(&cluster, 1).await;
    a.join_pair(&mut b, "call").await;

    // Odd spacing, key order and number formats must survive untouched.
    let offer = r#"{"sdp":"v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\n", "type":"offer","z":1.50,"a":[1e3]}"#;
    a.send_text(format!(r#"{{"type":"signal","room":"call","to":"{}","kind":"offer","data":{offer}}}"#, b.peer()))
        .await;
    let got = b.recv_signal().await;
    assert_eq!((&got.from, got.kind.as_str(), got.data.get()), (a.peer(), "offer", offer));

    let answer = r#"{"type":"answer","sdp":"v=0\r\n"}"#;
    b.send_text(format!(r#"{{"type":"signal","room":"call","to":"{}","kind":"answer","data":{answer}}}"#, a.peer()))
        .await;
    let got = a.recv_signal().await;
    assert_eq!((&got.from, got.kind.as_str(), got.data.get()), (b.peer(), "answer", answer));

    let candidate =
        r#"{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host","sdpMid":"0","sdpMLineIndex":0}"#;
    b.send_text(format!(
        r#"{{"type":"signal","room":"call","to":"{}","kind":"candidate","data":{candidate}}}"#,
        a.peer()
    ))
    .await;
    assert_eq!(a.recv_signal().await.data.get(), candidate);
});

on_both_backends!(a_thousand_candidates_arrive_in_the_order_sent, |cluster: TestCluster| async move {
    let mut a = client(&cluster, 0).await;
    let mut b = client(&cluster, 1).await;
    a.join_pair(&mut b, "order").await;
    for i in 0..1000 {
        a.signal(
            "order",
            b.peer(),
            "candidate",
            json!({"seq": i, "candidate": "candidate:1 1 udp 1 192.0.2.1 9 typ host"}),
        )
        .await;
    }
    for i in 0..1000 {
        let got = b.recv_signal().await;
        let v: serde_json::Value = serde_json::from_str(got.data.get()).unwrap();
        assert_eq!(v["seq"], i, "candidate {i} out of order");
    }
});

on_both_backends!(rooms_are_isolated, |cluster: TestCluster| async move {
    let mut a = client(&cluster, 0).await;
    let mut b = client(&cluster, 1).await;
    let mut c = client(&cluster, 1).await;
    a.join_pair(&mut b, "red").await;
    c.join("blue").await;

    a.send(json!({"type":"broadcast","room":"red","kind":"chat","data":{"text":"hi"}})).await;
    match b.recv().await {
        ServerMsg::Broadcast(m) => assert_eq!((m.kind.as_str(), m.data.get()), ("chat", r#"{"text":"hi"}"#)),
        other => panic!("{other:?}"),
    }
    // c shares no room with a: it hears nothing, and may not signal a.
    c.expect_silence(Duration::from_millis(300)).await;
    c.send(json!({"type":"signal","room":"blue","to":a.peer(),"kind":"offer","data":{},"id":"x"})).await;
    let err = c.recv_error("not-found").await;
    assert_eq!(err.id, Some(protocol::RequestId::Str("x".into())));
    c.send(json!({"type":"signal","room":"red","to":a.peer(),"kind":"offer","data":{}})).await;
    c.recv_error("not-in-room").await;
    c.send(json!({"type":"broadcast","room":"red","kind":"chat","data":1})).await;
    c.recv_error("not-in-room").await;
    a.expect_silence(Duration::from_millis(300)).await;
});

on_both_backends!(leaving_and_disconnecting_each_give_one_peer_left, |cluster: TestCluster| async move {
    let mut a = client(&cluster, 0).await;
    let mut b = client(&cluster, 1).await;
    let mut c = client(&cluster, 1).await;
    a.join("r").await;
    b.join("r").await;
    c.join("r").await;
    let _ = (a.recv().await, a.recv().await, b.recv().await);

    b.send(json!({"type":"leave","room":"r","id":9})).await;
    match b.recv().await {
        ServerMsg::Left(l) => assert_eq!(l.room.as_str(), "r"),
        other => panic!("{other:?}"),
    }
    for x in [&mut a, &mut c] {
        let left = x.recv_peer_left().await;
        assert_eq!((&left.peer, left.reason), (b.peer(), LeftReason::Left));
    }

    let c_peer = c.peer().clone();
    c.close().await;
    let left = a.recv_peer_left().await;
    assert_eq!((left.peer, left.reason), (c_peer, LeftReason::Disconnected));
    a.expect_silence(Duration::from_millis(500)).await; // exactly once

    b.send(json!({"type":"leave","room":"r"})).await;
    b.recv_error("not-in-room").await;
});

on_both_backends!(updates_reach_the_others_and_are_stored, |cluster: TestCluster| async move {
    let mut a = client(&cluster, 0).await;
    let mut b = client(&cluster, 1).await;
    a.join_pair(&mut b, "u").await;
    b.send(json!({"type":"update","room":"u","meta":{"audio":false,"hand":true},"id":3})).await;
    assert!(matches!(b.recv().await, ServerMsg::Updated(_)));
    match a.recv().await {
        ServerMsg::PeerUpdated(p) => {
            assert_eq!(&p.peer.peer, b.peer());
            assert_eq!(p.peer.meta.get(), r#"{"audio":false,"hand":true}"#);
        }
        other => panic!("{other:?}"),
    }
    // A newcomer sees the stored metadata.
    let mut c = client(&cluster, 0).await;
    let joined = c.join("u").await;
    let seen = joined.peers.iter().find(|p| &p.peer == b.peer()).expect("b listed");
    assert_eq!(seen.meta.get(), r#"{"audio":false,"hand":true}"#);
});

on_both_backends!(ping_is_answered_with_its_id, |cluster: TestCluster| async move {
    let mut a = client(&cluster, 0).await;
    a.send(json!({"type":"ping","id":"p1"})).await;
    match a.recv().await {
        ServerMsg::Pong(p) => assert_eq!(p.id, Some(protocol::RequestId::Str("p1".into()))),
        other => panic!("{other:?}"),
    }
});

on_both_backends!(a_room_token_locks_the_room, |cluster: TestCluster| async move {
    let mut a = client(&cluster, 0).await;
    let mut b = client(&cluster, 1).await;
    let mut c = client(&cluster, 1).await;
    a.join_with(json!({"type":"join","room":"locked","token":"s3cret"})).await;
    b.send(json!({"type":"join","room":"locked","token":"wrong","id":1})).await;
    b.recv_error("unauthorized").await;
    c.send(json!({"type":"join","room":"locked"})).await;
    c.recv_error("unauthorized").await;
    let joined = b.join_with(json!({"type":"join","room":"locked","token":"s3cret"})).await;
    assert_eq!(joined.peers.len(), 1);
});

on_both_backends!(joining_twice_is_refused_and_the_first_membership_stays, |cluster: TestCluster| async move {
    let mut a = client(&cluster, 0).await;
    a.join("twice").await;
    a.send(json!({"type":"join","room":"twice","id":2})).await;
    a.recv_error("bad-request").await;
    let mut b = client(&cluster, 1).await;
    assert_eq!(b.join("twice").await.peers.len(), 1);
});

// Forty peers join one room at the same instant, spread over the nodes: every pair
// must know each other, through `joined` or `peer-joined`, exactly once.
on_both_backends!(forty_simultaneous_joiners_all_know_each_other, |cluster: TestCluster| async move {
    const N: usize = 40;
    let mut clients = join_all((0..N).map(|i| client(&cluster, i))).await;
    let peers: Vec<_> = clients.iter().map(|c| c.peer().clone()).collect();
    let joins = clients.iter_mut().map(|c| async move {
        c.send(json!({"type":"join","room":"stampede","name":"p"})).await;
        let mut known = HashMap::new();
        loop {
            match c.recv().await {
                ServerMsg::Joined(j) => {
                    for p in j.peers {
                        *known.entry(p.peer).or_insert(0) += 1;
                    }
                    break;
                }
                ServerMsg::PeerJoined(pj) => *known.entry(pj.peer.peer).or_insert(0) += 1,
                other => panic!("{other:?}"),
            }
        }
        // Peer-joined events for later joiners keep coming after `joined`.
        while known.len() < N - 1 {
            match c.try_recv(Duration::from_secs(5)).await {
                Some(ServerMsg::PeerJoined(pj)) => *known.entry(pj.peer.peer).or_insert(0) += 1,
                Some(other) => panic!("{other:?}"),
                None => break,
            }
        }
        known
    });
    let views = join_all(joins).await;
    for (i, known) in views.iter().enumerate() {
        let expected: HashSet<_> = peers.iter().filter(|p| *p != &peers[i]).cloned().collect();
        let got: HashSet<_> = known.keys().cloned().collect();
        let missing: Vec<_> = expected.difference(&got).collect();
        assert!(missing.is_empty(), "peer {i} never heard of {} peers", missing.len());
        assert!(known.values().all(|n| *n == 1), "peer {i} heard of someone twice: {known:?}");
    }
});
