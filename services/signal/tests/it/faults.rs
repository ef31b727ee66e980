//! Faults done for real: kill -9 a node, SIGTERM a node, FLUSHALL, restart Redis,
//! kill the nodes' pub/sub connections. Each asserts what a client sees.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use protocol::{LeftReason, ServerMsg};
use serde_json::json;

use crate::helpers::nodes::{not_ready_reason, process_pair_in_room, ready, DEFAULT_TIMINGS};
use crate::helpers::{wait_until, Backend, Client, NodeProcess, TestCluster, TestRedis};

/// The documented liveness defaults (README): a dead node's peers are announced within
/// NODE_TTL_MS + HEARTBEAT_INTERVAL_MS; suspects are confirmed gone after NODE_TTL_MS.
const NODE_TTL: Duration = Duration::from_millis(6000);
const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(2000);

/// Reads everything `client` receives for `window` and fails on any `peer-left`.
async fn assert_no_peer_left_for(client: &mut Client, window: Duration) {
    let end = Instant::now() + window;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        if let Some(msg) = client.try_recv(left).await {
            assert!(!matches!(msg, ServerMsg::PeerLeft(_)), "false peer-left: {msg:?}");
        }
    }
}

/// Sends a signal from `a` to `b` until `b` receives one (the route may need a
/// moment to come back); panics after `deadline`.
async fn signal_until_delivered(a: &mut Client, b: &mut Client, room: &str, deadline: Duration) {
    let end = Instant::now() + deadline;
    loop {
        a.signal(room, b.peer(), "offer", json!({"probe": true})).await;
        if let Some(ServerMsg::Signal(s)) = b.try_recv(Duration::from_millis(500)).await {
            assert_eq!(&s.from, a.peer());
            return;
        }
        // Refusals while the route heals, and announcements, are fine; nobody leaves.
        while let Some(msg) = a.try_recv(Duration::from_millis(10)).await {
            assert!(!matches!(msg, ServerMsg::PeerLeft(_)), "unexpected {msg:?}");
        }
        assert!(Instant::now() < end, "signal not delivered within {deadline:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_of_a_node_gives_peer_unavailable_at_once_node_lost_in_bound_and_no_trace() {
    let redis = TestRedis::start().await;
    // Default liveness timings: this proves the documented bound.
    let (_n1, mut n2, mut a, b) = process_pair_in_room(&redis, "doomed").await;
    let mut c = Client::connect(n2.addr).await;
    c.join("other").await;

    n2.kill9().await;
    let killed = Instant::now();
    // Nobody serves n2's inbox any more: a signal to b is refused at once, long before
    // the node-lost clean-up.
    a.send(json!({"type":"signal","room":"doomed","to":b.peer(),"kind":"offer","data":{},"id":"s1"})).await;
    let err = a.recv_error("peer-unavailable").await;
    assert_eq!(err.id, Some(protocol::RequestId::Str("s1".into())));
    // Without an id the sender does not wait for the publish: it hears the same a
    // moment later.
    a.signal("doomed", b.peer(), "candidate", json!({})).await;
    let err = a.recv_error("peer-unavailable").await;
    assert_eq!(err.id, None);
    assert!(killed.elapsed() < NODE_TTL, "peer-unavailable took {:?}", killed.elapsed());

    let bound = NODE_TTL + HEARTBEAT_INTERVAL + Duration::from_secs(2);
    let left = match a.try_recv(bound.saturating_sub(killed.elapsed())).await {
        Some(ServerMsg::PeerLeft(left)) => left,
        other => panic!("expected peer-left within {bound:?} of the kill, got {other:?}"),
    };
    eprintln!("node-lost after {:?}", killed.elapsed());
    assert_eq!((&left.peer, left.reason), (b.peer(), LeftReason::NodeLost));
    a.expect_silence(Duration::from_millis(500)).await;

    wait_until(Duration::from_secs(5), "no trace of n2 in redis", || async {
        redis.cli(&["HLEN", "sig:{room:doomed}:members"]).await == "1"
            && redis.cli(&["EXISTS", "sig:{room:other}:members"]).await == "0"
            && redis.cli(&["SISMEMBER", "sig:nodes", "n2"]).await == "0"
            && redis.cli(&["EXISTS", "sig:{node:n2}:rooms"]).await == "0"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_clients_tells_the_others_and_exits_cleanly() {
    let redis = TestRedis::start().await;
    let (_n1, mut n2, mut a, mut b) = process_pair_in_room(&redis, "r").await;

    let started = Instant::now();
    let status = n2.terminate().await;
    assert!(status.success(), "{status:?}");
    match b.recv().await {
        ServerMsg::Reconnect(r) => assert_eq!(r.reason, "draining"),
        other => panic!("expected reconnect, got {other:?}"),
    }
    assert_eq!(b.recv_close_frame().await, (1001, "draining".to_owned()));
    let left = a.recv_peer_left().await;
    assert_eq!((&left.peer, left.reason), (b.peer(), LeftReason::Disconnected));
    assert!(started.elapsed() < Duration::from_secs(10), "drain took {:?}", started.elapsed());
    assert_eq!(redis.cli(&["SISMEMBER", "sig:nodes", "n2"]).await, "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_heals_without_dropping_anyone() {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, DEFAULT_TIMINGS).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    a.join_pair(&mut b, "r").await;

    assert_eq!(redis.cli(&["FLUSHALL"]).await, "OK");
    let flushed = Instant::now();
    // A join right away, on a node that mirrors the room, already sees everyone.
    let mut c = cluster.client(0).await;
    let joined = c.join("r").await;
    let mut known: HashSet<_> = joined.peers.iter().map(|p| p.peer.clone()).collect();
    wait_until(Duration::from_secs(5), "memberships written back", || async {
        redis.cli(&["HLEN", "sig:{room:r}:members"]).await == "3"
    })
    .await;
    while let Some(ServerMsg::PeerJoined(pj)) = c.try_recv(Duration::from_millis(200)).await {
        known.insert(pj.peer.peer);
    }
    assert_eq!(known, HashSet::from([a.peer().clone(), b.peer().clone()]));

    // A join on the other node, and routing both ways, within 5 s of the flush.
    let mut d = cluster.client(1).await;
    let joined = d.join("r").await;
    assert_eq!(joined.peers.len(), 3, "{joined:?}");
    signal_until_delivered(&mut a, &mut b, "r", Duration::from_secs(5)).await;
    signal_until_delivered(&mut b, &mut a, "r", Duration::from_secs(5)).await;
    eprintln!("healed {:?} after FLUSHALL", flushed.elapsed());
    assert!(flushed.elapsed() < Duration::from_secs(5), "healed only after {:?}", flushed.elapsed());
    // Nobody was told anyone left, also after the suspects' grace (NODE_TTL_MS) ran out.
    let (ra, rb) = tokio::join!(
        assert_no_peer_left_for(&mut a, NODE_TTL + HEARTBEAT_INTERVAL),
        assert_no_peer_left_for(&mut b, NODE_TTL + HEARTBEAT_INTERVAL)
    );
    let ((), ()) = (ra, rb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_makes_nodes_unready_then_heals_without_dropping_clients() {
    let mut redis = TestRedis::start().await;
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, DEFAULT_TIMINGS).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    a.join_pair(&mut b, "r").await;

    redis.kill().await;
    let addr = cluster.nodes[0].addr;
    wait_until(Duration::from_secs(10), "/readyz to fail while redis is down", || async move { !ready(addr).await })
        .await;
    // Commands that need Redis fail fast with `unavailable`; the connection stays.
    a.send(json!({"type":"join","room":"new","id":1})).await;
    let err = a.recv_error("unavailable").await;
    assert_eq!(err.id, Some(protocol::RequestId::Num(1.into())));
    a.send(json!({"type":"ping"})).await;
    assert!(matches!(a.recv().await, ServerMsg::Pong(_)));

    redis.restart().await;
    let restarted = Instant::now();
    for node in &cluster.nodes {
        let addr = node.addr;
        wait_until(Duration::from_secs(10), "/readyz after redis is back", || ready(addr)).await;
    }
    signal_until_delivered(&mut a, &mut b, "r", Duration::from_secs(5)).await;
    signal_until_delivered(&mut b, &mut a, "r", Duration::from_secs(5)).await;
    let mut c = cluster.client(1).await;
    wait_until(Duration::from_secs(5), "memberships written back", || async {
        redis.cli(&["HLEN", "sig:{room:r}:members"]).await == "2"
    })
    .await;
    let joined = c.join("r").await;
    assert_eq!(joined.peers.len(), 2, "{joined:?}");
    eprintln!("healed {:?} after the restart", restarted.elapsed());
    assert!(restarted.elapsed() < Duration::from_secs(5), "healed only after {:?}", restarted.elapsed());
    let (ra, rb) = tokio::join!(
        assert_no_peer_left_for(&mut a, NODE_TTL + HEARTBEAT_INTERVAL),
        assert_no_peer_left_for(&mut b, NODE_TTL + HEARTBEAT_INTERVAL)
    );
    let ((), ()) = (ra, rb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pubsub_connection_is_noticed_and_routing_comes_back() {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start(&Backend::Redis(redis.url()), 2).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    a.join_pair(&mut b, "r").await;

    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    assert_ne!(killed, "0", "no pub/sub connection was killed");
    signal_until_delivered(&mut a, &mut b, "r", Duration::from_secs(5)).await;
    signal_until_delivered(&mut b, &mut a, "r", Duration::from_secs(5)).await;
    // Room channels are back too: a newcomer on node 1 is announced on node 0.
    let mut c = cluster.client(1).await;
    c.join("r").await;
    loop {
        match a.recv().await {
            ServerMsg::PeerJoined(pj) if &pj.peer.peer == c.peer() => break,
            ServerMsg::Signal(_) | ServerMsg::Error(_) => continue,
            other => panic!("{other:?}"),
        }
    }
}

/// Only the node's subscription dies (Redis and the command connection stay healthy):
/// /readyz must turn 503 with that reason, and 200 again once the node has repaired it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_only_the_subscription_is_dead_and_recovers_after_repair() {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start(&Backend::Redis(redis.url()), 1).await;
    let addr = cluster.nodes[0].addr;
    let mut a = cluster.client(0).await;
    a.join("r").await;

    // The subscriber may reconnect but not subscribe again.
    assert_eq!(redis.cli(&["ACL", "SETUSER", "default", "-subscribe", "-ssubscribe"]).await, "OK");
    assert_ne!(redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).await, "0");
    wait_until(Duration::from_secs(10), "/readyz to report the dead subscription", || async {
        not_ready_reason(addr).await.is_some_and(|r| r.contains("subscription"))
    })
    .await;
    // Redis itself still answers: a command that needs only it works.
    a.send(json!({"type":"update","room":"r","meta":{"still":"here"},"id":2})).await;
    assert!(matches!(a.recv().await, ServerMsg::Updated(_)));

    assert_eq!(redis.cli(&["ACL", "SETUSER", "default", "+@all"]).await, "OK");
    wait_until(Duration::from_secs(10), "/readyz after the node repaired its subscription", || ready(addr)).await;
    let mut b = cluster.client(0).await;
    b.join("r").await;
    assert!(matches!(a.recv().await, ServerMsg::PeerJoined(_)));
}

/// With DRAIN_SPREAD_MS, a draining node tells its clients to reconnect at moments
/// spread over that window (not all at once: the other nodes would take them in one
/// burst), serving them as usual until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paced_drain_spreads_the_reconnects_over_the_window() {
    let redis = TestRedis::start().await;
    let node = NodeProcess::start(&redis.url(), "n1", &[("DRAIN_SPREAD_MS", "2000")]).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut c = Client::connect(node.addr).await;
        c.join("paced").await;
        clients.push(c);
    }
    // Everyone has heard everyone's join before the drain starts.
    for c in &mut clients {
        while c.try_recv(Duration::from_millis(100)).await.is_some() {}
    }
    let pid = node.pid();
    let started = Instant::now();
    let terminate = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    assert!(terminate.await.unwrap().success());
    // Each client waits for its own notice at once, so the times are arrival times.
    let waits: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                loop {
                    match c.recv_or_close().await {
                        Ok(ServerMsg::Reconnect(r)) => {
                            assert_eq!(r.reason, "draining");
                            return started.elapsed();
                        }
                        // Others reconnecting before this one show as leaves meanwhile.
                        Ok(_) => continue,
                        Err(e) => panic!("closed before being told to reconnect: {e}"),
                    }
                }
            })
        })
        .collect();
    let mut told = Vec::new();
    for wait in waits {
        told.push(wait.await.unwrap());
    }
    told.sort();
    let (first, last) = (told[0], told[told.len() - 1]);
    eprintln!("reconnects told from {first:?} to {last:?} after SIGTERM");
    assert!(last - first >= Duration::from_millis(500), "not spread: {told:?}");
    assert!(last < Duration::from_millis(3000), "past the window: {told:?}");
}
