//! The connections this node serves, by peer id, and the handle the core uses to
//! reach one of them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use protocol::PeerId;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use super::events::Event;
use super::hold::Hold;

/// Cheap to clone; pushing never waits.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub peer: PeerId,
    tx: mpsc::Sender<Arc<Event>>,
    too_slow: CancellationToken,
    /// Set on a resumed connection until what its earlier node held has arrived: events
    /// that reach it directly wait there, so that they follow the held ones (see
    /// [`super::resume`]). None for every other connection (one pointer's cost).
    hold: Option<Arc<Hold>>,
}

/// The session's end of its outbound queue.
pub struct SessionInbox {
    pub rx: mpsc::Receiver<Arc<Event>>,
    /// Cancelled when the queue overflowed: the session must close with a reason.
    pub too_slow: CancellationToken,
}

impl SessionInbox {
    /// An inbox nothing feeds, left in place of one handed on (to hold an away member's
    /// events).
    pub fn ended() -> Self {
        let (_, rx) = mpsc::channel(1);
        Self { rx, too_slow: CancellationToken::new() }
    }
}

impl SessionHandle {
    /// A handle and its inbox. The queue holds `capacity` events; when a client reads
    /// so slowly that it fills, the session is disconnected (reason `too-slow`) rather
    /// than letting memory grow or blocking the senders.
    pub fn new(peer: PeerId, capacity: usize) -> (Self, SessionInbox) {
        let (tx, rx) = mpsc::channel(capacity);
        let too_slow = CancellationToken::new();
        (Self { peer, tx, too_slow: too_slow.clone(), hold: None }, SessionInbox { rx, too_slow })
    }

    /// The same queue under another peer id, holding what arrives until the hand-over
    /// of `rooms` from the earlier node is complete: the connection resumed `peer`.
    pub fn resumed_as(&self, peer: PeerId, rooms: impl IntoIterator<Item = protocol::RoomId>) -> Self {
        let hold = Hold::new(self.tx.clone(), self.too_slow.clone(), rooms);
        Self { peer, tx: self.tx.clone(), too_slow: self.too_slow.clone(), hold: Some(hold) }
    }

    /// The same connection under another peer id (a registration's, see
    /// `Resumes::of_registration`), before it joins anything.
    pub fn renamed(&self, peer: PeerId) -> Self {
        Self { peer, tx: self.tx.clone(), too_slow: self.too_slow.clone(), hold: None }
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
        match self.tx.try_send(event) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => self.too_slow.cancel(),
        }
    }

    /// Ends the connection as too slow (a hold overflowed, or a resume elsewhere took
    /// the connection over).
    pub fn cut_off(&self) {
        self.too_slow.cancel();
    }

    /// Whether both handles feed the same connection.
    pub fn same_connection(&self, other: &SessionHandle) -> bool {
        self.tx.same_channel(&other.tx)
    }
}

#[derive(Default)]
pub struct Sessions {
    by_peer: RwLock<HashMap<PeerId, SessionHandle>>,
}

impl Sessions {
    pub fn insert(&self, handle: SessionHandle) {
        self.by_peer.write().expect("sessions lock").insert(handle.peer.clone(), handle);
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
