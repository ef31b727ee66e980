//! Member removals this node owes Redis: a leave, a disconnect or a join's undo whose
//! command failed (or timed out, so it may or may not have run). Until it is settled
//! the member may still be listed in Redis and on other nodes, so the node retries it
//! on every liveness tick, and a new join of the same peer into the same room settles
//! it first.
//!
//! Each entry has an async lock: a retry and the peer's own new join never overlap
//! (an old removal landing after the new join would remove a member that just joined).
//! Removing a member that is already gone is harmless: the leave script publishes only
//! when it removed someone.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bus::BackendError;
use protocol::{BusEvent, LeftReason, MemberInfo, PeerId, RoomId};
use tracing::{debug, info};

use super::RoomDirectory;
use crate::core::CoreError;

#[derive(Debug)]
pub struct Owed {
    pub reason: LeftReason,
    /// Set once Redis confirmed the removal; a retry that waited for the lock skips it.
    pub settled: bool,
}

pub type OwedEntry = Arc<tokio::sync::Mutex<Owed>>;

#[derive(Default)]
pub struct Removals {
    owed: Mutex<HashMap<(RoomId, PeerId), OwedEntry>>,
}

impl Removals {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(RoomId, PeerId), OwedEntry>> {
        self.owed.lock().expect("removals lock")
    }

    /// Records that `peer` must still be removed from `room`. An earlier reason stays.
    pub fn owe(&self, room: &RoomId, peer: &PeerId, reason: LeftReason) {
        self.lock()
            .entry((room.clone(), peer.clone()))
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Owed { reason, settled: false })));
    }

    pub fn get(&self, room: &RoomId, peer: &PeerId) -> Option<OwedEntry> {
        self.lock().get(&(room.clone(), peer.clone())).cloned()
    }

    /// Every owed removal, for a retry pass.
    pub fn all(&self) -> Vec<(RoomId, PeerId, OwedEntry)> {
        self.lock().iter().map(|((room, peer), entry)| (room.clone(), peer.clone(), entry.clone())).collect()
    }

    /// Forgets a settled entry (only that entry, should a new one have replaced it).
    pub fn settled(&self, room: &RoomId, peer: &PeerId, entry: &OwedEntry) {
        let mut owed = self.lock();
        let key = (room.clone(), peer.clone());
        if owed.get(&key).is_some_and(|e| Arc::ptr_eq(e, entry)) {
            owed.remove(&key);
        }
    }

    /// Whether any removal from `room` is still owed.
    pub fn any_in(&self, room: &RoomId) -> bool {
        self.lock().keys().any(|(r, _)| r == room)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

impl RoomDirectory {
    /// Settles an owed removal of `peer` from `room` before that peer joins it again.
    pub(super) async fn settle_owed_removal(&self, room: &RoomId, peer: &PeerId) -> Result<(), CoreError> {
        let Some(entry) = self.removals.get(room, peer) else { return Ok(()) };
        let mut owed = entry.lock().await;
        if !owed.settled {
            self.store.leave(room, peer, self.left_envelope(room, peer, owed.reason)).await?;
            owed.settled = true;
        }
        drop(owed);
        self.removals.settled(room, peer, &entry);
        Ok(())
    }

    /// Retries every owed removal (each liveness tick); stops at the first failure,
    /// since Redis is then most likely still unavailable.
    pub async fn settle_removals(&self) {
        for (room, peer, entry) in self.removals.all() {
            let mut owed = entry.lock().await;
            if !owed.settled {
                let left = self.left_envelope(&room, &peer, owed.reason);
                match self.store.leave(&room, &peer, left).await {
                    Ok(removed) => {
                        owed.settled = true;
                        info!(%room, removed, "an owed member removal landed");
                    }
                    Err(e) => return debug!(error = %e, "owed removals still fail; retrying on the next heartbeat"),
                }
            }
            drop(owed);
            self.removals.settled(&room, &peer, &entry);
            if !self.removals.any_in(&room) && !self.mirror.has_local(&room) {
                self.subs.forget_if_unused(self.store.as_ref(), &self.node, &room).await;
            }
        }
    }

    /// Reconciles the other way round from a resync's write-back: members that Redis
    /// lists as served by this node but that are not members here any more are removed
    /// and announced as `disconnected`. Reads every room in the node's index
    /// and every room it mirrors, except `already_read` (rooms whose members the caller
    /// has just read and passed to [`RoomDirectory::owe_ghosts`]). Returns how many it found.
    pub async fn sweep_own_ghosts(&self, already_read: &[RoomId]) -> Result<usize, BackendError> {
        let mut rooms: HashSet<RoomId> = match self.store.registry() {
            Some(registry) => registry.node_rooms(&self.node).await?.into_iter().collect(),
            None => HashSet::new(),
        };
        rooms.extend(self.mirror.mirrored_rooms());
        for room in already_read {
            rooms.remove(room);
        }
        let mut found = 0;
        for room in &rooms {
            let members: Vec<MemberInfo> =
                self.store.members(room).await?.iter().filter_map(|r| MemberInfo::decode(r).ok()).collect();
            found += self.owe_ghosts(room, members.iter());
        }
        self.settle_removals().await;
        Ok(found)
    }

    /// Owes the removal of every member of `room` (as just read from Redis) that is
    /// served by this node but is not a member here (joining or joined). A client may
    /// register the same chosen id again at any moment: the decision is taken under the
    /// lock its registration takes, and a registration that finds a removal owed settles
    /// it first (see `RoomDirectory::begin_join`).
    pub(super) fn owe_ghosts<'a>(&self, room: &RoomId, members: impl Iterator<Item = &'a MemberInfo>) -> usize {
        let mut found = 0;
        for member in members.filter(|m| m.is_served_by(&self.node)) {
            let owed = self.mirror.unless_local(room, &member.peer, || {
                self.removals.owe(room, &member.peer, LeftReason::Disconnected);
            });
            found += usize::from(owed);
        }
        found
    }

    pub(super) fn left_envelope(&self, room: &RoomId, peer: &PeerId, reason: LeftReason) -> bytes::Bytes {
        self.envelope(BusEvent::Left { room: room.clone(), peer: peer.clone(), reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owed_removal_keeps_its_first_reason_and_is_forgotten_once_settled() {
        let removals = Removals::default();
        let room = RoomId::parse("r").unwrap();
        let peer = PeerId::parse("n1.abc").unwrap();
        removals.owe(&room, &peer, LeftReason::Left);
        removals.owe(&room, &peer, LeftReason::Disconnected);
        let entry = removals.get(&room, &peer).unwrap();
        assert_eq!(entry.try_lock().unwrap().reason, LeftReason::Left);
        assert_eq!(removals.len(), 1);
        removals.settled(&room, &peer, &entry);
        assert!(removals.get(&room, &peer).is_none());
        assert_eq!(removals.len(), 0);
    }

    #[test]
    fn settling_a_replaced_entry_does_not_forget_the_new_one() {
        let removals = Removals::default();
        let room = RoomId::parse("r").unwrap();
        let peer = PeerId::parse("n1.abc").unwrap();
        removals.owe(&room, &peer, LeftReason::Left);
        let old = removals.get(&room, &peer).unwrap();
        removals.settled(&room, &peer, &old);
        removals.owe(&room, &peer, LeftReason::Disconnected);
        removals.settled(&room, &peer, &old);
        assert!(removals.get(&room, &peer).is_some());
    }
}
