//! The command line. Every option also reads a `LOADTEST_*` environment variable.
//! A [`RunSpec`] (the scenario plus where to aim it) is what workers receive, as
//! JSON, in local multi-process runs and in Kubernetes Jobs alike.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

use crate::scenario::churn::ChurnArgs;
use crate::scenario::connect::ConnectArgs;
use crate::scenario::fanout::FanoutArgs;
use crate::scenario::meeting::MeetingArgs;
use crate::scenario::relay::RelayArgs;
use crate::scenario::soak::SoakArgs;

#[derive(Debug, Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Drives a signaling cluster through its public protocol and reports what it held."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    #[command(flatten)]
    Scenario(ScenarioRun),
    /// Runs a scenario as an Indexed Job of workers in a Kubernetes cluster.
    Kube(KubeArgs),
    /// One HTTP GET that must answer 200 (`helm test` checks /readyz and a TURN
    /// credential through the release's Services with it).
    Probe(crate::probe::ProbeArgs),
    /// Internal: runs one shard of a scenario and reports to Redis.
    #[command(hide = true)]
    Worker(WorkerArgs),
}

#[derive(Debug, Subcommand)]
pub enum ScenarioRun {
    /// Open N connections, join rooms, hold; connect/join latency and server memory.
    Connect(ScenarioCli<ConnectArgs>),
    /// Cross-node offer/answer/candidate relay at an open-loop rate.
    Relay(ScenarioCli<RelayArgs>),
    /// Large rooms with broadcasts; delivery latency to every member.
    Fanout(ScenarioCli<FanoutArgs>),
    /// Peers joining and leaving continuously; exactly-once membership checks.
    Churn(ScenarioCli<ChurnArgs>),
    /// A realistic meeting mix at a target number of concurrent meetings.
    Meeting(ScenarioCli<MeetingArgs>),
    /// A long run with realistic churn; samples server and Redis usage and reports its slopes.
    Soak(ScenarioCli<SoakArgs>),
}

impl ScenarioRun {
    pub fn split(self) -> (Scenario, TargetOpts, OutputOpts, DistOpts) {
        match self {
            ScenarioRun::Connect(c) => (Scenario::Connect(c.args), c.target, c.output, c.dist),
            ScenarioRun::Relay(c) => (Scenario::Relay(c.args), c.target, c.output, c.dist),
            ScenarioRun::Fanout(c) => (Scenario::Fanout(c.args), c.target, c.output, c.dist),
            ScenarioRun::Churn(c) => (Scenario::Churn(c.args), c.target, c.output, c.dist),
            ScenarioRun::Meeting(c) => (Scenario::Meeting(c.args), c.target, c.output, c.dist),
            ScenarioRun::Soak(c) => (Scenario::Soak(c.args), c.target, c.output, c.dist),
        }
    }
}

#[derive(Debug, Args)]
pub struct ScenarioCli<A: Args> {
    #[command(flatten)]
    pub args: A,
    #[command(flatten)]
    pub target: TargetOpts,
    #[command(flatten)]
    pub output: OutputOpts,
    #[command(flatten)]
    pub dist: DistOpts,
}

/// A scenario with its own settings: what workers are told to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "scenario", rename_all = "kebab-case")]
pub enum Scenario {
    Connect(ConnectArgs),
    Relay(RelayArgs),
    Fanout(FanoutArgs),
    Churn(ChurnArgs),
    Meeting(MeetingArgs),
    Soak(SoakArgs),
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Connect(_) => "connect",
            Scenario::Relay(_) => "relay",
            Scenario::Fanout(_) => "fanout",
            Scenario::Churn(_) => "churn",
            Scenario::Meeting(_) => "meeting",
            Scenario::Soak(_) => "soak",
        }
    }

    /// The longest the measured phase can take.
    pub fn measured_length(&self) -> Duration {
        match self {
            Scenario::Connect(a) => a.hold,
            Scenario::Relay(a) => a.duration,
            Scenario::Fanout(a) => a.duration,
            Scenario::Churn(a) => a.duration,
            Scenario::Meeting(a) => a.duration,
            Scenario::Soak(a) => a.duration,
        }
    }
}

/// Where and how to connect.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct TargetOpts {
    /// WebSocket URLs of the nodes; room members are spread over them.
    #[arg(long = "url", env = "LOADTEST_URLS", value_delimiter = ',', default_value = "ws://127.0.0.1:8080/ws")]
    pub urls: Vec<String>,
    /// Wire dialect of the servers: `native` (/ws), `plain` (the plain-JSON dialect, usually
    /// at the root URL) or `socketio` (Socket.IO's S1 events over WebSocket; give the node
    /// as ws://host:port). plain and socketio run relay and connect only.
    #[arg(long, env = "LOADTEST_DIALECT", default_value = "native")]
    pub dialect: String,
    /// New connections per second during set-up, per worker.
    #[arg(long, env = "LOADTEST_CONNECT_RATE", default_value_t = 1000.0)]
    pub connect_rate: f64,
    /// Bound on each set-up step.
    #[arg(long, env = "LOADTEST_SETUP_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    #[serde(with = "duration_text")]
    pub setup_timeout: Duration,
    /// After the last send, how long outstanding deliveries may take before they count as lost.
    #[arg(long, env = "LOADTEST_DRAIN_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    #[serde(with = "duration_text")]
    pub drain_timeout: Duration,
    /// PIDs of local server processes, for memory per connection and CPU.
    #[arg(long = "server-pid", env = "LOADTEST_SERVER_PIDS", value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// Prometheus /metrics URLs of the servers (process_resident_memory_bytes, process_cpu_seconds_total).
    #[arg(long = "metrics-url", env = "LOADTEST_METRICS_URLS", value_delimiter = ',')]
    pub metrics_urls: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct OutputOpts {
    /// Write machine-readable results here.
    #[arg(long, env = "LOADTEST_JSON")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report with charts here.
    #[arg(long, env = "LOADTEST_HTML")]
    pub html: Option<PathBuf>,
    /// Objectives, e.g. 'p99<5ms,loss=0'; the exit status is 3 when one is missed.
    #[arg(long, env = "LOADTEST_SLO")]
    pub slo: Option<String>,
    /// No progress bar.
    #[arg(long, short, env = "LOADTEST_QUIET")]
    pub quiet: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DistOpts {
    /// Run as this many local worker processes, merged through Redis.
    #[arg(long, env = "LOADTEST_WORKERS", default_value_t = 1)]
    pub workers: u32,
    /// Redis that workers report to (needed with --workers > 1 and for `kube`).
    #[arg(long, env = "LOADTEST_REDIS_URL")]
    pub redis_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct KubeArgs {
    /// Namespace for the Job.
    #[arg(long, env = "LOADTEST_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Container image with the loadtest binary.
    #[arg(long, env = "LOADTEST_IMAGE", default_value = "ghcr.io/signal-cluster/loadtest:latest")]
    pub image: String,
    /// Print the Job manifest as YAML and exit without touching a cluster.
    #[arg(long)]
    pub print_manifest: bool,
    /// CPU and memory each worker pod requests.
    #[arg(long, env = "LOADTEST_WORKER_CPU", default_value = "1")]
    pub worker_cpu: String,
    #[arg(long, env = "LOADTEST_WORKER_MEMORY", default_value = "1Gi")]
    pub worker_memory: String,
    /// A Secret whose `url` key holds the Redis URL for the pods (instead of a
    /// literal --redis-url in the manifest, which may hold a password).
    #[arg(long, env = "LOADTEST_REDIS_URL_SECRET")]
    pub redis_url_secret: Option<String>,
    #[command(subcommand)]
    pub scenario: ScenarioRun,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The run spec as JSON.
    #[arg(long, env = "LOADTEST_SPEC")]
    pub spec: String,
    #[arg(long, env = "LOADTEST_REDIS_URL")]
    pub redis_url: String,
    #[arg(long, env = "LOADTEST_RUN_ID")]
    pub run_id: String,
    /// This worker's index; a Kubernetes Indexed Job sets JOB_COMPLETION_INDEX.
    #[arg(long, env = "JOB_COMPLETION_INDEX")]
    pub index: u32,
    #[arg(long, env = "LOADTEST_WORKER_COUNT")]
    pub count: u32,
}

/// What every worker of a run gets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    pub scenario: Scenario,
    pub target: TargetOpts,
}

/// `250ms`, `10s`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration like 500ms, 10s or 2m"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        other => return Err(format!("unknown duration unit `{other}` (use ms, s, m or h)")),
    };
    if !(0.0..=7.0 * 86_400.0).contains(&secs) {
        return Err(format!("duration `{text}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Durations as text (`1500ms`) in run specs and reports.
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        for bad in ["", "ms", "10 parsecs", "-1s", "1e9h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_parses_a_relay_run_and_its_spec_round_trips() {
        let cli = Cli::try_parse_from([
            "loadtest",
            "relay",
            "--url",
            "ws://a/ws,ws://b/ws",
            "--rate",
            "2000",
            "--duration",
            "3s",
            "--slo",
            "p99<5ms",
        ])
        .unwrap();
        let Cmd::Scenario(run) = cli.command else { panic!("a scenario") };
        let (scenario, target, output, _) = run.split();
        assert_eq!(target.urls, ["ws://a/ws", "ws://b/ws"]);
        assert_eq!(output.slo.as_deref(), Some("p99<5ms"));
        let spec = RunSpec { scenario, target };
        let back: RunSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        let Scenario::Relay(relay) = back.scenario else { panic!("relay") };
        assert_eq!((relay.rate, relay.duration), (2000.0, Duration::from_secs(3)));
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
