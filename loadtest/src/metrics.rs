//! What a run measured. [`Metrics`] is the live recorder shared by a run's tasks
//! (HDR latency histograms, counters, errors by code, a per-second timeline);
//! [`Results`] is its serialisable snapshot, which merges exactly, so one worker's
//! numbers and N workers' numbers go through the same report code.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, 1 µs to 10 minutes, 3 significant digits.
const HIST_MAX_US: u64 = 600_000_000;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

/// An HDR histogram of microseconds that serialises as base64 of the HdrHistogram V2
/// encoding, the format other HDR tools read.
#[derive(Debug, Clone, PartialEq)]
pub struct Hist(pub Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist(new_histogram())
    }
}

impl Hist {
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        self.0.saturating_record(us);
    }

    pub fn merge(&mut self, other: &Hist) {
        self.0.add(&other.0).expect("histograms share bounds");
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value at quantile `q` (0..=1), in microseconds; 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_quantile(q)
        }
    }

    pub fn max_us(&self) -> u64 {
        self.0.max()
    }
}

impl Serialize for Hist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        V2Serializer::new().serialize(&self.0, &mut bytes).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).map_err(serde::de::Error::custom)?;
        let h: Histogram<u64> =
            Deserializer::new().deserialize(&mut bytes.as_slice()).map_err(serde::de::Error::custom)?;
        let mut out = new_histogram();
        out.add(&h).map_err(serde::de::Error::custom)?;
        Ok(Hist(out))
    }
}

/// Counters every scenario may use; reports show the ones that moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Messages the harness sent that expect deliveries.
    Sent,
    /// Deliveries expected from what was sent (a broadcast to k members expects k).
    Expected,
    /// Distinct deliveries that arrived.
    Delivered,
    Duplicates,
    /// Deliveries that arrived after a later message from the same sender.
    OutOfOrder,
    Connected,
    ConnectFailed,
    Joined,
    JoinFailed,
    /// Membership announcements delivered twice, or about peers not in the room.
    MembershipViolations,
    /// Membership announcements that should have arrived and never did.
    MembershipMissing,
}

const COUNTERS: [Counter; 11] = [
    Counter::Sent,
    Counter::Expected,
    Counter::Delivered,
    Counter::Duplicates,
    Counter::OutOfOrder,
    Counter::Connected,
    Counter::ConnectFailed,
    Counter::Joined,
    Counter::JoinFailed,
    Counter::MembershipViolations,
    Counter::MembershipMissing,
];

impl Counter {
    pub fn name(self) -> &'static str {
        match self {
            Counter::Sent => "sent",
            Counter::Expected => "expected",
            Counter::Delivered => "delivered",
            Counter::Duplicates => "duplicates",
            Counter::OutOfOrder => "out_of_order",
            Counter::Connected => "connected",
            Counter::ConnectFailed => "connect_failed",
            Counter::Joined => "joined",
            Counter::JoinFailed => "join_failed",
            Counter::MembershipViolations => "membership_violations",
            Counter::MembershipMissing => "membership_missing",
        }
    }
}

/// One second of a run: what was sent and delivered in it and the primary latency.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Interval {
    pub second: u32,
    pub sent: u64,
    pub delivered: u64,
    pub latency: Hist,
}

/// Resident memory and CPU of the servers under test, when the harness was told
/// where to find them (PIDs or /metrics URLs).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ServerUsage {
    /// Sum over servers of RSS before the scenario connected anyone.
    pub rss_before_bytes: u64,
    /// Sum over servers of RSS with every connection open and joined.
    pub rss_loaded_bytes: u64,
    /// Connections open when `rss_loaded_bytes` was read.
    pub connections: u64,
    /// CPU seconds the servers used during the measured phase.
    pub cpu_seconds: f64,
}

impl ServerUsage {
    /// What the servers used between two samples around a measured phase (no
    /// connection count: the phase's scenario did not hold connections steady).
    pub fn between(before: Option<crate::server::Sample>, after: Option<crate::server::Sample>) -> Option<Self> {
        let (before, after) = (before?, after?);
        Some(Self {
            rss_before_bytes: before.rss_bytes,
            rss_loaded_bytes: after.rss_bytes,
            connections: 0,
            cpu_seconds: after.cpu_seconds - before.cpu_seconds,
        })
    }

    pub fn bytes_per_connection(&self) -> Option<f64> {
        (self.connections > 0)
            .then(|| self.rss_loaded_bytes.saturating_sub(self.rss_before_bytes) as f64 / self.connections as f64)
    }
}

/// A run's mergeable snapshot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    pub scenario: String,
    /// The latency that `--slo p99<...` and the timeline refer to.
    pub primary: String,
    pub workers: u32,
    /// Length of the measured phase (the longest worker's).
    pub elapsed_secs: f64,
    /// Requested open-loop rate, summed over workers.
    pub target_rate: Option<f64>,
    pub latency: BTreeMap<String, Hist>,
    pub counters: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub timeline: Vec<Interval>,
    pub server: Option<ServerUsage>,
    /// Wall-clock length of set-up phases, in seconds (e.g. `join`: from the first
    /// join sent to the last answer), for rates such as joins per second.
    #[serde(default)]
    pub phases: BTreeMap<String, f64>,
    /// Usage sampled at intervals over a long run (soak), by one worker.
    #[serde(default)]
    pub usage: Vec<crate::usage::UsageSample>,
}

impl Results {
    pub fn counter(&self, c: Counter) -> u64 {
        self.counters.get(c.name()).copied().unwrap_or(0)
    }

    /// Expected deliveries that never arrived.
    pub fn lost(&self) -> u64 {
        self.counter(Counter::Expected).saturating_sub(self.counter(Counter::Delivered))
    }

    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Adds another worker's results to these. Histograms, counters and timeline
    /// seconds add exactly; elapsed time is the longest.
    pub fn merge(&mut self, other: Results) {
        if self.scenario.is_empty() {
            self.scenario = other.scenario.clone();
            self.primary = other.primary.clone();
        }
        self.workers += other.workers;
        self.elapsed_secs = self.elapsed_secs.max(other.elapsed_secs);
        self.target_rate = match (self.target_rate, other.target_rate) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        for (name, h) in other.latency {
            self.latency.entry(name).or_default().merge(&h);
        }
        for (name, n) in other.counters {
            *self.counters.entry(name).or_default() += n;
        }
        for (code, n) in other.errors {
            *self.errors.entry(code).or_default() += n;
        }
        for iv in other.timeline {
            match self.timeline.iter_mut().find(|mine| mine.second == iv.second) {
                Some(mine) => {
                    mine.sent += iv.sent;
                    mine.delivered += iv.delivered;
                    mine.latency.merge(&iv.latency);
                }
                None => self.timeline.push(iv),
            }
        }
        self.timeline.sort_by_key(|iv| iv.second);
        for (name, secs) in other.phases {
            // Workers run their phases side by side: the longest is the phase's length.
            let mine = self.phases.entry(name).or_default();
            *mine = mine.max(secs);
        }
        // One worker samples the servers; the others have nothing to add.
        if self.usage.is_empty() {
            self.usage = other.usage;
        }
        self.server = match (self.server.take(), other.server) {
            (Some(mut a), Some(b)) => {
                // Workers watching the same servers saw the same RSS; connections add.
                a.rss_before_bytes = a.rss_before_bytes.max(b.rss_before_bytes);
                a.rss_loaded_bytes = a.rss_loaded_bytes.max(b.rss_loaded_bytes);
                a.connections += b.connections;
                a.cpu_seconds = a.cpu_seconds.max(b.cpu_seconds);
                Some(a)
            }
            (a, b) => a.or(b),
        };
    }
}

struct Track {
    total: Hist,
    interval: Hist,
}

/// The live recorder. Cheap to share (`Arc`); recording takes one short lock.
pub struct Metrics {
    epoch: Instant,
    primary: &'static str,
    latency: Mutex<BTreeMap<&'static str, Track>>,
    counters: [AtomicU64; COUNTERS.len()],
    errors: Mutex<BTreeMap<String, u64>>,
    timeline: Mutex<Timeline>,
}

#[derive(Default)]
struct Timeline {
    started: Option<Instant>,
    last_sent: u64,
    last_delivered: u64,
    intervals: Vec<Interval>,
}

impl Metrics {
    pub fn new(primary: &'static str) -> Self {
        Self {
            epoch: Instant::now(),
            primary,
            latency: Mutex::new(BTreeMap::new()),
            counters: Default::default(),
            errors: Mutex::new(BTreeMap::new()),
            timeline: Mutex::new(Timeline::default()),
        }
    }

    /// Nanoseconds since this recorder was made: the timestamps payloads carry, so
    /// a receiver in the same process can compute latency from the intended send time.
    pub fn stamp(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn instant_of(&self, stamp: u64) -> Instant {
        self.epoch + Duration::from_nanos(stamp)
    }

    pub fn record(&self, name: &'static str, latency: Duration) {
        let mut map = self.latency.lock().expect("metrics lock");
        let track = map.entry(name).or_insert_with(|| Track { total: Hist::default(), interval: Hist::default() });
        track.total.record(latency);
        if name == self.primary {
            track.interval.record(latency);
        }
    }

    pub fn add(&self, c: Counter, n: u64) {
        self.counters[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.counters[c as usize].load(Ordering::Relaxed)
    }

    pub fn error(&self, code: &str) {
        *self.errors.lock().expect("metrics lock").entry(code.to_owned()).or_default() += 1;
    }

    /// Marks the start of the measured phase; the timeline counts seconds from here.
    pub fn start_timeline(&self) {
        let mut t = self.timeline.lock().expect("metrics lock");
        t.started = Some(Instant::now());
        t.last_sent = self.get(Counter::Sent);
        t.last_delivered = self.get(Counter::Delivered);
    }

    /// Closes the current second of the timeline (called once a second by the ticker).
    pub fn tick(&self) {
        let interval_latency = {
            let mut map = self.latency.lock().expect("metrics lock");
            map.get_mut(self.primary).map(|t| std::mem::take(&mut t.interval)).unwrap_or_default()
        };
        let mut t = self.timeline.lock().expect("metrics lock");
        if t.started.is_none() {
            return;
        }
        let (sent, delivered) = (self.get(Counter::Sent), self.get(Counter::Delivered));
        // Ticks come once a second; the last one may close a shorter remainder.
        let second = u32::try_from(t.intervals.len() + 1).unwrap_or(u32::MAX);
        let iv = Interval {
            second,
            sent: sent - t.last_sent,
            delivered: delivered - t.last_delivered,
            latency: interval_latency,
        };
        t.last_sent = sent;
        t.last_delivered = delivered;
        t.intervals.push(iv);
    }

    pub fn snapshot(&self, scenario: &str, elapsed: Duration, target_rate: Option<f64>) -> Results {
        let latency = self
            .latency
            .lock()
            .expect("metrics lock")
            .iter()
            .map(|(name, t)| ((*name).to_owned(), t.total.clone()))
            .collect();
        let counters = COUNTERS.iter().map(|c| (c.name().to_owned(), self.get(*c))).filter(|(_, n)| *n > 0).collect();
        Results {
            scenario: scenario.to_owned(),
            primary: self.primary.to_owned(),
            workers: 1,
            elapsed_secs: elapsed.as_secs_f64(),
            target_rate,
            latency,
            counters,
            errors: self.errors.lock().expect("metrics lock").clone(),
            timeline: self.timeline.lock().expect("metrics lock").intervals.clone(),
            server: None,
            phases: BTreeMap::new(),
            usage: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results_with(latencies_us: &[u64], sent: u64) -> Results {
        let m = Metrics::new("signal");
        m.start_timeline();
        for us in latencies_us {
            m.record("signal", Duration::from_micros(*us));
        }
        m.add(Counter::Sent, sent);
        m.add(Counter::Expected, sent);
        m.add(Counter::Delivered, latencies_us.len() as u64);
        m.error("rate-limited");
        m.tick();
        m.snapshot("relay", Duration::from_secs(2), Some(100.0))
    }

    #[test]
    fn merged_histograms_equal_one_histogram_of_all_values() {
        let a = results_with(&[100, 200, 300], 3);
        let b = results_with(&[5_000, 10, 700_000], 4);
        let mut merged = Results::default();
        merged.merge(a);
        merged.merge(b);
        let all = results_with(&[100, 200, 300, 5_000, 10, 700_000], 7);
        assert_eq!(merged.latency["signal"], all.latency["signal"]);
        assert_eq!(merged.counter(Counter::Sent), 7);
        assert_eq!(merged.lost(), 1);
        assert_eq!(merged.errors["rate-limited"], 2);
        assert_eq!(merged.workers, 2);
        assert_eq!(merged.target_rate, Some(200.0));
        assert_eq!(merged.timeline.len(), 1, "the same second from two workers is one interval");
        assert_eq!(merged.timeline[0].latency.len(), 6);
    }

    #[test]
    fn results_survive_a_json_round_trip_exactly() {
        let r = results_with(&[1, 2, 3, 40_000, 1_000_000], 5);
        let back: Results = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.latency, r.latency);
        assert_eq!(back.counters, r.counters);
        assert_eq!(back.timeline[0].latency, r.timeline[0].latency);
        assert_eq!(back.latency["signal"].quantile_us(1.0), r.latency["signal"].max_us());
    }
}
