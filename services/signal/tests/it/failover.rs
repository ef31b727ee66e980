//! Redis failover under the nodes: a Sentinel set (1 primary, 1 replica, 3 sentinels)
//! started by the test, the primary killed; the nodes follow the promotion, joins and
//! signals work again within 10 s of it, and nothing false is announced (no peer-left
//! for members that never left).

use std::time::Duration;

use protocol::ServerMsg;
use serde_json::json;
use testkit::TestRedisSentinel;
use tokio::time::Instant;

use crate::helpers::{wait_until, Backend, Client, TestCluster};

/// A new pair on the two nodes joins `room` and relays one signal; false (not a panic)
/// while Redis is not answering.
async fn fresh_pair_relays(cluster: &TestCluster, room: &str) -> bool {
    match try_fresh_pair(cluster, room).await {
        Ok(()) => true,
        Err(step) => {
            eprintln!("{room}: {step}");
            false
        }
    }
}

/// Like [`fresh_pair_relays`], saying which step failed and how.
async fn try_fresh_pair(cluster: &TestCluster, room: &str) -> Result<(), String> {
    let wait = Duration::from_secs(2);
    let mut c = cluster.client(0).await;
    let mut d = cluster.client(1).await;
    for (who, client) in [("c", &mut c), ("d", &mut d)] {
        client.send(json!({"type": "join", "room": room, "name": "after"})).await;
        match client.try_recv(wait).await {
            Some(ServerMsg::Joined(_)) => {}
            other => return Err(format!("{who}'s join: {other:?}")),
        }
    }
    // c hears d join, then d hears c's signal.
    let _ = c.try_recv(wait).await;
    c.signal(room, d.peer(), "offer", json!({"after": true})).await;
    loop {
        match d.try_recv(wait).await {
            Some(ServerMsg::Signal(s)) if s.data.get() == r#"{"after":true}"# => return Ok(()),
            Some(ServerMsg::Signal(s)) => return Err(format!("a wrong signal: {s:?}")),
            Some(_) => continue,
            None => return Err("no signal within 2 s".into()),
        }
    }
}

/// The pair `a`, `b` joined to `before` before the failure still relays, and neither
/// heard a leave that did not happen.
async fn old_pair_relays_without_a_false_leave(a: &mut Client, b: &mut Client) {
    a.signal("before", b.peer(), "offer", json!({"n": 1})).await;
    let mut heard = drain(b, Duration::from_millis(500)).await;
    heard.extend(drain(a, Duration::from_millis(200)).await);
    assert!(
        heard.iter().any(|m| matches!(m, ServerMsg::Signal(s) if s.data.get() == r#"{"n":1}"#)),
        "the old pair relays: {heard:?}"
    );
    assert!(!heard.iter().any(|m| matches!(m, ServerMsg::PeerLeft(_))), "a false peer-left: {heard:?}");
}

/// Every message `client` has waiting, until it is quiet for `quiet`.
async fn drain(client: &mut Client, quiet: Duration) -> Vec<ServerMsg> {
    let mut seen = Vec::new();
    while let Some(msg) = client.try_recv(quiet).await {
        seen.push(msg);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sentinel_failover_the_nodes_follow_the_new_primary_without_false_leaves() {
    let mut redis = TestRedisSentinel::start().await;
    let cluster = TestCluster::start(&Backend::Redis(redis.url()), 2).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    a.join_pair(&mut b, "before").await;
    a.signal("before", b.peer(), "offer", json!({"n": 0})).await;
    assert_eq!(b.recv_signal().await.data.get(), r#"{"n":0}"#);

    redis.kill_primary().await;
    let killed = Instant::now();
    wait_until(Duration::from_secs(30), "the sentinels to promote the replica", || async {
        redis.primary_as_seen().await == Some(redis.replica_port)
    })
    .await;
    let promoted = killed.elapsed();

    // Within 10 s of the promotion, a new pair joins and relays across the nodes.
    let mut attempt = 0;
    wait_until(Duration::from_secs(10), "joins and signals to work again", || {
        attempt += 1;
        let room = format!("after-{attempt}");
        let cluster = &cluster;
        async move { fresh_pair_relays(cluster, &room).await }
    })
    .await;
    let recovered = killed.elapsed();
    eprintln!("sentinel failover: promoted {promoted:?} after the kill, joins and signals back {recovered:?} after it");

    // The pair from before still relays, and neither heard a leave that did not happen.
    old_pair_relays_without_a_false_leave(&mut a, &mut b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_cluster_primary_dies_its_replica_takes_over_and_the_nodes_follow() {
    let mut redis = testkit::TestRedisCluster::start_with_replicas(1).await;
    let url = redis.url();
    let cluster = TestCluster::start(&Backend::Redis(url), 2).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    a.join_pair(&mut b, "before").await;
    a.signal("before", b.peer(), "offer", json!({"n": 0})).await;
    assert_eq!(b.recv_signal().await.data.get(), r#"{"n":0}"#);

    let (master, replica) = redis.master_with_replica().await;
    // Rooms whose keys live on the shard that fails over, and others elsewhere.
    let failed_slots = redis.slots_of(master).await;
    let on_failed_shard = |room: &str| {
        let slot = testkit::key_slot(&format!("sig:{{room:{room}}}:members"));
        failed_slots.iter().any(|range| range.contains(&slot))
    };
    let mut rooms = (0..).map(|i| format!("after-{i}"));
    redis.kill(master).await;
    let killed = Instant::now();
    wait_until(Duration::from_secs(30), "the replica to be promoted", || async { redis.is_master(replica).await })
        .await;
    let promoted = killed.elapsed();

    // Within 10 s of the promotion, new pairs join and relay on the failed-over shard
    // and on another (new rooms each attempt).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let failed_over = rooms.find(|r| on_failed_shard(r)).expect("endless");
        let elsewhere = rooms.find(|r| !on_failed_shard(r)).expect("endless");
        let tried = match try_fresh_pair(&cluster, &failed_over).await {
            Ok(()) => {
                try_fresh_pair(&cluster, &elsewhere).await.map_err(|e| format!("{elsewhere} (another shard): {e}"))
            }
            Err(e) => Err(format!("{failed_over} (the failed-over shard): {e}")),
        };
        let Err(failure) = tried else { break };
        if Instant::now() > deadline {
            panic!(
                "joins and signals did not work again within 10 s of the promotion; last failure: {failure}\n\
                 the cluster as node {replica} sees it:\n{}",
                redis.nodes_seen_by(replica).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = killed.elapsed();
    eprintln!("cluster failover: promoted {promoted:?} after the kill, joins and signals back {recovered:?} after it");

    old_pair_relays_without_a_false_leave(&mut a, &mut b).await;
}

/// Redis frozen for 30 s (SIGSTOP: connections open, nothing answers) and back with its
/// data: the nodes stay up and keep their clients, commands that need Redis are refused
/// with `unavailable` meanwhile, and afterwards everything works with no false leave,
/// although every heartbeat expired while Redis was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_for_30_s_and_back_heals_without_dropping_anyone() {
    let redis = crate::helpers::TestRedis::start().await;
    let cluster =
        TestCluster::start_with(&Backend::Redis(redis.url()), 2, crate::helpers::nodes::DEFAULT_TIMINGS).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    a.join_pair(&mut b, "frozen").await;

    redis.pause().await;
    let paused = Instant::now();
    a.send(json!({"type": "join", "room": "during", "id": 1})).await;
    let refused = a.recv_error("unavailable").await;
    assert_eq!(refused.id, Some(protocol::RequestId::Num(1.into())));
    eprintln!("refused with unavailable {:?} into the outage", paused.elapsed());
    a.send(json!({"type": "ping"})).await;
    assert!(matches!(a.recv().await, ServerMsg::Pong(_)), "the connection stays");
    let remaining = Duration::from_secs(30).saturating_sub(paused.elapsed());
    tokio::time::sleep(remaining).await;
    redis.resume().await;
    let resumed = Instant::now();

    wait_until(Duration::from_secs(15), "joins and signals to work again", || async {
        fresh_pair_relays(&cluster, &format!("after-{}", resumed.elapsed().as_millis())).await
    })
    .await;
    eprintln!("healed {:?} after Redis came back", resumed.elapsed());
    a.signal("frozen", b.peer(), "offer", json!({"n": 1})).await;
    // Long enough for a reaper to act on the heartbeats that lapsed (TTL 6 s + a beat).
    let mut heard = Vec::new();
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        if let Some(msg) = b.try_recv(Duration::from_millis(200)).await {
            heard.push(msg);
        }
        if let Some(msg) = a.try_recv(Duration::from_millis(50)).await {
            heard.push(msg);
        }
    }
    assert!(
        heard.iter().any(|m| matches!(m, ServerMsg::Signal(s) if s.data.get() == r#"{"n":1}"#)),
        "the old pair relays: {heard:?}"
    );
    assert!(!heard.iter().any(|m| matches!(m, ServerMsg::PeerLeft(_))), "a false peer-left: {heard:?}");
}
