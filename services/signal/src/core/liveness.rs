//! Keeping the node honest about its health and the cluster clean:
//! - a heartbeat key with a TTL marks the node alive; a missing key on a later beat
//!   means Redis lost data (restart, FLUSHALL) or declared us dead, and triggers a
//!   resync that writes our peers and memberships back;
//! - a probe published to our own inbox must come back, or the subscription is
//!   considered dead: /readyz fails and the subscriber reconnects;
//! - nodes whose heartbeat expired are reaped: their peers leave their rooms with
//!   reason `node-lost` (one node claims each clean-up; the leave script publishes
//!   only for members it actually removed, so nobody hears it twice).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::{BusEvent, Envelope, LeftReason, MemberInfo, NodeId};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Core;

/// Intervals a probe may take before the subscription counts as dead.
const PROBE_PATIENCE: u32 = 3;

/// How long a reaper's claim on a dead node lasts.
const REAP_CLAIM_MS: u64 = 30_000;

#[derive(Default)]
struct Probe {
    outstanding: Option<(u64, Instant)>,
    last_ok: Option<Instant>,
}

/// What /readyz reports.
pub struct Health {
    interval: Duration,
    redis_ok: AtomicBool,
    draining: AtomicBool,
    resync_pending: AtomicBool,
    probe: Mutex<Probe>,
    /// When the bus last lost messages on their way here (or had a gap).
    fell_behind: Mutex<Option<Instant>>,
    /// The node's bus inbox is more than half full: it is not keeping up.
    backlog_high: AtomicBool,
    /// A heartbeat failed since the last one that went through (Redis unreachable).
    outage: AtomicBool,
    /// No reaping before this: after an outage or a failover every node's heartbeat may
    /// have expired meanwhile, and each needs a heartbeat interval to write it again.
    reap_not_before: Mutex<Option<Instant>>,
    /// When the probe last had the subscriber reconnected.
    last_reconnect: Mutex<Option<Instant>>,
}

impl Health {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            redis_ok: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            resync_pending: AtomicBool::new(false),
            probe: Mutex::new(Probe::default()),
            last_reconnect: Mutex::new(None),
            fell_behind: Mutex::new(None),
            backlog_high: AtomicBool::new(false),
            outage: AtomicBool::new(false),
            reap_not_before: Mutex::new(None),
        }
    }

    /// Reaping waits until `until`: heartbeats missed while Redis was away are no sign
    /// that a node died.
    fn pause_reaping(&self, until: Instant) {
        *self.reap_not_before.lock().expect("health lock") = Some(until);
    }

    fn may_reap(&self, now: Instant) -> bool {
        self.reap_not_before.lock().expect("health lock").is_none_or(|until| now >= until)
    }

    /// The bus lost messages for this node: not ready until the resync that follows
    /// has completed and one heartbeat interval has passed without another loss, so
    /// load balancers send new connections elsewhere meanwhile.
    pub fn bus_fell_behind(&self) {
        *self.fell_behind.lock().expect("health lock") = Some(Instant::now());
    }

    /// Called by the dispatcher with its inbox's fill level.
    pub fn set_bus_backlog(&self, queued: usize, capacity: usize) {
        let high = queued > capacity / 2;
        if self.backlog_high.load(Ordering::Relaxed) != high {
            self.backlog_high.store(high, Ordering::Relaxed);
        }
    }

    pub fn set_redis(&self, ok: bool) {
        self.redis_ok.store(ok, Ordering::Relaxed);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The inbox probe came back; false if `nonce` is not the inbox probe.
    pub fn probe_returned(&self, nonce: u64) -> bool {
        let mut probe = self.probe.lock().expect("probe lock");
        if probe.outstanding.is_some_and(|(n, _)| n == nonce) {
            probe.outstanding = None;
            probe.last_ok = Some(Instant::now());
            return true;
        }
        false
    }

    /// A join never saw its own announcement: treat the subscription as doubtful.
    pub fn subscription_suspect(&self) {
        self.probe.lock().expect("probe lock").last_ok = None;
    }

    /// Ok, or why the node must not receive traffic.
    pub fn ready(&self) -> Result<(), &'static str> {
        if self.is_draining() {
            return Err("draining");
        }
        if !self.redis_ok.load(Ordering::Relaxed) {
            return Err("redis unreachable");
        }
        if self.backlog_high.load(Ordering::Relaxed) {
            return Err("behind: the bus inbox is more than half full");
        }
        if let Some(at) = *self.fell_behind.lock().expect("health lock") {
            if at.elapsed() < self.interval || self.resync_pending.load(Ordering::Relaxed) {
                return Err("behind: bus messages were lost; resynchronising");
            }
        }
        let probe = self.probe.lock().expect("probe lock");
        match probe.last_ok {
            Some(t) if t.elapsed() <= self.interval * PROBE_PATIENCE => Ok(()),
            _ => Err("bus subscription not proven alive"),
        }
    }

    /// Where the current probe stands at `now`. The publish that sent it reached our
    /// subscription (Redis counted it), so a late probe is far more likely queued
    /// behind load than lost: it gets three intervals (the readiness window) before the
    /// subscriber is reconnected, because a reconnect drops whatever is in flight.
    fn probe_state(&self, now: Instant) -> ProbeState {
        let probe = self.probe.lock().expect("probe lock");
        match probe.outstanding {
            None => ProbeState::Idle,
            Some((_, sent)) if now.saturating_duration_since(sent) <= self.interval * PROBE_PATIENCE => {
                ProbeState::Waiting
            }
            Some(_) => ProbeState::Overdue,
        }
    }

    /// Whether the probe may have the subscriber reconnected now (and notes it): not
    /// again while the last reconnect may still be resubscribing. Reconnecting every
    /// interval tore down each resubscription before it finished, so a node's inbox
    /// could stay unsubscribed after a failover.
    fn may_reconnect_subscriber(&self, now: Instant) -> bool {
        let mut last = self.last_reconnect.lock().expect("reconnect lock");
        if last.is_some_and(|at| now.duration_since(at) < self.interval * PROBE_PATIENCE) {
            return false;
        }
        *last = Some(now);
        true
    }

    fn start_probe(&self) -> u64 {
        let nonce = rand::random();
        self.probe.lock().expect("probe lock").outstanding = Some((nonce, Instant::now()));
        nonce
    }

    /// Forgets the outstanding probe so the next tick sends a fresh one.
    fn clear_probe(&self) {
        self.probe.lock().expect("probe lock").outstanding = None;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum ProbeState {
    Idle,
    Waiting,
    Overdue,
}

impl Core {
    /// Runs heartbeat, probe, reaper and resync until `stop`.
    pub(super) async fn run_liveness(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.tick().await,
                _ = self.resync_wanted.notified() => self.resync("requested").await,
            }
        }
    }

    async fn tick(&self) {
        let ttl_ms = self.settings.node_ttl.as_millis() as u64;
        // With no registry (the embedded backend) there is nobody to beat for: the store
        // answering is all the node's health needs.
        let beat = match self.backend.registry() {
            Some(registry) => registry.heartbeat(&self.node, ttl_ms).await,
            None => self.backend.ping().await.map(|()| bus::Heartbeat::Continued),
        };
        match beat {
            Ok(beat) => {
                self.health.set_redis(true);
                // After Redis was away (or failed over, or lost data: our own key was
                // gone), every node's heartbeat may have lapsed: give them a TTL to
                // write it again before anyone is declared dead.
                if self.health.outage.swap(false, Ordering::Relaxed) || beat == bus::Heartbeat::Fresh {
                    self.health.pause_reaping(Instant::now() + self.settings.node_ttl);
                }
                if beat == bus::Heartbeat::Fresh {
                    warn!("heartbeat key was missing: Redis lost data or declared this node dead; resyncing");
                    self.resync("heartbeat key missing").await;
                } else if self.health.resync_pending.load(Ordering::Relaxed) {
                    self.resync("retry").await;
                }
            }
            Err(e) => {
                self.health.outage.store(true, Ordering::Relaxed);
                if self.health.redis_ok.swap(false, Ordering::Relaxed) {
                    warn!(error = %e, "redis unreachable; node not ready");
                }
                return;
            }
        }
        self.probe().await;
        let repaired = self.directory.probe_rooms(self.settings.heartbeat_interval * PROBE_PATIENCE).await;
        if repaired > 0 {
            // Whatever those room channels carried meanwhile never arrived.
            (0..repaired).for_each(|_| self.bus_stats.record_gap());
            self.resync_wanted.notify_one();
        }
        self.directory.settle_removals().await;
        self.reap_dead_nodes().await;
        if let Err(e) = self.directory.settle_suspects().await {
            debug!(error = %e, "suspect check failed");
        }
        self.close_expired_rooms().await;
    }

    /// Rooms created ahead whose time ran out while this node has members in them are
    /// closed (ROOM_EXPIRY=close; every node with members does it, and a second close
    /// finds nobody left) or left to finish (ROOM_EXPIRY=finish).
    async fn close_expired_rooms(&self) {
        for room in self.directory.take_expired(super::now_ms()) {
            if !self.settings.admission.close_on_expiry {
                continue;
            }
            if let Err(e) = self.close_room(&room, protocol::CloseReason::Expired, false).await {
                warn!(%room, error = %e, "closing an expired room failed");
            }
        }
    }

    /// One probe per tick: published to our own inbox, it must come back through the
    /// subscription within one interval. A publish that reaches nobody, or a probe
    /// that never returns, means the subscription is dead: reconnect the subscriber
    /// (which resubscribes and resyncs) and probe again on the next tick.
    async fn probe(&self) {
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
        match self.backend.publish_node(&self.node, msg).await {
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
        if let Err(e) = self.backend.resubscribe().await {
            warn!(error = %e, "subscriber reconnect failed");
        }
    }

    /// Writes this node's members back into Redis and re-reads every room it mirrors;
    /// until that succeeds, every heartbeat tries again.
    async fn resync(&self, why: &'static str) {
        self.metrics.resyncs.inc();
        self.health.resync_pending.store(true, Ordering::Relaxed);
        match self.directory.resync(why).await {
            Ok(()) => self.health.resync_pending.store(false, Ordering::Relaxed),
            Err(e) => warn!(error = %e, "resync failed; retrying on the next heartbeat"),
        }
    }

    async fn reap_dead_nodes(&self) {
        if !self.health.may_reap(Instant::now()) {
            return;
        }
        let Some(registry) = self.backend.registry() else { return };
        let dead = match registry.dead_nodes(&self.node).await {
            Ok(dead) => dead,
            Err(e) => return debug!(error = %e, "dead-node scan failed"),
        };
        // A dead node's members get the resume grace, from its last heartbeat, to come
        // back on other nodes first.
        self.resumes.forget_revived(&dead.iter().map(|d| d.node.clone()).collect::<Vec<_>>());
        let now = Instant::now();
        for bus::DeadNode { node, silent_for } in dead {
            if !self.resumes.reap_due(&node, silent_for, now) {
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

    /// Removes a dead node's peers from their rooms; returns how many were removed.
    async fn reap(&self, registry: &dyn bus::Registry, dead: &NodeId) -> Result<usize, bus::BackendError> {
        let mut removed = 0;
        for room in registry.node_rooms(dead).await? {
            for record in self.backend.members(&room).await? {
                let Ok(member) = MemberInfo::decode(&record) else { continue };
                if !member.is_served_by(dead) {
                    continue;
                }
                let left =
                    BusEvent::Left { room: room.clone(), peer: member.peer.clone(), reason: LeftReason::NodeLost };
                // Unless it moved to a live node (it resumed) since its record was read.
                if self.backend.leave_if_unchanged(&room, &member.peer, record.clone(), self.envelope(left)).await? {
                    removed += 1;
                }
            }
        }
        registry.forget_node(dead).await?;
        Ok(removed)
    }

    /// Drain step: take this node's peers and heartbeat out of Redis.
    pub async fn leave_cluster(&self) {
        let Some(registry) = self.backend.registry() else { return };
        if let Err(e) = registry.forget_node(&self.node).await {
            warn!(error = %e, "could not deregister; other nodes reap this node after its TTL");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_probe_is_waited_for_three_intervals_before_the_subscription_counts_as_dead() {
        let health = Health::new(Duration::from_secs(2));
        let t0 = Instant::now();
        assert_eq!(health.probe_state(t0), ProbeState::Idle);
        health.probe.lock().unwrap().outstanding = Some((7, t0));
        assert_eq!(health.probe_state(t0 + Duration::from_secs(3)), ProbeState::Waiting, "one interval late: load");
        assert_eq!(health.probe_state(t0 + Duration::from_secs(6)), ProbeState::Waiting);
        assert_eq!(health.probe_state(t0 + Duration::from_millis(6001)), ProbeState::Overdue);
        health.probe_returned(7);
        assert_eq!(health.probe_state(t0 + Duration::from_secs(7)), ProbeState::Idle);
    }

    #[test]
    fn the_subscriber_is_not_reconnected_again_while_its_last_reconnect_may_be_resubscribing() {
        let health = Health::new(Duration::from_secs(2));
        let t0 = Instant::now();
        assert!(health.may_reconnect_subscriber(t0));
        assert!(!health.may_reconnect_subscriber(t0 + Duration::from_secs(2)));
        assert!(!health.may_reconnect_subscriber(t0 + Duration::from_millis(5999)));
        assert!(health.may_reconnect_subscriber(t0 + Duration::from_secs(6)), "three intervals later");
        assert!(!health.may_reconnect_subscriber(t0 + Duration::from_secs(7)));
    }
}
