//! Service-level objectives for CI/CD gates: `--slo 'p99<5ms,loss=0'`. Each
//! objective is `<metric><op><value>`; the run's exit status says whether all held.
//!
//! Metrics: `p50 p90 p99 p99.9 max mean` of the scenario's primary latency, or of a
//! named one (`join.p99<50ms`), with a unit (`us`, `ms`, `s`; bare numbers are ms);
//! `loss` (count, or percent with `%`), `errors`, `duplicates`, `out_of_order`,
//! `throughput` (deliveries per second), and any counter by name (`connect_failed`).

use std::fmt;

use serde::Serialize;

use crate::metrics::{Counter, Results};

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Op {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "=")]
    Eq,
}

impl Op {
    fn holds(self, actual: f64, limit: f64) -> bool {
        match self {
            Op::Lt => actual < limit,
            Op::Le => actual <= limit,
            Op::Gt => actual > limit,
            Op::Ge => actual >= limit,
            Op::Eq => (actual - limit).abs() < 1e-9,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Metric {
    /// A latency quantile (0..=1; 1 is max) in microseconds; `None` means the mean.
    Latency {
        name: Option<String>,
        quantile: Option<f64>,
    },
    LossCount,
    LossPercent,
    Errors,
    Throughput,
    Counter(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Objective {
    pub text: String,
    pub metric: Metric,
    pub op: Op,
    /// In the metric's own unit (microseconds for latencies).
    pub limit: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub objective: String,
    pub actual: String,
    pub met: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("bad SLO `{part}`: {reason}")]
pub struct SloError {
    part: String,
    reason: String,
}

pub fn parse(spec: &str) -> Result<Vec<Objective>, SloError> {
    spec.split(',').map(str::trim).filter(|p| !p.is_empty()).map(parse_one).collect()
}

fn parse_one(part: &str) -> Result<Objective, SloError> {
    let err = |reason: &str| SloError { part: part.to_owned(), reason: reason.to_owned() };
    let at = part.find(['<', '>', '=']).ok_or_else(|| err("no comparison (<, <=, >, >=, =)"))?;
    let (key, rest) = part.split_at(at);
    let (op, value) = [("<=", Op::Le), (">=", Op::Ge), ("==", Op::Eq), ("<", Op::Lt), (">", Op::Gt), ("=", Op::Eq)]
        .iter()
        .find_map(|(sym, op)| rest.strip_prefix(sym).map(|v| (*op, v.trim())))
        .ok_or_else(|| err("bad comparison"))?;
    let key = key.trim();
    let (metric, limit) = if let Some((name, q)) = latency_key(key) {
        (
            Metric::Latency { name, quantile: q },
            parse_latency(value).ok_or_else(|| err("latency needs a number with us, ms or s"))?,
        )
    } else {
        let number = |v: &str| v.trim().parse::<f64>().map_err(|_| err("value is not a number"));
        match key {
            "loss" => match value.strip_suffix('%') {
                Some(pct) => (Metric::LossPercent, number(pct)?),
                None => (Metric::LossCount, number(value)?),
            },
            "errors" => (Metric::Errors, number(value)?),
            "throughput" => (Metric::Throughput, number(value.trim_end_matches("/s"))?),
            other if !other.is_empty() && other.chars().all(|c| c.is_ascii_lowercase() || c == '_') => {
                (Metric::Counter(other.to_owned()), number(value)?)
            }
            _ => return Err(err("unknown metric")),
        }
    };
    Ok(Objective { text: part.to_owned(), metric, op, limit })
}

/// `p99`, `join.p99.9`, `max`, `mean` → (latency name, quantile).
fn latency_key(key: &str) -> Option<(Option<String>, Option<f64>)> {
    let stat = |s: &str| -> Option<Option<f64>> {
        match s {
            "max" => Some(Some(1.0)),
            "mean" => Some(None),
            _ => {
                let p: f64 = s.strip_prefix('p')?.parse().ok()?;
                let p = if s == "p999" { 99.9 } else { p };
                // Rounded so that p99.9 is exactly 0.999.
                (0.0..=100.0).contains(&p).then_some(Some((p * 1000.0).round() / 100_000.0))
            }
        }
    };
    if let Some(q) = stat(key) {
        return Some((None, q));
    }
    let (name, rest) = key.split_once('.')?;
    Some((Some(name.to_owned()), stat(rest)?))
}

fn parse_latency(value: &str) -> Option<f64> {
    let v = value.trim();
    let (number, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1_000.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1_000_000.0)
    } else {
        (v, 1_000.0)
    };
    number.trim().parse::<f64>().ok().map(|n| n * scale)
}

pub fn evaluate(objectives: &[Objective], r: &Results) -> Vec<Verdict> {
    objectives
        .iter()
        .map(|o| {
            let (actual, shown) = actual(&o.metric, r);
            Verdict { objective: o.text.clone(), actual: shown, met: actual.is_some_and(|a| o.op.holds(a, o.limit)) }
        })
        .collect()
}

fn actual(metric: &Metric, r: &Results) -> (Option<f64>, String) {
    match metric {
        Metric::Latency { name, quantile } => {
            let name = name.as_deref().unwrap_or(&r.primary);
            match r.latency.get(name).filter(|h| !h.is_empty()) {
                None => (None, format!("no `{name}` latencies recorded")),
                Some(h) => {
                    let us = match quantile {
                        Some(q) => h.quantile_us(*q) as f64,
                        None => h.0.mean(),
                    };
                    (Some(us), Micros(us).to_string())
                }
            }
        }
        Metric::LossCount => (Some(r.lost() as f64), r.lost().to_string()),
        Metric::LossPercent => {
            let expected = r.counter(Counter::Expected);
            let pct = if expected == 0 { 0.0 } else { 100.0 * r.lost() as f64 / expected as f64 };
            (Some(pct), format!("{pct:.4}%"))
        }
        Metric::Errors => (Some(r.error_total() as f64), r.error_total().to_string()),
        Metric::Throughput => {
            let t = r.counter(Counter::Delivered) as f64 / r.elapsed_secs.max(1e-9);
            (Some(t), format!("{t:.0}/s"))
        }
        Metric::Counter(name) => {
            let n = r.counters.get(name).copied().unwrap_or(0);
            (Some(n as f64), n.to_string())
        }
    }
}

/// Microseconds shown with a readable unit.
pub struct Micros(pub f64);

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0;
        if us >= 1_000_000.0 {
            write!(f, "{:.2}s", us / 1_000_000.0)
        } else if us >= 1_000.0 {
            write!(f, "{:.2}ms", us / 1_000.0)
        } else {
            write!(f, "{us:.0}us")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn parses_latency_loss_and_counters() {
        let o = parse("p99<5ms, loss=0, join.p99.9<=1s, max<800us, loss<0.1%, throughput>=20000, connect_failed=0")
            .unwrap();
        assert_eq!(o[0].metric, Metric::Latency { name: None, quantile: Some(0.99) });
        assert_eq!((o[0].op, o[0].limit), (Op::Lt, 5_000.0));
        assert_eq!((o[1].metric.clone(), o[1].op, o[1].limit), (Metric::LossCount, Op::Eq, 0.0));
        assert_eq!(o[2].metric, Metric::Latency { name: Some("join".into()), quantile: Some(0.999) });
        assert_eq!((o[2].op, o[2].limit), (Op::Le, 1_000_000.0));
        assert_eq!((o[3].metric.clone(), o[3].limit), (Metric::Latency { name: None, quantile: Some(1.0) }, 800.0));
        assert_eq!((o[4].metric.clone(), o[4].limit), (Metric::LossPercent, 0.1));
        assert_eq!((o[5].metric.clone(), o[5].op), (Metric::Throughput, Op::Ge));
        assert_eq!(o[6].metric, Metric::Counter("connect_failed".into()));
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for bad in ["p99", "p99<fast", "p101<5ms", "loss=none", "Weird!<1", "<5ms"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn verdicts_follow_the_numbers() {
        let m = Metrics::new("signal");
        for ms in [1, 1, 1, 1, 1, 1, 1, 1, 1, 9] {
            m.record("signal", Duration::from_millis(ms));
        }
        m.add(Counter::Expected, 10);
        m.add(Counter::Delivered, 10);
        let r = m.snapshot("relay", Duration::from_secs(1), None);
        let v = evaluate(&parse("p50<2ms,p99<5ms,loss=0,throughput>=10,join.p99<1s").unwrap(), &r);
        let met: Vec<bool> = v.iter().map(|v| v.met).collect();
        assert_eq!(met, [true, false, true, true, false], "{v:?}");
        assert!(v[4].actual.contains("no `join`"));
    }
}
