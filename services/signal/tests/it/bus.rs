//! The bus between nodes: what one message costs in Redis commands, what happens when
//! a node falls behind it (every loss counted by kind, /readyz degraded, exact books),
//! and that a lost room-channel subscription is noticed and repaired.

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::*;
use protocol::{BusEvent, Envelope, NodeId, Payload, PeerId, RoomId, ServerMsg, SignalKind};
use serde_json::json;

use crate::helpers::nodes::{metric, not_ready_reason, ready};
use crate::helpers::{wait_until, Backend, TestCluster, TestRedis};

/// `cmdstat_<name>` -> calls, from INFO commandstats.
async fn command_calls(redis: &TestRedis) -> HashMap<String, u64> {
    let info = redis.cli(&["INFO", "commandstats"]).await;
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .filter(|(name, _)| !name.starts_with("info") && !name.starts_with("config"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_node_signal_is_at_most_one_publish_and_a_room_event_one_publish_whatever_the_room_size() {
    let redis = TestRedis::start().await;
    // Heartbeats a minute apart: nothing but the traffic under test reaches Redis.
    let quiet = [("HEARTBEAT_INTERVAL_MS", "60000"), ("NODE_TTL_MS", "120000")];
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &quiet).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    a.join_pair(&mut b, "cost").await;
    let mut others = Vec::new();
    for i in 0..8 {
        let mut c = cluster.client(i % 2).await;
        c.join("cost").await;
        others.push(c);
    }
    // Let every announcement of those joins arrive before counting: each member hears
    // of everyone who joined after it.
    for (client, later) in [(&mut a, 8), (&mut b, 8)].into_iter().chain(others.iter_mut().zip((0..8).rev())) {
        for _ in 0..later {
            assert!(matches!(client.recv().await, ServerMsg::PeerJoined(_)));
        }
    }

    assert_eq!(redis.cli(&["CONFIG", "RESETSTAT"]).await, "OK");
    for i in 0..50 {
        a.signal("cost", b.peer(), "candidate", json!({"n": i})).await;
    }
    for i in 0..50 {
        assert_eq!(b.recv_signal().await.data.get(), json!({"n": i}).to_string(), "in the order sent");
    }
    // At most one publish a signal: signals queued at the same moment for one node
    // leave together (how many do depends on timing).
    let calls = command_calls(&redis).await;
    assert_eq!(calls.keys().collect::<Vec<_>>(), ["publish"]);
    assert!((1..=50).contains(&calls["publish"]), "{calls:?}");

    // A broadcast in a room of 10 members on 2 nodes: one publish each.
    assert_eq!(redis.cli(&["CONFIG", "RESETSTAT"]).await, "OK");
    for i in 0..20 {
        a.send(json!({"type":"broadcast","room":"cost","kind":"chat","data":i})).await;
    }
    for c in others.iter_mut().chain([&mut b]) {
        for _ in 0..20 {
            assert!(matches!(c.recv().await, ServerMsg::Broadcast(_)));
        }
    }
    assert_eq!(command_calls(&redis).await, HashMap::from([("publish".to_owned(), 20)]));

    // A membership change is one script that publishes once, whatever the room size.
    assert_eq!(redis.cli(&["CONFIG", "RESETSTAT"]).await, "OK");
    a.send(json!({"type":"update","room":"cost","meta":{"muted":true},"id":1})).await;
    assert!(matches!(a.recv().await, ServerMsg::Updated(_)));
    for c in others.iter_mut().chain([&mut b]) {
        assert!(matches!(c.recv().await, ServerMsg::PeerUpdated(_)));
    }
    let one = |name: &str| (name.to_owned(), 1);
    assert_eq!(
        command_calls(&redis).await,
        HashMap::from([one("eval"), one("hexists"), one("hset"), one("publish")]),
        "an update is one EVAL whose script checks, writes and publishes once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_sender_does_after_its_signals_never_overtakes_them() {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start(&Backend::Redis(redis.url()), 2).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    a.join_pair(&mut b, "order").await;
    for round in 0..5 {
        for i in 0..20 {
            a.signal("order", b.peer(), "candidate", json!({"round": round, "n": i})).await;
        }
        a.send(json!({"type":"broadcast","room":"order","kind":"chat","data":{"round": round}})).await;
        for i in 0..20 {
            assert_eq!(b.recv_signal().await.data.get(), json!({"round": round, "n": i}).to_string());
        }
        assert!(matches!(b.recv().await, ServerMsg::Broadcast(_)), "the broadcast comes after the signals");
    }
    for i in 0..20 {
        a.signal("order", b.peer(), "candidate", json!({"n": i})).await;
    }
    a.send(json!({"type":"leave","room":"order"})).await;
    for i in 0..20 {
        assert_eq!(b.recv_signal().await.data.get(), json!({"n": i}).to_string());
    }
    assert_eq!(b.recv_peer_left().await.peer, *a.peer(), "peer-left comes after the signals");
}

/// A burst far beyond the node's bus buffer: the messages it cannot hold are dropped,
/// and the counts by kind are exactly what the members did not receive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_lost_behind_a_full_bus_buffer_are_counted_exactly_and_readyz_degrades() {
    // Larger than the node's inbox (BUS_BUFFER=64), smaller than fred's buffer in front
    // of it (at least 16 Ki): every loss happens where the node can see what it lost.
    const BURST: u64 = 12_000;
    const MEMBERS: usize = 6;
    let redis = TestRedis::start().await;
    let settings = [
        ("BUS_BUFFER", "64"),
        ("OUTBOUND_QUEUE", "100000"),
        ("HEARTBEAT_INTERVAL_MS", "2000"),
        ("NODE_TTL_MS", "6000"),
    ];
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 1, &settings).await;
    let addr = cluster.nodes[0].addr;
    let mut members = Vec::new();
    for _ in 0..MEMBERS {
        let mut c = cluster.client(0).await;
        c.join("burst").await;
        members.push(c);
    }
    for (i, m) in members.iter_mut().enumerate() {
        for _ in i + 1..MEMBERS {
            assert!(matches!(m.recv().await, ServerMsg::PeerJoined(_)));
        }
    }

    // Watch /readyz from before the burst.
    let watcher = tokio::spawn(async move {
        let mut saw = None;
        for _ in 0..1000 {
            if let Some(reason) = not_ready_reason(addr).await.filter(|r| r.contains("behind")) {
                saw = Some(reason);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        saw
    });

    // One Lua call publishes the whole burst at once, faster than any node can take it.
    let outsider = NodeId::parse("outsider").unwrap();
    let room = RoomId::parse("burst").unwrap();
    let envelope = |kind: &str| {
        let event = BusEvent::Broadcast {
            room: room.clone(),
            from: PeerId::new_on(&outsider),
            kind: SignalKind::parse(kind).unwrap(),
            data: Payload::from_json("1".into()).unwrap(),
        };
        Envelope::new(outsider.clone(), event).encode()
    };
    let client = fred::clients::Client::new(Config::from_url(&redis.url()).unwrap(), None, None, None);
    client.init().await.unwrap();
    let channel = bus::room_channel(&room);
    let script = "for i = 1, tonumber(ARGV[2]) do redis.call('PUBLISH', KEYS[1], ARGV[1]) end return 1";
    let _: i64 = client
        .eval(
            script,
            vec![channel.clone()],
            vec![Value::from(bytes::Bytes::from(envelope("chat"))), Value::from(BURST as i64)],
        )
        .await
        .unwrap();

    let reason = watcher.await.unwrap().expect("/readyz reported the node behind");
    assert!(reason.contains("behind"), "{reason}");
    wait_until(Duration::from_secs(20), "/readyz after the node caught up", || ready(addr)).await;

    // Caught up: one last broadcast marks the end of the stream for every member.
    let _: i64 = client.publish(channel, bytes::Bytes::from(envelope("end"))).await.unwrap();
    let lost_of = |kind: &'static str| async move {
        metric(addr, &format!("signal_bus_lost_messages_total{{kind=\"{kind}\"}}")).await as u64
    };
    let (broadcasts, unknown) = (lost_of("broadcast").await, lost_of("unknown").await);
    let total = metric(addr, "signal_bus_lagged_messages_total").await as u64;
    eprintln!("lost: {total} in all, {broadcasts} broadcasts, {unknown} unknown");
    assert!(broadcasts > 0, "a {BURST}-message burst into a 64-message buffer lost nothing");
    // Probes may be lost too, and are counted as such.
    assert_eq!(
        total,
        broadcasts + unknown + lost_of("probe").await + lost_of("signal").await + lost_of("room_event").await
    );
    assert_eq!(unknown, 0, "losses in fred's buffer, where nobody can tell what was lost");
    let lost = broadcasts;
    for m in &mut members {
        let mut received = 0u64;
        loop {
            match m.recv().await {
                ServerMsg::Broadcast(b) if b.kind.as_str() == "end" => break,
                ServerMsg::Broadcast(_) => received += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(received + lost, BURST, "received {received}, counted lost {lost}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_room_channel_subscription_is_noticed_and_repaired() {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start(&Backend::Redis(redis.url()), 2).await;
    let mut a = cluster.client(0).await;
    let mut b = cluster.client(1).await;
    a.join_pair(&mut b, "r").await;

    // Node 1 stops hearing the room (as after a partly failed resubscribe), unbeknown
    // to its own bookkeeping.
    let node1 = &cluster.nodes[1];
    node1.store.unsubscribe_room(&RoomId::parse("r").unwrap()).await.unwrap();
    let mut c = cluster.client(0).await;
    c.join("r").await;
    // b learns of c all the same (the room is resubscribed and resynchronised)...
    match b.recv().await {
        ServerMsg::PeerJoined(pj) => assert_eq!(&pj.peer.peer, c.peer()),
        other => panic!("{other:?}"),
    }
    // ...and hears the room's events again.
    a.send(json!({"type":"broadcast","room":"r","kind":"chat","data":"back"})).await;
    match b.recv().await {
        ServerMsg::Broadcast(bc) => assert_eq!(bc.data.get(), r#""back""#),
        other => panic!("{other:?}"),
    }
    assert!(node1.metric("signal_bus_gaps_total").await >= 1.0);
}

/// A burst of joins into one room reads its members from Redis once per node: the
/// first join takes the snapshot, the others wait for the node's mirror of the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_joins_into_one_room_takes_one_member_snapshot_per_node() {
    let redis = TestRedis::start().await;
    let quiet = [("HEARTBEAT_INTERVAL_MS", "60000"), ("NODE_TTL_MS", "120000")];
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &quiet).await;
    let mut clients = Vec::new();
    for i in 0..60 {
        clients.push(cluster.client(i % 2).await);
    }
    assert_eq!(redis.cli(&["CONFIG", "RESETSTAT"]).await, "OK");
    let joins = clients.iter_mut().map(|c| c.join("burst"));
    let joined = futures::future::join_all(joins).await;
    assert_eq!(joined.len(), 60);
    let calls = command_calls(&redis).await;
    assert_eq!(calls.get("hgetall"), Some(&2), "one snapshot per node: {calls:?}");
}
