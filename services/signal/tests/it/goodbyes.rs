//! Which ends of a connection leave at once and which are held for resume
//! (docs/protocol.md, "Closing"), in every dialect, across two nodes: a goodbye (a
//! WebSocket close with 1000, 1001 or no code; an Engine.IO close, also how a polling
//! client ends; a Socket.IO DISCONNECT) is heard at once; a lost connection (no close
//! frame), a close with 4000 `moving`, or a close the node started (idle) is held for
//! RESUME_GRACE_MS and resumes; a close with 4001 `reloading` is held for
//! RELOAD_GRACE_MS only. A killed node's members are announced lost once, the grace
//! counted from its last heartbeat.

use std::time::Duration;

use protocol::{LeftReason, ServerMsg};
use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::helpers::socketio::{url, SioAgent};
use crate::helpers::{Backend, Client, NodeProcess, TestCluster, TestRedis};
use crate::plain::PlainClient;

/// Long, so that a member held for it cannot be mistaken for one that left at once.
const GRACE: (&str, &str) = ("RESUME_GRACE_MS", "15000");
/// A goodbye is heard well within this (a held member would take the whole grace).
const AT_ONCE: Duration = Duration::from_secs(3);

async fn two_nodes(extra: &[(&str, &str)]) -> (TestRedis, TestCluster) {
    let redis = TestRedis::start().await;
    let mut settings = vec![GRACE];
    settings.extend_from_slice(extra);
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &settings).await;
    (redis, cluster)
}

/// The next `peer-left` `client` hears within `within`, and how long it took.
async fn peer_left_within(client: &mut Client, within: Duration) -> (protocol::native::PeerLeft, Duration) {
    let started = Instant::now();
    loop {
        match client.try_recv(within.saturating_sub(started.elapsed())).await {
            Some(ServerMsg::PeerLeft(left)) => return (left, started.elapsed()),
            Some(_) => continue,
            None => panic!("no peer-left within {within:?}"),
        }
    }
}

/// Fails if `client` hears anyone leave within `window`.
async fn nobody_leaves(client: &mut Client, window: Duration) {
    let until = Instant::now() + window;
    while let Some(msg) = client.try_recv(until.saturating_duration_since(Instant::now())).await {
        assert!(!matches!(msg, ServerMsg::PeerLeft(_)), "a held member was announced gone: {msg:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_goodbyes_leave_at_once_whatever_the_close_code() {
    let (_redis, cluster) = two_nodes(&[]).await;
    // None: a close frame without a status code (a browser's `ws.close()`).
    for (i, code) in [Some(1000u16), Some(1001), None, Some(1011)].into_iter().enumerate() {
        let room = format!("bye-{i}");
        let mut a = cluster.client(0).await;
        let mut b = cluster.client(1).await;
        a.join_pair(&mut b, &room).await;
        let b_peer = b.peer().clone();
        b.send_close(code).await;
        let (left, after) = peer_left_within(&mut a, AT_ONCE).await;
        assert_eq!((&left.peer, left.reason), (&b_peer, LeftReason::Disconnected), "close {code:?}");
        eprintln!("close {code:?}: peer-left on the other node after {after:?}");
        // Gone for good: its token resumes nothing.
        let refused = Client::resume(cluster.nodes[0].addr, &b.resume_token()).await.expect_err("not held");
        assert_eq!(refused.code.as_str(), "resume-failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_and_a_moving_close_are_held_and_resume_on_the_other_node() {
    let (_redis, cluster) = two_nodes(&[]).await;
    for (i, how) in ["reset", "close 4000", "close 4999"].into_iter().enumerate() {
        let room = format!("held-{i}");
        let mut a = cluster.client(0).await;
        let mut b = cluster.client(1).await;
        a.join_pair(&mut b, &room).await;
        let (b_peer, token) = (b.peer().clone(), b.resume_token());
        match how {
            "reset" => drop(b),
            code => {
                let code: u16 = code.trim_start_matches("close ").parse().unwrap();
                b.close_with(code).await;
            }
        }
        nobody_leaves(&mut a, Duration::from_secs(1)).await;
        let (_b, resumed) = Client::resume(cluster.nodes[0].addr, &token).await.expect("held, so it resumes");
        assert_eq!(resumed.peer, b_peer, "{how}");
        nobody_leaves(&mut a, Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_node_closes_for_idleness_is_held_and_resumes() {
    // Silent for twice the heartbeat (2 s): the node closes it, and holds its member.
    let (_redis, cluster) = two_nodes(&[("CLIENT_HEARTBEAT_MS", "1000")]).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    a.join_pair(&mut b, "idle").await;
    let (b_peer, token) = (b.peer().clone(), b.resume_token());
    // a keeps itself alive while b says nothing until the node closes it.
    let (code, reason) = {
        let closed = b.recv_close_frame();
        tokio::pin!(closed);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            a.send(json!({"type": "ping"})).await;
            match tokio::time::timeout(Duration::from_millis(400), &mut closed).await {
                Ok(close) => break close,
                Err(_) => assert!(Instant::now() < deadline, "the node did not close the idle connection"),
            }
        }
    };
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.starts_with("idle"), "{reason}");
    let (_b, resumed) = Client::resume(cluster.nodes[0].addr, &token).await.expect("held, so it resumes");
    assert_eq!(resumed.peer, b_peer);
    while let Some(msg) = a.try_recv(Duration::from_millis(300)).await {
        assert!(!matches!(msg, ServerMsg::PeerLeft(_)), "{msg:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloading_close_is_held_briefly_a_reload_resumes_and_a_closed_tab_leaves_after_the_short_hold() {
    let (_redis, cluster) = two_nodes(&[("RELOAD_GRACE_MS", "600")]).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    a.join_pair(&mut b, "reload").await;
    let (b_peer, token) = (b.peer().clone(), b.resume_token());

    // A reload: back within the short hold, as the same member, and nobody heard it go.
    b.close_with(4001).await;
    let (b, resumed) = Client::resume(cluster.nodes[1].addr, &token).await.expect("a reload resumes");
    assert_eq!(resumed.peer, b_peer);
    nobody_leaves(&mut a, Duration::from_millis(1200)).await;

    // A closed tab: the same close, and no page comes back; it leaves after the hold.
    let closed = Instant::now();
    b.close_with(4001).await;
    let (left, _) = peer_left_within(&mut a, AT_ONCE).await;
    let after = closed.elapsed();
    assert_eq!((&left.peer, left.reason), (&b_peer, LeftReason::Disconnected));
    assert!(after >= Duration::from_millis(600), "left after {after:?}, before RELOAD_GRACE_MS");
    eprintln!("4001 without a reload: peer-left after {after:?} (RELOAD_GRACE_MS 600)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_goodbyes_leave_at_once_over_each_transport_and_a_lost_transport_is_held() {
    let (_redis, cluster) = two_nodes(&[]).await;
    let mut sio = SioAgent::start().await;
    let (n1, n2) = (url(cluster.nodes[0].addr), url(cluster.nodes[1].addr));
    let join = |room: &str, name: &str| json!({"roomId": room, "userName": name, "userRole": "candidate"});
    let cases = [
        ("websocket", "disconnect"),
        ("polling", "disconnect"),
        ("websocket", "engine close"),
        ("polling", "engine close"),
        ("websocket", "lost"),
    ];
    for (i, (transport, how)) in cases.into_iter().enumerate() {
        let room = format!("sio-bye-{i}");
        let (a, b) = (format!("a{i}"), format!("b{i}"));
        sio.connect(&a, &n1, "/", &["websocket"]).await;
        let (b_id, _) = sio.connect(&b, &n2, "/", &[transport]).await;
        assert_eq!(sio.emit_ack(&a, "join-room", join(&room, "Ann")).await["ok"], true);
        assert_eq!(sio.emit_ack(&b, "join-room", join(&room, "Bob")).await["ok"], true);
        assert_eq!(sio.event(&a, "user-joined").await["userId"], json!(b_id));
        let started = Instant::now();
        match how {
            "disconnect" => sio.disconnect(&b).await,
            "engine close" => sio.close_engine(&b).await,
            _ => sio.drop_connection(&b, &n2).await,
        }
        if how == "lost" {
            sio.no_event(&a, "user-left", Duration::from_millis(1500)).await;
            continue;
        }
        let left = sio.event(&a, "user-left").await;
        assert_eq!(left["userId"], json!(b_id), "{transport} {how}");
        let after = started.elapsed();
        assert!(after < AT_ONCE, "{transport} {how}: user-left after {after:?}");
        eprintln!("{transport} {how}: user-left on the other node after {after:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_client_that_closes_leaves_at_once_even_when_its_registration_could_resume() {
    let (_redis, cluster) = two_nodes(&[]).await;
    let mut a = PlainClient::connect(cluster.nodes[0].addr).await;
    let mut b = PlainClient::connect(cluster.nodes[1].addr).await;
    a.register("Worker-1", "r").await;
    b.register("Worker-2", "r").await;
    assert_eq!(a.recv().await["type"], "peer_joined");
    let started = Instant::now();
    let _ = b.ws.close(Some(CloseFrame { code: 1001.into(), reason: "".into() })).await;
    // (1001 is what a browser sends when the page goes away.)
    let left = a.recv().await;
    assert_eq!((left["type"].as_str(), left["peer_id"].as_str()), (Some("peer_left"), Some("Worker-2")), "{left}");
    assert!(started.elapsed() < AT_ONCE, "peer_left after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_announces_the_dead_nodes_members_once_within_the_grace_of_its_death() {
    let redis = TestRedis::start().await;
    let timing = [
        ("RESUME_GRACE_MS", "3000"),
        ("HEARTBEAT_INTERVAL_MS", "500"),
        ("NODE_TTL_MS", "1500"),
        ("CLIENT_HEARTBEAT_MS", "25000"),
    ];
    let n1 = NodeProcess::start(&redis.url(), "n1", &timing).await;
    let mut n2 = NodeProcess::start(&redis.url(), "n2", &timing).await;
    let mut a = Client::connect(n1.addr).await;
    let mut b = Client::connect(n2.addr).await;
    let mut c = Client::connect(n2.addr).await;
    a.join_pair(&mut b, "doomed").await;
    c.join("doomed").await;
    let _ = a.recv().await; // c's peer-joined

    n2.kill9().await;
    let killed = Instant::now();
    // Detection takes the TTL (1.5 s) and a heartbeat; the grace (3 s) counts from the
    // dead node's last heartbeat, not from its detection: both leave by grace + 2 s.
    let bound = Duration::from_secs(3 + 2);
    let mut gone = Vec::new();
    while gone.len() < 2 {
        match a.try_recv(bound.saturating_sub(killed.elapsed())).await {
            Some(ServerMsg::PeerLeft(left)) => {
                assert_eq!(left.reason, LeftReason::NodeLost, "{left:?}");
                gone.push(left.peer);
            }
            Some(_) => continue,
            None => panic!("node-lost for {gone:?} only, within {bound:?} of the kill"),
        }
    }
    eprintln!("node-lost after {:?} (RESUME_GRACE_MS 3000)", killed.elapsed());
    gone.sort();
    let mut expected = vec![b.peer().clone(), c.peer().clone()];
    expected.sort();
    assert_eq!(gone, expected);
    // Announced once: nothing more about them.
    nobody_leaves(&mut a, Duration::from_secs(2)).await;
}
