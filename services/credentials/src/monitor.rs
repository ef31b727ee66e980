//! TURN monitoring: subscribes to coturn's redis-statsdb channels, keeps the
//! [`AllocationTable`] that /api/turn/stats and /api/turn/sessions read, and appends
//! every normalised event to a capped Redis Stream.
//!
//! Every replica keeps its own table (seeded from the `.../status` keys coturn leaves in
//! Redis, so a restarted replica still lists open allocations). Exactly one replica
//! writes the stream: it holds a lease key renewed every second; when it stops, another
//! takes over within the lease time (events in that gap are not written). The same
//! replica hands each event to the AMQP event log when AMQP_URL is set.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::amqp::EventLog;
use crate::metrics::Metrics;
use crate::source::unix_now_ms;
use crate::stats::{AllocationTable, TurnEvent};

/// Events waiting for the stream writer; beyond this they are dropped and counted.
const STREAM_QUEUE: usize = 10_000;
const LEASE_KEY: &str = "credentials:turn-events:writer";
const LEASE: Duration = Duration::from_secs(5);
const STATUS_PATTERN: &str = "turn/realm/*/allocation/*/status";

#[derive(Debug, Clone)]
pub struct MonitorSettings {
    /// TURN_EVENTS_STREAM.
    pub stream: String,
    /// TURN_EVENTS_MAXLEN: approximate cap (XADD MAXLEN ~).
    pub max_len: u64,
    /// The realm we mint credentials for, listed before coturn reports on it.
    pub realm: Option<String>,
}

pub struct Monitor {
    pub table: Arc<Mutex<AllocationTable>>,
}

impl Monitor {
    /// Subscribes, seeds the table and starts the tasks; they end with `stop`.
    pub async fn start(
        client: Client,
        subscriber: SubscriberClient,
        settings: MonitorSettings,
        metrics: Arc<Metrics>,
        event_log: Option<EventLog>,
        tasks: &tokio_util::task::TaskTracker,
        stop: CancellationToken,
    ) -> Result<Monitor, fred::error::Error> {
        let mut table = AllocationTable::default();
        if let Some(realm) = &settings.realm {
            table.expect_realm(realm);
        }
        let table = Arc::new(Mutex::new(table));
        let mut messages = subscriber.message_rx();
        let mut reconnects = subscriber.reconnect_rx();
        subscriber.psubscribe("turn/realm/*/allocation/*").await?;
        seed(&client, &table).await;

        let (tx, rx) = mpsc::channel::<TurnEvent>(STREAM_QUEUE);
        let instance = crate::keyring::generate_secret().expose().to_owned();
        tasks.spawn(write_stream(client.clone(), settings, rx, instance, metrics.clone(), event_log, stop.clone()));

        let (t, c, s) = (table.clone(), client.clone(), stop.clone());
        tasks.spawn(async move {
            // After a reconnect: subscribe again and re-seed to catch what we missed.
            let mut expiry = tokio::time::interval(Duration::from_secs(30));
            loop {
                tokio::select! {
                    _ = s.cancelled() => break,
                    message = messages.recv() => match message {
                        Ok(m) => {
                            let Ok(payload) = m.value.convert::<String>() else { continue };
                            let event = t.lock().unwrap_or_else(|e| e.into_inner()).apply(&m.channel, &payload, unix_now_ms());
                            if let Some(event) = event {
                                metrics.turn_events.inc();
                                if tx.try_send(event).is_err() {
                                    metrics.turn_events_dropped.inc();
                                }
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            warn!(missed = n, "TURN events arrived faster than they were read; re-seeding");
                            metrics.turn_events_dropped.add(n);
                            seed(&c, &t).await;
                        }
                        Err(_) => break,
                    },
                    server = reconnects.recv() => if server.is_ok() {
                        // The subscriber was connected before this task started: every
                        // event here is a reconnect, after which fred needs telling.
                        if let Err(e) = subscriber.resubscribe_all().await {
                            warn!(error = %e, "could not re-subscribe to TURN events");
                        }
                        info!("statsdb connection restored; re-seeding TURN allocations");
                        seed(&c, &t).await;
                    },
                    _ = expiry.tick() => t.lock().unwrap_or_else(|e| e.into_inner()).expire(unix_now_ms()),
                }
            }
            let _ = subscriber.quit().await;
        });
        Ok(Monitor { table })
    }
}

/// Reads every `.../status` key coturn keeps for open allocations into the table.
async fn seed(client: &Client, table: &Mutex<AllocationTable>) {
    let mut cursor = "0".to_owned();
    let mut seeded = 0usize;
    for _ in 0..10_000 {
        let page: Result<(String, Vec<String>), _> = client
            .custom(
                fred::cmd!("SCAN"),
                vec![cursor.clone(), "MATCH".into(), STATUS_PATTERN.into(), "COUNT".into(), "500".into()],
            )
            .await;
        let (next, keys) = match page {
            Ok(page) => page,
            Err(e) => {
                warn!(error = %e, "could not list TURN allocation keys");
                return;
            }
        };
        if !keys.is_empty() {
            let values: Vec<Option<String>> = client.mget(keys.clone()).await.unwrap_or_default();
            let now = unix_now_ms();
            let mut t = table.lock().unwrap_or_else(|e| e.into_inner());
            for (key, value) in keys.iter().zip(values) {
                if let Some(value) = value {
                    t.seed(key, &value, now);
                    seeded += 1;
                }
            }
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    debug!(seeded, "TURN allocations seeded from statsdb keys");
}

/// Appends events to the stream (and hands them to the AMQP event log) while this
/// replica holds the writer lease: one replica writes each event once.
async fn write_stream(
    client: Client,
    settings: MonitorSettings,
    mut events: mpsc::Receiver<TurnEvent>,
    instance: String,
    metrics: Arc<Metrics>,
    event_log: Option<EventLog>,
    stop: CancellationToken,
) {
    let mut lease_tick = tokio::time::interval(Duration::from_secs(1));
    let mut leader = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = lease_tick.tick() => {
                let was = leader;
                leader = hold_lease(&client, &instance).await;
                if leader != was {
                    info!(leader, stream = %settings.stream, "TURN event stream writer lease changed");
                }
            }
            event = events.recv() => {
                let Some(event) = event else { break };
                if !leader {
                    continue;
                }
                if let Some(log) = &event_log {
                    log.offer(&event);
                }
                let cap = ("MAXLEN", "~", settings.max_len as i64);
                let added: Result<String, _> = client.xadd(&settings.stream, false, cap, "*", event.fields()).await;
                match added {
                    Ok(_) => metrics.turn_events_written.inc(),
                    Err(e) => {
                        metrics.turn_events_dropped.inc();
                        debug!(error = %e, "could not append a TURN event to the stream");
                    }
                }
            }
        }
    }
    if leader {
        release_lease(&client, &instance).await;
    }
}

/// Takes the lease if free, renews it if ours; true while we hold it.
async fn hold_lease(client: &Client, instance: &str) -> bool {
    const SCRIPT: &str = r#"
local owner = redis.call('GET', KEYS[1])
if owner == false or owner == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;
    let held: Result<i64, _> =
        client.eval(SCRIPT, vec![LEASE_KEY], vec![instance.to_owned(), LEASE.as_millis().to_string()]).await;
    held.map(|v| v == 1).unwrap_or(false)
}

async fn release_lease(client: &Client, instance: &str) {
    const SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;
    let _: Result<i64, _> = client.eval(SCRIPT, vec![LEASE_KEY], vec![instance.to_owned()]).await;
}
