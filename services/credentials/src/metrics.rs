//! Prometheus counters for /metrics, in the text exposition format. Labels are fixed
//! words (routes, outcomes, sources): no subject, key, IP or secret ever becomes a label.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

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

#[derive(Debug, Default)]
pub struct Metrics {
    requests: [Counter; 5],
    pub rotations: Counter,
    pub secrets_retired: Counter,
    pub turn_events: Counter,
    pub turn_events_written: Counter,
    pub turn_events_dropped: Counter,
    pub active_allocations: AtomicU64,
}

impl Metrics {
    pub fn request(&self, outcome: Outcome) {
        self.requests[outcome as usize].inc();
    }

    pub fn requests(&self, outcome: Outcome) -> u64 {
        self.requests[outcome as usize].get()
    }

    pub fn render(&self, source: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP credentials_requests_total Credential requests by outcome.");
        let _ = writeln!(out, "# TYPE credentials_requests_total counter");
        for outcome in Outcome::ALL {
            let _ = writeln!(
                out,
                "credentials_requests_total{{source=\"{source}\",outcome=\"{}\"}} {}",
                outcome.label(),
                self.requests(outcome)
            );
        }
        let counters = [
            ("credentials_secret_rotations_total", "TURN secrets added by rotation.", &self.rotations),
            ("credentials_secrets_retired_total", "TURN secrets removed after their overlap.", &self.secrets_retired),
            ("credentials_turn_events_total", "coturn allocation events received.", &self.turn_events),
            ("credentials_turn_events_written_total", "Events appended to the stream.", &self.turn_events_written),
            (
                "credentials_turn_events_dropped_total",
                "Events lost (queue full, Redis errors).",
                &self.turn_events_dropped,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", counter.get());
        }
        let _ = writeln!(
            out,
            "# HELP credentials_turn_active_allocations Active coturn allocations seen.\n# TYPE credentials_turn_active_allocations gauge\ncredentials_turn_active_allocations {}",
            self.active_allocations.load(Ordering::Relaxed)
        );
        out
    }
}
