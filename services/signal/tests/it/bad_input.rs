//! Bad input gets the documented error, the connection survives, and nobody else is
//! disturbed; floods and slow readers are bounded.

use std::time::Duration;

use protocol::ServerMsg;
use serde_json::json;

use crate::helpers::{Backend, TestCluster, TestRedis};

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
        (json!({"type":"signal","room":"r","to":"not a peer","kind":"offer","data":{}}).to_string(), "bad-request"),
        (json!({"type":"signal","room":"r","to":"not-a-member","kind":"offer","data":{}}).to_string(), "not-found"),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_echoes_the_id_of_any_json_object_even_with_a_bad_type() {
    let cluster = TestCluster::start(&Backend::Memory, 1).await;
    let mut a = cluster.client(0).await;
    for (frame, id) in [
        (r#"{"type":42,"id":"bad-4"}"#, json!("bad-4")),
        (r#"{"type":["ping"],"id":"bad-5"}"#, json!("bad-5")),
        (r#"{"id":7}"#, json!(7)),
    ] {
        a.send_text(frame).await;
        let err = a.recv_error("bad-request").await;
        assert_eq!(serde_json::to_value(&err.id).unwrap(), id, "{frame}");
    }
    a.send(json!({"type":"ping","id":"big","pad":"x".repeat(70 * 1024)})).await;
    let err = a.recv_error("too-large").await;
    assert_eq!(serde_json::to_value(&err.id).unwrap(), json!("big"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flooding_bad_frames_gets_the_close_frame_not_a_reset() {
    let cluster = TestCluster::start(&Backend::Memory, 1).await;
    let mut bad = cluster.client(0).await;
    // Back to back, reading nothing: the node closes while frames are still arriving.
    for _ in 0..1000 {
        bad.send_text("not json at all").await;
    }
    let (code, reason) = bad.recv_close_frame().await;
    assert_eq!((code, reason.as_str()), (1008, "too many bad messages"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_keeps_exceeding_its_rate_limit_is_closed_with_a_reason() {
    let cluster =
        TestCluster::start_with(&Backend::Memory, 1, &[("RATE_LIMIT_PER_SEC", "5"), ("RATE_LIMIT_BURST", "5")]).await;
    let mut a = cluster.client(0).await;
    for i in 0..200 {
        a.send(json!({"type":"ping","id":i})).await;
    }
    let (code, reason) = a.recv_close_frame().await;
    assert_eq!((code, reason.as_str()), (1008, "rate limit exceeded repeatedly"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_as_idle_with_a_close_frame() {
    let cluster = TestCluster::start_with(&Backend::Memory, 1, &[("CLIENT_HEARTBEAT_MS", "1000")]).await;
    let mut a = cluster.client(0).await;
    let (code, reason) = a.recv_close_frame().await;
    assert_eq!(code, 1008);
    assert!(reason.starts_with("idle"), "{reason}");
}

/// While a join waits on Redis, events for the joiner's other rooms keep flowing to
/// it: before, the connection stopped writing until the join was done, so a busy room
/// filled a small queue and a healthy client was closed as too slow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_keep_flowing_while_a_join_is_pending() {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start_with(
        &Backend::Redis(redis.url()),
        1,
        &[("OUTBOUND_QUEUE", "16"), ("HEARTBEAT_INTERVAL_MS", "2000"), ("NODE_TTL_MS", "6000")],
    )
    .await;
    let mut busy = cluster.client(0).await;
    let mut joiner = cluster.client(0).await;
    busy.join_pair(&mut joiner, "busy").await;

    // Redis holds every write for 1.5 s: the join below waits that long.
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "1500", "WRITE"]).await, "OK");
    joiner.send(json!({"type":"join","room":"second","id":"j"})).await;
    // Meanwhile 40 signals from the same node (no Redis involved), more than the
    // joiner's queue holds: each one arrives before the join's answer.
    for i in 0..40 {
        busy.signal("busy", joiner.peer(), "candidate", json!({"n": i})).await;
        match joiner.recv().await {
            ServerMsg::Signal(s) => assert_eq!(s.data.get(), format!(r#"{{"n":{i}}}"#)),
            other => panic!("signal {i}: expected it during the pending join, got {other:?}"),
        }
    }
    match joiner.recv().await {
        ServerMsg::Joined(j) => assert_eq!(j.room.as_str(), "second"),
        other => panic!("{other:?}"),
    }
}
