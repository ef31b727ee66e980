//! Runs a [`RunSpec`]: in this process, as one worker of a distributed run, or as
//! the coordinator of N local worker processes. Reporting is left to `main`.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::process::{Child, Command};

use crate::cli::{RunSpec, Scenario, WorkerArgs};
use crate::distributed::{new_run_id, Coordinator, WorkerLink, WorkerWatch};
use crate::driver;
use crate::metrics::Results;
use crate::plan::Shard;
use crate::progress::Progress;
use crate::scenario::{self, NoGate, RunContext, StartGate};
use crate::server::ServerWatch;

/// Runs one shard of `spec` behind `gate`.
pub async fn run_shard(
    spec: &RunSpec,
    shard: Shard,
    run_id: &str,
    gate: Arc<dyn StartGate>,
    progress: Arc<Progress>,
) -> anyhow::Result<Results> {
    let t = &spec.target;
    if t.urls.is_empty() {
        bail!("no --url given");
    }
    let driver = driver::by_name(&t.dialect)
        .ok_or_else(|| anyhow!("unknown dialect `{}` (known: native, plain, socketio)", t.dialect))?;
    let ctx = RunContext {
        driver: Arc::from(driver),
        urls: t.urls.clone(),
        shard,
        run_id: run_id.to_owned(),
        connect_rate: t.connect_rate,
        setup_timeout: t.setup_timeout,
        drain_timeout: t.drain_timeout,
        servers: ServerWatch { pids: t.server_pids.clone(), metrics_urls: t.metrics_urls.clone() },
        gate,
        progress: progress.clone(),
    };
    let results = match &spec.scenario {
        Scenario::Connect(a) => scenario::connect::run(a, &ctx).await,
        Scenario::Relay(a) => scenario::relay::run(a, &ctx).await,
        Scenario::Fanout(a) => scenario::fanout::run(a, &ctx).await,
        Scenario::Churn(a) => scenario::churn::run(a, &ctx).await,
        Scenario::Meeting(a) => scenario::meeting::run(a, &ctx).await,
        Scenario::Soak(a) => scenario::soak::run(a, &ctx).await,
    };
    progress.finish();
    results
}

/// The whole run in this process.
pub async fn run_single(spec: &RunSpec, quiet: bool) -> anyhow::Result<Results> {
    run_shard(spec, Shard::WHOLE, &new_run_id(), Arc::new(NoGate), Arc::new(Progress::new(quiet))).await
}

/// An upper bound on a whole run: set-up steps, the measured phase, the drain.
pub fn time_bound(spec: &RunSpec) -> Duration {
    spec.target.setup_timeout * 4
        + spec.scenario.measured_length()
        + spec.target.drain_timeout
        + Duration::from_secs(60)
}

/// `loadtest worker`: one shard, reporting to Redis.
pub async fn run_worker(args: WorkerArgs) -> anyhow::Result<()> {
    let spec: RunSpec = serde_json::from_str(&args.spec).context("reading --spec")?;
    let shard = Shard { index: args.index, count: args.count };
    if args.count == 0 || args.index >= args.count {
        bail!("worker index {} is not below count {}", args.index, args.count);
    }
    let link = Arc::new(WorkerLink::connect(&args.redis_url, &args.run_id, args.index, time_bound(&spec)).await?);
    let outcome = run_shard(&spec, shard, &args.run_id, link.clone(), Arc::new(Progress::new(true))).await;
    let failed = outcome.as_ref().err().map(|e| format!("{e:#}"));
    link.report(outcome.map_err(|e| format!("{e:#}"))).await?;
    match failed {
        Some(e) => bail!(e),
        None => Ok(()),
    }
}

/// `--workers N`: N local worker processes of this same binary, merged via Redis.
pub async fn run_local_workers(spec: &RunSpec, workers: u32, redis_url: &str, quiet: bool) -> anyhow::Result<Results> {
    let run_id = new_run_id();
    let coordinator = Coordinator::connect(redis_url, &run_id, workers).await?;
    let exe = std::env::current_exe().context("finding the loadtest binary")?;
    let spec_json = serde_json::to_string(spec)?;
    let mut children = LocalWorkers { children: Vec::new() };
    for index in 0..workers {
        let child = Command::new(&exe)
            .arg("worker")
            .env("LOADTEST_SPEC", &spec_json)
            .env("LOADTEST_REDIS_URL", redis_url)
            .env("LOADTEST_RUN_ID", &run_id)
            .env("JOB_COMPLETION_INDEX", index.to_string())
            .env("LOADTEST_WORKER_COUNT", workers.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting a worker process")?;
        children.children.push(child);
    }
    let progress = Progress::new(quiet);
    progress.step(format!("{workers} workers setting up"));
    let bound = time_bound(spec);
    let outcome = async {
        coordinator.start_when_ready(bound, &mut children).await?;
        progress.step(format!("{workers} workers measuring for {:?}", spec.scenario.measured_length()));
        let merged = coordinator.collect(bound, &mut children).await?;
        for child in &mut children.children {
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
        anyhow::Ok(merged)
    }
    .await;
    progress.finish();
    coordinator.cleanup().await;
    outcome
}

struct LocalWorkers {
    children: Vec<Child>,
}

#[async_trait::async_trait]
impl WorkerWatch for LocalWorkers {
    /// Fails if any worker process has exited with an error.
    async fn check(&mut self) -> anyhow::Result<()> {
        for (i, child) in self.children.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("worker {i} exited with {status}");
                }
            }
        }
        Ok(())
    }
}
