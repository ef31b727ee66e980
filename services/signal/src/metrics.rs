//! The node's Prometheus metrics (the `prometheus` crate; docs/observability.md lists
//! them). Labels are bounded sets: dialects, reasons, error codes, signal kinds folded
//! to offer / answer / candidate / other, routes; never a room, peer or user.
//!
//! Hot-path counters are resolved to their label children once, here, so counting a
//! relayed signal is one atomic add.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use protocol::{ErrorCode, LeftReason};

/// Cross-node relay latency buckets, in seconds: 100 µs to 2.5 s.
const RELAY_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Signal kinds as labelled: the three of WebRTC, everything else as `other`.
const KINDS: [&str; 4] = ["offer", "answer", "candidate", "other"];

pub struct NodeMetrics {
    registry: Registry,
    connections: IntGaugeVec,
    connects: IntCounterVec,
    pub joins: IntCounter,
    leaves: IntCounterVec,
    /// [route][kind]: route 0 = local, 1 = cross-node.
    signals: [[IntCounter; 4]; 2],
    pub broadcasts: IntCounter,
    client_errors: IntCounterVec,
    nodes_lost: IntCounter,
    members_lost: IntCounter,
    disconnects: IntCounterVec,
    /// Time to handle one client frame (decode, the command, the answer written).
    pub frame_handling: Histogram,
    pub resyncs: IntCounter,
    pub probes_overdue: IntCounter,
    /// Events waiting for a connection when it starts writing a batch.
    pub outbound_queue: Histogram,
    /// Signals carried by each publish to another node's inbox.
    pub signals_per_publish: Histogram,
    store_seconds: prometheus::HistogramVec,
    store_errors: IntCounterVec,
    /// From the moment the sending node published a signal to the moment the target's
    /// node handed it to the target's connection.
    pub cross_node_relay: Histogram,
    /// Gauges and counters kept elsewhere (the bus statistics, the core's maps), brought
    /// up to date at each scrape.
    pub scraped: Scraped,
    pub resume: ResumeMetrics,
}

/// Resume: members held away, resumes, and what their hand-over cost.
pub struct ResumeMetrics {
    /// Outcome: resumed, failed.
    pub resumes: IntCounterVec,
    /// From `resume` read to `resumed` written.
    pub seconds: Histogram,
    /// Members whose connection dropped, held on this node.
    pub away: IntGauge,
    /// Held members whose grace ran out here (they left, reason disconnected).
    pub expired: IntCounter,
    /// Held members whose queue filled before they resumed (they left at once).
    pub overflowed: IntCounter,
    /// Events forwarded to the node a member resumed on.
    pub forwarded: IntCounter,
    /// Forwarded events that found no resumed member here, or could not be published.
    pub forward_lost: IntCounter,
    /// Resumed members whose fences did not all arrive within the bound.
    pub fence_timeouts: IntCounter,
}

impl ResumeMetrics {
    fn new(registry: &Registry) -> Self {
        let seconds = Histogram::with_opts(
            HistogramOpts::new("signal_resume_seconds", "Time from a client's resume to its resumed answer.")
                .buckets(RELAY_BUCKETS.to_vec()),
        )
        .expect("a valid metric");
        registry.register(Box::new(seconds.clone())).expect("registered once");
        let resumes =
            counter_vec(registry, "signal_resumes_total", "Resume requests on this node, by outcome.", &["outcome"]);
        for outcome in ["resumed", "failed"] {
            resumes.with_label_values(&[outcome]);
        }
        Self {
            resumes,
            seconds,
            away: gauge(registry, "signal_away_members", "Connections held away on this node, waiting for a resume."),
            expired: counter(
                registry,
                "signal_resume_expired_total",
                "Away connections whose grace ran out here (their members left, reason disconnected).",
            ),
            overflowed: counter(
                registry,
                "signal_resume_held_overflow_total",
                "Away connections whose held events filled their queue (their members left at once).",
            ),
            forwarded: counter(
                registry,
                "signal_resume_forwarded_total",
                "Held events forwarded to the node a member resumed on.",
            ),
            forward_lost: counter(
                registry,
                "signal_resume_forward_lost_total",
                "Forwarded events lost: no resumed member here to take them, or the publish failed.",
            ),
            fence_timeouts: counter(
                registry,
                "signal_resume_fence_timeouts_total",
                "Resumed members released before every fence arrived (per-pair order then rests on timing).",
            ),
        }
    }
}

pub struct Scraped {
    pub rooms: IntGauge,
    pub members: IntGauge,
    pub open_sockets: IntGauge,
    pub refused_connections: IntCounter,
    pub ready: IntGauge,
    pub owed_removals: IntGauge,
    pub unreadable: IntCounter,
    pub lagged: IntCounter,
    pub lost: IntCounterVec,
    pub gaps: IntCounter,
    pub bounces_dropped: IntCounter,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("a valid metric");
    registry.register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("a valid metric");
    registry.register(Box::new(g.clone())).expect("registered once");
    g
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
    registry.register(Box::new(c.clone())).expect("registered once");
    c
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let connections =
            IntGaugeVec::new(Opts::new("signal_connections", "Open client connections, by dialect."), &["dialect"])
                .expect("a valid metric");
        registry.register(Box::new(connections.clone())).expect("registered once");
        let signals_vec = counter_vec(
            &registry,
            "signal_signals_relayed_total",
            "Signals relayed to a peer, by kind (offer, answer, candidate, other) and route (local: both peers on this node; cross-node: one publish to the target's node).",
            &["kind", "route"],
        );
        let route = |r: &str| KINDS.map(|k| signals_vec.with_label_values(&[k, r]));
        let cross_node_relay = Histogram::with_opts(
            HistogramOpts::new(
                "signal_cross_node_relay_seconds",
                "Time from the sending node's publish to the target node handing the signal to the target's connection (clocks of the two nodes; a negative skew counts as 0).",
            )
            .buckets(RELAY_BUCKETS.to_vec()),
        )
        .expect("a valid metric");
        registry.register(Box::new(cross_node_relay.clone())).expect("registered once");
        let build = IntGaugeVec::new(
            Opts::new("signal_build_info", "The running build: version and git commit."),
            &["version", "git_sha"],
        )
        .expect("a valid metric");
        registry.register(Box::new(build.clone())).expect("registered once");
        build.with_label_values(&[env!("CARGO_PKG_VERSION"), option_env!("GIT_SHA").unwrap_or("unknown")]).set(1);
        let scraped = Scraped {
            rooms: gauge(&registry, "signal_rooms", "Rooms with members on this node."),
            members: gauge(
                &registry,
                "signal_members",
                "Room members served by this node (a connection in two rooms counts twice).",
            ),
            open_sockets: gauge(
                &registry,
                "signal_open_sockets",
                "TCP connections open on this node (HTTP and WebSocket), counted against MAX_CONNECTIONS.",
            ),
            refused_connections: counter(
                &registry,
                "signal_refused_connections_total",
                "Connections refused with 503 because the node was at MAX_CONNECTIONS.",
            ),
            ready: gauge(&registry, "signal_ready", "1 when /readyz passes."),
            owed_removals: gauge(
                &registry,
                "signal_owed_removals",
                "Member removals Redis has not confirmed yet (retried every heartbeat).",
            ),
            unreadable: counter(
                &registry,
                "signal_dropped_envelopes_total",
                "Bus messages that reached this node but could not be decoded.",
            ),
            lagged: counter(
                &registry,
                "signal_bus_lagged_messages_total",
                "Bus messages lost because this node fell behind (overload); the sum of signal_bus_lost_messages_total.",
            ),
            lost: counter_vec(
                &registry,
                "signal_bus_lost_messages_total",
                "Bus messages lost because this node fell behind, by what they carried.",
                &["kind"],
            ),
            gaps: counter(
                &registry,
                "signal_bus_gaps_total",
                "Times the bus subscription, or one room channel whose probe failed, was re-established: messages published meanwhile may be lost, uncounted.",
            ),
            bounces_dropped: counter(
                &registry,
                "signal_bounces_dropped_total",
                "Notices of undeliverable signals dropped because their queue was full.",
            ),
        };
        let metrics = Self {
            connects: counter_vec(&registry, "signal_connects_total", "Connections opened, by dialect.", &["dialect"]),
            joins: counter(&registry, "signal_joins_total", "Rooms joined by this node's clients."),
            leaves: counter_vec(
                &registry,
                "signal_leaves_total",
                "Members of this node that left a room, by reason (left, disconnected, closed, removed).",
                &["reason"],
            ),
            signals: [route("local"), route("cross-node")],
            broadcasts: counter(&registry, "signal_broadcasts_total", "Broadcasts sent by this node's clients."),
            disconnects: counter_vec(
                &registry,
                "signal_disconnects_total",
                "Connections ended, by why: client (it closed), socket (the connection failed), draining, too-slow (its outbound queue overflowed), misbehaving (rate limit or bad frames, repeatedly), idle.",
                &["reason"],
            ),
            frame_handling: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "signal_frame_handling_seconds",
                        "Time to handle one client frame: decoding, the command (including its Redis calls) and writing the answer.",
                    )
                    .buckets(RELAY_BUCKETS.to_vec()),
                )
                .expect("a valid metric");
                registry.register(Box::new(h.clone())).expect("registered once");
                h
            },
            store_seconds: {
                let h = prometheus::HistogramVec::new(
                    HistogramOpts::new(
                        "signal_redis_command_seconds",
                        "Latency of the node's calls to Redis (a Lua script, a publish, a subscription change), by operation.",
                    )
                    .buckets(RELAY_BUCKETS.to_vec()),
                    &["op"],
                )
                .expect("a valid metric");
                registry.register(Box::new(h.clone())).expect("registered once");
                h
            },
            store_errors: counter_vec(&registry, "signal_redis_errors_total", "Calls to Redis that failed, by operation.", &["op"]),
            outbound_queue: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "signal_outbound_queue_depth",
                        "Events waiting in a connection's outbound queue when it starts writing a batch (a slow reader's queue grows towards OUTBOUND_QUEUE, where it is disconnected).",
                    )
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0]),
                )
                .expect("a valid metric");
                registry.register(Box::new(h.clone())).expect("registered once");
                h
            },
            signals_per_publish: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "signal_bus_signals_per_publish",
                        "Signals carried by one publish to another node's inbox: those queued for that node at the same moment leave as one message.",
                    )
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
                )
                .expect("a valid metric");
                registry.register(Box::new(h.clone())).expect("registered once");
                h
            },
            resyncs: counter(&registry, "signal_resyncs_total", "Resynchronisations of this node's rooms with Redis (after a bus gap, a lost heartbeat key, or on request)."),
            probes_overdue: counter(&registry, "signal_probes_overdue_total", "Probes of the node's own subscription that did not come back in time (the subscriber is then reconnected)."),
            nodes_lost: counter(
                &registry,
                "signal_nodes_reaped_total",
                "Dead nodes whose members this node removed and announced as node-lost.",
            ),
            members_lost: counter(
                &registry,
                "signal_node_lost_members_total",
                "Members of dead nodes this node announced as node-lost.",
            ),
            client_errors: counter_vec(
                &registry,
                "signal_client_errors_total",
                "Errors sent to clients, by protocol code.",
                &["code"],
            ),
            cross_node_relay,
            connections,
            scraped,
            resume: ResumeMetrics::new(&registry),
            registry,
        };
        // Every label value known in advance is shown from the start (at 0), so a
        // dashboard's rate is 0 rather than "no data" before the first event.
        for dialect in ["native", "plain", "socketio"] {
            metrics.connections.with_label_values(&[dialect]);
            metrics.connects.with_label_values(&[dialect]);
        }
        for reason in ["left", "disconnected", "node-lost", "closed", "removed"] {
            metrics.leaves.with_label_values(&[reason]);
        }
        for reason in ["client", "socket", "draining", "too-slow", "misbehaving", "idle", "taken-over"] {
            metrics.disconnects.with_label_values(&[reason]);
        }
        for code in ErrorCode::ALL {
            metrics.client_errors.with_label_values(&[code.as_str()]);
        }
        metrics
    }

    pub fn connection_opened(&self, dialect: &'static str) {
        self.connects.with_label_values(&[dialect]).inc();
        self.connections.with_label_values(&[dialect]).inc();
    }

    pub fn connection_closed(&self, dialect: &'static str) {
        self.connections.with_label_values(&[dialect]).dec();
    }

    pub fn left(&self, reason: LeftReason) {
        let label = match reason {
            LeftReason::Left => "left",
            LeftReason::Disconnected => "disconnected",
            LeftReason::NodeLost => "node-lost",
            LeftReason::Closed => "closed",
            LeftReason::Removed => "removed",
        };
        self.leaves.with_label_values(&[label]).inc();
    }

    /// A signal kind's slot in `signal_signals_relayed_total` (other kinds share one).
    pub fn kind_slot(kind: &str) -> usize {
        KINDS.iter().position(|k| *k == kind).unwrap_or(KINDS.len() - 1)
    }

    pub fn signal_relayed(&self, kind_slot: usize, cross_node: bool) {
        self.signals[usize::from(cross_node)][kind_slot].inc();
    }

    /// The observer that times every store operation into these metrics.
    pub fn store_timings(&self) -> StoreTimings {
        let slots = bus::Operation::ALL
            .iter()
            .map(|op| {
                let label = [op.name()];
                (self.store_seconds.with_label_values(&label), self.store_errors.with_label_values(&label))
            })
            .collect();
        StoreTimings { slots }
    }

    pub fn disconnected(&self, reason: &'static str) {
        self.disconnects.with_label_values(&[reason]).inc();
    }

    pub fn node_lost(&self, members: usize) {
        self.nodes_lost.inc();
        self.members_lost.inc_by(members as u64);
    }

    pub fn client_error(&self, code: ErrorCode) {
        self.client_errors.with_label_values(&[code.as_str()]).inc();
    }

    /// The Prometheus text of every metric here.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

/// Brings a counter kept elsewhere (it only grows) up to `current`.
pub fn catch_up(counter: &IntCounter, current: u64) {
    counter.inc_by(current.saturating_sub(counter.get()));
}

/// Times the store's operations (`signal_redis_command_seconds{op}`,
/// `signal_redis_errors_total{op}`), and traces them under a recorded command. The
/// metrics are resolved once per operation, so an observation is one lookup by index.
pub struct StoreTimings {
    /// By [`bus::Operation::index`]: (latency, errors).
    slots: Vec<(Histogram, IntCounter)>,
}

impl bus::StoreObserver for StoreTimings {
    /// A Redis call's span, under the recorded command or delivery that made the call
    /// (the node's own background calls, heartbeats and probes, are not traced).
    fn span(&self, operation: bus::Operation) -> Option<tracing::Span> {
        telemetry::traces::in_trace().then(|| {
            let name = operation.name();
            tracing::info_span!(
                target: telemetry::traces::TARGET,
                "redis",
                otel.name = name,
                otel.kind = "client",
                db.system = "redis",
                db.operation.name = name
            )
        })
    }

    fn observed(&self, operation: bus::Operation, elapsed: std::time::Duration, ok: bool) {
        let (seconds, errors) = &self.slots[operation.index()];
        seconds.observe(elapsed.as_secs_f64());
        if !ok {
            errors.inc();
        }
    }
}
