//! Room-channel subscriptions: the node follows a room's channel while it has a
//! local member there or a join (or a resume's move) into it is under way, and lists
//! the room in its index in Redis (`sig:{node:N}:rooms`, where a reaper looks for its
//! members should it die).
//!
//! Joins and moves count themselves in (`acquire`) before they register their member
//! and out once they are done (`done`, without waiting, so nothing is awaited between
//! a join and its reply; a failed one then calls `release`); a room's channel is
//! left when neither a pending operation nor a local member remains. Local members
//! are not counted here but asked for (`in_use`), so no path that removes one has to
//! match an earlier count: a member removed by `leave`, a close, a reaper or a move to
//! another node all end in the same check.
//!
//! Each room has an async lock so that a subscribe and an unsubscribe (and the index
//! changes that go with them) for the same room can never overtake each other on the
//! way to Redis. A room stays in the index while a removal from it is still owed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bus::{Backend, BackendError};
use protocol::{NodeId, RoomId};

#[derive(Default)]
struct RoomSub {
    /// Joins and moves into the room under way: raised under `subscribed`'s lock,
    /// lowered without it.
    pending: AtomicUsize,
    /// Whether the room's channel is subscribed; its lock orders (un)subscribes.
    subscribed: tokio::sync::Mutex<bool>,
}

impl RoomSub {
    fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}

#[derive(Default)]
pub struct RoomSubs {
    rooms: Mutex<HashMap<RoomId, Arc<RoomSub>>>,
}

impl RoomSubs {
    fn entry(&self, room: &RoomId) -> Arc<RoomSub> {
        self.rooms.lock().expect("subs lock").entry(room.clone()).or_default().clone()
    }

    /// Counts a join or move into the room as under way; the room's channel is
    /// subscribed (and the room added to the node's index) before it returns.
    pub async fn acquire(&self, backend: &dyn Backend, node: &NodeId, room: &RoomId) -> Result<(), BackendError> {
        let entry = self.entry(room);
        let mut subscribed = entry.subscribed.lock().await;
        if !*subscribed {
            let noted = async {
                backend.subscribe_room(room).await?;
                if let Some(registry) = backend.registry() {
                    if let Err(e) = registry.note_room(node, room).await {
                        let _ = backend.unsubscribe_room(room).await;
                        return Err(e);
                    }
                }
                Ok(())
            };
            if let Err(e) = noted.await {
                drop(subscribed);
                self.tidy(room, &entry);
                return Err(e);
            }
            *subscribed = true;
        }
        entry.pending.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// A join or move counted by [`acquire`](Self::acquire) registered its member: it
    /// counts itself out at once (the member keeps the room in use).
    pub fn done(&self, room: &RoomId) {
        if let Some(entry) = self.rooms.lock().expect("subs lock").get(room) {
            let _ = entry.pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    /// Leaves the room (unsubscribes, and takes it out of the index) if no join or
    /// move is under way and `unused.in_use()` says no local member is left. Called
    /// after any local member went.
    pub async fn release(&self, backend: &dyn Backend, node: &NodeId, room: &RoomId, unused: Unused<'_>) {
        let entry = self.entry(room);
        let mut subscribed = entry.subscribed.lock().await;
        // Members register only while counted as pending, and the count rises only
        // under this lock: a room with nothing pending gains no member meanwhile.
        if entry.pending() > 0 || !*subscribed || (unused.in_use)() {
            drop(subscribed);
            self.tidy(room, &entry);
            return;
        }
        if let Err(e) = backend.unsubscribe_room(room).await {
            // The channel stays subscribed; the node ignores events of rooms it does
            // not mirror, and the next release or resubscribe tidies up.
            tracing::debug!(%room, error = %e, "unsubscribe failed");
            return;
        }
        *subscribed = false;
        if !unused.keep_index {
            forget(backend, node, room).await;
        }
        drop(subscribed);
        self.tidy(room, &entry);
    }

    /// Takes the room out of the node's index if the node does not follow it (after
    /// an owed removal was settled).
    pub async fn forget_if_unused(&self, backend: &dyn Backend, node: &NodeId, room: &RoomId) {
        let entry = self.entry(room);
        let subscribed = entry.subscribed.lock().await;
        if entry.pending() == 0 && !*subscribed {
            forget(backend, node, room).await;
        }
        drop(subscribed);
        self.tidy(room, &entry);
    }

    /// Room channels the node follows (or is about to follow or leave), for probing.
    pub fn subscribed(&self) -> Vec<RoomId> {
        self.rooms.lock().expect("subs lock").keys().cloned().collect()
    }

    pub async fn is_subscribed(&self, room: &RoomId) -> bool {
        let Some(entry) = self.rooms.lock().expect("subs lock").get(room).cloned() else { return false };
        let subscribed = *entry.subscribed.lock().await;
        subscribed
    }

    /// Subscribes a followed room's channel again (Redis ignores a subscription it
    /// already has). Returns whether the node follows the room.
    pub async fn resubscribe(&self, backend: &dyn Backend, room: &RoomId) -> Result<bool, BackendError> {
        let Some(entry) = self.rooms.lock().expect("subs lock").get(room).cloned() else { return Ok(false) };
        let subscribed = entry.subscribed.lock().await;
        if !*subscribed {
            return Ok(false);
        }
        backend.subscribe_room(room).await?;
        Ok(true)
    }

    /// Forgets an unused entry (only if nobody else holds it: clones are made under
    /// this lock).
    fn tidy(&self, room: &RoomId, entry: &Arc<RoomSub>) {
        let mut rooms = self.rooms.lock().expect("subs lock");
        let unused = entry.pending() == 0 && entry.subscribed.try_lock().is_ok_and(|s| !*s);
        if unused && rooms.get(room).is_some_and(|e| Arc::ptr_eq(e, entry) && Arc::strong_count(entry) == 2) {
            rooms.remove(room);
        }
    }
}

/// What decides whether a room is still used once nothing is pending: whether the
/// node has a local member there, and whether its index entry must stay (a removal
/// from the room is still owed: a reaper must still find that member).
pub struct Unused<'a> {
    pub in_use: &'a (dyn Fn() -> bool + Sync),
    pub keep_index: bool,
}

async fn forget(backend: &dyn Backend, node: &NodeId, room: &RoomId) {
    let Some(registry) = backend.registry() else { return };
    if let Err(e) = registry.forget_room(node, room).await {
        // A stale index entry only costs a reaper one empty look.
        tracing::debug!(%room, error = %e, "could not take the room out of the node's index");
    }
}

#[cfg(test)]
mod tests {
    use bus::MemoryBackend;

    use super::*;

    fn unused(in_use: &(dyn Fn() -> bool + Sync), keep_index: bool) -> Unused<'_> {
        Unused { in_use, keep_index }
    }

    #[tokio::test]
    async fn a_room_is_forgotten_once_its_last_user_left_and_its_owed_removal_settled() {
        let (backend, subs) = (MemoryBackend::new(), RoomSubs::default());
        let (node, room) = (NodeId::parse("n1").unwrap(), RoomId::parse("r").unwrap());
        subs.acquire(&backend, &node, &room).await.unwrap();
        assert_eq!(subs.subscribed(), vec![room.clone()]);
        // A removal is still owed: the index entry stays, the channel goes.
        subs.done(&room);
        subs.release(&backend, &node, &room, unused(&|| false, true)).await;
        assert!(!subs.is_subscribed(&room).await);
        subs.forget_if_unused(&backend, &node, &room).await;
        assert!(subs.subscribed().is_empty(), "nothing left to probe");
        // Settling for a room the node never followed leaves nothing behind either.
        subs.forget_if_unused(&backend, &node, &RoomId::parse("other").unwrap()).await;
        assert!(subs.subscribed().is_empty());
    }

    #[tokio::test]
    async fn a_room_is_followed_while_it_has_a_local_member_or_a_pending_join() {
        let (backend, subs) = (MemoryBackend::new(), RoomSubs::default());
        let (node, room) = (NodeId::parse("n1").unwrap(), RoomId::parse("r").unwrap());
        let members = std::sync::atomic::AtomicUsize::new(0);
        let in_use = || members.load(std::sync::atomic::Ordering::Relaxed) > 0;
        // Two members join one after the other; each join is over once registered.
        for _ in 0..2 {
            subs.acquire(&backend, &node, &room).await.unwrap();
            members.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            subs.done(&room);
        }
        // A third join is under way when both members go: the room stays followed.
        subs.acquire(&backend, &node, &room).await.unwrap();
        members.store(0, std::sync::atomic::Ordering::Relaxed);
        subs.release(&backend, &node, &room, unused(&in_use, false)).await;
        assert!(subs.is_subscribed(&room).await, "a join is pending");
        // It fails: nothing uses the room any more.
        subs.done(&room);
        subs.release(&backend, &node, &room, unused(&in_use, false)).await;
        assert!(!subs.is_subscribed(&room).await);
        assert!(subs.subscribed().is_empty());
    }
}
