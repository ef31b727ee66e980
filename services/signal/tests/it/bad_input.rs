//! Bad input gets the documented error, the connection survives, and nobody else is
//! disturbed; floods and slow readers are bounded.

use std::time::Duration;

use protocol::ServerMsg;
use serde_json::json;

use crate::helpers::{Backend, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_frame_gets_its_error_and_the_connection_survives() {
    let cluster = TestCluster::start(&Backend::Memory, 1).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(0).await;
    a.join_pair(&mut b, "r").await;

    let long_room = "r".repeat(101);
    let long_name = "n".repeat(51);
    let stranger = protocol::PeerId::new_on(&protocol::NodeId::parse(&a.node).unwrap());
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "bad-request"),
        (r#"{"type":"teleport"}"#.into(), "bad-request"),
        (r#"{"type":"join"}"#.into(), "bad-request"),
        (r#"{"type":"signal","room":"r","kind":"offer","data":{}}"#.into(), "bad-request"),
        (json!({"type":"join","room":long_room}).to_string(), "bad-request"),
        (json!({"type":"join","room":"x","name":long_name}).to_string(), "bad-request"),
        (json!({"type":"signal","room":"r","to":"not-a-peer","kind":"offer","data":{}}).to_string(), "bad-request"),
        (json!({"type":"signal","room":"r","to":stranger,"kind":"offer","data":{}}).to_string(), "not-found"),
        (json!({"type":"ping","pad":"x".repeat(70 * 1024)}).to_string(), "too-large"),
    ];
    for (frame, code) in cases {
        a.send_text(frame.clone()).await;
        let err = a.recv_error(code).await;
        assert!(!err.message.is_empty(), "{frame:.60}");
    }
    // Still connected, still a member, and b saw none of it.
    a.send(json!({"type":"ping","id":1})).await;
    assert!(matches!(a.recv().await, ServerMsg::Pong(_)));
    b.expect_silence(Duration::from_millis(200)).await;
    a.signal("r", b.peer(), "offer", json!({"sdp":"ok"})).await;
    assert_eq!(b.recv_signal().await.data.get(), r#"{"sdp":"ok"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_misbehaving_is_disconnected_and_others_are_not() {
    let cluster = TestCluster::start(&Backend::Memory, 1).await;
    let mut bad = cluster.client(0).await;
    let mut good = cluster.client(0).await;
    good.join("r").await;
    // One bad frame at a time, reading each answer: errors first, then the hang-up.
    let mut errors = 0;
    let reason = loop {
        bad.send_text("garbage").await;
        match bad.recv_or_close().await {
            Ok(ServerMsg::Error(e)) if e.code.as_str() == "bad-request" => errors += 1,
            Ok(other) => panic!("{other:?}"),
            Err(reason) => break reason,
        }
        assert!(errors <= 25, "still connected after {errors} bad frames");
    };
    assert!(reason.contains("too many bad messages"), "{reason:?}");
    assert!(errors >= 20, "closed after only {errors} errors");
    good.send(json!({"type":"ping"})).await;
    assert!(matches!(good.recv().await, ServerMsg::Pong(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_floods_are_rate_limited_per_connection() {
    let cluster =
        TestCluster::start_with(&Backend::Memory, 1, &[("RATE_LIMIT_PER_SEC", "5"), ("RATE_LIMIT_BURST", "5")]).await;
    let mut a = cluster.client(0).await;
    for i in 0..20 {
        a.send(json!({"type":"ping","id":i})).await;
    }
    let mut limited = 0;
    for _ in 0..20 {
        match a.recv().await {
            ServerMsg::Pong(_) => {}
            ServerMsg::Error(e) if e.code.as_str() == "rate-limited" => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(limited >= 10, "only {limited} of 20 were limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_cannot_keep_up_is_disconnected_not_buffered() {
    let cluster = TestCluster::start_with(&Backend::Memory, 1, &[("OUTBOUND_QUEUE", "16")]).await;
    let mut sender = cluster.client(0).await;
    let mut slow = cluster.client(0).await;
    sender.join_pair(&mut slow, "flood").await;
    // 60 KB broadcasts that `slow` never reads: socket buffers fill, then its queue.
    let chunk = "x".repeat(60 * 1000);
    let frame = json!({"type":"broadcast","room":"flood","kind":"blob","data":chunk}).to_string();
    let mut closed = false;
    for _ in 0..2000 {
        sender.send_text(frame.clone()).await;
        if let Some(ServerMsg::PeerLeft(left)) = sender.try_recv(Duration::from_millis(1)).await {
            assert_eq!(&left.peer, slow.peer());
            closed = true;
            break;
        }
    }
    assert!(closed, "the slow reader was never disconnected");
}
