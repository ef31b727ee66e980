//! Reference-counted room-channel subscriptions: the node follows a room's channel
//! while it has at least one member there (joined or joining).
//!
//! Each room has an async lock so that a subscribe and an unsubscribe for the same
//! room can never overtake each other on the way to Redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bus::{Backend, BackendError};
use protocol::RoomId;

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

    /// Counts one more user of the room's channel, subscribing first if needed.
    /// Returns true when this call subscribed (the node is new to the room).
    pub async fn acquire(&self, backend: &dyn Backend, room: &RoomId) -> Result<bool, BackendError> {
        let entry = self.entry(room);
        let mut sub = entry.lock().await;
        if !sub.subscribed {
            backend.subscribe_room(room).await?;
            sub.subscribed = true;
            sub.users += 1;
            return Ok(true);
        }
        sub.users += 1;
        Ok(false)
    }

    /// Counts one user less; unsubscribes when none is left. Returns true when it did.
    pub async fn release(&self, backend: &dyn Backend, room: &RoomId) -> bool {
        let entry = self.entry(room);
        let mut sub = entry.lock().await;
        sub.users = sub.users.saturating_sub(1);
        if sub.users > 0 || !sub.subscribed {
            return false;
        }
        if let Err(e) = backend.unsubscribe_room(room).await {
            // The channel stays subscribed; the node ignores events of rooms it does
            // not mirror, and the next release or resubscribe tidies up.
            tracing::debug!(%room, error = %e, "unsubscribe failed");
            return false;
        }
        sub.subscribed = false;
        drop(sub);
        let mut rooms = self.rooms.lock().expect("subs lock");
        // Only forget the entry if nobody else holds it (clones are made under this lock).
        if rooms.get(room).is_some_and(|e| Arc::ptr_eq(e, &entry) && Arc::strong_count(&entry) == 2) {
            rooms.remove(room);
        }
        true
    }
}
