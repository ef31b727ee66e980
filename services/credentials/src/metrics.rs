//! Prometheus metrics for /metrics, through the `prometheus` crate's registry. Labels
//! are fixed words (sources, endpoints, outcomes, reasons) or operator-configured TURN
//! realms (capped at [`MAX_REALMS`]): no subject, key, IP or secret ever becomes a label.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::auth::AuthError;
use crate::providers::ProviderError;
use crate::stats::RealmTotals;

/// Realms exported as labels; the rest are summed under `realm="other"` so a
/// misconfigured coturn cannot grow the series without bound.
pub const MAX_REALMS: usize = 32;

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

/// The credential endpoints, one label value each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    TurnCredentials,
    ApiTurnCredentials,
    TurnConfig,
    WebrtcConfig,
    RestDraft,
}

impl Endpoint {
    const ALL: [Endpoint; 5] = [
        Endpoint::TurnCredentials,
        Endpoint::ApiTurnCredentials,
        Endpoint::TurnConfig,
        Endpoint::WebrtcConfig,
        Endpoint::RestDraft,
    ];

    /// The route, as operators read it.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::TurnCredentials => "/turn-credentials",
            Endpoint::ApiTurnCredentials => "/api/turn-credentials",
            Endpoint::TurnConfig => "/api/turn/config",
            Endpoint::WebrtcConfig => "/api/meetings/webrtc-config",
            Endpoint::RestDraft => "/api/v1/turn",
        }
    }
}

/// Which limiter refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    Ip,
    Subject,
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

/// The ages of the secrets coturn accepts, from their `added_at` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretAges {
    pub newest_added_ms: u64,
    pub oldest_added_ms: u64,
}

/// The `reason` label of `credentials_auth_failures_total`.
const AUTH_FAILURE_REASONS: [&str; 4] = ["missing", "invalid", "not_configured", "keys_unavailable"];

pub struct Metrics {
    registry: Registry,
    /// By [`Endpoint`] then [`Outcome`], resolved once for the service's source.
    requests: [[IntCounter; 5]; 5],
    issue_seconds: Histogram,
    provider_seconds: HistogramVec,
    provider_failures: IntCounterVec,
    auth_failures: IntCounterVec,
    /// By [`LimitScope`].
    rate_limited: [IntCounter; 2],
    secret_age: IntGaugeVec,
    rotate_period: IntGaugeVec,
    pub rotations: Counter,
    pub secrets_retired: Counter,
    pub turn_events: Counter,
    pub turn_events_written: Counter,
    pub turn_events_dropped: Counter,
    pub amqp_published: Counter,
    pub amqp_dropped: Counter,
    pub amqp_connected: prometheus::IntGauge,
    open_sockets: prometheus::IntGauge,
    refused_connections: IntCounter,
    turn_active: IntGaugeVec,
    turn_created: IntCounterVec,
    turn_deleted: IntCounterVec,
    turn_bytes: IntCounterVec,
    turn_packets: IntCounterVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry.register(Box::new(metric.clone())).expect("registered once");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str) -> Counter {
    Counter(register(registry, IntCounter::new(name, help).expect("a valid metric")))
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric"))
}

/// Latency buckets from 0.5 ms (minting) to 10 s (a provider near its timeout).
fn latency_buckets() -> Vec<f64> {
    vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
}

impl Metrics {
    /// Metrics of a service whose credentials come from `source` (its label value).
    pub fn new(source: &str) -> Self {
        let registry = Registry::new();
        let requests_vec = counter_vec(
            &registry,
            "credentials_requests_total",
            "Credential requests by endpoint and outcome.",
            &["source", "endpoint", "outcome"],
        );
        let requests =
            Endpoint::ALL.map(|e| Outcome::ALL.map(|o| requests_vec.with_label_values(&[source, e.path(), o.label()])));
        let issue_seconds = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "credentials_issue_seconds",
                    "Time to answer a credential request (authentication, limits and the source).",
                )
                .buckets(latency_buckets()),
                &["source"],
            )
            .expect("a valid metric"),
        )
        .with_label_values(&[source]);
        let provider_seconds = register(
            &registry,
            HistogramVec::new(
                HistogramOpts::new("credentials_provider_request_seconds", "Calls to a hosted TURN provider's API.")
                    .buckets(latency_buckets()),
                &["provider"],
            )
            .expect("a valid metric"),
        );
        let provider_failures = counter_vec(
            &registry,
            "credentials_provider_failures_total",
            "Failed calls to a hosted TURN provider, by reason (unreachable, status, shape).",
            &["provider", "reason"],
        );
        let auth_failures = counter_vec(
            &registry,
            "credentials_auth_failures_total",
            "Requests refused by authentication, by reason (missing, invalid, not_configured, keys_unavailable).",
            &["reason"],
        );
        // Every label value known in advance is shown from the start (at 0), so an error
        // panel reads 0 rather than "no data" before the first error: the auth reasons,
        // and the provider failures of the configured source.
        for reason in AUTH_FAILURE_REASONS {
            auth_failures.with_label_values(&[reason]);
        }
        for reason in crate::providers::ProviderError::REASONS {
            provider_failures.with_label_values(&[source, reason]);
        }
        let rate_limited_vec = counter_vec(
            &registry,
            "credentials_rate_limited_total",
            "Requests refused by a rate limit, by the limiter (ip, subject).",
            &["scope"],
        );
        let rate_limited = ["ip", "subject"].map(|s| rate_limited_vec.with_label_values(&[s]));
        let secret_age = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "credentials_turn_secret_age_seconds",
                    "Age of the newest and the oldest TURN secret coturn accepts (REDIS_URL keyrings).",
                ),
                &["secret"],
            )
            .expect("a valid metric"),
        );
        let rotate_period = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "credentials_turn_secret_rotate_period_seconds",
                    "TURN_SECRET_ROTATE_SECS, when automatic rotation is on (alerts compare the newest secret's age with it).",
                ),
                &[],
            )
            .expect("a valid metric"),
        );
        let turn_active = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("credentials_turn_active_allocations", "Active coturn allocations seen, by realm."),
                &["realm"],
            )
            .expect("a valid metric"),
        );
        Self {
            requests,
            issue_seconds,
            provider_seconds,
            provider_failures,
            auth_failures,
            rate_limited,
            secret_age,
            rotate_period,
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
            amqp_published: counter(
                &registry,
                "credentials_amqp_events_published_total",
                "TURN events the AMQP broker confirmed (AMQP_URL).",
            ),
            amqp_dropped: counter(
                &registry,
                "credentials_amqp_events_dropped_total",
                "TURN events dropped because the AMQP buffer was full (broker away).",
            ),
            amqp_connected: register(
                &registry,
                prometheus::IntGauge::new("credentials_amqp_connected", "1 while connected to the AMQP broker.")
                    .expect("a valid metric"),
            ),
            open_sockets: register(
                &registry,
                prometheus::IntGauge::new(
                    "credentials_open_sockets",
                    "TCP connections open on this replica, counted against MAX_CONNECTIONS.",
                )
                .expect("a valid metric"),
            ),
            refused_connections: counter(
                &registry,
                "credentials_refused_connections_total",
                "Connections refused with 503 because the replica was at MAX_CONNECTIONS.",
            )
            .0,
            turn_active,
            turn_created: counter_vec(
                &registry,
                "credentials_turn_allocations_created_total",
                "coturn allocations created, by realm.",
                &["realm"],
            ),
            turn_deleted: counter_vec(
                &registry,
                "credentials_turn_allocations_deleted_total",
                "coturn allocations ended (deleted, or expired without a refresh), by realm.",
                &["realm"],
            ),
            turn_bytes: counter_vec(
                &registry,
                "credentials_turn_traffic_bytes_total",
                "Bytes relayed by coturn, by realm, side (client, peer) and direction (received, sent).",
                &["realm", "side", "direction"],
            ),
            turn_packets: counter_vec(
                &registry,
                "credentials_turn_traffic_packets_total",
                "Packets relayed by coturn, by realm, side (client, peer) and direction (received, sent).",
                &["realm", "side", "direction"],
            ),
            registry,
        }
    }

    pub fn request(&self, endpoint: Endpoint, outcome: Outcome) {
        self.requests[endpoint as usize][outcome as usize].inc();
    }

    /// Requests with `outcome`, over every endpoint.
    pub fn requests(&self, outcome: Outcome) -> u64 {
        self.requests.iter().map(|by_outcome| by_outcome[outcome as usize].get()).sum()
    }

    pub fn issued_in(&self, elapsed: Duration) {
        self.issue_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn provider_call(&self, provider: &str, elapsed: Duration, failure: Option<&ProviderError>) {
        self.provider_seconds.with_label_values(&[provider]).observe(elapsed.as_secs_f64());
        if let Some(e) = failure {
            self.provider_failures.with_label_values(&[provider, e.reason()]).inc();
        }
    }

    pub fn auth_failure(&self, error: &AuthError) {
        let reason = match error {
            AuthError::Missing(_) => AUTH_FAILURE_REASONS[0],
            AuthError::Invalid(_) => AUTH_FAILURE_REASONS[1],
            AuthError::NotConfigured => AUTH_FAILURE_REASONS[2],
            AuthError::KeysUnavailable => AUTH_FAILURE_REASONS[3],
        };
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    pub fn rate_limited(&self, scope: LimitScope) {
        self.rate_limited[scope as usize].inc();
    }

    /// Sets the secret ages at `now_ms`.
    pub fn secret_ages(&self, ages: SecretAges, now_ms: u64) {
        let age = |added: u64| (now_ms.saturating_sub(added) / 1000) as i64;
        self.secret_age.with_label_values(&["newest"]).set(age(ages.newest_added_ms));
        self.secret_age.with_label_values(&["oldest"]).set(age(ages.oldest_added_ms));
    }

    /// The connection gate's figures, at a scrape.
    pub fn connections(&self, open: usize, refused: u64) {
        self.open_sockets.set(open as i64);
        catch_up(&self.refused_connections, refused);
    }

    /// Automatic rotation is on, every `period`.
    pub fn rotates_every(&self, period: Duration) {
        self.rotate_period.with_label_values(&[] as &[&str]).set(period.as_secs() as i64);
    }

    /// Brings the TURN series up to the allocation table's totals (they only grow, so
    /// each counter is advanced by what it lacks).
    pub fn turn_totals(&self, realms: &BTreeMap<String, RealmTotals>) {
        let mut capped: BTreeMap<&str, RealmTotals> = BTreeMap::new();
        for (i, (realm, totals)) in realms.iter().enumerate() {
            let label = if i < MAX_REALMS { realm.as_str() } else { "other" };
            capped.entry(label).or_default().merge(totals);
        }
        for (realm, t) in capped {
            self.turn_active.with_label_values(&[realm]).set(t.active_allocations as i64);
            catch_up(&self.turn_created.with_label_values(&[realm]), t.allocations_created);
            catch_up(&self.turn_deleted.with_label_values(&[realm]), t.allocations_deleted);
            for (side, traffic) in [("client", &t.traffic), ("peer", &t.peer_traffic)] {
                catch_up(&self.turn_bytes.with_label_values(&[realm, side, "received"]), traffic.received_bytes);
                catch_up(&self.turn_bytes.with_label_values(&[realm, side, "sent"]), traffic.sent_bytes);
                catch_up(&self.turn_packets.with_label_values(&[realm, side, "received"]), traffic.received_packets);
                catch_up(&self.turn_packets.with_label_values(&[realm, side, "sent"]), traffic.sent_packets);
            }
        }
    }

    /// The Prometheus text of every metric here.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

fn catch_up(counter: &IntCounter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Traffic;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn turn_totals_advance_counters_and_cap_realms() {
        let metrics = Metrics::new("rest");
        let mut realms = BTreeMap::new();
        let totals = |n: u64| RealmTotals {
            active_allocations: n as usize,
            allocations_created: n,
            allocations_deleted: 0,
            traffic: Traffic { received_bytes: 100 * n, ..Default::default() },
            peer_traffic: Traffic::default(),
        };
        realms.insert("a.example".to_owned(), totals(2));
        metrics.turn_totals(&realms);
        realms.insert("a.example".to_owned(), totals(3));
        metrics.turn_totals(&realms);
        let text = metrics.render();
        assert_eq!(value(&text, r#"credentials_turn_allocations_created_total{realm="a.example"}"#), Some(3.0));
        assert_eq!(
            value(
                &text,
                r#"credentials_turn_traffic_bytes_total{direction="received",realm="a.example",side="client"}"#
            ),
            Some(300.0)
        );

        for i in 0..MAX_REALMS + 5 {
            realms.insert(format!("r{i:03}"), totals(1));
        }
        metrics.turn_totals(&realms);
        let text = metrics.render();
        let series = text.lines().filter(|l| l.starts_with("credentials_turn_active_allocations{")).count();
        assert_eq!(series, MAX_REALMS + 1, "{text}");
        assert_eq!(value(&text, r#"credentials_turn_active_allocations{realm="other"}"#), Some(6.0));
    }

    #[test]
    fn requests_sum_over_endpoints() {
        let metrics = Metrics::new("rest");
        metrics.request(Endpoint::TurnCredentials, Outcome::Issued);
        metrics.request(Endpoint::RestDraft, Outcome::Issued);
        metrics.request(Endpoint::RestDraft, Outcome::RateLimited);
        assert_eq!(metrics.requests(Outcome::Issued), 2);
        let text = metrics.render();
        assert_eq!(
            value(&text, r#"credentials_requests_total{endpoint="/api/v1/turn",outcome="rate_limited",source="rest"}"#),
            Some(1.0)
        );
    }
}
