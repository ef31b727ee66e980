//! Reference-counted room-channel subscriptions: the node follows a room's channel
//! while it has at least one member there (joined or joining), and lists the room in
//! its index in Redis (`sig:{node:N}:rooms`, where a reaper looks for its members
//! should it die).
//!
//! Each room has an async lock so that a subscribe and an unsubscribe (and the index
//! changes that go with them) for the same room can never overtake each other on the
//! way to Redis. A room stays in the index while a removal from it is still owed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bus::{Backend, BackendError};
use protocol::{NodeId, RoomId};

#[derive(Default)]
struct RoomSub {
    users: usize,
    subscribed: bool,
}

#[derive(Default)]
pub struct RoomSubs {
    rooms: Mutex<HashMap<RoomId, Arc<tokio::sync::Mutex<RoomSub>>>>,
}

impl RoomSubs {
    fn entry(&self, room: &RoomId) -> Arc<tokio::sync::Mutex<RoomSub>> {
        self.rooms.lock().expect("subs lock").entry(room.clone()).or_default().clone()
    }

    /// Counts one more user of the room's channel; the first one subscribes and adds
    /// the room to the node's index.
    pub async fn acquire(&self, backend: &dyn Backend, node: &NodeId, room: &RoomId) -> Result<(), BackendError> {
        let entry = self.entry(room);
        let mut sub = entry.lock().await;
        if !sub.subscribed {
            backend.subscribe_room(room).await?;
            if let Some(registry) = backend.registry() {
                if let Err(e) = registry.note_room(node, room).await {
                    let _ = backend.unsubscribe_room(room).await;
                    return Err(e);
                }
            }
            sub.subscribed = true;
        }
        sub.users += 1;
        Ok(())
    }

    /// Counts one user less; the last one unsubscribes and, unless `keep_index` (a
    /// removal from the room is still owed), takes the room out of the node's index.
    pub async fn release(&self, backend: &dyn Backend, node: &NodeId, room: &RoomId, keep_index: bool) {
        let entry = self.entry(room);
        let mut sub = entry.lock().await;
        sub.users = sub.users.saturating_sub(1);
        if sub.users > 0 || !sub.subscribed {
            return;
        }
        if let Err(e) = backend.unsubscribe_room(room).await {
            // The channel stays subscribed; the node ignores events of rooms it does
            // not mirror, and the next release or resubscribe tidies up.
            tracing::debug!(%room, error = %e, "unsubscribe failed");
            return;
        }
        sub.subscribed = false;
        if !keep_index {
            forget(backend, node, room).await;
        }
        drop(sub);
        self.tidy(room, &entry);
    }

    /// Takes the room out of the node's index if the node has no member there (after
    /// an owed removal was settled).
    pub async fn forget_if_unused(&self, backend: &dyn Backend, node: &NodeId, room: &RoomId) {
        let entry = self.entry(room);
        let sub = entry.lock().await;
        if sub.users == 0 && !sub.subscribed {
            forget(backend, node, room).await;
        }
        drop(sub);
        self.tidy(room, &entry);
    }

    /// Room channels the node follows (or is about to follow or leave), for probing.
    pub fn subscribed(&self) -> Vec<RoomId> {
        self.rooms.lock().expect("subs lock").keys().cloned().collect()
    }

    pub async fn is_subscribed(&self, room: &RoomId) -> bool {
        let Some(entry) = self.rooms.lock().expect("subs lock").get(room).cloned() else { return false };
        let subscribed = entry.lock().await.subscribed;
        subscribed
    }

    /// Subscribes a followed room's channel again (Redis ignores a subscription it
    /// already has). Returns whether the node follows the room.
    pub async fn resubscribe(&self, backend: &dyn Backend, room: &RoomId) -> Result<bool, BackendError> {
        let Some(entry) = self.rooms.lock().expect("subs lock").get(room).cloned() else { return Ok(false) };
        let sub = entry.lock().await;
        if !sub.subscribed {
            return Ok(false);
        }
        backend.subscribe_room(room).await?;
        Ok(true)
    }

    /// Forgets an unused entry (only if nobody else holds it: clones are made under
    /// this lock).
    fn tidy(&self, room: &RoomId, entry: &Arc<tokio::sync::Mutex<RoomSub>>) {
        let mut rooms = self.rooms.lock().expect("subs lock");
        let unused = entry.try_lock().is_ok_and(|s| s.users == 0 && !s.subscribed);
        if unused && rooms.get(room).is_some_and(|e| Arc::ptr_eq(e, entry) && Arc::strong_count(entry) == 2) {
            rooms.remove(room);
        }
    }
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

    #[tokio::test]
    async fn a_room_is_forgotten_once_its_last_user_left_and_its_owed_removal_settled() {
        let (backend, subs) = (MemoryBackend::new(), RoomSubs::default());
        let (node, room) = (NodeId::parse("n1").unwrap(), RoomId::parse("r").unwrap());
        subs.acquire(&backend, &node, &room).await.unwrap();
        assert_eq!(subs.subscribed(), vec![room.clone()]);
        // A removal is still owed: the index entry stays, the channel goes.
        subs.release(&backend, &node, &room, true).await;
        assert!(!subs.is_subscribed(&room).await);
        subs.forget_if_unused(&backend, &node, &room).await;
        assert!(subs.subscribed().is_empty(), "nothing left to probe");
        // Settling for a room the node never followed leaves nothing behind either.
        subs.forget_if_unused(&backend, &node, &RoomId::parse("other").unwrap()).await;
        assert!(subs.subscribed().is_empty());
    }
}
