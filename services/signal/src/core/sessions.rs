//! The connections this node serves, by peer id, and the handle the core uses to
//! reach one of them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use protocol::PeerId;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;

use super::events::Event;

/// Cheap to clone; pushing never waits.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub peer: PeerId,
    tx: mpsc::Sender<Arc<Event>>,
    too_slow: CancellationToken,
}

/// The session's end of its outbound queue.
pub struct SessionInbox {
    pub rx: mpsc::Receiver<Arc<Event>>,
    /// Cancelled when the queue overflowed: the session must close with a reason.
    pub too_slow: CancellationToken,
}

impl SessionHandle {
    /// A handle and its inbox. The queue holds `capacity` events; when a client reads
    /// so slowly that it fills, the session is disconnected (reason `too-slow`) rather
    /// than letting memory grow or blocking the senders.
    pub fn new(peer: PeerId, capacity: usize) -> (Self, SessionInbox) {
        let (tx, rx) = mpsc::channel(capacity);
        let too_slow = CancellationToken::new();
        (Self { peer, tx, too_slow: too_slow.clone() }, SessionInbox { rx, too_slow })
    }

    pub fn push(&self, event: Arc<Event>) {
        match self.tx.try_send(event) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => self.too_slow.cancel(),
        }
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

    pub fn remove(&self, peer: &PeerId) {
        self.by_peer.write().expect("sessions lock").remove(peer);
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
