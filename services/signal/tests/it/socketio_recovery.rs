//! Socket.IO connection state recovery, with the official client reconnecting by
//! itself: a session whose transport drops (no Socket.IO disconnect) is recovered on
//! another node with its socket id, rooms and participant state, receives what was
//! held for it in order, and nobody hears it leave; an S1 client's join re-emitted on
//! `connect` is answered without a second membership; a session that is not back
//! within the grace has left once, and its client starts afresh.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::socketio::{url, SioAgent};
use crate::helpers::{Backend, NodeProcess, TestCluster, TestRedis};

const GRACE_MS: &str = "5000";

async fn two_resumable_nodes(grace_ms: &str) -> (TestRedis, TestCluster) {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &[("RESUME_GRACE_MS", grace_ms)]).await;
    (redis, cluster)
}

fn join(room: &str, name: &str, role: &str) -> Value {
    json!({"roomId": room, "userName": name, "userRole": role})
}

/// `from` sends `to` twenty ICE candidates, numbered.
async fn send_candidates(sio: &mut SioAgent, from: &str, to: &str, room: &str) {
    for n in 0..20 {
        sio.emit(from, "ice-candidate", json!({"targetUserId": to, "candidate": {"n": n}, "roomId": room})).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_session_is_recovered_on_another_node_over_each_transport_with_nothing_lost() {
    let (_redis, cluster) = two_resumable_nodes(GRACE_MS).await;
    let mut sio = SioAgent::start().await;
    let (n1, n2) = (url(cluster.nodes[0].addr), url(cluster.nodes[1].addr));
    for (i, transports) in [&["websocket"][..], &["polling"]].into_iter().enumerate() {
        let room = format!("recover-{i}");
        let (a, b) = (format!("a{i}"), format!("b{i}"));
        let (a_id, _) = sio.connect(&a, &n1, "/", transports).await;
        let b_id = sio.connect_reconnecting(&b, &n2, "/", transports).await;
        assert_eq!(sio.emit_ack(&a, "join-room", join(&room, "Ann", "interviewer")).await["ok"], true);
        assert_eq!(sio.emit_ack(&b, "join-room", join(&room, "Bob", "candidate")).await["ok"], true);
        assert_eq!(sio.event(&a, "user-joined").await["userId"], json!(b_id));

        // b's transport drops; its client comes back at the other node by itself.
        // Meanwhile a sends it candidates: held, forwarded, or direct after the resume,
        // each must arrive once and in order. Over WebSocket the node sees the loss at
        // once. A lost polling client is only noticed when it stops polling (or resumes
        // elsewhere), and what the node queued for polls that never came is lost with
        // it (docs/dialects.md): there a's candidates follow the recovery.
        let polling = transports == ["polling"];
        let dropped = tokio::time::Instant::now();
        sio.drop_connection(&b, &n1).await;
        let reason = sio.disconnected(&b).await;
        assert!(["transport close", "forced close"].contains(&reason.as_str()), "{reason}");
        if !polling {
            send_candidates(&mut sio, &a, &b_id, &room).await;
        }
        let (back_as, recovered) = sio.reconnected(&b).await;
        if polling {
            send_candidates(&mut sio, &a, &b_id, &room).await;
        }
        assert_eq!((back_as.as_str(), recovered), (b_id.as_str(), true), "same socket id, socket.recovered");
        let node = &cluster.nodes[0];
        let (resumes, seconds) =
            (node.metric("signal_resume_seconds_count").await, node.metric("signal_resume_seconds_sum").await);
        eprintln!(
            "{transports:?}: recovered {:?} after the drop (the client's reconnect delay included); \
             the node's resumes so far took {:.1} ms on average",
            dropped.elapsed(),
            1000.0 * seconds / resumes
        );
        for n in 0..20 {
            let candidate = sio.event(&b, "ice-candidate").await;
            assert_eq!((&candidate["fromUserId"], &candidate["candidate"]["n"]), (&json!(a_id), &json!(n)));
        }

        // The S1 client joins again on `connect`: answered as a join, no second member.
        let ack = sio.emit_ack(&b, "join-room", join(&room, "Bob", "candidate")).await;
        assert_eq!(ack, json!({"ok": true, "id": b_id}));
        let existing = sio.event(&b, "existing-users").await;
        assert_eq!(existing.as_array().map(|e| e.len()), Some(1), "{existing}");
        assert_eq!(existing[0]["id"], json!(a_id));

        // The route leads to b's new node both ways, and a never saw b leave or join.
        sio.emit(&b, "answer", json!({"targetUserId": a_id, "answer": {"sdp": "x"}, "roomId": room})).await;
        assert_eq!(sio.event(&a, "answer").await["fromUserId"], json!(b_id));
        sio.emit(&a, "offer", json!({"targetUserId": b_id, "offer": {"sdp": "y"}, "roomId": room})).await;
        assert_eq!(sio.event(&b, "offer").await["fromUserId"], json!(a_id));
        sio.no_event(&a, "user-left", Duration::from_millis(300)).await;
        sio.no_event(&a, "user-joined", Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_participant_recovers_its_media_state_and_is_not_announced_again() {
    let (_redis, cluster) = two_resumable_nodes(GRACE_MS).await;
    let mut sio = SioAgent::start().await;
    let (n1, n2) = (url(cluster.nodes[0].addr), url(cluster.nodes[1].addr));
    let (x_id, _) = sio.connect("x", &n1, "/meetings", &["websocket"]).await;
    let y_id = sio.connect_reconnecting("y", &n2, "/meetings", &["websocket"]).await;
    sio.emit_ack("x", "join-meeting", json!({"meetingId": "m", "displayName": "Xi"})).await;
    sio.emit_ack("y", "join-meeting", json!({"meetingId": "m", "displayName": "Yu"})).await;
    assert_eq!(sio.event("x", "participant-joined").await["participant"]["participantId"], json!(y_id));
    sio.emit_ack("y", "toggle-media", json!({"meetingId": "m", "audio": false})).await;
    sio.event("x", "participant-media-changed").await;

    sio.drop_connection("y", &n1).await;
    let (back_as, recovered) = sio.reconnected("y").await;
    assert_eq!((back_as.as_str(), recovered), (y_id.as_str(), true));
    // Its state came back with it: turning the camera off keeps the microphone off.
    sio.emit_ack("y", "toggle-media", json!({"meetingId": "m", "video": false})).await;
    let changed = sio.event("x", "participant-media-changed").await;
    assert_eq!(changed["media"], json!({"audio": false, "video": false, "screen": false}), "{changed}");
    // Joining again answers with the meeting as it is, with no start and no arrival.
    sio.emit_ack("y", "join-meeting", json!({"meetingId": "m", "displayName": "Yu"})).await;
    let joined = sio.event("y", "meeting-joined").await;
    assert_eq!(joined["participants"][0]["participantId"], json!(x_id), "{joined}");
    sio.emit("x", "chat-message", json!({"meetingId": "m", "text": "still here?"})).await;
    assert_eq!(sio.event("y", "chat-message").await["text"], json!("still here?"));
    sio.no_event("y", "meeting-started", Duration::from_millis(10)).await;
    sio.no_event("x", "participant-left", Duration::from_millis(300)).await;
    sio.no_event("x", "participant-joined", Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_not_back_within_the_grace_has_left_once_and_reconnects_afresh() {
    let (_redis, cluster) = two_resumable_nodes("1000").await;
    let mut sio = SioAgent::start().await;
    let (n1, n2) = (url(cluster.nodes[0].addr), url(cluster.nodes[1].addr));
    let (_, _) = sio.connect("a", &n1, "/", &["websocket"]).await;
    let b_id = sio.connect_reconnecting("b", &n2, "/", &["websocket"]).await;
    sio.emit_ack("a", "join-room", join("late", "Ann", "interviewer")).await;
    sio.emit_ack("b", "join-room", join("late", "Bob", "candidate")).await;
    sio.event("a", "user-joined").await;

    // b's client retries where nothing answers until the grace has passed.
    let nowhere = format!("http://127.0.0.1:{}", testkit::free_port());
    sio.drop_connection("b", &nowhere).await;
    assert_eq!(sio.event("a", "user-left").await["userId"], json!(b_id));
    sio.move_to("b", &n1).await;
    let (new_id, recovered) = sio.reconnected("b").await;
    assert!(!recovered, "nothing to recover after the grace");
    assert_ne!(new_id, b_id, "a fresh session has a new socket id");
    sio.emit_ack("b", "join-room", join("late", "Bob", "candidate")).await;
    assert_eq!(sio.event("a", "user-joined").await["userId"], json!(new_id));
    sio.no_event("a", "user-left", Duration::from_millis(300)).await;
}

/// A draining node closes its Socket.IO transports (the dialect has no reconnect
/// notice; its clients reconnect when the transport closes): each session is
/// recovered on another node, and what was sent to it meanwhile arrives in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_hands_its_sessions_over_without_a_leave() {
    let redis = TestRedis::start().await;
    let settings = [("RESUME_GRACE_MS", GRACE_MS), ("DRAIN_SPREAD_MS", "500")];
    let n1 = NodeProcess::start(&redis.url(), "n1", &settings).await;
    let mut n2 = NodeProcess::start(&redis.url(), "n2", &settings).await;
    let mut sio = SioAgent::start().await;
    let (a_id, _) = sio.connect("a", &url(n1.addr), "/", &["websocket"]).await;
    let b_id = sio.connect_reconnecting("b", &url(n2.addr), "/", &["websocket"]).await;
    sio.emit_ack("a", "join-room", join("drain", "Ann", "interviewer")).await;
    sio.emit_ack("b", "join-room", join("drain", "Bob", "candidate")).await;
    sio.event("a", "user-joined").await;

    // As behind a load balancer, b's reconnect reaches a node that is not draining.
    sio.move_to("b", &url(n1.addr)).await;
    let draining = tokio::spawn(async move { n2.terminate().await });
    for n in 0..20 {
        sio.emit("a", "ice-candidate", json!({"targetUserId": b_id, "candidate": {"n": n}, "roomId": "drain"})).await;
    }
    sio.disconnected("b").await;
    let (back_as, recovered) = sio.reconnected("b").await;
    assert_eq!((back_as.as_str(), recovered), (b_id.as_str(), true));
    for n in 0..20 {
        let candidate = sio.event("b", "ice-candidate").await;
        assert_eq!((&candidate["fromUserId"], &candidate["candidate"]["n"]), (&json!(a_id), &json!(n)));
    }
    assert!(draining.await.unwrap().success(), "the drained node exits cleanly");
    sio.emit("b", "answer", json!({"targetUserId": a_id, "answer": {"sdp": "x"}, "roomId": "drain"})).await;
    assert_eq!(sio.event("a", "answer").await["fromUserId"], json!(b_id));
    sio.no_event("a", "user-left", Duration::from_millis(300)).await;
}
