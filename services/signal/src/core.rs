//! Rooms, authorization and routing, with no sockets and no JSON: sessions call in
//! with ids and payloads, and the core answers or pushes [`Event`]s to sessions.
//!
//! A signal to a peer on this node is delivered locally; to a peer elsewhere it is one
//! publish to the inbox of the node named in the peer id. Room-wide events are one
//! publish to the room channel, which every node with members there follows.

mod events;
mod liveness;
mod rooms;
mod rules;
mod sessions;
mod subs;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{Backend, BackendError, Inbound, JoinOutcome, MemberWrite};
use bytes::Bytes;
use protocol::{
    BusEvent, DisplayName, Envelope, ErrorCode, LeftReason, MemberInfo, NodeId, Payload, PeerId, Role, RoomId,
    SignalKind,
};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, warn};

pub use events::Event;
pub use liveness::Health;
pub use rooms::JoinDone;
pub use sessions::{SessionHandle, SessionInbox, Sessions};

/// Failures of a client command; each maps to one protocol error code.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("already in this room")]
    AlreadyInRoom,
    #[error("already in the maximum of {0} rooms")]
    TooManyRooms(usize),
    #[error("room is full")]
    RoomFull,
    #[error("wrong or missing room token")]
    Unauthorized,
    #[error("not in this room")]
    NotInRoom,
    #[error("no such peer in this room")]
    NoSuchPeer,
    #[error("peer is not reachable")]
    PeerUnavailable,
    #[error("signaling store unavailable, try again")]
    Unavailable(#[from] BackendError),
    #[error("the room's event stream did not confirm the join in time")]
    JoinTimeout,
}

impl CoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CoreError::AlreadyInRoom | CoreError::TooManyRooms(_) => ErrorCode::BadRequest,
            CoreError::RoomFull => ErrorCode::RoomFull,
            CoreError::Unauthorized => ErrorCode::Unauthorized,
            CoreError::NotInRoom => ErrorCode::NotInRoom,
            CoreError::NoSuchPeer => ErrorCode::NotFound,
            CoreError::PeerUnavailable => ErrorCode::PeerUnavailable,
            CoreError::Unavailable(_) | CoreError::JoinTimeout => ErrorCode::Unavailable,
        }
    }
}

/// Room rules and timings the core applies.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub room_capacity: usize,
    pub rooms_per_peer: usize,
    pub heartbeat_interval: Duration,
    pub node_ttl: Duration,
    /// How long a join waits for its own announcement to come back on the room channel.
    pub join_timeout: Duration,
}

/// A join request, already validated at the edge.
pub struct JoinRequest {
    pub room: RoomId,
    pub name: DisplayName,
    pub role: Role,
    pub token: Option<String>,
    pub meta: Payload,
}

pub struct Core {
    node: NodeId,
    backend: Arc<dyn Backend>,
    settings: CoreSettings,
    pub sessions: Sessions,
    rooms: rooms::Rooms,
    subs: subs::RoomSubs,
    pub health: Health,
    resync_wanted: Notify,
    dropped_envelopes: AtomicU64,
    /// Bus messages lost because the node fell behind.
    lagged_envelopes: AtomicU64,
}

impl Core {
    pub fn new(node: NodeId, backend: Arc<dyn Backend>, settings: CoreSettings) -> Arc<Self> {
        Arc::new(Self {
            rooms: rooms::Rooms::new(node.clone()),
            health: Health::new(settings.heartbeat_interval),
            node,
            backend,
            settings,
            sessions: Sessions::default(),
            subs: subs::RoomSubs::default(),
            resync_wanted: Notify::new(),
            dropped_envelopes: AtomicU64::new(0),
            lagged_envelopes: AtomicU64::new(0),
        })
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.room_count()
    }

    fn envelope(&self, event: BusEvent) -> Bytes {
        Bytes::from(Envelope::new(self.node.clone(), event).encode())
    }

    /// Subscribes to this node's inbox and registers the node. Call once before serving.
    pub async fn start(&self) -> Result<mpsc::Receiver<Inbound>, BackendError> {
        let inbox = self
            .backend
            .take_inbox()
            .ok_or_else(|| BackendError::Protocol("the backend's inbox was already taken".into()))?;
        self.backend.subscribe_node(&self.node).await?;
        self.backend.heartbeat(&self.node, self.settings.node_ttl.as_millis() as u64).await?;
        self.health.set_redis(true);
        Ok(inbox)
    }

    /// Joins a room: see [`rooms`] for the handshake that makes the member lists exact.
    pub async fn join(
        &self,
        session: &SessionHandle,
        req: JoinRequest,
        rooms_held: usize,
    ) -> Result<JoinDone, CoreError> {
        rules::may_join(
            self.rooms.is_active_local(&req.room, &session.peer),
            rooms_held,
            self.settings.rooms_per_peer,
        )?;
        let room = req.room.clone();
        let token_hash = req.token.as_deref().map(rules::token_hash);
        let record =
            Arc::new(MemberInfo { peer: session.peer.clone(), name: req.name, role: req.role, meta: req.meta });

        if self.subs.acquire(self.backend(), &room).await? {
            if let Err(e) = self.backend.note_room(&self.node, &room).await {
                self.subs.release(self.backend(), &room).await;
                return Err(e.into());
            }
        }
        let nonce = rand::random::<u64>() | 1;
        let done = match self.rooms.begin_join(&room, session.clone(), record.clone(), nonce) {
            Ok(done) => done,
            Err(e) => {
                self.subs.release(self.backend(), &room).await;
                return Err(e);
            }
        };
        match self.run_join(&room, &record, nonce, token_hash.as_deref(), done).await {
            Ok(done) => Ok(done),
            Err(e) => {
                if self.rooms.remove_local(&room, &session.peer) {
                    self.subs.release(self.backend(), &room).await;
                }
                Err(e)
            }
        }
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
        match self.backend.join(write, self.settings.room_capacity, token_hash).await? {
            JoinOutcome::Full => Err(CoreError::RoomFull),
            JoinOutcome::BadToken => Err(CoreError::Unauthorized),
            JoinOutcome::Joined { others, token_hash } => {
                let others = others.iter().filter_map(|r| self.decode_member(r)).collect();
                self.rooms.join_snapshot(room, &record.peer, others, token_hash);
                match tokio::time::timeout(self.settings.join_timeout, done).await {
                    Ok(Ok(done)) => Ok(done),
                    _ => {
                        // Joined in Redis but our channel never confirmed it: undo.
                        warn!(%room, "join not confirmed by the room channel; undoing");
                        let left =
                            BusEvent::Left { room: room.clone(), peer: record.peer.clone(), reason: LeftReason::Left };
                        let _ = self.backend.leave(room, &record.peer, self.envelope(left)).await;
                        self.health.subscription_suspect();
                        Err(CoreError::JoinTimeout)
                    }
                }
            }
        }
    }

    fn decode_member(&self, record: &[u8]) -> Option<Arc<MemberInfo>> {
        match MemberInfo::decode(record) {
            Ok(m) => Some(Arc::new(m)),
            Err(e) => {
                warn!(error = %e, "unreadable member record in Redis; skipped");
                None
            }
        }
    }

    /// Leaves a room; the others hear `peer-left` with `reason`.
    pub async fn leave(&self, peer: &PeerId, room: &RoomId, reason: LeftReason) -> Result<(), CoreError> {
        if !self.rooms.is_active_local(room, peer) {
            return Err(CoreError::NotInRoom);
        }
        let left = BusEvent::Left { room: room.clone(), peer: peer.clone(), reason };
        let result = self.backend.leave(room, peer, self.envelope(left)).await;
        // Locally the member is gone either way: a failed removal in Redis is healed by
        // the node-lost reaper or the next resync.
        if self.rooms.remove_local(room, peer) && self.subs.release(self.backend(), room).await {
            let _ = self.backend.forget_room(&self.node, room).await;
        }
        result?;
        Ok(())
    }

    /// Relays a signal to one peer that shares `room` with the sender.
    pub async fn signal(
        &self,
        from: &PeerId,
        room: &RoomId,
        to: &PeerId,
        kind: SignalKind,
        data: Payload,
    ) -> Result<(), CoreError> {
        let (sender_in, target_in) = self.rooms.signal_check(room, from, to);
        rules::may_signal(sender_in, target_in)?;
        if to.is_on(&self.node) {
            return match self.sessions.get(to) {
                Some(target) if self.rooms.is_active_local(room, to) => {
                    target.push(Arc::new(Event::Signal { room: room.clone(), from: from.clone(), kind, data }));
                    Ok(())
                }
                _ => Err(CoreError::PeerUnavailable),
            };
        }
        let msg =
            self.envelope(BusEvent::Signal { room: room.clone(), from: from.clone(), to: to.clone(), kind, data });
        // The peer id names its node: one publish, no lookup. Nobody listening = node gone.
        if self.backend.publish_node(&to.node(), msg).await? == 0 {
            return Err(CoreError::PeerUnavailable);
        }
        Ok(())
    }

    /// Sends to every other member of the room: one publish, whatever the room size.
    pub async fn broadcast(
        &self,
        from: &PeerId,
        room: &RoomId,
        kind: SignalKind,
        data: Payload,
    ) -> Result<(), CoreError> {
        if !self.rooms.is_active_local(room, from) {
            return Err(CoreError::NotInRoom);
        }
        let msg = self.envelope(BusEvent::Broadcast { room: room.clone(), from: from.clone(), kind, data });
        self.backend.publish_room(room, msg).await?;
        Ok(())
    }

    /// Replaces the member's metadata; the others hear `peer-updated`.
    pub async fn update(&self, peer: &PeerId, room: &RoomId, meta: Payload) -> Result<(), CoreError> {
        let current = self.rooms.local_record(room, peer).ok_or(CoreError::NotInRoom)?;
        let record = Arc::new(MemberInfo { meta, ..(*current).clone() });
        let write = MemberWrite {
            room,
            peer,
            record: Bytes::from(record.encode()),
            announcement: self.envelope(BusEvent::Updated { room: room.clone(), member: (*record).clone() }),
        };
        if !self.backend.update(write).await? {
            return Err(CoreError::NotInRoom);
        }
        self.rooms.set_local_record(room, record);
        Ok(())
    }

    /// A connection ended: leave every room it was in.
    pub async fn disconnect(&self, peer: &PeerId, rooms: &[RoomId]) {
        for room in rooms {
            if let Err(e) = self.leave(peer, room, LeftReason::Disconnected).await {
                debug!(%room, error = %e, "leave on disconnect failed; the reaper or a resync cleans up");
            }
        }
        self.sessions.remove(peer);
    }

    /// Handles one inbound bus item. Runs on the dispatcher task, in arrival order.
    pub fn dispatch(&self, inbound: Inbound) {
        let bytes = match inbound {
            Inbound::Message(bytes) => bytes,
            Inbound::Resync(why) => {
                debug!(why, "resync requested by the bus");
                self.resync_wanted.notify_one();
                return;
            }
            Inbound::Lagged(lost) => {
                self.lagged_envelopes.fetch_add(lost, Ordering::Relaxed);
                warn!(lost, "bus subscriber fell behind (node overloaded): messages lost; resynchronising");
                self.resync_wanted.notify_one();
                return;
            }
        };
        let env = match Envelope::decode(&bytes) {
            Ok(env) => env,
            Err(e) => {
                self.dropped_envelopes.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "dropped an unreadable bus envelope");
                return;
            }
        };
        match env.event {
            BusEvent::Signal { room, from, to, kind, data } => self.deliver_signal(room, from, to, kind, data),
            BusEvent::Probe { nonce } => self.health.probe_returned(nonce),
            event => {
                let grace = Instant::now() + self.settings.node_ttl;
                if self.rooms.apply(&event, grace) {
                    // Another node declared some of ours lost: write them back.
                    self.resync_wanted.notify_one();
                }
            }
        }
    }

    fn deliver_signal(&self, room: RoomId, from: PeerId, to: PeerId, kind: SignalKind, data: Payload) {
        match self.sessions.get(&to) {
            Some(target) if self.rooms.is_active_local(&room, &to) => {
                target.push(Arc::new(Event::Signal { room, from, kind, data }));
            }
            _ => debug!(%room, "signal for a peer no longer here; dropped"),
        }
    }

    /// Unreadable envelopes seen since start (for metrics).
    pub fn dropped_envelopes(&self) -> u64 {
        self.dropped_envelopes.load(Ordering::Relaxed)
    }

    pub fn lagged_envelopes(&self) -> u64 {
        self.lagged_envelopes.load(Ordering::Relaxed)
    }
}
