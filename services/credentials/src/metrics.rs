//! Prometheus metrics for /metrics, through the `prometheus` crate's registry. Labels
//! are fixed words (sources, outcomes): no subject, key, IP or secret ever becomes a
//! label.

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Outcomes of a credential request, one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Issued,
    Unauthorized,
    RateLimited,
    BadRequest,
    Unavailable,
}

impl Outcome {
    const ALL: [Outcome; 5] =
        [Outcome::Issued, Outcome::Unauthorized, Outcome::RateLimited, Outcome::BadRequest, Outcome::Unavailable];

    fn label(self) -> &'static str {
        match self {
            Outcome::Issued => "issued",
            Outcome::Unauthorized => "unauthorized",
            Outcome::RateLimited => "rate_limited",
            Outcome::BadRequest => "bad_request",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// A counter kept by the service (cloning shares it).
#[derive(Debug, Clone)]
pub struct Counter(IntCounter);

impl Counter {
    pub fn inc(&self) {
        self.0.inc();
    }

    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }

    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

pub struct Metrics {
    registry: Registry,
    /// By [`Outcome`], resolved once for the service's source.
    requests: [IntCounter; 5],
    pub rotations: Counter,
    pub secrets_retired: Counter,
    pub turn_events: Counter,
    pub turn_events_written: Counter,
    pub turn_events_dropped: Counter,
    pub active_allocations: IntGauge,
}

fn counter(registry: &Registry, name: &str, help: &str) -> Counter {
    let c = IntCounter::new(name, help).expect("a valid metric");
    registry.register(Box::new(c.clone())).expect("registered once");
    Counter(c)
}

impl Metrics {
    /// Metrics of a service whose credentials come from `source` (its label value).
    pub fn new(source: &str) -> Self {
        let registry = Registry::new();
        let requests_vec = IntCounterVec::new(
            Opts::new("credentials_requests_total", "Credential requests by outcome."),
            &["source", "outcome"],
        )
        .expect("a valid metric");
        registry.register(Box::new(requests_vec.clone())).expect("registered once");
        let requests = Outcome::ALL.map(|o| requests_vec.with_label_values(&[source, o.label()]));
        let active_allocations =
            IntGauge::new("credentials_turn_active_allocations", "Active coturn allocations seen.")
                .expect("a valid metric");
        registry.register(Box::new(active_allocations.clone())).expect("registered once");
        Self {
            requests,
            rotations: counter(&registry, "credentials_secret_rotations_total", "TURN secrets added by rotation."),
            secrets_retired: counter(
                &registry,
                "credentials_secrets_retired_total",
                "TURN secrets removed after their overlap.",
            ),
            turn_events: counter(&registry, "credentials_turn_events_total", "coturn allocation events received."),
            turn_events_written: counter(
                &registry,
                "credentials_turn_events_written_total",
                "Events appended to the stream.",
            ),
            turn_events_dropped: counter(
                &registry,
                "credentials_turn_events_dropped_total",
                "Events lost (queue full, Redis errors).",
            ),
            active_allocations,
            registry,
        }
    }

    pub fn request(&self, outcome: Outcome) {
        self.requests[outcome as usize].inc();
    }

    pub fn requests(&self, outcome: Outcome) -> u64 {
        self.requests[outcome as usize].get()
    }

    /// The Prometheus text of every metric here.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}
