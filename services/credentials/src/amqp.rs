//! The TURN event log on RabbitMQ (AMQP_URL), in the contract of the STUN/TURN service
//! it replaces (S2), whose consumers read it: JSON messages
//! `{eventType, service: "stun-turn-service", details, timestamp}` on a durable queue
//! (AMQP_QUEUE, default `webrtc_events`), and one log line per event on the `logs`
//! queue, published with publisher confirms.
//!
//! - An allocation created is published as `connection_established` and
//!   `turn_allocation_created`, a deleted one as `connection_closed`; refreshes and
//!   traffic keep the cluster's names (`allocation_refreshed`, `allocation_traffic`).
//! - `service_started` once, when the publisher first reaches the broker; `turn_error`
//!   when the service could not give a caller credentials (its secret store or its
//!   provider failed).
//! - `details` holds S2's `sessionId` (the allocation), `username` and `origin` (the
//!   client's address, when coturn reported it) beside the cluster's own fields, and
//!   `turnEvent`, the cluster's event name.
//!
//! Events wait in a bounded buffer (AMQP_BUFFER) while the broker is away; the
//! publisher reconnects with backoff and takes from the buffer only while connected,
//! so an outage keeps the first AMQP_BUFFER events and drops (and counts) the rest. An
//! event whose confirms did not all arrive is sent again after the reconnect: delivery
//! is at least once.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::stats::TurnEvent;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a stopping service keeps publishing what its buffer still holds.
const FLUSH_AT_STOP: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// AMQP_URL (`amqp://` or `amqps://`; a secret: it holds the password).
    pub url: config::Secret,
    /// AMQP_QUEUE, declared durable; events go to it through the default exchange.
    pub queue: String,
    /// AMQP_BUFFER: events kept while the broker is away.
    pub buffer: usize,
}

/// Hands events to the publisher; never waits.
#[derive(Clone)]
pub struct EventLog {
    tx: mpsc::Sender<TurnEvent>,
    metrics: Arc<Metrics>,
}

impl EventLog {
    /// Starts the publisher on `tasks`; it ends with `stop` (after a short flush).
    pub fn start(
        settings: AmqpSettings,
        metrics: Arc<Metrics>,
        tasks: &tokio_util::task::TaskTracker,
        stop: CancellationToken,
    ) -> EventLog {
        let (tx, rx) = mpsc::channel(settings.buffer);
        tasks.spawn(publish(settings, rx, metrics.clone(), stop));
        EventLog { tx, metrics }
    }

    /// Queues `event` for the broker, or drops and counts it if the buffer is full.
    pub fn offer(&self, event: &TurnEvent) {
        if self.tx.try_send(event.clone()).is_err() {
            self.metrics.amqp_dropped.inc();
        }
    }
}

/// The service's name on every message, as S2's consumers know it.
pub const SERVICE: &str = "stun-turn-service";

/// S2's queue of log lines: every event is also one line there. A fixed name, as S2's
/// consumers read it.
pub const LOGS_QUEUE: &str = "logs";

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// AMQP_QUEUE (`webrtc_events`).
    Events,
    Logs,
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub queue: Queue,
    pub event_type: &'static str,
    pub body: Value,
}

/// The S2 event types a TURN event is published as.
fn s2_event_types(event_type: &'static str) -> Vec<&'static str> {
    match event_type {
        "allocation_created" => vec!["connection_established", "turn_allocation_created"],
        "allocation_deleted" => vec!["connection_closed"],
        other => vec![other],
    }
}

/// The messages one TURN event becomes: its S2 events, then one log line.
pub fn messages(event: &TurnEvent) -> Vec<Message> {
    let mut details = event.details.clone();
    if let Some(fields) = details.as_object_mut() {
        let session = fields.get("allocationId").cloned().unwrap_or(Value::Null);
        let origin = fields.get("remote").cloned().unwrap_or(Value::Null);
        fields.insert("sessionId".into(), session);
        fields.insert("origin".into(), origin);
        fields.insert("turnEvent".into(), json!(event.event_type));
        fields.entry("username").or_insert(Value::Null);
    }
    let types = s2_event_types(event.event_type);
    let mut out: Vec<Message> = types
        .iter()
        .map(|&event_type| Message {
            queue: Queue::Events,
            event_type,
            body: json!({
                "eventType": event_type,
                "service": SERVICE,
                "details": details,
                "timestamp": event.timestamp,
            }),
        })
        .collect();
    let user = details["username"].as_str().unwrap_or("-");
    out.push(Message {
        queue: Queue::Logs,
        event_type: types[0],
        body: json!({
            "level": "info",
            "service": SERVICE,
            "eventType": types[0],
            "message": format!("{} {user}", types[0]),
            "timestamp": event.timestamp,
        }),
    });
    out
}

/// `service_started`: sent once, when the publisher first reaches the broker.
fn service_started(timestamp: String) -> Vec<Message> {
    let details = json!({"version": env!("CARGO_PKG_VERSION")});
    vec![
        Message {
            queue: Queue::Events,
            event_type: "service_started",
            body: json!({"eventType": "service_started", "service": SERVICE, "details": details, "timestamp": timestamp}),
        },
        Message {
            queue: Queue::Logs,
            event_type: "service_started",
            body: json!({"level": "info", "service": SERVICE, "eventType": "service_started",
                         "message": "service_started", "timestamp": timestamp}),
        },
    ]
}

async fn publish(
    settings: AmqpSettings,
    mut rx: mpsc::Receiver<TurnEvent>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut pending: Option<Vec<Message>> = None;
    let mut started = false;
    let mut backoff = Duration::from_millis(200);
    'connect: loop {
        let (connection, channel) = tokio::select! {
            _ = stop.cancelled() => return,
            opened = open(&settings) => match opened {
                Ok(opened) => opened,
                Err(e) => {
                    debug!(error = %e, "AMQP broker unreachable; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue 'connect;
                }
            },
        };
        info!(queue = %settings.queue, "publishing TURN events to AMQP");
        metrics.amqp_connected.set(1);
        backoff = Duration::from_millis(200);
        if !started {
            started = true;
            pending = Some(service_started(crate::stats::iso_now()));
        }
        loop {
            let batch = match pending.take() {
                Some(batch) => batch,
                None => tokio::select! {
                    biased;
                    _ = stop.cancelled() => {
                        flush(&channel, &settings, &mut rx, &metrics).await;
                        let _ = connection.close(200, "stopping".into()).await;
                        metrics.amqp_connected.set(0);
                        return;
                    }
                    event = rx.recv() => match event {
                        Some(event) => messages(&event),
                        None => return,
                    },
                },
            };
            if let Err(e) = send_all(&channel, &settings.queue, &batch).await {
                warn!(error = %e, "publishing a TURN event to AMQP failed; reconnecting");
                pending = Some(batch);
                metrics.amqp_connected.set(0);
                let _ = connection.close(200, "reconnecting".into()).await;
                continue 'connect;
            }
            metrics.amqp_published.inc();
        }
    }
}

/// Connects, declares the queue and turns publisher confirms on.
async fn open(settings: &AmqpSettings) -> Result<(Connection, Channel), lapin::Error> {
    let connection = Connection::connect(settings.url.expose(), ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    for queue in [settings.queue.as_str(), LOGS_QUEUE] {
        channel.queue_declare(queue.into(), QueueDeclareOptions::durable(), FieldTable::default()).await?;
    }
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok((connection, channel))
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused the message (nack)")]
    Nacked,
}

/// Publishes one event's messages, each persistent, waiting for each confirm.
async fn send_all(channel: &Channel, events_queue: &str, batch: &[Message]) -> Result<(), SendError> {
    for message in batch {
        let queue = match message.queue {
            Queue::Events => events_queue,
            Queue::Logs => LOGS_QUEUE,
        };
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_type(message.event_type.into());
        let body = message.body.to_string().into_bytes();
        let confirm = channel
            .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &body, properties)
            .await?
            .await?;
        if confirm.is_nack() {
            return Err(SendError::Nacked);
        }
    }
    Ok(())
}

/// Publishes what the buffer holds, for at most [`FLUSH_AT_STOP`].
async fn flush(channel: &Channel, settings: &AmqpSettings, rx: &mut mpsc::Receiver<TurnEvent>, metrics: &Metrics) {
    let _ = tokio::time::timeout(FLUSH_AT_STOP, async {
        while let Ok(event) = rx.try_recv() {
            if send_all(channel, &settings.queue, &messages(&event)).await.is_err() {
                return;
            }
            metrics.amqp_published.inc();
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u64) -> TurnEvent {
        TurnEvent {
            event_type: "allocation_created",
            service: "turn",
            details: json!({"n": n}),
            timestamp: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    #[tokio::test]
    async fn while_the_broker_is_away_the_buffer_keeps_the_first_events_and_counts_the_rest() {
        // A port nothing listens on: the publisher keeps retrying and never takes from the buffer.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let settings = AmqpSettings {
            url: config::Secret::new(format!("amqp://guest:guest@127.0.0.1:{port}/%2f")),
            queue: "webrtc_events".into(),
            buffer: 2,
        };
        let metrics = Arc::new(Metrics::new("rest"));
        let tasks = tokio_util::task::TaskTracker::new();
        let stop = CancellationToken::new();
        let log = EventLog::start(settings, metrics.clone(), &tasks, stop.clone());
        for n in 0..5 {
            log.offer(&event(n));
        }
        assert_eq!(metrics.amqp_dropped.get(), 3);
        assert_eq!(metrics.amqp_published.get(), 0);
        stop.cancel();
        tasks.close();
        tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await.expect("the publisher stops");
    }

    #[test]
    fn an_event_is_published_in_s2s_contract_with_the_clusters_fields_kept() {
        let created = TurnEvent {
            event_type: "allocation_created",
            service: "turn",
            details: json!({"allocationId": "42", "username": "1700:alice", "realm": "r", "remote": "10.0.0.7:5000"}),
            timestamp: "2026-01-01T00:00:00.000Z".into(),
        };
        let out = messages(&created);
        let types: Vec<(Queue, &str)> = out.iter().map(|m| (m.queue, m.event_type)).collect();
        assert_eq!(
            types,
            [
                (Queue::Events, "connection_established"),
                (Queue::Events, "turn_allocation_created"),
                (Queue::Logs, "connection_established")
            ]
        );
        assert_eq!(
            out[0].body,
            json!({"eventType": "connection_established", "service": "stun-turn-service",
                   "details": {"sessionId": "42", "username": "1700:alice", "origin": "10.0.0.7:5000",
                               "allocationId": "42", "realm": "r", "remote": "10.0.0.7:5000",
                               "turnEvent": "allocation_created"},
                   "timestamp": "2026-01-01T00:00:00.000Z"})
        );
        let deleted = TurnEvent { event_type: "allocation_deleted", ..event(1) };
        assert_eq!(messages(&deleted)[0].event_type, "connection_closed");
        assert_eq!(messages(&deleted)[0].body["details"]["origin"], Value::Null, "no address reported");
        let traffic = TurnEvent { event_type: "allocation_traffic", ..event(1) };
        assert_eq!(messages(&traffic)[0].event_type, "allocation_traffic", "the cluster's name where S2 had none");
        let error = messages(&TurnEvent::turn_error("/turn-credentials", "the provider did not answer"));
        assert_eq!((error[0].event_type, error[0].queue), ("turn_error", Queue::Events));
        assert_eq!(error[0].body["details"]["endpoint"], "/turn-credentials");
        assert_eq!(error[0].body["details"]["sessionId"], Value::Null);
        let started = service_started("2026-01-01T00:00:00.000Z".into());
        assert_eq!(started[0].body["eventType"], "service_started");
        assert_eq!(started[1].queue, Queue::Logs);
    }
}
