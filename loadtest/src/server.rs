//! Reads the servers' resident memory, CPU time and open file descriptors, from
//! /proc for local PIDs or from a Prometheus /metrics page
//! (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
//! `process_open_fds`), so reports can say bytes per connection, signals per
//! CPU-second, and (in a soak) whether any of them grows.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Default)]
pub struct ServerWatch {
    pub pids: Vec<u32>,
    pub metrics_urls: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
    /// Open file descriptors, when every watched server told.
    pub open_fds: Option<u64>,
}

impl Sample {
    fn add(&mut self, other: Sample) {
        self.rss_bytes += other.rss_bytes;
        self.cpu_seconds += other.cpu_seconds;
        self.open_fds = self.open_fds.zip(other.open_fds).map(|(a, b)| a + b);
    }
}

impl ServerWatch {
    pub fn is_empty(&self) -> bool {
        self.pids.is_empty() && self.metrics_urls.is_empty()
    }

    /// A sample, or None when nothing is watched or reading failed (logged): server
    /// usage is extra information and never fails a run.
    pub async fn try_sample(&self) -> Option<Sample> {
        if self.is_empty() {
            return None;
        }
        match self.sample().await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not read server usage");
                None
            }
        }
    }

    /// The sum over every watched server.
    pub async fn sample(&self) -> anyhow::Result<Sample> {
        let mut total = Sample { open_fds: Some(0), ..Sample::default() };
        for pid in &self.pids {
            total.add(sample_pid(*pid).with_context(|| format!("reading /proc/{pid}"))?);
        }
        for url in &self.metrics_urls {
            total.add(sample_metrics_url(url).await.with_context(|| format!("reading {url}"))?);
        }
        Ok(total)
    }
}

pub fn sample_pid(pid: u32) -> anyhow::Result<Sample> {
    let usage = telemetry::proc_usage(&pid.to_string()).ok_or_else(|| anyhow!("no readable /proc/{pid}"))?;
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|d| d.count() as u64);
    Ok(Sample { rss_bytes: usage.rss_bytes, cpu_seconds: usage.cpu_seconds, open_fds })
}

async fn sample_metrics_url(url: &str) -> anyhow::Result<Sample> {
    let body = http_get(url).await?;
    parse_prometheus(&body)
}

pub fn parse_prometheus(body: &str) -> anyhow::Result<Sample> {
    let value = |name: &str| {
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name).filter(|rest| rest.starts_with([' ', '{'])))
            .and_then(|rest| rest.rsplit(' ').next())
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let rss = value("process_resident_memory_bytes").ok_or_else(|| anyhow!("no process_resident_memory_bytes"))?;
    let cpu = value("process_cpu_seconds_total").ok_or_else(|| anyhow!("no process_cpu_seconds_total"))?;
    let open_fds = value("process_open_fds").map(|v| v as u64);
    Ok(Sample { rss_bytes: rss as u64, cpu_seconds: cpu, open_fds })
}

/// A plain HTTP/1.0 GET of an `http://host:port/path` URL, bounded in time.
async fn http_get(url: &str) -> anyhow::Result<String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow!("only http:// metrics URLs are supported"))?;
    let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let io = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes()).await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        anyhow::Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(5), io).await.context("timed out")??;
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow!("malformed HTTP response"))?;
    if head.split_whitespace().nth(1) != Some("200") {
        bail!("HTTP status is not 200: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_from_proc() {
        let s = sample_pid(std::process::id()).unwrap();
        assert!(s.rss_bytes > 1024 * 1024, "a test binary holds more than 1 MiB: {s:?}");
        assert!(s.cpu_seconds >= 0.0);
        assert!(s.open_fds.is_some_and(|n| n >= 3), "stdin, stdout and stderr at least: {s:?}");
    }

    #[test]
    fn prometheus_process_metrics_parse() {
        let body = "# HELP process_resident_memory_bytes x\n# TYPE process_resident_memory_bytes gauge\n\
                    process_resident_memory_bytes 1.2345e7\nprocess_cpu_seconds_total{job=\"x\"} 12.5\n\
                    process_open_fds 42\n";
        let expected = Sample { rss_bytes: 12_345_000, cpu_seconds: 12.5, open_fds: Some(42) };
        assert_eq!(parse_prometheus(body).unwrap(), expected);
        assert!(parse_prometheus("other_metric 1\n").is_err());
    }
}
