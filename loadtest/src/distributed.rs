//! Distributed runs: N workers each run one shard of a scenario and push their
//! mergeable results to Redis; a coordinator starts them together and merges. The
//! same path serves `--workers N` (local processes) and `loadtest kube` (an Indexed
//! Job). Every key is namespaced by the run id and expires after a day.
//!
//! The exchange, all by polling with bounded deadlines:
//! 1. each worker sets itself up, then INCRs `ready` (or pushes a failure report);
//! 2. the coordinator, once `ready` reaches N, SETs `go`; workers see it and measure;
//! 3. each worker RPUSHes one report; the coordinator LPOPs N of them and merges.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use async_trait::async_trait;
use fred::prelude::*;
use serde::{Deserialize, Serialize};

use crate::metrics::Results;
use crate::scenario::StartGate;

const KEY_TTL_SECS: i64 = 86_400;
const POLL: Duration = Duration::from_millis(10);

/// One worker's outcome, as pushed to Redis.
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerReport {
    pub index: u32,
    pub outcome: Result<Results, String>,
}

fn key(run_id: &str, what: &str) -> String {
    // One hash tag per run keeps a run's keys on one Redis Cluster slot.
    format!("loadtest:{{{run_id}}}:{what}")
}

/// A connected client with a 5 s command timeout.
pub(crate) async fn connect(url: &str) -> anyhow::Result<Client> {
    let config = Config::from_url(url).context("parsing the Redis URL")?;
    let client = Builder::from_config(config)
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(5))
        .build()
        .context("building the Redis client")?;
    client.init().await.context("connecting to Redis")?;
    Ok(client)
}

/// A random run id (8 hex digits).
pub fn new_run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

pub struct WorkerLink {
    client: Client,
    run_id: String,
    index: u32,
    /// How long to wait for the coordinator's start signal.
    start_timeout: Duration,
}

impl WorkerLink {
    pub async fn connect(url: &str, run_id: &str, index: u32, start_timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self { client: connect(url).await?, run_id: run_id.to_owned(), index, start_timeout })
    }

    pub async fn report(&self, outcome: Result<Results, String>) -> anyhow::Result<()> {
        let report = serde_json::to_string(&WorkerReport { index: self.index, outcome })?;
        let results = key(&self.run_id, "results");
        let _: i64 = self.client.rpush(&results, report).await.context("pushing results")?;
        let _: bool = self.client.expire(&results, KEY_TTL_SECS, None).await?;
        Ok(())
    }
}

#[async_trait]
impl StartGate for WorkerLink {
    async fn all_ready(&self) -> anyhow::Result<()> {
        let ready = key(&self.run_id, "ready");
        let _: i64 = self.client.incr(&ready).await.context("announcing readiness")?;
        let _: bool = self.client.expire(&ready, KEY_TTL_SECS, None).await?;
        let go = key(&self.run_id, "go");
        let end = Instant::now() + self.start_timeout;
        loop {
            let started: Option<String> = self.client.get(&go).await?;
            if started.is_some() {
                return Ok(());
            }
            if Instant::now() > end {
                bail!("no start signal from the coordinator within {:?}", self.start_timeout);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Tells the coordinator whether its workers are still alive (processes, a Job).
#[async_trait]
pub trait WorkerWatch: Send {
    async fn check(&mut self) -> anyhow::Result<()>;
}

pub struct Coordinator {
    client: Client,
    run_id: String,
    workers: u32,
}

impl Coordinator {
    pub async fn connect(url: &str, run_id: &str, workers: u32) -> anyhow::Result<Self> {
        Ok(Self { client: connect(url).await?, run_id: run_id.to_owned(), workers })
    }

    /// Waits until every worker is set up, then starts them all. `check` is asked
    /// on every poll whether the workers are still alive.
    pub async fn start_when_ready(&self, deadline: Duration, watch: &mut dyn WorkerWatch) -> anyhow::Result<()> {
        let end = Instant::now() + deadline;
        let (ready, results) = (key(&self.run_id, "ready"), key(&self.run_id, "results"));
        loop {
            let n: Option<u32> = self.client.get(&ready).await?;
            if n.unwrap_or(0) >= self.workers {
                break;
            }
            // Before `go` no worker can have results: a report now is a failed set-up.
            let early: Option<String> = self.client.lpop(&results, None).await?;
            if let Some(report) = early {
                let report: WorkerReport = serde_json::from_str(&report)?;
                let why = report.outcome.err().unwrap_or_else(|| "reported before the start".into());
                bail!("worker {} failed during set-up: {why}", report.index);
            }
            watch.check().await?;
            if Instant::now() > end {
                bail!("only {} of {} workers were ready within {deadline:?}", n.unwrap_or(0), self.workers);
            }
            tokio::time::sleep(POLL).await;
        }
        let go = key(&self.run_id, "go");
        let _: () = self.client.set(&go, "1", Some(Expiration::EX(KEY_TTL_SECS)), None, false).await?;
        Ok(())
    }

    /// Collects one report per worker and merges them. Any failed worker fails the run.
    pub async fn collect(&self, deadline: Duration, watch: &mut dyn WorkerWatch) -> anyhow::Result<Results> {
        let end = Instant::now() + deadline;
        let results = key(&self.run_id, "results");
        let mut merged = Results::default();
        let mut seen = 0;
        while seen < self.workers {
            let next: Option<String> = self.client.lpop(&results, None).await?;
            match next {
                Some(text) => {
                    let report: WorkerReport = serde_json::from_str(&text).context("reading a worker report")?;
                    let results = report.outcome.map_err(|e| anyhow!("worker {} failed: {e}", report.index))?;
                    merged.merge(results);
                    seen += 1;
                }
                None => {
                    if Instant::now() > end {
                        bail!("only {seen} of {} workers reported within {deadline:?}", self.workers);
                    }
                    watch.check().await?;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        Ok(merged)
    }

    /// Removes the run's keys.
    pub async fn cleanup(&self) {
        let keys: Vec<String> = ["ready", "go", "results"].iter().map(|w| key(&self.run_id, w)).collect();
        let _: Result<i64, _> = self.client.del(keys).await;
    }
}
