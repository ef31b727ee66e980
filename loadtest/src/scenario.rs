//! What every scenario shares: the run context (driver, URLs, shard, gates), and
//! the two set-up steps all of them start with, opening connections at a ramp rate
//! and joining rooms. The scenarios themselves live in the submodules.

pub mod churn;
pub mod connect;
pub mod fanout;
pub mod meeting;
pub mod relay;
pub mod soak;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Semaphore;

use crate::driver::{Command, Connection, Driver, Event, EventStream};
use crate::metrics::{Counter, Metrics};
use crate::order::{Arrival, SeqTracker};
use crate::payload::read_stamp;
use crate::plan::Shard;
use crate::progress::Progress;
use crate::server::ServerWatch;

/// Connections being opened at once, whatever the ramp rate.
const CONNECT_CONCURRENCY: usize = 256;

/// Lets workers of one distributed run start their measured phase together.
#[async_trait]
pub trait StartGate: Send + Sync {
    /// Called when this worker's set-up is done; returns when every worker's is.
    async fn all_ready(&self) -> anyhow::Result<()>;
}

/// A single process needs no one else.
pub struct NoGate;

#[async_trait]
impl StartGate for NoGate {
    async fn all_ready(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

pub struct RunContext {
    pub driver: Arc<dyn Driver>,
    pub urls: Vec<String>,
    pub shard: Shard,
    /// Makes room names unique to the run.
    pub run_id: String,
    /// New connections per second during set-up (per worker).
    pub connect_rate: f64,
    /// Bound on each set-up step (connecting, joining, everyone knowing everyone).
    pub setup_timeout: Duration,
    /// After the last send, how long to wait for outstanding deliveries.
    pub drain_timeout: Duration,
    pub servers: ServerWatch,
    pub gate: Arc<dyn StartGate>,
    pub progress: Arc<Progress>,
}

/// Opens one connection per URL, at most `connect_rate` new ones per second, and
/// records connect latency and failures. Keeps the order of `urls`.
pub async fn open_all(ctx: &RunContext, metrics: &Metrics, urls: Vec<String>) -> Vec<Option<Connection>> {
    let total = urls.len();
    let gap = Duration::from_secs_f64(1.0 / ctx.connect_rate.max(1.0));
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let start = Instant::now();
    let mut pending = FuturesUnordered::new();
    for (i, url) in urls.into_iter().enumerate() {
        // Open-loop ramp: connection i starts at start + i * gap.
        tokio::time::sleep_until((start + gap * i as u32).into()).await;
        let permit = permits.clone().acquire_owned().await.expect("semaphore open");
        let driver = ctx.driver.clone();
        pending.push(tokio::spawn(async move {
            let _permit = permit;
            let t0 = Instant::now();
            let result = tokio::time::timeout(Duration::from_secs(30), driver.connect(&url)).await;
            (i, t0.elapsed(), result)
        }));
        if i % 100 == 0 {
            ctx.progress.step(format!("connecting {i}/{total}"));
        }
    }
    let mut out: Vec<Option<Connection>> = (0..total).map(|_| None).collect();
    while let Some(done) = pending.next().await {
        let (i, took, result) = done.expect("connect task");
        match result {
            Ok(Ok(conn)) => {
                metrics.record("connect", took);
                metrics.add(Counter::Connected, 1);
                out[i] = Some(conn);
            }
            Ok(Err(e)) => {
                metrics.add(Counter::ConnectFailed, 1);
                metrics.error(e.label());
            }
            Err(_) => {
                metrics.add(Counter::ConnectFailed, 1);
                metrics.error("connect-timeout");
            }
        }
    }
    out
}

/// Opens one connection within `timeout`, recording connect latency, or the failure
/// by kind (None).
pub async fn connect_one(driver: &dyn Driver, url: &str, metrics: &Metrics, timeout: Duration) -> Option<Connection> {
    let t0 = Instant::now();
    match tokio::time::timeout(timeout, driver.connect(url)).await {
        Ok(Ok(conn)) => {
            metrics.record("connect", t0.elapsed());
            metrics.add(Counter::Connected, 1);
            Some(conn)
        }
        Ok(Err(e)) => {
            metrics.add(Counter::ConnectFailed, 1);
            metrics.error(e.label());
            None
        }
        Err(_) => {
            metrics.add(Counter::ConnectFailed, 1);
            metrics.error("connect-timeout");
            None
        }
    }
}

/// Checks every received signal's stamp: latency from its intended send time, and
/// duplicates and order per sender (`src`).
pub struct SignalChecker {
    trackers: HashMap<u32, SeqTracker>,
    metrics: Arc<Metrics>,
}

impl SignalChecker {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { trackers: HashMap::new(), metrics }
    }

    pub fn signal(&mut self, data: &str) {
        let now = Instant::now();
        let Some(stamp) = read_stamp(data) else {
            self.metrics.error("unstamped-signal");
            return;
        };
        match self.trackers.entry(stamp.src).or_default().observe(stamp.seq) {
            Arrival::Duplicate => self.metrics.add(Counter::Duplicates, 1),
            arrival => {
                if arrival == Arrival::Late {
                    self.metrics.add(Counter::OutOfOrder, 1);
                }
                self.metrics.add(Counter::Delivered, 1);
                self.metrics.record("signal", now.saturating_duration_since(self.metrics.instant_of(stamp.t)));
            }
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Forgets every sender (their sequences start again).
    pub fn reset(&mut self) {
        self.trackers.clear();
    }
}

/// Joins `room` and waits for `joined`; returns the peers already there. Records
/// join latency; an error reply or a timeout counts as a failed join.
pub async fn join(
    conn: &mut Connection,
    room: &str,
    name: &str,
    meta: Option<String>,
    metrics: &Metrics,
    timeout: Duration,
) -> Option<Vec<String>> {
    let t0 = Instant::now();
    let cmd = Command::Join { room: room.to_owned(), name: name.to_owned(), meta };
    if let Err(e) = conn.tx.send(&cmd).await {
        metrics.add(Counter::JoinFailed, 1);
        metrics.error(e.label());
        return None;
    }
    let wait = async {
        loop {
            match conn.rx.next().await {
                Ok(Event::Joined { room: r, peers }) if r == room => return Ok(peers),
                Ok(Event::Error { code, .. }) => return Err(code),
                Ok(_) => continue,
                Err(e) => return Err(e.label().to_owned()),
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(Ok(peers)) => {
            metrics.record("join", t0.elapsed());
            metrics.add(Counter::Joined, 1);
            Some(peers)
        }
        Ok(Err(code)) => {
            metrics.add(Counter::JoinFailed, 1);
            metrics.error(&code);
            None
        }
        Err(_) => {
            metrics.add(Counter::JoinFailed, 1);
            metrics.error("join-timeout");
            None
        }
    }
}

/// Reads and discards events until the connection ends, counting server errors: for
/// connections a scenario holds open but does not watch.
pub async fn drain_events(mut rx: Box<dyn EventStream>, metrics: Arc<Metrics>) {
    while let Ok(event) = rx.next().await {
        if let Event::Error { code, .. } = event {
            metrics.error(&code);
        }
    }
}

/// The measured phase: its start and the once-a-second timeline ticker.
pub struct Measurement {
    pub start: Instant,
    ticker: tokio::task::JoinHandle<()>,
    stop: tokio_util::sync::CancellationToken,
    metrics: Arc<Metrics>,
}

impl Measurement {
    /// Waits for the other workers (if any), then starts the clock and the ticker.
    pub async fn begin(ctx: &RunContext, metrics: &Arc<Metrics>, length: Duration) -> anyhow::Result<Self> {
        ctx.gate.all_ready().await.map_err(|e| e.context("waiting for the other workers"))?;
        let start = Instant::now();
        metrics.start_timeline();
        let stop = tokio_util::sync::CancellationToken::new();
        let ticker = ctx.progress.measure(metrics.clone(), length, stop.clone());
        Ok(Self { start, ticker, stop, metrics: metrics.clone() })
    }

    /// Stops the ticker and closes the last (partial) second of the timeline.
    pub async fn end(self) {
        self.stop.cancel();
        let _ = self.ticker.await;
        self.metrics.tick();
    }
}

/// Waits until every one of `members` has counted itself in `ready` (it knows its
/// whole room); counts the stragglers as missing membership and goes on.
pub async fn await_rooms_known(ctx: &RunContext, metrics: &Metrics, ready: &AtomicUsize, members: usize) {
    ctx.progress.step("waiting until every member knows its room");
    if !wait_for(ctx.setup_timeout, || ready.load(Ordering::Relaxed) == members).await {
        let missing = members - ready.load(Ordering::Relaxed);
        metrics.add(Counter::MembershipMissing, missing as u64);
        tracing::warn!(missing, "some members never heard of their whole room; going on");
    }
}

/// Ends a run's connections: tells readers that closes from now on are expected,
/// closes every writer's sink, and gives readers a bounded time to finish.
pub async fn shut_down(
    stopping: &std::sync::atomic::AtomicBool,
    writers: Vec<tokio::task::JoinHandle<Box<dyn crate::driver::CommandSink>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<()> {
    stopping.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await?.close().await;
    }
    for reader in readers {
        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
    }
    Ok(())
}

/// Waits until `done()` holds or `timeout` passes; true if it held. For the harness's
/// own end-of-run waits (how long deliveries take is what is being measured).
pub async fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}
