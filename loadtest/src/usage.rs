//! Resource usage over a long run: a [`UsageSample`] every interval (the servers'
//! RSS, CPU and file descriptors, the memory and key count of the Redis behind them,
//! what the harness holds open), and the [`Trend`] of each series, so a soak can say
//! whether anything grows.

use anyhow::Context;
use fred::prelude::*;
use serde::{Deserialize, Serialize};

use crate::server::ServerWatch;

/// One reading. Figures the harness could not read are None.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UsageSample {
    /// Seconds since the measured phase began.
    pub at_secs: f64,
    pub rss_bytes: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub open_fds: Option<u64>,
    pub redis_used_memory_bytes: Option<u64>,
    pub redis_keys: Option<u64>,
    /// Connections the harness had open.
    pub connections: u64,
    /// Room memberships the harness held.
    pub members: u64,
}

/// How one series moved after the warm-up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Trend {
    pub series: String,
    pub first: f64,
    pub last: f64,
    pub min: f64,
    pub max: f64,
    /// Least-squares slope, in the series' unit per hour.
    pub slope_per_hour: f64,
}

/// How to read one series from a sample.
type Reader = fn(&UsageSample) -> Option<f64>;

/// The series a soak judges, with how to read each from a sample.
const SERIES: [(&str, Reader); 5] = [
    ("rss_bytes", |s| s.rss_bytes.map(|v| v as f64)),
    ("open_fds", |s| s.open_fds.map(|v| v as f64)),
    ("redis_used_memory_bytes", |s| s.redis_used_memory_bytes.map(|v| v as f64)),
    ("redis_keys", |s| s.redis_keys.map(|v| v as f64)),
    ("members", |s| Some(s.members as f64)),
];

/// The trend of every series with at least two readings after `warmup_secs`.
pub fn trends(samples: &[UsageSample], warmup_secs: f64) -> Vec<Trend> {
    let settled: Vec<&UsageSample> = samples.iter().filter(|s| s.at_secs >= warmup_secs).collect();
    SERIES
        .iter()
        .filter_map(|(name, read)| {
            let points: Vec<(f64, f64)> =
                settled.iter().filter_map(|s| read(s).map(|v| (s.at_secs / 3600.0, v))).collect();
            let slope = least_squares_slope(&points)?;
            let values = points.iter().map(|p| p.1);
            Some(Trend {
                series: (*name).to_owned(),
                first: points[0].1,
                last: points[points.len() - 1].1,
                min: values.clone().fold(f64::INFINITY, f64::min),
                max: values.fold(f64::NEG_INFINITY, f64::max),
                slope_per_hour: slope,
            })
        })
        .collect()
}

/// The slope of the least-squares line through `points` (None under two distinct x).
fn least_squares_slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Reads `INFO memory` and `DBSIZE` from the deployment's Redis (for a Redis
/// Cluster, the node the URL names).
pub struct RedisWatch {
    client: Client,
}

impl RedisWatch {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = crate::distributed::connect(url).await.context("the watched Redis (--watch-redis)")?;
        Ok(Self { client })
    }

    /// (used_memory, number of keys); None when Redis did not answer (logged).
    pub async fn sample(&self) -> (Option<u64>, Option<u64>) {
        let info: Result<String, Error> = self.client.custom(fred::cmd!("INFO"), vec!["memory"]).await;
        let keys: Result<u64, Error> = self.client.custom(fred::cmd!("DBSIZE"), Vec::<String>::new()).await;
        if let Err(e) = info.as_ref().map(|_| ()).and(keys.as_ref().map(|_| ())) {
            tracing::warn!(error = %e, "could not read the watched Redis");
        }
        (info.ok().as_deref().and_then(used_memory), keys.ok())
    }
}

/// `used_memory` from an `INFO memory` reply.
fn used_memory(info: &str) -> Option<u64> {
    info.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok())
}

/// Takes samples of the servers and the watched Redis.
pub struct Sampler {
    pub servers: ServerWatch,
    pub redis: Option<RedisWatch>,
}

impl Sampler {
    pub async fn sample(&self, at_secs: f64, connections: u64, members: u64) -> UsageSample {
        let server = self.servers.try_sample().await;
        let (redis_used_memory_bytes, redis_keys) = match &self.redis {
            Some(r) => r.sample().await,
            None => (None, None),
        };
        UsageSample {
            at_secs,
            rss_bytes: server.map(|s| s.rss_bytes),
            cpu_seconds: server.map(|s| s.cpu_seconds),
            open_fds: server.and_then(|s| s.open_fds),
            redis_used_memory_bytes,
            redis_keys,
            connections,
            members,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: f64, rss: u64, keys: u64) -> UsageSample {
        UsageSample { at_secs: secs, rss_bytes: Some(rss), redis_keys: Some(keys), ..UsageSample::default() }
    }

    #[test]
    fn slopes_are_per_hour_and_skip_the_warm_up() {
        // RSS grows 1,000 bytes a minute after a big warm-up jump; keys stay flat.
        let samples = [at(0.0, 0, 90), at(60.0, 5_000_000, 100), at(120.0, 5_001_000, 100), at(180.0, 5_002_000, 100)];
        let t = trends(&samples, 60.0);
        let rss = t.iter().find(|t| t.series == "rss_bytes").unwrap();
        assert!((rss.slope_per_hour - 60_000.0).abs() < 1e-6, "{rss:?}");
        assert_eq!((rss.first, rss.last, rss.min, rss.max), (5_000_000.0, 5_002_000.0, 5_000_000.0, 5_002_000.0));
        let keys = t.iter().find(|t| t.series == "redis_keys").unwrap();
        assert_eq!(keys.slope_per_hour, 0.0);
        assert!(t.iter().all(|t| t.series != "open_fds"), "a series never read has no trend");
    }

    #[test]
    fn one_reading_has_no_slope() {
        assert!(trends(&[at(10.0, 1, 1)], 0.0).is_empty());
        assert_eq!(least_squares_slope(&[(1.0, 2.0)]), None);
        assert_eq!(least_squares_slope(&[(1.0, 2.0), (1.0, 3.0)]), None);
    }

    #[test]
    fn used_memory_is_read_from_info() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\n";
        assert_eq!(used_memory(info), Some(1_048_576));
        assert_eq!(used_memory("# Memory\r\n"), None);
    }
}
