//! Logs, traces and process metrics shared by the services: `tracing` with an
//! `EnvFilter` (`RUST_LOG`, default `info`), JSON lines in a cluster (`LOG_FORMAT=json`)
//! and readable text locally; OpenTelemetry traces over OTLP when an OTLP endpoint is
//! configured ([`traces`]); the standard `process_*` metrics from /proc.

pub mod traces;

use tracing::level_filters::LevelFilter;
use tracing::Level;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

pub use traces::{TraceError, TraceSettings, Tracing};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}; use text or json")),
        }
    }
}

/// Installs the global subscriber: logs, and traces when the OTEL_* variables ask for
/// them ([`traces`]). Call once, from `main`, inside the tokio runtime; keep the
/// returned [`Tracing`] until exit (dropping it flushes the last spans).
///
/// Log lines written inside a traced span carry its `trace_id` and `span_id` (the
/// spans record them; see [`traces::record_ids`]).
pub fn init(format: LogFormat, service: &'static str, instance: Option<&str>) -> Result<Option<Tracing>, TraceError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Log lines see the spans of recorded traces whatever RUST_LOG says, for their ids.
    let filter = filter.add_directive(format!("{}=info", traces::TARGET).parse().expect("a valid directive"));
    let logs = match format {
        LogFormat::Json => fmt::layer().with_target(false).json().flatten_event(true).with_current_span(true).boxed(),
        LogFormat::Text => fmt::layer().with_target(false).boxed(),
    }
    .with_filter(filter);
    let Some(settings) = TraceSettings::from_env()? else {
        let _ = tracing_subscriber::registry().with(logs).try_init();
        return Ok(None);
    };
    let (tracing, spans) = traces::pipeline(&settings, service, instance)?;
    // Only the spans meant for traces, whatever RUST_LOG says (the code makes them only
    // for recorded traces), and warnings and errors as events on them. The level hint
    // keeps `debug!` and `trace!` call sites disabled at no cost, as without this layer.
    let spans = spans.with_filter(
        filter_fn(|meta| if meta.is_span() { meta.target() == traces::TARGET } else { *meta.level() <= Level::WARN })
            .with_max_level_hint(LevelFilter::INFO),
    );
    let _ = tracing_subscriber::registry().with(logs).with(spans).try_init();
    Ok(Some(tracing))
}

/// For tests: silent unless `TEST_LOG=1`; safe to call from every test.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = fmt()
            .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("debug")))
            .with_test_writer()
            .try_init();
    }
}

/// Resident memory and CPU time of one process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcUsage {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

/// Reads [`ProcUsage`] from /proc/<pid> (`"self"` for this process); None where /proc
/// is not available or the process is gone.
pub fn proc_usage(pid: &str) -> Option<ProcUsage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ProcUsage { rss_bytes: rss_kib * 1024, cpu_seconds: cpu_from_stat(&stat)? })
}

/// utime + stime in seconds from a /proc/<pid>/stat line (USER_HZ is 100 on Linux).
/// The command name (field 2) may hold spaces and parentheses, so fields are counted
/// after its closing parenthesis: state is then field 0, utime 11 and stime 12.
pub fn cpu_from_stat(stat: &str) -> Option<f64> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// This process's standard Prometheus metrics (`process_resident_memory_bytes`,
/// `process_cpu_seconds_total`, `process_open_fds`, `process_max_fds`), read from
/// /proc. Empty where /proc is not available.
pub fn process_metrics() -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"));
        }
    };
    let usage = proc_usage("self");
    metric(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        usage.map(|u| u.rss_bytes as f64),
    );
    metric(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time in seconds.",
        usage.map(|u| u.cpu_seconds),
    );
    let fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64);
    metric("process_open_fds", "gauge", "Open file descriptors.", fds);
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<f64>().ok());
    metric("process_max_fds", "gauge", "Most file descriptors this process may open.", max_fds);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let stat = "4242 (signal (x) y) S 1 4242 4242 0 -1 4194560 1 0 0 0 250 50 0 0 20 0 3 0 100 0 0";
        assert_eq!(super::cpu_from_stat(stat).unwrap(), 3.0);
    }

    #[test]
    fn process_metrics_describe_this_process() {
        let text = super::process_metrics();
        if !std::path::Path::new("/proc/self/status").exists() {
            return;
        }
        let value = |name: &str| {
            text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.parse::<f64>().ok())
        };
        assert!(value("process_resident_memory_bytes").unwrap() > 1_000_000.0, "{text}");
        assert!(value("process_cpu_seconds_total").unwrap() >= 0.0);
        assert!(value("process_open_fds").unwrap() >= 3.0);
        assert!(value("process_max_fds").unwrap() >= value("process_open_fds").unwrap());
    }
}
