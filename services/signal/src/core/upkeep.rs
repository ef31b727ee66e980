//! The core's heartbeat tick: every interval, in this order, the node beats and proves
//! its inbox ([`super::liveness`]), proves its room channels, settles what Redis owes
//! it and what it owes Redis ([`super::directory`]), reaps dead nodes, and closes rooms
//! whose time ran out. A resync runs when a heartbeat or a part asks for one.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::liveness::{Beat, PROBE_PATIENCE};
use super::Core;

impl Core {
    /// Runs the tick, and resyncs when asked, until `stop`.
    pub(super) async fn run_upkeep(self: Arc<Self>, stop: CancellationToken) {
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
        match self.liveness.beat().await {
            Beat::Unreachable => return,
            Beat::Resync(why) => self.resync(why).await,
            Beat::Steady => {}
        }
        self.liveness.probe().await;
        let repaired = self.directory.probe_rooms(self.settings.heartbeat_interval * PROBE_PATIENCE).await;
        if repaired > 0 {
            // Whatever those room channels carried meanwhile never arrived.
            self.bus_stats.record_gaps(repaired as u64);
            self.resync_wanted.notify_one();
        }
        self.directory.settle_removals().await;
        self.liveness.reap_dead_nodes().await;
        if let Err(e) = self.directory.settle_suspects().await {
            debug!(error = %e, "suspect check failed");
        }
        self.close_expired_rooms().await;
    }

    /// Writes this node's members back into Redis and re-reads every room it mirrors;
    /// until that succeeds, every heartbeat tries again.
    async fn resync(&self, why: &'static str) {
        self.metrics.resyncs.inc();
        let health = self.liveness.health();
        health.set_resync_pending(true);
        match self.directory.resync(why).await {
            Ok(()) => health.set_resync_pending(false),
            Err(e) => warn!(error = %e, "resync failed; retrying on the next heartbeat"),
        }
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
}
