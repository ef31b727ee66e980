//! The embedded backend: one node, no Redis. It keeps the same promises as Redis
//! (atomic member changes, announcements in change order, receiver counts) so the
//! core behaves identically and the protocol suite runs against both. It has no node
//! registry: one node cannot outlive its own store, so there is nobody to reap.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex as StdMutex;

use async_trait::async_trait;
use bytes::Bytes;
use protocol::{NodeId, PeerId, RoomId};
use tokio::sync::{mpsc, Mutex};

use crate::{
    keys, Backend, BackendError, Claimed, Inbound, JoinOutcome, JoinPolicy, MemberWrite, Membership, MoveOutcome,
    PubSub, Registry, ResumeStore, RoomRecord,
};

/// Inbound queue length. Publishing waits when it is full (the node's dispatcher
/// never calls the backend, so this cannot deadlock).
const INBOX_CAPACITY: usize = 16 * 1024;

#[derive(Default)]
struct Room {
    members: HashMap<PeerId, Bytes>,
    token_hash: Option<String>,
    /// Set for rooms created through the registry.
    record: Option<RoomRecord>,
    locked: bool,
}

/// A resumable connection's record (see [`ResumeStore`]).
struct Resumable {
    token_hash: String,
    node: NodeId,
    rooms: HashSet<RoomId>,
}

#[derive(Default)]
struct State {
    rooms: HashMap<RoomId, Room>,
    resumable: HashMap<PeerId, Resumable>,
    subscriptions: HashSet<String>,
}

pub struct MemoryBackend {
    /// A tokio mutex because publishing happens inside the critical section: that is
    /// what keeps announcements in the order of the changes they describe.
    state: Mutex<State>,
    inbox_tx: mpsc::Sender<Inbound>,
    inbox_rx: StdMutex<Option<mpsc::Receiver<Inbound>>>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
        Self { state: Mutex::new(State::default()), inbox_tx, inbox_rx: StdMutex::new(Some(inbox_rx)) }
    }
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    async fn leave_locked(
        &self,
        room: &RoomId,
        peer: &PeerId,
        announcement: Bytes,
        expected: Option<Bytes>,
    ) -> Result<bool, BackendError> {
        let mut state = self.state.lock().await;
        let Some(r) = state.rooms.get_mut(room) else { return Ok(false) };
        if expected.is_some_and(|e| r.members.get(peer) != Some(&e)) {
            return Ok(false);
        }
        if r.members.remove(peer).is_none() {
            return Ok(false);
        }
        if r.members.is_empty() && r.record.is_none() {
            state.rooms.remove(room);
        }
        self.publish_locked(&state, &keys::room_channel(room), announcement).await;
        Ok(true)
    }

    async fn publish_locked(&self, state: &State, channel: &str, msg: Bytes) -> u64 {
        if !state.subscriptions.contains(channel) {
            return 0;
        }
        match self.inbox_tx.send(Inbound::Message(msg)).await {
            Ok(()) => 1,
            Err(_) => 0, // the node is gone
        }
    }
}

impl Backend for MemoryBackend {
    fn registry(&self) -> Option<&dyn Registry> {
        None
    }
}

#[async_trait]
impl Membership for MemoryBackend {
    async fn join(&self, w: MemberWrite<'_>, policy: JoinPolicy<'_>) -> Result<JoinOutcome, BackendError> {
        let mut state = self.state.lock().await;
        let created = state.rooms.get(w.room).and_then(|r| r.record.clone());
        if created.is_none() && policy.require_registered {
            return Ok(JoinOutcome::NotFound);
        }
        if created.as_ref().is_some_and(|r| r.expires_ms <= policy.now_ms) {
            return Ok(JoinOutcome::Expired);
        }
        let room = state.rooms.entry(w.room.clone()).or_default();
        if room.locked {
            return Ok(JoinOutcome::Locked);
        }
        let token_hash = policy.token_hash;
        if room.token_hash.is_some() && room.token_hash.as_deref() != token_hash {
            return Ok(JoinOutcome::BadToken);
        }
        if room.members.contains_key(w.peer) {
            return Ok(JoinOutcome::Taken);
        }
        let capacity = match created.and_then(|r| r.capacity) {
            Some(limit) => policy.capacity.min(limit as usize),
            None => policy.capacity,
        };
        if room.members.len() >= capacity {
            return Ok(JoinOutcome::Full);
        }
        if room.token_hash.is_none() {
            room.token_hash = token_hash.map(str::to_owned);
        }
        room.members.insert(w.peer.clone(), w.record);
        let others = if policy.with_others {
            room.members.iter().filter(|(p, _)| *p != w.peer).map(|(_, r)| r.clone()).collect()
        } else {
            Vec::new()
        };
        let token_hash = room.token_hash.clone();
        let expires_ms = room.record.as_ref().map(|r| r.expires_ms);
        self.publish_locked(&state, &keys::room_channel(w.room), w.announcement).await;
        Ok(JoinOutcome::Joined { others, token_hash, expires_ms })
    }

    async fn create_room(&self, room: &RoomId, record: &RoomRecord) -> Result<bool, BackendError> {
        let mut state = self.state.lock().await;
        if state.rooms.get(room).is_some_and(|r| r.record.is_some() || !r.members.is_empty()) {
            return Ok(false);
        }
        // The embedded backend forgets nothing by itself: an expired record stays (and
        // keeps answering "expired") until the process ends.
        let entry = Room {
            members: HashMap::new(),
            token_hash: Some(record.token_hash.clone()),
            record: Some(record.clone()),
            locked: false,
        };
        state.rooms.insert(room.clone(), entry);
        Ok(true)
    }

    async fn room_record(&self, room: &RoomId) -> Result<Option<RoomRecord>, BackendError> {
        Ok(self.state.lock().await.rooms.get(room).and_then(|r| r.record.clone()))
    }

    async fn active_rooms(&self) -> Result<Vec<RoomId>, BackendError> {
        let state = self.state.lock().await;
        Ok(state.rooms.iter().filter(|(_, r)| !r.members.is_empty()).map(|(id, _)| id.clone()).collect())
    }

    async fn set_room_locked(&self, room: &RoomId, locked: bool) -> Result<(), BackendError> {
        if let Some(r) = self.state.lock().await.rooms.get_mut(room) {
            r.locked = locked;
        }
        Ok(())
    }

    async fn unregister_room(&self, room: &RoomId) -> Result<(), BackendError> {
        let mut state = self.state.lock().await;
        if let Some(r) = state.rooms.get_mut(room) {
            r.record = None;
            r.token_hash = None;
            r.locked = false;
            if r.members.is_empty() {
                state.rooms.remove(room);
            }
        }
        Ok(())
    }

    async fn restore(&self, w: MemberWrite<'_>, token_hash: Option<&str>) -> Result<bool, BackendError> {
        let mut state = self.state.lock().await;
        let room = state.rooms.entry(w.room.clone()).or_default();
        if room.token_hash.is_none() {
            room.token_hash = token_hash.map(str::to_owned);
        }
        if room.members.contains_key(w.peer) {
            return Ok(false);
        }
        room.members.insert(w.peer.clone(), w.record);
        self.publish_locked(&state, &keys::room_channel(w.room), w.announcement).await;
        Ok(true)
    }

    async fn move_member(&self, w: MemberWrite<'_>, expected: Bytes) -> Result<MoveOutcome, BackendError> {
        let mut state = self.state.lock().await;
        let Some(room) = state.rooms.get_mut(w.room).filter(|r| r.members.contains_key(w.peer)) else {
            return Ok(MoveOutcome::Gone);
        };
        if room.members.get(w.peer) != Some(&expected) {
            return Ok(MoveOutcome::Changed);
        }
        room.members.insert(w.peer.clone(), w.record);
        let others = room.members.iter().filter(|(p, _)| *p != w.peer).map(|(_, r)| r.clone()).collect();
        let token_hash = room.token_hash.clone();
        let expires_ms = room.record.as_ref().map(|r| r.expires_ms);
        self.publish_locked(&state, &keys::room_channel(w.room), w.announcement).await;
        Ok(MoveOutcome::Moved { others, token_hash, expires_ms })
    }

    async fn member_record(&self, room: &RoomId, peer: &PeerId) -> Result<Option<Bytes>, BackendError> {
        Ok(self.state.lock().await.rooms.get(room).and_then(|r| r.members.get(peer).cloned()))
    }

    async fn leave(&self, room: &RoomId, peer: &PeerId, announcement: Bytes) -> Result<bool, BackendError> {
        self.leave_locked(room, peer, announcement, None).await
    }

    async fn leave_if_unchanged(
        &self,
        room: &RoomId,
        peer: &PeerId,
        expected: Bytes,
        announcement: Bytes,
    ) -> Result<bool, BackendError> {
        self.leave_locked(room, peer, announcement, Some(expected)).await
    }

    async fn update(&self, w: MemberWrite<'_>) -> Result<bool, BackendError> {
        let mut state = self.state.lock().await;
        let Some(record) = state.rooms.get_mut(w.room).and_then(|r| r.members.get_mut(w.peer)) else {
            return Ok(false);
        };
        *record = w.record;
        self.publish_locked(&state, &keys::room_channel(w.room), w.announcement).await;
        Ok(true)
    }

    async fn snapshot(&self, room: &RoomId, marker: Bytes) -> Result<Vec<Bytes>, BackendError> {
        let state = self.state.lock().await;
        let records = state.rooms.get(room).map(|r| r.members.values().cloned().collect()).unwrap_or_default();
        self.publish_locked(&state, &keys::room_channel(room), marker).await;
        Ok(records)
    }

    async fn members(&self, room: &RoomId) -> Result<Vec<Bytes>, BackendError> {
        let state = self.state.lock().await;
        Ok(state.rooms.get(room).map(|r| r.members.values().cloned().collect()).unwrap_or_default())
    }
}

#[async_trait]
impl PubSub for MemoryBackend {
    fn take_inbox(&self) -> Option<mpsc::Receiver<Inbound>> {
        self.inbox_rx.lock().expect("inbox lock").take()
    }

    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }

    async fn publish_node(&self, node: &NodeId, msg: Bytes) -> Result<u64, BackendError> {
        let state = self.state.lock().await;
        Ok(self.publish_locked(&state, &keys::node_channel(node), msg).await)
    }

    async fn publish_room(&self, room: &RoomId, msg: Bytes) -> Result<u64, BackendError> {
        let state = self.state.lock().await;
        Ok(self.publish_locked(&state, &keys::room_channel(room), msg).await)
    }

    async fn subscribe_node(&self, node: &NodeId) -> Result<(), BackendError> {
        self.state.lock().await.subscriptions.insert(keys::node_channel(node));
        Ok(())
    }

    async fn resubscribe(&self) -> Result<(), BackendError> {
        Ok(())
    }

    async fn subscribe_room(&self, room: &RoomId) -> Result<(), BackendError> {
        self.state.lock().await.subscriptions.insert(keys::room_channel(room));
        Ok(())
    }

    async fn unsubscribe_room(&self, room: &RoomId) -> Result<(), BackendError> {
        self.state.lock().await.subscriptions.remove(&keys::room_channel(room));
        Ok(())
    }
}

#[async_trait]
impl ResumeStore for MemoryBackend {
    async fn note_resumable(
        &self,
        peer: &PeerId,
        token_hash: &str,
        node: &NodeId,
        room: &RoomId,
    ) -> Result<(), BackendError> {
        let mut state = self.state.lock().await;
        let record = state.resumable.entry(peer.clone()).or_insert_with(|| Resumable {
            token_hash: String::new(),
            node: node.clone(),
            rooms: HashSet::new(),
        });
        record.token_hash = token_hash.to_owned();
        record.node = node.clone();
        record.rooms.insert(room.clone());
        Ok(())
    }

    async fn forget_resumable_room(&self, peer: &PeerId, room: &RoomId) -> Result<(), BackendError> {
        if let Some(record) = self.state.lock().await.resumable.get_mut(peer) {
            record.rooms.remove(room);
        }
        Ok(())
    }

    async fn claim_resumable(
        &self,
        peer: &PeerId,
        token_hash: &str,
        new_token_hash: &str,
        node: &NodeId,
    ) -> Result<Option<Claimed>, BackendError> {
        let mut state = self.state.lock().await;
        let Some(record) = state.resumable.get_mut(peer).filter(|r| r.token_hash == token_hash) else {
            return Ok(None);
        };
        let claimed = Claimed { node: record.node.clone(), rooms: record.rooms.iter().cloned().collect() };
        record.token_hash = new_token_hash.to_owned();
        record.node = node.clone();
        Ok(Some(claimed))
    }

    async fn end_resumable(&self, peer: &PeerId, node: &NodeId) -> Result<bool, BackendError> {
        let mut state = self.state.lock().await;
        if state.resumable.get(peer).is_some_and(|r| &r.node != node) {
            return Ok(false);
        }
        state.resumable.remove(peer);
        Ok(true)
    }
}
