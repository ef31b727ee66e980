//! TURN monitoring from coturn's redis-statsdb: stats, sessions and the event stream,
//! fed by real allocations.

use std::time::Duration;

use serde_json::Value;
use testkit::{wait_until, CoturnOptions, TestCoturn, TestRedis};

use crate::helpers::{pairs, rest_settings, Service, REALM};

const STATUS: &str = "status-token-0123456789";

/// `XRANGE` of the stream as (eventType, details JSON) pairs.
async fn stream_events(redis: &TestRedis) -> Vec<(String, Value)> {
    let out = redis.cli(&["XRANGE", "turn:events", "-", "+"]).await;
    // redis-cli prints: id, then field/value lines per entry.
    let lines: Vec<&str> = out.lines().collect();
    let mut events = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i] == "eventType" && i + 1 < lines.len() {
            let event_type = lines[i + 1].to_owned();
            let details = lines[i..].iter().position(|l| *l == "details").and_then(|p| lines.get(i + p + 1));
            let details = details.and_then(|d| serde_json::from_str(d).ok()).unwrap_or(Value::Null);
            events.push((event_type, details));
        }
        i += 1;
    }
    events
}

#[tokio::test]
async fn an_allocation_shows_in_sessions_and_stats_and_its_events_reach_the_stream() {
    let redis = TestRedis::start().await;
    let coturn = TestCoturn::start(REALM, CoturnOptions { redis_port: Some(redis.port), ..Default::default() }).await;
    let mut settings = rest_settings(&coturn.port.to_string());
    settings.extend([("REDIS_URL", redis.url()), ("STATUS_TOKEN", STATUS.into())]);
    let service = Service::start(&pairs(&settings)).await;
    let auth = format!("Bearer {STATUS}");
    let auth = [("authorization", auth.as_str())];

    // The status endpoints need the token.
    assert_eq!(service.get("/api/turn/sessions", &[]).await.0, 401);

    let (_, _, body) = service.get("/turn-credentials?username=carol", &[]).await;
    let (user, pass) = (body["username"].as_str().unwrap().to_owned(), body["credential"].as_str().unwrap().to_owned());
    assert!(user.ends_with(":carol"));

    // While turnutils_uclient holds its allocation, /api/turn/sessions lists it.
    let client = {
        let (user, pass) = (user.clone(), pass.clone());
        let port = coturn.port;
        tokio::spawn(async move {
            let coturn_port = port;
            let mut cmd = tokio::process::Command::new("turnutils_uclient");
            cmd.args(["-u", &user, "-w", &pass, "-p", &coturn_port.to_string()])
                .args(["-n", "8", "-m", "1", "-l", "170", "-y", "127.0.0.1"])
                .kill_on_drop(true);
            tokio::time::timeout(Duration::from_secs(60), cmd.output()).await.unwrap().unwrap()
        })
    };
    wait_until(Duration::from_secs(20), "the allocation to appear in /api/turn/sessions", || {
        let (service, user) = (&service, &user);
        async move {
            let (_, _, s) = service.get("/api/turn/sessions", &auth).await;
            s["sessions"].as_array().is_some_and(|list| {
                list.iter().any(|a| {
                    a["username"] == user.as_str()
                        && a["user"] == "carol"
                        && a["transport"] == "UDP"
                        && a["remote"].as_str().is_some_and(|r| r.starts_with("127.0.0.1:"))
                        && a["ageSeconds"].is_u64()
                })
            })
        }
    })
    .await;
    let (_, _, stats) = service.get("/api/turn/stats", &auth).await;
    assert!(stats["activeAllocations"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["byRealm"][REALM]["allocationsCreated"].as_u64().unwrap() >= 1, "{stats}");
    // A replica without STATUS_TOKEN: its counts answer anyone, as S1's health did (it
    // learns the live allocation from coturn's status keys); addresses never do.
    let open_settings: Vec<(&str, &str)> = pairs(&settings).into_iter().filter(|(k, _)| *k != "STATUS_TOKEN").collect();
    let open = Service::start(&open_settings).await;
    let (status, _, counts) = open.get("/api/turn/stats", &[]).await;
    assert_eq!(status, 200, "{counts}");
    assert!(counts["activeAllocations"].as_u64().unwrap() >= 1, "{counts}");
    assert_eq!(open.get("/api/turn/sessions", &[]).await.0, 403);

    let out = client.await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // After the client leaves: its released allocations are gone from the sessions,
    // traffic is counted, and created, traffic and deleted events are in the stream.
    // (turnutils_uclient releases most of its allocations; coturn keeps one that it
    // does not refresh to lifetime 0 until that lifetime runs out.)
    wait_until(Duration::from_secs(10), "created, traffic and deleted events in the stream", || async {
        let events = stream_events(&redis).await;
        let mine =
            |t: &str| events.iter().any(|(et, d)| et == t && d["username"] == user.as_str() && d["realm"] == REALM);
        mine("allocation_created") && mine("allocation_deleted") && mine("allocation_traffic")
    })
    .await;
    let deleted: Vec<String> = stream_events(&redis)
        .await
        .into_iter()
        .filter(|(et, _)| et == "allocation_deleted")
        .map(|(_, d)| d["allocationId"].as_str().unwrap().to_owned())
        .collect();
    let (_, _, s) = service.get("/api/turn/sessions", &auth).await;
    let listed: Vec<&str> = s["sessions"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert!(deleted.iter().all(|id| !listed.contains(&id.as_str())), "deleted {deleted:?} still listed in {s}");
    let (_, _, stats) = service.get("/api/turn/stats", &auth).await;
    assert!(stats["totals"]["traffic"]["receivedBytes"].as_u64().unwrap() > 0, "{stats}");
    // /metrics says the same, by realm.
    let (_, metrics) = service.text("/metrics").await;
    let realm = format!("realm=\"{REALM}\"");
    let value = |series: String| testkit::metric_sum(&metrics, &series).unwrap_or(0.0);
    assert!(value(format!("credentials_turn_allocations_created_total{{{realm}}}")) >= 1.0, "{metrics}");
    assert!(value(format!("credentials_turn_allocations_deleted_total{{{realm}}}")) >= 1.0, "{metrics}");
    let received = format!("credentials_turn_traffic_bytes_total{{direction=\"received\",{realm},side=\"client\"}}");
    // Read after the stats, from totals that only grow.
    assert!(value(received) >= stats["totals"]["traffic"]["receivedBytes"].as_u64().unwrap() as f64, "{metrics}");
    assert!(value("credentials_turn_events_written_total".into()) >= 3.0, "{metrics}");
    // coturn may still be reporting a release, so two separate reads can see two
    // moments: wait (bounded) until the count and the list agree.
    wait_until(Duration::from_secs(10), "active allocations to match the session list", || async {
        let (_, _, s) = service.get("/api/turn/sessions", &auth).await;
        let (_, _, stats) = service.get("/api/turn/stats", &auth).await;
        stats["activeAllocations"].as_u64() == s["sessions"].as_array().map(|a| a.len() as u64)
    })
    .await;
    // Each event carries the normalised fields.
    let raw = redis.cli(&["XRANGE", "turn:events", "-", "+", "COUNT", "1"]).await;
    for field in ["eventType", "service", "details", "timestamp"] {
        assert!(raw.lines().any(|l| l == field), "{field} missing in {raw}");
    }
    assert!(raw.lines().any(|l| l == "turn"), "service is turn: {raw}");

    // A consumer group can read it (what log pipelines do).
    assert_eq!(redis.cli(&["XGROUP", "CREATE", "turn:events", "pipeline", "0"]).await, "OK");
    let read =
        redis.cli(&["XREADGROUP", "GROUP", "pipeline", "c1", "COUNT", "100", "STREAMS", "turn:events", ">"]).await;
    assert!(read.contains("allocation_created"));
}

#[tokio::test]
async fn a_restarted_service_lists_allocations_coturn_still_holds() {
    // coturn keeps a status key per open allocation; a new replica seeds from them.
    let redis = TestRedis::start().await;
    let key = format!("turn/realm/{REALM}/user/1900000000:dave/allocation/000000000000000042/status");
    redis.cli(&["SET", &key, "new lifetime=600, type=TCP, local=127.0.0.1:3478, remote=127.0.0.1:5555"]).await;
    let mut settings = rest_settings("3478");
    settings.extend([("REDIS_URL", redis.url()), ("STATUS_TOKEN", STATUS.into())]);
    let service = Service::start(&pairs(&settings)).await;
    let auth = format!("Bearer {STATUS}");
    let (status, _, s) = service.get("/api/turn/sessions", &[("authorization", auth.as_str())]).await;
    assert_eq!(status, 200);
    assert_eq!(s["count"], 1, "{s}");
    assert_eq!(s["sessions"][0]["user"], "dave");
    assert_eq!(s["sessions"][0]["transport"], "TCP");
}

#[tokio::test]
async fn events_keep_flowing_after_a_redis_restart() {
    let mut redis = TestRedis::start().await;
    let mut settings = rest_settings("3478");
    settings.extend([("REDIS_URL", redis.url()), ("STATUS_TOKEN", STATUS.into())]);
    let service = Service::start(&pairs(&settings)).await;
    let auth = format!("Bearer {STATUS}");
    let channel = format!("turn/realm/{REALM}/user/1900000000:frank/allocation/000000000000000077/status");

    redis.restart().await;
    // coturn publishes again once Redis is back; so do we, until the service has
    // re-subscribed and picked the event up.
    wait_until(Duration::from_secs(20), "an event published after the restart to be seen", || {
        let (redis, service, auth, channel) = (&redis, &service, &auth, &channel);
        async move {
            redis
                .cli(&["PUBLISH", channel, "new lifetime=600, type=UDP, local=127.0.0.1:3478, remote=127.0.0.1:6000"])
                .await;
            let (_, _, s) = service.get("/api/turn/sessions", &[("authorization", auth.as_str())]).await;
            s["count"] == 1
        }
    })
    .await;
    let (status, _, b) = service.get("/api/turn/sessions?limit=0", &[("authorization", auth.as_str())]).await;
    assert_eq!((status, b["error"].as_str()), (400, Some("bad-request")));
    let (status, _, b) = service.get("/api/turn/sessions?limit=many", &[("authorization", auth.as_str())]).await;
    assert_eq!((status, b["error"].as_str()), (400, Some("bad-request")), "{b}");
}

#[tokio::test]
async fn one_replica_writes_the_stream_and_another_takes_over_when_it_stops() {
    let redis = TestRedis::start().await;
    let mut settings = rest_settings("3478");
    settings.extend([("REDIS_URL", redis.url()), ("STATUS_TOKEN", STATUS.into())]);
    let first = Service::start(&pairs(&settings)).await;
    wait_until(Duration::from_secs(10), "the first replica to hold the writer lease", || async {
        !redis.cli(&["GET", "credentials:turn-events:writer"]).await.is_empty()
    })
    .await;
    let second = Service::start(&pairs(&settings)).await;
    let channel = |n: u32| format!("turn/realm/{REALM}/user/1900000000:gina/allocation/{n:018}/status");
    let created = |n: u32| {
        let ch = channel(n);
        let redis = &redis;
        async move { redis.cli(&["PUBLISH", &ch, "new lifetime=600, type=UDP, local=a, remote=b"]).await }
    };
    let ids_in_stream = || async {
        stream_events(&redis)
            .await
            .into_iter()
            .map(|(_, d)| d["allocationId"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };

    // Both replicas see the event; exactly one writes it.
    assert_eq!(created(1).await, "2", "both replicas subscribed");
    wait_until(Duration::from_secs(10), "the event in the stream", || async { !ids_in_stream().await.is_empty() })
        .await;

    // The writer stops (gracefully: it hands the lease back); the other takes over.
    first.app.stop().await.unwrap();
    let mut n = 2;
    wait_until(Duration::from_secs(15), "the second replica to write events", || {
        n += 1;
        let id = n;
        async move {
            created(id).await;
            // Any event after the first one written means a writer is back.
            ids_in_stream().await.len() > 1
        }
    })
    .await;
    let ids = ids_in_stream().await;
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "an event was written twice: {ids:?}");
    drop(second);
}
