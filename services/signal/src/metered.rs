//! The store, timed: a [`Backend`] that wraps another and records every call's
//! latency and failures by operation (`signal_redis_command_seconds`,
//! `signal_redis_errors_total`). An operation is one backend call: a Lua script (join,
//! leave, ...), a publish, a subscription change; the label set is this fixed list.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bus::{
    Backend, BackendError, Claimed, Heartbeat, Inbound, JoinOutcome, JoinPolicy, MemberWrite, Membership, MoveOutcome,
    PubSub, Registry, ResumeStore, RoomRecord,
};
use bytes::Bytes;
use prometheus::{Histogram, IntCounter};
use protocol::{NodeId, PeerId, RoomId};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::metrics::NodeMetrics;

/// The operations timed, in the order of [`Metered`]'s slots.
pub const OPERATIONS: [&str; 32] = [
    "ping",
    "join",
    "create_room",
    "room_record",
    "active_rooms",
    "set_room_locked",
    "unregister_room",
    "restore",
    "leave",
    "update",
    "snapshot",
    "members",
    "publish_node",
    "publish_room",
    "subscribe_node",
    "resubscribe",
    "subscribe_room",
    "unsubscribe_room",
    "heartbeat",
    "note_room",
    "forget_room",
    "node_rooms",
    "dead_nodes",
    "claim_reap",
    "forget_node",
    "move_member",
    "note_resumable",
    "forget_resumable_room",
    "claim_resumable",
    "end_resumable",
    "member_record",
    "leave_if_unchanged",
];

pub struct Metered {
    inner: Arc<dyn Backend>,
    /// Per operation, resolved once: (latency, errors).
    slots: Vec<(Histogram, IntCounter)>,
}

impl Metered {
    /// The inner backend's registry: [`Backend::registry`] hands out this wrapper's
    /// only when there is one.
    fn inner_registry(&self) -> &dyn Registry {
        self.inner.registry().expect("the metered registry is handed out only over one")
    }

    pub fn new(inner: Arc<dyn Backend>, metrics: &NodeMetrics) -> Self {
        let slots = OPERATIONS.iter().map(|op| metrics.store_operation(op)).collect();
        Self { inner, slots }
    }

    async fn timed<T>(
        &self,
        slot: usize,
        call: impl std::future::Future<Output = Result<T, BackendError>>,
    ) -> Result<T, BackendError> {
        let started = Instant::now();
        let result = if telemetry::traces::in_trace() {
            call.instrument(redis_span(OPERATIONS[slot])).await
        } else {
            call.await
        };
        let (seconds, errors) = &self.slots[slot];
        seconds.observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            errors.inc();
        }
        result
    }
}

/// A Redis call's span, under the recorded command or delivery that made the call (the
/// node's own background calls, heartbeats and probes, are not traced).
fn redis_span(operation: &'static str) -> tracing::Span {
    tracing::info_span!(
        target: telemetry::traces::TARGET,
        "redis",
        otel.name = operation,
        otel.kind = "client",
        db.system = "redis",
        db.operation.name = operation
    )
}

impl Backend for Metered {
    fn registry(&self) -> Option<&dyn Registry> {
        self.inner.registry().map(|_| self as &dyn Registry)
    }
}

#[async_trait]
impl Membership for Metered {
    async fn join(&self, write: MemberWrite<'_>, policy: JoinPolicy<'_>) -> Result<JoinOutcome, BackendError> {
        self.timed(1, self.inner.join(write, policy)).await
    }

    async fn create_room(&self, room: &RoomId, record: &RoomRecord) -> Result<bool, BackendError> {
        self.timed(2, self.inner.create_room(room, record)).await
    }

    async fn room_record(&self, room: &RoomId) -> Result<Option<RoomRecord>, BackendError> {
        self.timed(3, self.inner.room_record(room)).await
    }

    async fn active_rooms(&self) -> Result<Vec<RoomId>, BackendError> {
        self.timed(4, self.inner.active_rooms()).await
    }

    async fn set_room_locked(&self, room: &RoomId, locked: bool) -> Result<(), BackendError> {
        self.timed(5, self.inner.set_room_locked(room, locked)).await
    }

    async fn unregister_room(&self, room: &RoomId) -> Result<(), BackendError> {
        self.timed(6, self.inner.unregister_room(room)).await
    }

    async fn restore(&self, write: MemberWrite<'_>, token_hash: Option<&str>) -> Result<bool, BackendError> {
        self.timed(7, self.inner.restore(write, token_hash)).await
    }

    async fn move_member(&self, write: MemberWrite<'_>, expected: Bytes) -> Result<MoveOutcome, BackendError> {
        self.timed(25, self.inner.move_member(write, expected)).await
    }

    async fn member_record(&self, room: &RoomId, peer: &PeerId) -> Result<Option<Bytes>, BackendError> {
        self.timed(30, self.inner.member_record(room, peer)).await
    }

    async fn leave_if_unchanged(
        &self,
        room: &RoomId,
        peer: &PeerId,
        expected: Bytes,
        announcement: Bytes,
    ) -> Result<bool, BackendError> {
        self.timed(31, self.inner.leave_if_unchanged(room, peer, expected, announcement)).await
    }

    async fn leave(&self, room: &RoomId, peer: &PeerId, announcement: Bytes) -> Result<bool, BackendError> {
        self.timed(8, self.inner.leave(room, peer, announcement)).await
    }

    async fn update(&self, write: MemberWrite<'_>) -> Result<bool, BackendError> {
        self.timed(9, self.inner.update(write)).await
    }

    async fn snapshot(&self, room: &RoomId, marker: Bytes) -> Result<Vec<Bytes>, BackendError> {
        self.timed(10, self.inner.snapshot(room, marker)).await
    }

    async fn members(&self, room: &RoomId) -> Result<Vec<Bytes>, BackendError> {
        self.timed(11, self.inner.members(room)).await
    }
}

#[async_trait]
impl PubSub for Metered {
    fn take_inbox(&self) -> Option<mpsc::Receiver<Inbound>> {
        self.inner.take_inbox()
    }

    async fn ping(&self) -> Result<(), BackendError> {
        self.timed(0, self.inner.ping()).await
    }

    async fn publish_node(&self, node: &NodeId, msg: Bytes) -> Result<u64, BackendError> {
        self.timed(12, self.inner.publish_node(node, msg)).await
    }

    async fn publish_room(&self, room: &RoomId, msg: Bytes) -> Result<u64, BackendError> {
        self.timed(13, self.inner.publish_room(room, msg)).await
    }

    async fn subscribe_node(&self, node: &NodeId) -> Result<(), BackendError> {
        self.timed(14, self.inner.subscribe_node(node)).await
    }

    async fn resubscribe(&self) -> Result<(), BackendError> {
        self.timed(15, self.inner.resubscribe()).await
    }

    async fn subscribe_room(&self, room: &RoomId) -> Result<(), BackendError> {
        self.timed(16, self.inner.subscribe_room(room)).await
    }

    async fn unsubscribe_room(&self, room: &RoomId) -> Result<(), BackendError> {
        self.timed(17, self.inner.unsubscribe_room(room)).await
    }
}

#[async_trait]
impl Registry for Metered {
    async fn heartbeat(&self, node: &NodeId, ttl_ms: u64) -> Result<Heartbeat, BackendError> {
        self.timed(18, self.inner_registry().heartbeat(node, ttl_ms)).await
    }

    async fn note_room(&self, node: &NodeId, room: &RoomId) -> Result<(), BackendError> {
        self.timed(19, self.inner_registry().note_room(node, room)).await
    }

    async fn forget_room(&self, node: &NodeId, room: &RoomId) -> Result<(), BackendError> {
        self.timed(20, self.inner_registry().forget_room(node, room)).await
    }

    async fn node_rooms(&self, node: &NodeId) -> Result<Vec<RoomId>, BackendError> {
        self.timed(21, self.inner_registry().node_rooms(node)).await
    }

    async fn dead_nodes(&self, me: &NodeId) -> Result<Vec<bus::DeadNode>, BackendError> {
        self.timed(22, self.inner_registry().dead_nodes(me)).await
    }

    async fn claim_reap(&self, dead: &NodeId, me: &NodeId, ttl_ms: u64) -> Result<bool, BackendError> {
        self.timed(23, self.inner_registry().claim_reap(dead, me, ttl_ms)).await
    }

    async fn forget_node(&self, node: &NodeId) -> Result<(), BackendError> {
        self.timed(24, self.inner_registry().forget_node(node)).await
    }
}

#[async_trait]
impl ResumeStore for Metered {
    async fn note_resumable(
        &self,
        peer: &PeerId,
        token_hash: &str,
        node: &NodeId,
        room: &RoomId,
    ) -> Result<(), BackendError> {
        self.timed(26, self.inner.note_resumable(peer, token_hash, node, room)).await
    }

    async fn forget_resumable_room(&self, peer: &PeerId, room: &RoomId) -> Result<(), BackendError> {
        self.timed(27, self.inner.forget_resumable_room(peer, room)).await
    }

    async fn claim_resumable(
        &self,
        peer: &PeerId,
        token_hash: &str,
        new_token_hash: &str,
        node: &NodeId,
    ) -> Result<Option<Claimed>, BackendError> {
        self.timed(28, self.inner.claim_resumable(peer, token_hash, new_token_hash, node)).await
    }

    async fn end_resumable(&self, peer: &PeerId, node: &NodeId) -> Result<bool, BackendError> {
        self.timed(29, self.inner.end_resumable(peer, node)).await
    }
}
