//! Turns merged [`Results`] into what people read: the summary table printed at the
//! end, the `--json` document and the `--html` page (in `report/html.rs`).

pub mod html;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::RunSpec;
use crate::metrics::{Counter, Hist, Results};
use crate::slo::{Micros, Verdict};
use crate::usage::{trends, Trend, UsageSample};

/// A tenth of a soak is warm-up, left out of the slopes (pools fill, allocators grow).
const WARMUP_SHARE: f64 = 0.1;

/// Most sample rows the printed table shows (the JSON has them all).
const MAX_PRINTED_SAMPLES: usize = 13;

#[derive(Debug, Clone, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    pub fn of(h: &Hist) -> Self {
        Self {
            count: h.len(),
            mean_us: if h.is_empty() { 0.0 } else { h.0.mean() },
            p50_us: h.quantile_us(0.50),
            p90_us: h.quantile_us(0.90),
            p99_us: h.quantile_us(0.99),
            p999_us: h.quantile_us(0.999),
            max_us: h.max_us(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Second {
    pub second: u32,
    pub sent: u64,
    pub delivered: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerSummary {
    pub cpu_seconds: f64,
    pub deliveries_per_cpu_second: Option<f64>,
    pub rss_before_bytes: u64,
    pub rss_loaded_bytes: u64,
    pub connections: u64,
    pub bytes_per_connection: Option<f64>,
}

/// The `--json` document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub primary_latency: String,
    pub workers: u32,
    pub elapsed_secs: f64,
    pub target_rate: Option<f64>,
    pub throughput_per_sec: f64,
    pub lost: u64,
    pub counters: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub latency: BTreeMap<String, LatencySummary>,
    pub timeline: Vec<Second>,
    pub server: Option<ServerSummary>,
    /// Joins per second over the join phase, when the scenario timed one.
    pub join_rate_per_sec: Option<f64>,
    pub slo: Vec<Verdict>,
    pub slo_met: bool,
    pub spec: Option<RunSpec>,
    /// Usage over time and its trends (soak).
    pub usage: Option<UsageReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UsageReport {
    /// Samples before this are warm-up and left out of the trends.
    pub warmup_secs: f64,
    pub trends: Vec<Trend>,
    pub samples: Vec<UsageSample>,
}

impl Report {
    pub fn new(r: &Results, slo: Vec<Verdict>, spec: Option<RunSpec>) -> Self {
        let delivered = r.counter(Counter::Delivered);
        let server = r.server.as_ref().map(|s| ServerSummary {
            cpu_seconds: s.cpu_seconds,
            deliveries_per_cpu_second: (s.cpu_seconds > 0.0 && delivered > 0).then(|| delivered as f64 / s.cpu_seconds),
            rss_before_bytes: s.rss_before_bytes,
            rss_loaded_bytes: s.rss_loaded_bytes,
            connections: s.connections,
            bytes_per_connection: s.bytes_per_connection(),
        });
        Self {
            scenario: r.scenario.clone(),
            primary_latency: r.primary.clone(),
            workers: r.workers,
            elapsed_secs: r.elapsed_secs,
            target_rate: r.target_rate,
            throughput_per_sec: delivered as f64 / r.elapsed_secs.max(1e-9),
            lost: r.lost(),
            counters: r.counters.clone(),
            errors: r.errors.clone(),
            latency: r.latency.iter().map(|(k, h)| (k.clone(), LatencySummary::of(h))).collect(),
            timeline: r
                .timeline
                .iter()
                .map(|iv| Second {
                    second: iv.second,
                    sent: iv.sent,
                    delivered: iv.delivered,
                    p50_us: iv.latency.quantile_us(0.5),
                    p99_us: iv.latency.quantile_us(0.99),
                    max_us: iv.latency.max_us(),
                })
                .collect(),
            server,
            join_rate_per_sec: r
                .phases
                .get("join")
                .filter(|s| **s > 0.0)
                .map(|s| r.counter(Counter::Joined) as f64 / s),
            slo_met: slo.iter().all(|v| v.met),
            slo,
            spec,
            usage: (!r.usage.is_empty()).then(|| {
                let warmup_secs = r.elapsed_secs * WARMUP_SHARE;
                UsageReport { warmup_secs, trends: trends(&r.usage, warmup_secs), samples: r.usage.clone() }
            }),
        }
    }

    /// The table printed at the end of a run.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let rate = self.target_rate.map(|r| format!(", offered {r:.0}/s")).unwrap_or_default();
        let _ = writeln!(
            out,
            "{} · {} worker{} · {:.1} s measured{rate}",
            self.scenario,
            self.workers,
            if self.workers == 1 { "" } else { "s" },
            self.elapsed_secs
        );
        let c = |name: &str| self.counters.get(name).copied().unwrap_or(0);
        if c("expected") == 0 && c("sent") > 0 {
            // Sent without an expectation (soak: targets may leave meanwhile): loss is not judged.
            let _ = writeln!(
                out,
                "  sent {}  delivered {} ({:.0}/s)  duplicates {}  out-of-order {}  (loss not judged)",
                c("sent"),
                c("delivered"),
                self.throughput_per_sec,
                c("duplicates"),
                c("out_of_order"),
            );
        } else if c("expected") > 0 {
            let _ = writeln!(
                out,
                "  sent {}  delivered {} ({:.0}/s)  lost {}  duplicates {}  out-of-order {}",
                c("sent"),
                c("delivered"),
                self.throughput_per_sec,
                self.lost,
                c("duplicates"),
                c("out_of_order"),
            );
        }
        let _ = writeln!(
            out,
            "  connections {} (failed {})  joins {} (failed {})",
            c("connected"),
            c("connect_failed"),
            c("joined"),
            c("join_failed")
        );
        if let Some(rate) = self.join_rate_per_sec {
            let _ = writeln!(out, "  join rate: {rate:.0} joins/s over the join phase");
        }
        if c("membership_violations") > 0 || c("membership_missing") > 0 || self.scenario == "churn" {
            let _ = writeln!(
                out,
                "  membership: violations {}  missing {}",
                c("membership_violations"),
                c("membership_missing")
            );
        }
        let _ = writeln!(
            out,
            "  {:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        for (name, l) in &self.latency {
            let star = if *name == self.primary_latency { "*" } else { " " };
            let _ = writeln!(
                out,
                " {star}{:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                name,
                l.count,
                Micros(l.p50_us as f64).to_string(),
                Micros(l.p90_us as f64).to_string(),
                Micros(l.p99_us as f64).to_string(),
                Micros(l.p999_us as f64).to_string(),
                Micros(l.max_us as f64).to_string(),
            );
        }
        if self.errors.is_empty() {
            let _ = writeln!(out, "  errors: none");
        } else {
            let list: Vec<String> = self.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(out, "  errors: {}", list.join(", "));
        }
        if let Some(s) = &self.server {
            let per_cpu = s
                .deliveries_per_cpu_second
                .map(|d| format!(" ({d:.0} deliveries per server CPU-second)"))
                .unwrap_or_default();
            let _ = writeln!(out, "  servers: {:.2} CPU-seconds{per_cpu}", s.cpu_seconds);
            if let Some(b) = s.bytes_per_connection {
                let _ = writeln!(
                    out,
                    "  servers: RSS {:.1} MiB -> {:.1} MiB with {} connections = {:.2} KiB per connection",
                    s.rss_before_bytes as f64 / 1048576.0,
                    s.rss_loaded_bytes as f64 / 1048576.0,
                    s.connections,
                    b / 1024.0
                );
            }
        }
        if let Some(u) = &self.usage {
            write_usage(&mut out, u);
        }
        for v in &self.slo {
            let _ = writeln!(
                out,
                "  SLO {:<20} {} (actual {})",
                v.objective,
                if v.met { "met" } else { "MISSED" },
                v.actual
            );
        }
        out
    }
}

/// The soak's sample table (thinned to at most [`MAX_PRINTED_SAMPLES`] rows) and trends.
fn write_usage(out: &mut String, u: &UsageReport) {
    let mib = |b: Option<u64>| b.map(|b| format!("{:.1}", b as f64 / 1048576.0)).unwrap_or_else(|| "-".into());
    let num = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "  {:>8} {:>9} {:>8} {:>6} {:>10} {:>8} {:>6} {:>7}",
        "at", "RSS MiB", "CPU s", "fds", "Redis MiB", "keys", "conns", "members"
    );
    let step = u.samples.len().div_ceil(MAX_PRINTED_SAMPLES).max(1);
    let last = u.samples.len().saturating_sub(1);
    let shown = u.samples.iter().enumerate().filter(|(i, _)| i % step == 0 || *i == last).map(|(_, s)| s);
    for s in shown {
        let _ = writeln!(
            out,
            "  {:>7.0}s {:>9} {:>8} {:>6} {:>10} {:>8} {:>6} {:>7}",
            s.at_secs,
            mib(s.rss_bytes),
            s.cpu_seconds.map(|c| format!("{c:.1}")).unwrap_or_else(|| "-".into()),
            num(s.open_fds),
            mib(s.redis_used_memory_bytes),
            num(s.redis_keys),
            s.connections,
            s.members,
        );
    }
    let _ = writeln!(out, "  trends after {:.0} s of warm-up (least-squares slope per hour):", u.warmup_secs);
    for t in &u.trends {
        let _ = writeln!(
            out,
            "    {:<24} {:>+14.1}/h  (first {:.0}, last {:.0}, min {:.0}, max {:.0})",
            t.series, t.slope_per_hour, t.first, t.last, t.min, t.max
        );
    }
}
