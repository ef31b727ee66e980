//! `loadtest`: drives a deployment of the signaling cluster through its public
//! protocol and reports what it held. See loadtest/README.md.
//!
//! Exit status: 0 the run completed (and met every `--slo`), 1 the run failed,
//! 2 bad usage, 3 the run completed but missed an objective.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use loadtest::cli::{Cli, Cmd, RunSpec};
use loadtest::report::{html, Report};
use loadtest::{kube, probe, runner, slo};

const EXIT_SLO_MISSED: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "loadtest=warn,warn".into()),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Worker(args) => {
            runner::run_worker(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Probe(args) => {
            println!("{}", probe::run(&args).await?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Kube(args) => kube::run(args).await.and_then(|outcome| match outcome {
            kube::Outcome::Printed => Ok(ExitCode::SUCCESS),
            kube::Outcome::Ran { results, spec, output } => finish(&results, spec, &output),
        }),
        Cmd::Scenario(run) => {
            let (scenario, target, output, dist) = run.split();
            let spec = RunSpec { scenario, target };
            // Parse objectives before spending minutes on a run.
            if let Some(text) = &output.slo {
                slo::parse(text)?;
            }
            let results = if dist.workers > 1 {
                let url = dist.redis_url.as_deref().context("--workers > 1 needs --redis-url (LOADTEST_REDIS_URL)")?;
                runner::run_local_workers(&spec, dist.workers, url, output.quiet).await?
            } else {
                runner::run_single(&spec, output.quiet).await?
            };
            finish(&results, spec, &output)
        }
    }
}

fn finish(
    results: &loadtest::metrics::Results,
    spec: RunSpec,
    output: &loadtest::cli::OutputOpts,
) -> anyhow::Result<ExitCode> {
    let objectives = output.slo.as_deref().map(slo::parse).transpose()?.unwrap_or_default();
    let verdicts = slo::evaluate(&objectives, results);
    let report = Report::new(results, verdicts, Some(spec));
    print!("{}", report.text());
    if let Some(path) = &output.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &output.html {
        std::fs::write(path, html::render(&report, results)).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.slo_met { ExitCode::SUCCESS } else { ExitCode::from(EXIT_SLO_MISSED) })
}
