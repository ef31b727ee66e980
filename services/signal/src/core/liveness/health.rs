//! What /readyz reports, and the state behind the node's checks of itself: the inbox
//! probe, the subscriber's reconnects, an outage of Redis, and when reaping may resume.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Intervals a probe may take before the subscription counts as dead.
pub const PROBE_PATIENCE: u32 = 3;

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
    pub(super) fn pause_reaping(&self, until: Instant) {
        *self.reap_not_before.lock().expect("health lock") = Some(until);
    }

    pub(super) fn may_reap(&self, now: Instant) -> bool {
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

    /// A heartbeat failed: Redis is unreachable. True if it was reachable until now.
    pub(super) fn redis_lost(&self) -> bool {
        self.outage.store(true, Ordering::Relaxed);
        self.redis_ok.swap(false, Ordering::Relaxed)
    }

    /// A heartbeat went through: true if one had failed since the last that did.
    pub(super) fn outage_over(&self) -> bool {
        self.outage.swap(false, Ordering::Relaxed)
    }

    /// A resync is under way or failed (the node is not ready while it follows a loss
    /// on the bus, and the next heartbeat retries it).
    pub fn set_resync_pending(&self, pending: bool) {
        self.resync_pending.store(pending, Ordering::Relaxed);
    }

    pub(super) fn resync_pending(&self) -> bool {
        self.resync_pending.load(Ordering::Relaxed)
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
    pub(super) fn probe_state(&self, now: Instant) -> ProbeState {
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
    pub(super) fn may_reconnect_subscriber(&self, now: Instant) -> bool {
        let mut last = self.last_reconnect.lock().expect("reconnect lock");
        if last.is_some_and(|at| now.duration_since(at) < self.interval * PROBE_PATIENCE) {
            return false;
        }
        *last = Some(now);
        true
    }

    pub(super) fn start_probe(&self) -> u64 {
        let nonce = rand::random();
        self.probe.lock().expect("probe lock").outstanding = Some((nonce, Instant::now()));
        nonce
    }

    /// Forgets the outstanding probe so the next tick sends a fresh one.
    pub(super) fn clear_probe(&self) {
        self.probe.lock().expect("probe lock").outstanding = None;
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum ProbeState {
    Idle,
    Waiting,
    Overdue,
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
