//! Liveness: keeping the node honest about its health and the cluster clean.
//! - A heartbeat key with a TTL marks the node alive. A missing key on a later beat
//!   means Redis lost data (restart, FLUSHALL) or declared us dead; the core then
//!   resyncs, which writes our members back.
//! - A probe published to our own inbox must come back, or the subscription is
//!   considered dead: /readyz fails and the subscriber reconnects.
//! - Nodes whose heartbeat expired are reaped once the resume grace has passed since
//!   their last heartbeat ([`dead_nodes`]): their members leave their rooms with reason
//!   `node-lost` (one node claims each clean-up; the leave script publishes only for
//!   members it actually removed, so nobody hears it twice).
//!
//! The part owns what /readyz reports ([`Health`]) and the reaper's timing; the core's
//! heartbeat tick (`core/upkeep.rs`) calls it in order with the room directory's
//! upkeep.

mod dead_nodes;
mod health;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{Backend, BackendError, Heartbeat};
use bytes::Bytes;
use protocol::{BusEvent, Envelope, LeftReason, MemberInfo, NodeId};
use tracing::{debug, info, warn};

use super::envelope;
use crate::metrics::NodeMetrics;

use health::ProbeState;
pub use health::{Health, PROBE_PATIENCE};

/// How long a reaper's claim on a dead node lasts.
const REAP_CLAIM_MS: u64 = 30_000;

pub struct Liveness {
    node: NodeId,
    store: Arc<dyn Backend>,
    metrics: Arc<NodeMetrics>,
    /// NODE_TTL_MS: how long the heartbeat key lives.
    node_ttl: Duration,
    health: Health,
    dead_nodes: dead_nodes::DeadNodes,
}

/// What a heartbeat found.
#[derive(Debug, PartialEq, Eq)]
pub enum Beat {
    /// Redis did not answer: nothing else is worth trying this tick.
    Unreachable,
    /// Alive, and nothing to repair.
    Steady,
    /// Alive, but the node's members must be written back: its heartbeat key was gone,
    /// or the last resync did not finish.
    Resync(&'static str),
}

impl Liveness {
    /// `grace`: RESUME_GRACE_MS, which a dead node's members get to resume elsewhere.
    pub fn new(
        node: NodeId,
        store: Arc<dyn Backend>,
        metrics: Arc<NodeMetrics>,
        heartbeat_interval: Duration,
        node_ttl: Duration,
        grace: Duration,
    ) -> Self {
        Self {
            node,
            store,
            metrics,
            node_ttl,
            health: Health::new(heartbeat_interval),
            dead_nodes: dead_nodes::DeadNodes::new(grace),
        }
    }

    /// What /readyz reports.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The node's first heartbeat, before it serves.
    pub async fn register(&self) -> Result<(), BackendError> {
        if let Some(registry) = self.store.registry() {
            registry.heartbeat(&self.node, self.node_ttl.as_millis() as u64).await?;
        }
        Ok(())
    }

    /// One heartbeat. With no registry (the embedded backend) there is nobody to beat
    /// for: the store answering is all the node's health needs.
    pub async fn beat(&self) -> Beat {
        let beat = match self.store.registry() {
            Some(registry) => registry.heartbeat(&self.node, self.node_ttl.as_millis() as u64).await,
            None => self.store.ping().await.map(|()| Heartbeat::Continued),
        };
        let beat = match beat {
            Ok(beat) => beat,
            Err(e) => {
                if self.health.redis_lost() {
                    warn!(error = %e, "redis unreachable; node not ready");
                }
                return Beat::Unreachable;
            }
        };
        self.health.set_redis(true);
        // After Redis was away (or failed over, or lost data: our own key was gone),
        // every node's heartbeat may have lapsed: give them a TTL to write it again
        // before anyone is declared dead.
        if self.health.outage_over() || beat == Heartbeat::Fresh {
            self.health.pause_reaping(Instant::now() + self.node_ttl);
        }
        if beat == Heartbeat::Fresh {
            warn!("heartbeat key was missing: Redis lost data or declared this node dead; resyncing");
            Beat::Resync("heartbeat key missing")
        } else if self.health.resync_pending() {
            Beat::Resync("retry")
        } else {
            Beat::Steady
        }
    }

    /// One probe per tick: published to our own inbox, it must come back through the
    /// subscription within one interval. A publish that reaches nobody, or a probe
    /// that never returns, means the subscription is dead: reconnect the subscriber
    /// (which resubscribes and resyncs) and probe again on the next tick.
    pub async fn probe(&self) {
        match self.health.probe_state(Instant::now()) {
            ProbeState::Waiting => return,
            ProbeState::Overdue => {
                self.metrics.probes_overdue.inc();
                self.health.clear_probe();
                if self.health.may_reconnect_subscriber(Instant::now()) {
                    warn!("bus subscription did not deliver our probe; reconnecting the subscriber");
                    self.reconnect_subscriber().await;
                }
                return;
            }
            ProbeState::Idle => {}
        }
        let nonce = self.health.start_probe();
        let msg = Bytes::from(Envelope::new(self.node.clone(), BusEvent::Probe { nonce }).encode());
        match self.store.publish_node(&self.node, msg).await {
            Ok(0) => {
                self.health.clear_probe();
                if self.health.may_reconnect_subscriber(Instant::now()) {
                    warn!("our own inbox has no subscriber; reconnecting the subscriber");
                    self.reconnect_subscriber().await;
                }
            }
            Ok(_) => {}
            Err(e) => {
                debug!(error = %e, "probe publish failed");
                self.health.clear_probe();
            }
        }
    }

    async fn reconnect_subscriber(&self) {
        if let Err(e) = self.store.resubscribe().await {
            warn!(error = %e, "subscriber reconnect failed");
        }
    }

    /// Reaps every dead node whose members' grace is over, one claim at a time.
    pub async fn reap_dead_nodes(&self) {
        if !self.health.may_reap(Instant::now()) {
            return;
        }
        let Some(registry) = self.store.registry() else { return };
        let dead = match registry.dead_nodes(&self.node).await {
            Ok(dead) => dead,
            Err(e) => return debug!(error = %e, "dead-node scan failed"),
        };
        self.dead_nodes.forget_revived(&dead.iter().map(|d| d.node.clone()).collect::<Vec<_>>());
        let now = Instant::now();
        for bus::DeadNode { node, silent_for } in dead {
            if !self.dead_nodes.reap_due(&node, silent_for, now) {
                continue;
            }
            match registry.claim_reap(&node, &self.node, REAP_CLAIM_MS).await {
                Ok(true) => match self.reap(registry, &node).await {
                    Ok(peers) => {
                        self.metrics.node_lost(peers);
                        info!(%node, peers, "reaped a dead node")
                    }
                    Err(e) => warn!(%node, error = %e, "reaping a dead node failed; another node retries"),
                },
                Ok(false) => {}
                Err(e) => debug!(error = %e, "reap claim failed"),
            }
        }
    }

    /// Removes a dead node's members from their rooms; returns how many were removed.
    async fn reap(&self, registry: &dyn bus::Registry, dead: &NodeId) -> Result<usize, BackendError> {
        let mut removed = 0;
        for room in registry.node_rooms(dead).await? {
            for record in self.store.members(&room).await? {
                let Ok(member) = MemberInfo::decode(&record) else { continue };
                if !member.is_served_by(dead) {
                    continue;
                }
                let left =
                    BusEvent::Left { room: room.clone(), peer: member.peer.clone(), reason: LeftReason::NodeLost };
                // Unless it moved to a live node (it resumed) since its record was read.
                let announcement = envelope(&self.node, left);
                if self.store.leave_if_unchanged(&room, &member.peer, record.clone(), announcement).await? {
                    removed += 1;
                }
            }
        }
        registry.forget_node(dead).await?;
        Ok(removed)
    }

    /// Drain step: take this node's heartbeat and room index out of Redis.
    pub async fn leave_cluster(&self) {
        let Some(registry) = self.store.registry() else { return };
        if let Err(e) = registry.forget_node(&self.node).await {
            warn!(error = %e, "could not deregister; other nodes reap this node after its TTL");
        }
    }
}
