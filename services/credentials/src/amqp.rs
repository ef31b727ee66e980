//! The TURN event log on RabbitMQ (AMQP_URL): each normalised coturn event, as the JSON
//! object `{eventType, service, details, timestamp}` the old STUN/TURN service's
//! consumers read, published to a durable queue (AMQP_QUEUE, default `webrtc_events`)
//! with publisher confirms.
//!
//! Events wait in a bounded buffer (AMQP_BUFFER) while the broker is away; the
//! publisher reconnects with backoff and takes from the buffer only while connected,
//! so an outage keeps the first AMQP_BUFFER events and drops (and counts) the rest. An
//! event whose confirm did not arrive is sent again after the reconnect: delivery is
//! at least once.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::json;
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

/// The message body: the event as its consumers know it.
pub fn body(event: &TurnEvent) -> Vec<u8> {
    json!({
        "eventType": event.event_type,
        "service": event.service,
        "details": event.details,
        "timestamp": event.timestamp,
    })
    .to_string()
    .into_bytes()
}

async fn publish(
    settings: AmqpSettings,
    mut rx: mpsc::Receiver<TurnEvent>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut pending: Option<TurnEvent> = None;
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
        loop {
            let event = match pending.take() {
                Some(event) => event,
                None => tokio::select! {
                    biased;
                    _ = stop.cancelled() => {
                        flush(&channel, &settings, &mut rx, &metrics).await;
                        let _ = connection.close(200, "stopping".into()).await;
                        metrics.amqp_connected.set(0);
                        return;
                    }
                    event = rx.recv() => match event {
                        Some(event) => event,
                        None => return,
                    },
                },
            };
            if let Err(e) = send(&channel, &settings.queue, &event).await {
                warn!(error = %e, "publishing a TURN event to AMQP failed; reconnecting");
                pending = Some(event);
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
    channel
        .queue_declare(settings.queue.as_str().into(), QueueDeclareOptions::durable(), FieldTable::default())
        .await?;
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

/// Publishes one persistent message and waits for the broker's confirm.
async fn send(channel: &Channel, queue: &str, event: &TurnEvent) -> Result<(), SendError> {
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_type(event.event_type.into());
    let confirm = channel
        .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &body(event), properties)
        .await?
        .await?;
    if confirm.is_nack() {
        return Err(SendError::Nacked);
    }
    Ok(())
}

/// Publishes what the buffer holds, for at most [`FLUSH_AT_STOP`].
async fn flush(channel: &Channel, settings: &AmqpSettings, rx: &mut mpsc::Receiver<TurnEvent>, metrics: &Metrics) {
    let _ = tokio::time::timeout(FLUSH_AT_STOP, async {
        while let Ok(event) = rx.try_recv() {
            if send(channel, &settings.queue, &event).await.is_err() {
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
    fn the_body_is_the_event_as_its_consumers_know_it() {
        let body: serde_json::Value = serde_json::from_slice(&body(&event(7))).unwrap();
        assert_eq!(
            body,
            json!({"eventType": "allocation_created", "service": "turn", "details": {"n": 7},
                   "timestamp": "2026-01-01T00:00:00.000Z"})
        );
    }
}
