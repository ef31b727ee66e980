//! The TURN event log on RabbitMQ, in S2's contract: a private broker started by the
//! test, real coturn allocations, and real AMQP consumers reading `webrtc_events` and
//! `logs`; then the broker goes away and comes back, and what happened meanwhile still
//! arrives.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, Consumer};
use serde_json::Value;
use testkit::rabbitmq::TestRabbitMq;
use testkit::{metric_sum, wait_until, CoturnOptions, TestCoturn, TestRedis};

use crate::helpers::{pairs, rest_settings, Service, REALM};

async fn consumer(url: &str, queue: &str) -> (Connection, Consumer) {
    let connection = Connection::connect(url, ConnectionProperties::default()).await.expect("consumer connects");
    let channel = connection.create_channel().await.unwrap();
    channel.queue_declare(queue.into(), QueueDeclareOptions::durable(), FieldTable::default()).await.unwrap();
    let consumer = channel
        .basic_consume(queue.into(), "test".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    (connection, consumer)
}

/// S2's event types for an allocation made and released.
const ALLOCATED_AND_RELEASED: [&str; 3] = ["connection_established", "turn_allocation_created", "connection_closed"];

/// Reads messages until one of each `wanted` event type for `user` arrived (bounded).
async fn read_until(consumer: &mut Consumer, user: &str, wanted: &[&str]) -> Vec<Value> {
    let mut seen: Vec<Value> = Vec::new();
    let done = |seen: &[Value]| {
        wanted.iter().all(|t| seen.iter().any(|e| e["eventType"] == *t && e["details"]["username"] == user))
    };
    let read = async {
        while !done(&seen) {
            let delivery = consumer.next().await.expect("the consumer stays open").expect("a delivery");
            let properties = &delivery.properties;
            assert_eq!(properties.content_type().as_ref().map(|c| c.as_str()), Some("application/json"));
            assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
            let event: Value = serde_json::from_slice(&delivery.data).expect("a JSON body");
            delivery.ack(BasicAckOptions::default()).await.unwrap();
            seen.push(event);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap_or_else(|_| panic!("{wanted:?} for {user} did not arrive; got {seen:#?}"));
    seen
}

async fn allocate(coturn: &TestCoturn, service: &Service, name: &str) -> String {
    let (_, _, body) = service.get(&format!("/turn-credentials?username={name}"), &[]).await;
    let (user, pass) = (body["username"].as_str().unwrap(), body["credential"].as_str().unwrap());
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("turnutils_uclient")
            .args(["-u", user, "-w", pass, "-p", &coturn.port.to_string()])
            .args(["-n", "4", "-m", "1", "-l", "170", "-y", "127.0.0.1"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    user.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coturn_events_reach_a_rabbitmq_consumer_and_survive_a_broker_restart() {
    let mut broker = TestRabbitMq::start().await;
    let redis = TestRedis::start().await;
    let coturn = TestCoturn::start(REALM, CoturnOptions { redis_port: Some(redis.port), ..Default::default() }).await;
    let mut settings = rest_settings(&coturn.port.to_string());
    settings.extend([("REDIS_URL", redis.url()), ("AMQP_URL", broker.url())]);
    let service = Service::start(&pairs(&settings)).await;
    let (_connection, mut events) = consumer(&broker.url(), "webrtc_events").await;

    let user = allocate(&coturn, &service, "amqp-one").await;
    let seen = read_until(&mut events, &user, &ALLOCATED_AND_RELEASED).await;
    assert!(seen.iter().any(|e| e["eventType"] == "service_started"), "{seen:#?}");
    let created = seen.iter().find(|e| e["eventType"] == "connection_established").unwrap();
    let mut keys: Vec<&str> = created.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["details", "eventType", "service", "timestamp"], "{created}");
    assert_eq!(created["service"], "stun-turn-service");
    let details = &created["details"];
    assert!(details["sessionId"].is_string() && details["sessionId"] == details["allocationId"], "{created}");
    assert!(details["origin"].as_str().is_some_and(|o| o.starts_with("127.0.0.1:")), "{created}");
    assert_eq!(details["realm"], REALM, "the cluster's own fields are kept");
    assert!(created["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{created}");
    // One log line per event on S2's `logs` queue.
    let (_logs_connection, mut logs) = consumer(&broker.url(), "logs").await;
    let line = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let delivery = logs.next().await.expect("the consumer stays open").expect("a delivery");
            delivery.ack(BasicAckOptions::default()).await.unwrap();
            let line: Value = serde_json::from_slice(&delivery.data).expect("a JSON body");
            if line["eventType"] == "connection_established" && line["message"].as_str().unwrap().contains(&user) {
                return line;
            }
        }
    })
    .await
    .expect("the allocation's log line arrives");
    assert_eq!(
        (&line["service"], &line["level"]),
        (&serde_json::json!("stun-turn-service"), &serde_json::json!("info"))
    );
    drop((_logs_connection, logs));
    let (_, metrics) = service.text("/metrics").await;
    assert!(metric_sum(&metrics, "credentials_amqp_events_published_total").unwrap() >= 2.0, "{metrics}");
    assert_eq!(metric_sum(&metrics, "credentials_amqp_connected"), Some(1.0));

    // The broker goes away: events wait in the buffer, the service stays healthy.
    drop((_connection, events));
    broker.stop();
    let during = allocate(&coturn, &service, "amqp-during").await;
    wait_until(Duration::from_secs(15), "the service to notice the broker is gone", || async {
        let (_, metrics) = service.text("/metrics").await;
        metric_sum(&metrics, "credentials_amqp_connected") == Some(0.0)
    })
    .await;
    assert_eq!(service.text("/readyz").await.0, 200);

    // It comes back: the service reconnects and what happened meanwhile arrives.
    broker.restart().await;
    let (_connection, mut events) = consumer(&broker.url(), "webrtc_events").await;
    read_until(&mut events, &during, &ALLOCATED_AND_RELEASED).await;
    let (_, metrics) = service.text("/metrics").await;
    assert_eq!(metric_sum(&metrics, "credentials_amqp_events_dropped_total"), Some(0.0), "{metrics}");

    // A service that cannot give credentials (its provider does not answer) says so.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead_provider = format!("http://127.0.0.1:{closed}");
    let failing = Service::start(&[
        ("TURN_SOURCE", "cloudflare"),
        ("CLOUDFLARE_TURN_KEY_ID", "key-1"),
        ("CLOUDFLARE_TURN_API_TOKEN", "cf-api-token"),
        ("CLOUDFLARE_BASE_URL", dead_provider.as_str()),
        ("PROVIDER_TIMEOUT_MS", "500"),
        ("TURN_STATSDB_URL", redis.url().as_str()),
        ("AMQP_URL", broker.url().as_str()),
    ])
    .await;
    assert_eq!(failing.get("/turn-credentials", &[]).await.0, 502);
    let error = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let delivery = events.next().await.expect("the consumer stays open").expect("a delivery");
            delivery.ack(BasicAckOptions::default()).await.unwrap();
            let event: Value = serde_json::from_slice(&delivery.data).expect("a JSON body");
            if event["eventType"] == "turn_error" {
                return event;
            }
        }
    })
    .await
    .expect("turn_error arrives");
    assert_eq!(
        (&error["service"], &error["details"]["endpoint"]),
        (&serde_json::json!("stun-turn-service"), &serde_json::json!("/turn-credentials"))
    );
}
