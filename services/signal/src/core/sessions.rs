//! The connections this node serves, by peer id, and the handle the core uses to
//! reach one of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use protocol::PeerId;

use super::events::Event;
use super::hold::Hold;
use super::outbox::Outbox;

/// Cheap to clone; pushing never waits.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub peer: PeerId,
    outbox: Arc<Outbox>,
    /// Set on a resumed connection until what its earlier node held has arrived: events
    /// that reach it directly wait there, so that they follow the held ones (see
    /// [`super::resume`]). None for every other connection (one pointer's cost).
    hold: Option<Arc<Hold>>,
}

/// The session's end of its outbound queue: it reads the events and watches the
/// alarms (see [`Outbox`]).
pub struct SessionInbox(Arc<Outbox>);

impl SessionInbox {
    /// An inbox nothing feeds, left in place of one handed on (to hold an away member's
    /// events).
    pub fn ended() -> Self {
        Self(Outbox::new(1))
    }
}

impl std::ops::Deref for SessionInbox {
    type Target = Outbox;

    fn deref(&self) -> &Outbox {
        &self.0
    }
}

impl SessionHandle {
    /// A handle and its inbox. The queue holds `capacity` events; when a client reads
    /// so slowly that it fills, the session is disconnected (reason `too-slow`) rather
    /// than letting memory grow or blocking the senders.
    pub fn new(peer: PeerId, capacity: usize) -> (Self, SessionInbox) {
        let outbox = Outbox::new(capacity);
        (Self { peer, outbox: outbox.clone(), hold: None }, SessionInbox(outbox))
    }

    /// The same queue under another peer id, holding what arrives until the hand-over
    /// of `rooms` from the earlier node is complete: the connection resumed `peer`.
    pub fn resumed_as(&self, peer: PeerId, rooms: impl IntoIterator<Item = protocol::RoomId>) -> Self {
        let hold = Hold::new(self.outbox.clone(), rooms);
        Self { peer, outbox: self.outbox.clone(), hold: Some(hold) }
    }

    /// The same connection under another peer id (a registration's, see
    /// `Resumes::of_registration`), before it joins anything.
    pub fn renamed(&self, peer: PeerId) -> Self {
        Self { peer, outbox: self.outbox.clone(), hold: None }
    }

    pub fn push(&self, event: Arc<Event>) {
        match &self.hold {
            Some(hold) => hold.push_direct(event),
            None => self.send(event),
        }
    }

    /// An event its earlier node held for a resumed connection (in the order held).
    pub fn push_forwarded(&self, event: Arc<Event>) {
        match &self.hold {
            Some(hold) => hold.push_forwarded(event),
            None => self.send(event),
        }
    }

    pub fn hold(&self) -> Option<&Arc<Hold>> {
        self.hold.as_ref()
    }

    fn send(&self, event: Arc<Event>) {
        self.outbox.push(event);
    }

    /// Resolves once the connection's queue (or a hold for it) has overflowed.
    pub async fn overflowed(&self) {
        self.outbox.too_slow().await;
    }

    /// Ends the connection as too slow (a hold overflowed, or a resume elsewhere took
    /// the connection over).
    pub fn cut_off(&self) {
        self.outbox.raise_too_slow();
    }

    /// Whether both handles feed the same connection.
    pub fn same_connection(&self, other: &SessionHandle) -> bool {
        Arc::ptr_eq(&self.outbox, &other.outbox)
    }
}

#[derive(Default)]
pub struct Sessions {
    by_peer: RwLock<HashMap<PeerId, SessionHandle>>,
    /// Set once the node drains: a connection registered later is told at once.
    draining: AtomicBool,
}

impl Sessions {
    pub fn insert(&self, handle: SessionHandle) {
        let mut by_peer = self.by_peer.write().expect("sessions lock");
        if self.draining.load(Ordering::Acquire) {
            handle.outbox.ask_to_drain();
        }
        by_peer.insert(handle.peer.clone(), handle);
    }

    /// Tells every connection, and every one registered from now on, that the node is
    /// draining (each says `reconnect` to its client, see `connection`).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        for handle in self.by_peer.read().expect("sessions lock").values() {
            handle.outbox.ask_to_drain();
        }
    }

    /// Forgets the connection `handle` feeds, unless another connection has since taken
    /// its peer id (it resumed on this node).
    pub fn remove(&self, handle: &SessionHandle) {
        let mut by_peer = self.by_peer.write().expect("sessions lock");
        if by_peer.get(&handle.peer).is_some_and(|h| h.same_connection(handle)) {
            by_peer.remove(&handle.peer);
        }
    }

    pub fn get(&self, peer: &PeerId) -> Option<SessionHandle> {
        self.by_peer.read().expect("sessions lock").get(peer).cloned()
    }

    pub fn len(&self) -> usize {
        self.by_peer.read().expect("sessions lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
