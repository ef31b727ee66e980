//! The room directory: this node's side of room membership. It owns the mirror of the
//! rooms the node serves ([`rooms`]), the room-channel subscriptions that feed it
//! ([`subs`]), the member removals Redis has not confirmed yet ([`removals`]) and the
//! probes that prove the room channels still deliver ([`room_probes`]); it writes
//! membership to the store (join, leave, update, a resumed member's move, resync) and
//! answers where a member is.
//!
//! It knows nothing of relaying, resume hand-overs or the node's health: a join that
//! the room channel never confirmed comes back as [`CoreError::JoinTimeout`], a room
//! channel it had to resubscribe comes back as a count, and the core decides what they
//! mean for the node.
//!
//! Lock order: a room's subscription lock ([`subs`], async) before an owed removal's
//! lock ([`removals`], async); the mirror's and the registries' std mutexes are held
//! for a few map operations, never across an `.await`, and never two at once.

mod removals;
mod room_probes;
mod rooms;
mod snapshots;
mod subs;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{Backend, BackendError, JoinOutcome, JoinPolicy, MemberWrite, MoveOutcome};
use bytes::Bytes;
use protocol::{BusEvent, LeftReason, MemberInfo, NodeId, Payload, PeerId, RoomId};
use tracing::{info, warn};

use super::sessions::SessionHandle;
use super::{envelope, now_ms, CoreError};
use crate::metrics::NodeMetrics;

pub use rooms::{JoinDone, MovedHere, Target};

/// The room rules and timings the directory applies.
#[derive(Debug, Clone)]
pub struct DirectorySettings {
    pub room_capacity: usize,
    /// Beyond this many members, a room's members hear of hosts only.
    pub presence_limit: usize,
    /// Joins need a room created ahead (ROOM_REQUIRE_CREATED).
    pub require_created: bool,
    /// How long a join waits for its own announcement on the room channel.
    pub join_timeout: Duration,
    /// How long a member the mirror misses stays a suspect before Redis is asked
    /// (a node's heartbeat TTL: a slow node's events may still be on their way).
    pub suspect_grace: Duration,
    pub heartbeat_interval: Duration,
}

pub struct RoomDirectory {
    node: NodeId,
    store: Arc<dyn Backend>,
    settings: DirectorySettings,
    metrics: Arc<NodeMetrics>,
    mirror: rooms::Rooms,
    subs: subs::RoomSubs,
    removals: removals::Removals,
    probes: room_probes::RoomProbes,
    snapshots: snapshots::SnapshotLeads,
}

/// A resumed member's record in a room it moved here, and the others there.
pub type Moved = (Arc<MemberInfo>, Vec<Arc<MemberInfo>>);

impl RoomDirectory {
    pub fn new(node: NodeId, store: Arc<dyn Backend>, settings: DirectorySettings, metrics: Arc<NodeMetrics>) -> Self {
        Self {
            mirror: rooms::Rooms::new(node.clone(), settings.presence_limit),
            node,
            store,
            settings,
            metrics,
            subs: subs::RoomSubs::default(),
            removals: removals::Removals::default(),
            probes: room_probes::RoomProbes::default(),
            snapshots: snapshots::SnapshotLeads::default(),
        }
    }

    fn envelope(&self, event: BusEvent) -> Bytes {
        envelope(&self.node, event)
    }

    // ---- what the mirror knows -------------------------------------------------------

    /// Whether `peer` is an active local member of `room`.
    pub fn is_member(&self, room: &RoomId, peer: &PeerId) -> bool {
        self.mirror.is_active_local(room, peer)
    }

    /// Whether the sender is an active local member, and where the target is.
    pub fn route(&self, room: &RoomId, from: &PeerId, to: &PeerId) -> (bool, Option<Target>) {
        self.mirror.route(room, from, to)
    }

    /// Every member of `room` the mirror knows, on any node.
    pub fn members(&self, room: &RoomId) -> Vec<Arc<MemberInfo>> {
        self.mirror.members(room)
    }

    /// The session an active local member is served by.
    pub fn active_session(&self, room: &RoomId, peer: &PeerId) -> Option<SessionHandle> {
        self.mirror.active_session(room, peer)
    }

    /// A local member's own record.
    pub fn local_record(&self, room: &RoomId, peer: &PeerId) -> Option<Arc<MemberInfo>> {
        self.mirror.local_record(room, peer)
    }

    pub fn room_count(&self) -> usize {
        self.mirror.room_count()
    }

    pub fn local_member_count(&self) -> usize {
        self.mirror.local_member_count()
    }

    /// Member removals Redis has not confirmed yet.
    pub fn owed_removals(&self) -> usize {
        self.removals.len()
    }

    /// Rooms created ahead whose time ran out while this node has members there.
    pub fn take_expired(&self, now_ms: u64) -> Vec<RoomId> {
        self.mirror.take_expired(now_ms)
    }

    // ---- what the room channels say --------------------------------------------------

    /// Applies a room event to the mirror; true if another node declared some of this
    /// node's members lost (they must be written back: a resync).
    pub fn apply(&self, event: &BusEvent) -> bool {
        self.mirror.apply(event, Instant::now() + self.settings.suspect_grace)
    }

    /// Applies a member's `moved`: what this node must do about it.
    pub fn apply_moved(&self, room: &RoomId, member: &MemberInfo, nonce: u64) -> MovedHere {
        self.mirror.apply_moved(room, member, nonce)
    }

    /// A probe on a room channel came back; true if it was one of the directory's.
    pub fn probe_returned(&self, nonce: u64) -> bool {
        self.probes.returned(nonce)
    }

    // ---- membership writes -----------------------------------------------------------

    /// Joins `record` to `room` for `session`: see [`rooms`] for the handshake that
    /// makes the member lists exact.
    pub async fn join(
        &self,
        room: &RoomId,
        session: &SessionHandle,
        record: Arc<MemberInfo>,
        token_hash: Option<&str>,
    ) -> Result<JoinDone, CoreError> {
        self.subs.acquire(self.store.as_ref(), &self.node, room).await?;
        let nonce = rand::random::<u64>() | 1;
        let done = match self.begin_join(room, session, &record, nonce).await {
            Ok(done) => done,
            Err(e) => {
                self.finish_room_op(room).await;
                return Err(e);
            }
        };
        match self.run_join(room, &record, nonce, token_hash, done).await {
            Ok(done) => {
                // Nothing is awaited between a join and its reply.
                self.subs.done(room);
                Ok(done)
            }
            Err(e) => {
                self.mirror.remove_local(room, &record.peer);
                self.finish_room_op(room).await;
                Err(e)
            }
        }
    }

    /// Registers the member as joining, after any removal of the same id from the room
    /// that Redis has not confirmed yet: that removal must land before the new join,
    /// never after it. A ghost sweep may owe one between the two steps; then it is
    /// settled and the registration tried once more (the sweep owes nothing once the
    /// member is registered).
    async fn begin_join(
        &self,
        room: &RoomId,
        session: &SessionHandle,
        record: &Arc<MemberInfo>,
        nonce: u64,
    ) -> Result<tokio::sync::oneshot::Receiver<JoinDone>, CoreError> {
        for _ in 0..2 {
            self.settle_owed_removal(room, &record.peer).await?;
            match self.mirror.begin_join(room, session.clone(), record.clone(), nonce, &self.removals) {
                Err(rooms::BeginJoinError::RemovalOwed) => continue,
                Err(rooms::BeginJoinError::AlreadyInRoom) => return Err(CoreError::AlreadyInRoom),
                Ok(done) => return Ok(done),
            }
        }
        Err(CoreError::Unavailable(BackendError::Protocol("a removal of this id keeps being owed".into())))
    }

    async fn run_join(
        &self,
        room: &RoomId,
        record: &Arc<MemberInfo>,
        nonce: u64,
        token_hash: Option<&str>,
        done: tokio::sync::oneshot::Receiver<JoinDone>,
    ) -> Result<JoinDone, CoreError> {
        let write = MemberWrite {
            room,
            peer: &record.peer,
            record: Bytes::from(record.encode()),
            announcement: self.envelope(BusEvent::Joined { room: room.clone(), member: (**record).clone(), nonce }),
        };
        // One snapshot of the room per node at a time: held until this join is done.
        let mirrored = || self.mirror.is_synced(room);
        let _lead = self.snapshots.lead_unless_mirrored(room, mirrored, self.settings.join_timeout).await;
        let policy = JoinPolicy {
            capacity: self.settings.room_capacity,
            token_hash,
            require_registered: self.settings.require_created,
            now_ms: now_ms(),
            // Called after the join began here: a mirror complete now stays complete.
            with_others: !self.mirror.is_synced(room),
        };
        let outcome = match self.store.join(write, policy).await {
            Ok(outcome) => outcome,
            Err(e) => {
                // The script may still run (a timeout is not a refusal): undo it later.
                self.removals.owe(room, &record.peer, LeftReason::Left);
                return Err(e.into());
            }
        };
        match outcome {
            JoinOutcome::Full => Err(CoreError::RoomFull),
            JoinOutcome::BadToken => Err(CoreError::Unauthorized),
            JoinOutcome::NotFound => Err(CoreError::RoomNotFound),
            JoinOutcome::Expired => Err(CoreError::RoomExpired),
            JoinOutcome::Locked => Err(CoreError::RoomLocked),
            JoinOutcome::Taken => Err(CoreError::IdTaken),
            JoinOutcome::Joined { others, token_hash, expires_ms } => {
                self.metrics.joins.inc();
                self.mirror.note_expiry(room, expires_ms);
                let others = others.iter().filter_map(|r| decode_member(r)).collect();
                self.mirror.join_snapshot(room, &record.peer, others, token_hash);
                match tokio::time::timeout(self.settings.join_timeout, done).await {
                    Ok(Ok(done)) => Ok(done),
                    _ => {
                        // Joined in Redis but our channel never confirmed it: undo.
                        warn!(%room, "join not confirmed by the room channel; undoing");
                        // A failed undo is owed and retried; the join's error stands.
                        let _ = self.remove_member(room, &record.peer, LeftReason::Left).await;
                        Err(CoreError::JoinTimeout)
                    }
                }
            }
        }
    }

    /// Leaves a room; the others hear `peer-left` with `reason`. Locally the member is
    /// gone either way: a removal Redis did not confirm is owed, and retried until it
    /// lands.
    pub async fn leave(&self, room: &RoomId, peer: &PeerId, reason: LeftReason) -> Result<(), CoreError> {
        let result = self.remove_member(room, peer, reason).await;
        self.mirror.remove_local(room, peer);
        self.release_room(room).await;
        result
    }

    /// Forgets a local member without telling the store (it is no longer listed there
    /// as served here: it moved or was removed), and stops following its room if that
    /// was the last use.
    pub async fn forget_local(&self, room: &RoomId, peer: &PeerId) {
        if self.mirror.remove_local(room, peer) {
            self.release_room(room).await;
        }
    }

    /// Removes a member from Redis; the others hear `peer-left` with `reason`. If Redis
    /// does not confirm it, the removal is owed (see [`removals`]).
    async fn remove_member(&self, room: &RoomId, peer: &PeerId, reason: LeftReason) -> Result<(), CoreError> {
        match self.store.leave(room, peer, self.left_envelope(room, peer, reason)).await {
            Ok(_) => Ok(()),
            Err(e) => {
                warn!(%room, error = %e, "removing a member failed; retrying on every heartbeat until it lands");
                self.removals.owe(room, peer, reason);
                Err(e.into())
            }
        }
    }

    /// Replaces a local member's metadata; the others hear `peer-updated`.
    pub async fn update(&self, room: &RoomId, peer: &PeerId, meta: Payload) -> Result<(), CoreError> {
        let current = self.mirror.local_record(room, peer).ok_or(CoreError::NotInRoom)?;
        let record = Arc::new(MemberInfo { meta, ..(*current).clone() });
        let write = MemberWrite {
            room,
            peer,
            record: Bytes::from(record.encode()),
            announcement: self.envelope(BusEvent::Updated { room: room.clone(), member: (*record).clone() }),
        };
        if !self.store.update(write).await? {
            return Err(CoreError::NotInRoom);
        }
        self.mirror.set_local_record(room, record);
        Ok(())
    }

    /// After a local member went: stops following the room if the node has no member
    /// left there and no join into it is under way. Its index entry stays while a
    /// removal from it is owed (a reaper must still find that member).
    pub async fn release_room(&self, room: &RoomId) {
        let in_use = || self.mirror.has_local(room);
        let unused = subs::Unused { in_use: &in_use, keep_index: self.removals.any_in(room) };
        self.subs.release(self.store.as_ref(), &self.node, room, unused).await;
    }

    /// A join or move into `room` failed: counts it out and releases the room.
    async fn finish_room_op(&self, room: &RoomId) {
        self.subs.done(room);
        self.release_room(room).await;
    }

    /// Moves a resumed member's membership of `room` to this node, for the connection
    /// behind `handle`: its record names this node, and its `moved` marks the point in
    /// the room's order from which every node routes here (the join handshake, with
    /// `moved` as the marker). Its record and the others there; None if it is no longer
    /// a member there.
    pub async fn move_here(
        &self,
        room: &RoomId,
        handle: &SessionHandle,
        member: &PeerId,
    ) -> Result<Option<Moved>, CoreError> {
        self.subs.acquire(self.store.as_ref(), &self.node, room).await?;
        let moved = self.try_move_here(room, handle, member).await;
        if matches!(moved, Ok(Some(_))) {
            self.subs.done(room);
        } else {
            self.finish_room_op(room).await;
        }
        moved
    }

    async fn try_move_here(
        &self,
        room: &RoomId,
        handle: &SessionHandle,
        peer: &PeerId,
    ) -> Result<Option<Moved>, CoreError> {
        for _ in 0..3 {
            let Some(current) = self.store.member_record(room, peer).await? else { return Ok(None) };
            let stored = MemberInfo::decode(&current)
                .map_err(|e| BackendError::Protocol(format!("unreadable member record: {e}")))?;
            let from = stored.serving_node();
            let record = Arc::new(MemberInfo { node: (!peer.is_on(&self.node)).then(|| self.node.clone()), ..stored });
            let nonce = rand::random::<u64>() | 1;
            let done = self
                .mirror
                .begin_resume(room, handle.clone(), record.clone(), nonce)
                .map_err(|_| CoreError::AlreadyInRoom)?;
            let write = MemberWrite {
                room,
                peer,
                record: Bytes::from(record.encode()),
                announcement: self.envelope(BusEvent::Moved {
                    room: room.clone(),
                    member: (*record).clone(),
                    from,
                    nonce,
                }),
            };
            match self.store.move_member(write, current).await {
                Ok(MoveOutcome::Moved { others, token_hash, expires_ms }) => {
                    self.mirror.note_expiry(room, expires_ms);
                    let others = others.iter().filter_map(|r| decode_member(r)).collect();
                    self.mirror.join_snapshot(room, peer, others, token_hash);
                    return match tokio::time::timeout(self.settings.join_timeout, done).await {
                        Ok(Ok(done)) => Ok(Some((record, done.others))),
                        _ => {
                            warn!(%room, "a resumed member's move was not confirmed by the room channel");
                            self.mirror.cancel_resume(room, peer);
                            Err(CoreError::JoinTimeout)
                        }
                    };
                }
                Ok(MoveOutcome::Changed) => {
                    self.mirror.cancel_resume(room, peer);
                }
                Ok(MoveOutcome::Gone) => {
                    self.mirror.cancel_resume(room, peer);
                    return Ok(None);
                }
                Err(e) => {
                    self.mirror.cancel_resume(room, peer);
                    return Err(e.into());
                }
            }
        }
        Err(CoreError::Unavailable(BackendError::Protocol("the member's record kept changing".into())))
    }

    // ---- keeping the mirror and Redis in step ---------------------------------------

    /// Writes this node's members back into Redis and re-reads every room it mirrors
    /// (after Redis lost data, a gap on the bus, or members declared lost by mistake).
    /// An error leaves the rest for the next try.
    pub async fn resync(&self, why: &'static str) -> Result<(), BackendError> {
        let locals = self.mirror.active_locals();
        let rooms = self.mirror.synced_rooms();
        info!(why, peers = locals.len(), rooms = rooms.len(), "resynchronising with redis");
        let mut restored = 0usize;
        for local in &locals {
            let announcement =
                self.envelope(BusEvent::Joined { room: local.room.clone(), member: (*local.record).clone(), nonce: 0 });
            let write = MemberWrite {
                room: &local.room,
                peer: &local.record.peer,
                record: Bytes::from(local.record.encode()),
                announcement,
            };
            if let Some(registry) = self.store.registry() {
                registry.note_room(&self.node, &local.room).await?;
            }
            if self.store.restore(write, local.token_hash.as_deref()).await? {
                restored += 1;
            }
        }
        let grace = Instant::now() + self.settings.suspect_grace;
        let mut ghosts = 0;
        for room in &rooms {
            let nonce = rand::random::<u64>() | 1;
            self.mirror.begin_resync(room, nonce);
            let marker = self.envelope(BusEvent::Marker { room: room.clone(), nonce });
            let records = self.store.snapshot(room, marker).await?;
            let members: Vec<_> = records.iter().filter_map(|r| decode_member(r)).collect();
            // The other way round: members Redis lists as ours that we no longer serve.
            ghosts += self.owe_ghosts(room, members.iter().map(|m| &**m));
            self.mirror.resync_snapshot(room, nonce, members, grace);
        }
        // Rooms in the node's index that it no longer mirrors (their last local member
        // left) are read on their own.
        let ghosts = ghosts + self.sweep_own_ghosts(&rooms).await?;
        info!(restored, ghosts, "resync complete");
        Ok(())
    }

    /// Asks Redis about members the mirror lost track of (declared lost by another
    /// node, then not seen again) once their grace is over.
    pub async fn settle_suspects(&self) -> Result<(), BackendError> {
        for (room, peer) in self.mirror.due_suspects(Instant::now()) {
            let records = self.store.members(&room).await?;
            let present = records.iter().filter_map(|r| MemberInfo::decode(r).ok()).any(|m| m.peer == peer);
            self.mirror.settle_suspect(&room, &peer, present);
        }
        Ok(())
    }
}

fn decode_member(record: &[u8]) -> Option<Arc<MemberInfo>> {
    match MemberInfo::decode(record) {
        Ok(m) => Some(Arc::new(m)),
        Err(e) => {
            warn!(error = %e, "unreadable member record in Redis; skipped");
            None
        }
    }
}
