//! The node's mirror of the rooms it serves, fed by room-channel events, and the join
//! handshake that makes "joined + peer-joined" exact under concurrent joins.
//!
//! ```text
//!  joining node                         Redis                      other node
//!  subscribe(room channel) ───────────▶  (subscription live)
//!  begin_join(nonce)
//!  JOIN script ───────────────────────▶  add member, read others,
//!                                        PUBLISH joined{nonce} ──▶ peer-joined to its members
//!  ◀── snapshot (others) ──────────────
//!  ◀── joined{nonce} on the channel ───  (the marker)
//! ```
//! The script runs atomically and publishes in the same step, so the room channel's
//! order is the order of the room's changes. Every change before the marker is in the
//! snapshot; every event after it is news. The member becomes active when both the
//! snapshot and its marker have arrived (in either order); events after the marker are
//! kept as its backlog until then. Resynchronisation uses the same trick with a
//! `marker` event.
//!
//! A std mutex guards all of it: every operation is a short, non-blocking update (pushes
//! to sessions never wait), and none is held across an await.

use std::collections::{HashMap, HashSet};
use std::mem;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use protocol::{BusEvent, LeftReason, MemberInfo, NodeId, PeerId, RoomId};
use tokio::sync::oneshot;

use super::removals::Removals;
use crate::core::events::{Event, Frames, HandOverMark};
use crate::core::sessions::SessionHandle;

/// What a completed join hands to the session: the others already there, and the
/// events that happened after the join but before the session could be told.
#[derive(Debug)]
pub struct JoinDone {
    pub others: Vec<Arc<MemberInfo>>,
    pub backlog: Vec<Arc<Event>>,
}

struct Joining {
    nonce: u64,
    snapshot: Option<Vec<Arc<MemberInfo>>>,
    /// The node's own (exact) view at the marker, when it had one. It wins over the
    /// snapshot: if Redis lost members (FLUSHALL) and their nodes have not written them
    /// back yet, the snapshot lacks them, and their restore announcements are
    /// duplicates to this node, so the joiner would never hear of them.
    view: Option<Vec<Arc<MemberInfo>>>,
    marker_seen: bool,
    backlog: Vec<Arc<Event>>,
    done: Option<oneshot::Sender<JoinDone>>,
    /// A member that resumed here (its marker is its `moved`): what reaches it goes to
    /// its session, which holds it (see `core::hold`), rather than waiting for `joined`.
    resume: bool,
    /// On a resume to the node that already held the member away: that entry, which
    /// keeps receiving until the marker (it forwards in order), and comes back if the
    /// move fails.
    previous: Option<Box<Local>>,
    /// Moves seen after the marker, with their place in the backlog, replayed onto the
    /// snapshot when this join makes the mirror exact.
    moves: Vec<(usize, Arc<MemberInfo>)>,
}

impl Joining {
    fn new(nonce: u64, done: oneshot::Sender<JoinDone>, resume: bool, previous: Option<Box<Local>>) -> Self {
        Self {
            nonce,
            snapshot: None,
            view: None,
            marker_seen: false,
            backlog: Vec::new(),
            done: Some(done),
            resume,
            previous,
            moves: Vec::new(),
        }
    }
}

/// Boxed while joining: every active member of every mirror holds a `LocalState`, and
/// only the few mid-handshake need a `Joining`'s room.
enum LocalState {
    Joining(Box<Joining>),
    Active,
}

struct Local {
    session: SessionHandle,
    record: Arc<MemberInfo>,
    state: LocalState,
}

struct Resync {
    nonce: u64,
    records: Option<Vec<Arc<MemberInfo>>>,
    marker_seen: bool,
    /// Peers that events after the marker spoke of: those events are authoritative.
    since: HashSet<PeerId>,
}

#[derive(Default)]
struct RoomMirror {
    members: HashMap<PeerId, Arc<MemberInfo>>,
    /// Whether `members` is exact (some local member completed its handshake).
    synced: bool,
    local: HashMap<PeerId, Local>,
    token_hash: Option<String>,
    /// When the room expires, if it was created ahead (Unix ms); cleared once this node
    /// has closed it.
    expires_ms: Option<u64>,
    resync: Option<Resync>,
    /// Members missing from Redis after a resync; confirmed gone after a grace period,
    /// because their own node may not have written them back yet.
    suspects: HashMap<PeerId, Instant>,
}

/// Why a member could not be registered as joining.
#[derive(Debug)]
pub enum BeginJoinError {
    AlreadyInRoom,
    /// A removal of this id from the room is owed: settle it first.
    RemovalOwed,
}

/// Where a member of a room is, as this node's mirror knows it.
pub enum Target {
    /// Served by this node: its session, if its join has completed and it is still here.
    Here(Option<SessionHandle>),
    /// Served by another node.
    Away(NodeId),
}

/// What applying a `moved` asks of the node.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MovedHere {
    /// The node has other members in the room, which may have routed signals to the
    /// moved member through its old node: it must send that node a fence.
    pub fence: bool,
    /// The member was served here and is not any more: the node may stop following
    /// the room.
    pub left: bool,
}

/// A member this node serves, as resynchronisation writes it back.
pub struct LocalMember {
    pub room: RoomId,
    pub record: Arc<MemberInfo>,
    pub token_hash: Option<String>,
}

pub struct Rooms {
    node: NodeId,
    /// Beyond this many members a room is quiet (see [`is_news_of_a_non_host`]).
    presence_limit: usize,
    rooms: Mutex<HashMap<RoomId, RoomMirror>>,
}

impl Rooms {
    pub fn new(node: NodeId, presence_limit: usize) -> Self {
        Self { node, presence_limit, rooms: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, RoomMirror>> {
        self.rooms.lock().expect("rooms lock")
    }

    /// Registers a local member as joining, before the join script runs, unless a
    /// removal of the same id from the room is owed (checked under this lock, which a
    /// ghost sweep also holds while it decides to owe one).
    pub fn begin_join(
        &self,
        room: &RoomId,
        session: SessionHandle,
        record: Arc<MemberInfo>,
        nonce: u64,
        removals: &Removals,
    ) -> Result<oneshot::Receiver<JoinDone>, BeginJoinError> {
        let (tx, rx) = oneshot::channel();
        let mut rooms = self.lock();
        let mirror = rooms.entry(room.clone()).or_default();
        if mirror.local.contains_key(&record.peer) {
            return Err(BeginJoinError::AlreadyInRoom);
        }
        if removals.get(room, &record.peer).is_some() {
            return Err(BeginJoinError::RemovalOwed);
        }
        let joining = Joining::new(nonce, tx, false, None);
        mirror
            .local
            .insert(record.peer.clone(), Local { session, record, state: LocalState::Joining(Box::new(joining)) });
        Ok(rx)
    }

    /// Registers a member that resumed here as joining, before its move script runs. A
    /// member this node holds away (the same peer resumed on the node it dropped from)
    /// is kept aside until the marker.
    pub fn begin_resume(
        &self,
        room: &RoomId,
        session: SessionHandle,
        record: Arc<MemberInfo>,
        nonce: u64,
    ) -> Result<oneshot::Receiver<JoinDone>, BeginJoinError> {
        let (tx, rx) = oneshot::channel();
        let mut rooms = self.lock();
        let mirror = rooms.entry(room.clone()).or_default();
        let previous = match mirror.local.remove(&record.peer) {
            Some(old) if matches!(old.state, LocalState::Active) => Some(Box::new(old)),
            Some(old) => {
                mirror.local.insert(record.peer.clone(), old);
                return Err(BeginJoinError::AlreadyInRoom);
            }
            None => None,
        };
        let joining = Joining::new(nonce, tx, true, previous);
        mirror
            .local
            .insert(record.peer.clone(), Local { session, record, state: LocalState::Joining(Box::new(joining)) });
        Ok(rx)
    }

    /// A resume's move did not happen: forget the joining entry and put back what it
    /// replaced.
    pub fn cancel_resume(&self, room: &RoomId, peer: &PeerId) {
        let mut rooms = self.lock();
        let Some(mirror) = rooms.get_mut(room) else { return };
        if let Some(Local { state: LocalState::Joining(j), .. }) = mirror.local.remove(peer) {
            if let Some(previous) = j.previous {
                mirror.local.insert(peer.clone(), *previous);
            }
        }
        if mirror.local.is_empty() {
            rooms.remove(room);
        }
    }

    /// The join script's answer. Completes the join if the marker came first.
    pub fn join_snapshot(
        &self,
        room: &RoomId,
        peer: &PeerId,
        others: Vec<Arc<MemberInfo>>,
        token_hash: Option<String>,
    ) {
        let mut rooms = self.lock();
        let Some(mirror) = rooms.get_mut(room) else { return };
        mirror.token_hash = token_hash;
        let Some(Local { state: LocalState::Joining(j), .. }) = mirror.local.get_mut(peer) else { return };
        j.snapshot = Some(others);
        if j.marker_seen {
            complete_join(mirror, peer, self.presence_limit);
        }
    }

    /// Remembers when a room created ahead expires.
    pub fn note_expiry(&self, room: &RoomId, expires_ms: Option<u64>) {
        if let Some(mirror) = self.lock().get_mut(room) {
            mirror.expires_ms = expires_ms;
        }
    }

    /// Rooms with local members that expired by `now_ms`; each is returned once.
    pub fn take_expired(&self, now_ms: u64) -> Vec<RoomId> {
        let mut rooms = self.lock();
        let mut due = Vec::new();
        for (room, mirror) in rooms.iter_mut() {
            if mirror.expires_ms.is_some_and(|at| at <= now_ms) {
                mirror.expires_ms = None;
                due.push(room.clone());
            }
        }
        due
    }

    /// Runs `owe` if `peer` is not a local member of `room` (joining or joined), under
    /// the lock `begin_join` takes: a ghost sweep's decision cannot interleave with a
    /// registration of the same id.
    pub fn unless_local(&self, room: &RoomId, peer: &PeerId, owe: impl FnOnce()) -> bool {
        let rooms = self.lock();
        if rooms.get(room).is_some_and(|m| m.local.contains_key(peer)) {
            return false;
        }
        owe();
        true
    }

    /// Forgets a local member (left, disconnected, or its join failed). Returns true
    /// if it was there.
    pub fn remove_local(&self, room: &RoomId, peer: &PeerId) -> bool {
        let mut rooms = self.lock();
        let Some(mirror) = rooms.get_mut(room) else { return false };
        let removed = mirror.local.remove(peer).is_some();
        if mirror.local.is_empty() {
            rooms.remove(room);
        }
        removed
    }

    /// Applies a member's `moved`: the mirror routes to its new node from here on. The
    /// node it left stops serving it in the room (and marks its held queue); the node it
    /// moved to completes its handshake.
    pub fn apply_moved(&self, room: &RoomId, member: &MemberInfo, nonce: u64) -> MovedHere {
        let mut rooms = self.lock();
        let Some(mirror) = rooms.get_mut(room) else { return MovedHere::default() };
        let member = Arc::new(member.clone());
        let peer = member.peer.clone();
        if let Some(resync) = mirror.resync.as_mut().filter(|r| r.marker_seen) {
            resync.since.insert(peer.clone());
        }
        mirror.suspects.remove(&peer);
        if mirror.synced {
            mirror.members.insert(peer.clone(), member.clone());
        }
        for local in mirror.local.values_mut() {
            if let LocalState::Joining(j) = &mut local.state {
                if j.marker_seen && local.record.peer != peer {
                    j.moves.push((j.backlog.len(), member.clone()));
                }
            }
        }
        let mut left = false;
        if member.is_served_by(&self.node) {
            mark_join_marker(mirror, room, &peer, nonce, self.presence_limit);
        } else if let Some(gone) = mirror.local.remove(&peer) {
            gone.session.push(Arc::new(Event::HandOver { room: room.clone(), mark: HandOverMark::RoomDone }));
            left = true;
        }
        let fence = mirror.local.keys().any(|p| *p != peer);
        if mirror.local.is_empty() {
            rooms.remove(room);
        }
        MovedHere { fence, left }
    }

    /// The session a signal to a local member goes to: an active member's, or a resumed
    /// member's while it completes its move (its session holds what arrives; before its
    /// marker, the entry it replaced on this node receives).
    fn deliverable(local: &Local) -> Option<SessionHandle> {
        match &local.state {
            LocalState::Active => Some(local.session.clone()),
            LocalState::Joining(j) if j.resume => match &j.previous {
                Some(previous) if !j.marker_seen => Some(previous.session.clone()),
                _ => Some(local.session.clone()),
            },
            LocalState::Joining(_) => None,
        }
    }

    /// Whether `peer` is a local member of `room` that completed its join.
    pub fn is_active_local(&self, room: &RoomId, peer: &PeerId) -> bool {
        self.lock().get(room).and_then(|m| m.local.get(peer)).is_some_and(|l| matches!(l.state, LocalState::Active))
    }

    /// For a signal, in one lock and from the mirror alone (no Redis): whether the
    /// sender is an active member of `room`, and where the target is, if it is a member.
    pub fn route(&self, room: &RoomId, from: &PeerId, to: &PeerId) -> (bool, Option<Target>) {
        let rooms = self.lock();
        let Some(m) = rooms.get(room) else { return (false, None) };
        let sender_in = m.local.get(from).is_some_and(|l| matches!(l.state, LocalState::Active));
        let target = m.members.get(to).map(|member| {
            if member.is_served_by(&self.node) {
                Target::Here(m.local.get(to).and_then(Self::deliverable))
            } else {
                Target::Away(member.serving_node())
            }
        });
        (sender_in, target)
    }

    /// Every member of `room` the mirror knows.
    pub fn members(&self, room: &RoomId) -> Vec<Arc<MemberInfo>> {
        self.lock().get(room).map(|m| m.members.values().cloned().collect()).unwrap_or_default()
    }

    /// The session a signal to a local member goes to (see [`Rooms::deliverable`]).
    pub fn active_session(&self, room: &RoomId, peer: &PeerId) -> Option<SessionHandle> {
        let rooms = self.lock();
        Self::deliverable(rooms.get(room)?.local.get(peer)?)
    }

    pub fn local_record(&self, room: &RoomId, peer: &PeerId) -> Option<Arc<MemberInfo>> {
        let rooms = self.lock();
        let local = rooms.get(room)?.local.get(peer)?;
        matches!(local.state, LocalState::Active).then(|| local.record.clone())
    }

    pub fn set_local_record(&self, room: &RoomId, record: Arc<MemberInfo>) {
        if let Some(local) = self.lock().get_mut(room).and_then(|m| m.local.get_mut(&record.peer)) {
            local.record = record;
        }
    }

    /// Every active local member, for writing back after Redis lost them.
    pub fn active_locals(&self) -> Vec<LocalMember> {
        let rooms = self.lock();
        let mut out = Vec::new();
        for (room, mirror) in rooms.iter() {
            for local in mirror.local.values() {
                if matches!(local.state, LocalState::Active) {
                    out.push(LocalMember {
                        room: room.clone(),
                        record: local.record.clone(),
                        token_hash: mirror.token_hash.clone(),
                    });
                }
            }
        }
        out
    }

    /// Whether the node has a member (joining or joined) in `room`.
    pub fn has_local(&self, room: &RoomId) -> bool {
        self.lock().get(room).is_some_and(|m| !m.local.is_empty())
    }

    /// Whether the node's mirror of `room` is complete (a local member's join finished
    /// there). It stays so for as long as the node has a member in the room, joining or
    /// joined: a join begun then takes the others from the mirror at its marker and
    /// needs no list from Redis.
    pub fn is_synced(&self, room: &RoomId) -> bool {
        self.lock().get(room).is_some_and(|m| m.synced)
    }

    /// Every room the node mirrors.
    pub fn mirrored_rooms(&self) -> Vec<RoomId> {
        self.lock().keys().cloned().collect()
    }

    /// Rooms whose mirror is exact, i.e. worth resynchronising.
    pub fn synced_rooms(&self) -> Vec<RoomId> {
        self.lock().iter().filter(|(_, m)| m.synced).map(|(r, _)| r.clone()).collect()
    }

    pub fn room_count(&self) -> usize {
        self.lock().len()
    }

    /// Members served by this node, over every room (a connection in two rooms counts twice).
    pub fn local_member_count(&self) -> usize {
        self.lock().values().map(|m| m.local.len()).sum()
    }

    /// Starts a resynchronisation of `room`; its marker carries `nonce`.
    pub fn begin_resync(&self, room: &RoomId, nonce: u64) {
        if let Some(mirror) = self.lock().get_mut(room) {
            mirror.resync = Some(Resync { nonce, records: None, marker_seen: false, since: HashSet::new() });
        }
    }

    /// The resync snapshot's answer; reconciles if the marker came first.
    pub fn resync_snapshot(&self, room: &RoomId, nonce: u64, records: Vec<Arc<MemberInfo>>, grace_until: Instant) {
        let mut rooms = self.lock();
        let Some(mirror) = rooms.get_mut(room) else { return };
        let Some(resync) = mirror.resync.as_mut().filter(|r| r.nonce == nonce) else { return };
        resync.records = Some(records);
        if resync.marker_seen {
            reconcile(&self.node, room, mirror, grace_until, self.presence_limit);
        }
    }

    /// Suspects whose grace period has ended.
    pub fn due_suspects(&self, now: Instant) -> Vec<(RoomId, PeerId)> {
        let rooms = self.lock();
        let mut due = Vec::new();
        for (room, mirror) in rooms.iter() {
            for (peer, deadline) in &mirror.suspects {
                if *deadline <= now {
                    due.push((room.clone(), peer.clone()));
                }
            }
        }
        due
    }

    /// Settles a suspect: still a member in Redis (`present`), or gone, in which case
    /// the local members hear `peer-left`.
    pub fn settle_suspect(&self, room: &RoomId, peer: &PeerId, present: bool) {
        let mut rooms = self.lock();
        let Some(mirror) = rooms.get_mut(room) else { return };
        if mirror.suspects.remove(peer).is_none() || present {
            return;
        }
        let event = BusEvent::Left { room: room.clone(), peer: peer.clone(), reason: LeftReason::Disconnected };
        apply_room_event(mirror, &event, self.presence_limit);
    }

    /// Applies one room-channel event: updates the mirror, advances handshakes and
    /// resyncs, and delivers to local members. Returns true when another node declared
    /// one of our active members lost, so it must be written back and announced again.
    pub fn apply(&self, event: &BusEvent, grace_until: Instant) -> bool {
        let Some(room) = room_of(event) else { return false };
        let mut rooms = self.lock();
        let Some(mirror) = rooms.get_mut(room) else { return false };

        if let BusEvent::Marker { nonce, .. } = event {
            if let Some(resync) = mirror.resync.as_mut().filter(|r| r.nonce == *nonce) {
                resync.marker_seen = true;
                if resync.records.is_some() {
                    reconcile(&self.node, room, mirror, grace_until, self.presence_limit);
                }
            }
            return false;
        }
        if let Some(resync) = mirror.resync.as_mut().filter(|r| r.marker_seen) {
            if let Some(subject) = subject_of(event) {
                resync.since.insert(subject.clone());
            }
        }
        // Our own member declared lost by another node (we were cut off from Redis):
        // keep it here and announce it again.
        if let BusEvent::Left { peer, reason: LeftReason::NodeLost, .. } = event {
            let ours =
                mirror.local.contains_key(peer) || mirror.members.get(peer).is_some_and(|m| m.is_served_by(&self.node));
            if ours {
                return mirror.local.get(peer).is_some_and(|l| matches!(l.state, LocalState::Active));
            }
        }
        apply_room_event(mirror, event, self.presence_limit);
        false
    }
}

fn room_of(event: &BusEvent) -> Option<&RoomId> {
    match event {
        BusEvent::Joined { room, .. }
        | BusEvent::Left { room, .. }
        | BusEvent::Updated { room, .. }
        | BusEvent::Broadcast { room, .. }
        | BusEvent::Closed { room, .. }
        | BusEvent::Removed { room, .. }
        | BusEvent::Moved { room, .. }
        | BusEvent::Marker { room, .. } => Some(room),
        BusEvent::Signal { .. }
        | BusEvent::Probe { .. }
        | BusEvent::Undeliverable { .. }
        | BusEvent::ResumeRequest { .. }
        | BusEvent::Fence { .. }
        | BusEvent::Forward { .. } => None,
    }
}

fn subject_of(event: &BusEvent) -> Option<&PeerId> {
    match event {
        BusEvent::Joined { member, .. } | BusEvent::Updated { member, .. } => Some(&member.peer),
        BusEvent::Left { peer, .. } => Some(peer),
        _ => None,
    }
}

/// Mirror update plus delivery, for one membership or broadcast event.
fn apply_room_event(mirror: &mut RoomMirror, event: &BusEvent, presence_limit: usize) {
    let delivered = match event {
        BusEvent::Joined { room, member, nonce } => {
            let member = Arc::new(member.clone());
            let duplicate = mirror.synced && mirror.members.contains_key(&member.peer);
            mirror.members.insert(member.peer.clone(), member.clone());
            mirror.suspects.remove(&member.peer);
            if *nonce != 0 {
                mark_join_marker(mirror, room, &member.peer, *nonce, presence_limit);
            }
            (!duplicate).then(|| Event::PeerJoined { room: room.clone(), member, frames: Frames::default() })
        }
        BusEvent::Left { room, peer, reason } => {
            let member = mirror.members.remove(peer);
            mirror.suspects.remove(peer);
            (member.is_some() || !mirror.synced).then(|| Event::PeerLeft {
                room: room.clone(),
                peer: peer.clone(),
                reason: *reason,
                member,
                frames: Frames::default(),
            })
        }
        BusEvent::Updated { room, member } => {
            let member = Arc::new(member.clone());
            mirror.members.insert(member.peer.clone(), member.clone());
            Some(Event::PeerUpdated { room: room.clone(), member, frames: Frames::default() })
        }
        BusEvent::Broadcast { room, from, kind, data, .. } => Some(Event::Broadcast {
            room: room.clone(),
            from: from.clone(),
            kind: kind.clone(),
            data: data.clone(),
            frames: Frames::default(),
        }),
        // Every local member that was in the room when it closed hears it, and leaves
        // (a member whose join announcement has not come back yet joined after the
        // close, into a new room of the same name).
        BusEvent::Closed { room, reason } => Some(Event::RoomClosed {
            room: room.clone(),
            reason: *reason,
            members: mirror.members.values().cloned().collect(),
        }),
        // Only the removed member hears it (from its own node), as its room closing.
        BusEvent::Removed { room, peer } => {
            if let Some(local) = mirror.local.get(peer).filter(|l| matches!(l.state, LocalState::Active)) {
                local.session.push(Arc::new(Event::RoomClosed {
                    room: room.clone(),
                    reason: protocol::CloseReason::Removed,
                    members: mirror.members.values().cloned().collect(),
                }));
            }
            None
        }
        BusEvent::Marker { .. }
        | BusEvent::Signal { .. }
        | BusEvent::Probe { .. }
        | BusEvent::Undeliverable { .. }
        | BusEvent::Moved { .. }
        | BusEvent::ResumeRequest { .. }
        | BusEvent::Fence { .. }
        | BusEvent::Forward { .. } => None,
    };
    if let Some(event) = delivered {
        deliver(mirror, Arc::new(event), presence_limit);
    }
}

/// The role whose members everyone hears of, and who hear of everyone, in a quiet room.
const HOST_ROLE: &str = "host";

fn is_host(member: &MemberInfo) -> bool {
    member.role.as_str() == HOST_ROLE
}

/// Whether `event` is news of a member (joined, left, updated) that is not a host. In a
/// room of more than PRESENCE_LIMIT members such news goes to hosts only, and a joiner
/// that is not a host is told of the hosts only: presence to everyone would cost each
/// join a delivery to every member (a 10,000-member room: 50 million to fill it).
fn is_news_of_a_non_host(event: &Event) -> bool {
    match event {
        Event::PeerJoined { member, .. } | Event::PeerUpdated { member, .. } => !is_host(member),
        Event::PeerLeft { member, .. } => !member.as_deref().is_some_and(is_host),
        _ => false,
    }
}

/// Sends an event to every local member except its subject (and, in a quiet room, news
/// of a non-host to hosts only): active members get it now, members mid-handshake keep
/// it for after their `joined`, and members whose marker has not arrived yet skip it
/// (their snapshot will include its effect).
fn deliver(mirror: &mut RoomMirror, event: Arc<Event>, presence_limit: usize) {
    // Compared with each member only when it is one of ours (a remote subject, the
    // common case, costs no comparison per member).
    let subject = event.subject().filter(|s| mirror.local.contains_key(*s)).cloned();
    // The room's size with the subject in it: a leave is as quiet as the join was.
    let size = mirror.members.len() + usize::from(matches!(*event, Event::PeerLeft { .. }));
    let hosts_only = size > presence_limit && is_news_of_a_non_host(&event);
    for (peer, local) in mirror.local.iter_mut() {
        // The role first: in a quiet room most members are skipped by it alone, without
        // comparing their ids.
        if (hosts_only && !is_host(&local.record)) || Some(peer) == subject.as_ref() {
            continue;
        }
        match &mut local.state {
            LocalState::Active => local.session.push(event.clone()),
            LocalState::Joining(j) if j.marker_seen => j.backlog.push(event.clone()),
            // Before a resume's marker, the entry it replaces here still receives.
            LocalState::Joining(j) => {
                if let Some(previous) = &j.previous {
                    previous.session.push(event.clone());
                }
            }
        }
    }
}

fn mark_join_marker(mirror: &mut RoomMirror, room: &RoomId, peer: &PeerId, nonce: u64, presence_limit: usize) {
    let Some(Local { state: LocalState::Joining(j), record, .. }) = mirror.local.get_mut(peer) else { return };
    if j.nonce != nonce {
        return;
    }
    j.marker_seen = true;
    if let Some(previous) = j.previous.take() {
        previous.session.push(Arc::new(Event::HandOver { room: room.clone(), mark: HandOverMark::RoomDone }));
    }
    if mirror.synced {
        let everyone = mirror.members.len() <= presence_limit || is_host(record);
        let told = |m: &&Arc<MemberInfo>| (everyone || is_host(m)) && &m.peer != peer;
        j.view = Some(mirror.members.values().filter(told).cloned().collect());
    }
    if j.snapshot.is_some() {
        complete_join(mirror, peer, presence_limit);
    }
}

/// Both halves of the handshake are here: activate the member and hand it its view.
fn complete_join(mirror: &mut RoomMirror, peer: &PeerId, presence_limit: usize) {
    let Some(local) = mirror.local.get_mut(peer) else { return };
    let LocalState::Joining(mut j) = mem::replace(&mut local.state, LocalState::Active) else { return };
    let others = j.view.take().or_else(|| j.snapshot.take()).unwrap_or_default();
    if !mirror.synced {
        // The snapshot is the exact state at the marker; replay what came after it.
        mirror.members = others.iter().map(|m| (m.peer.clone(), m.clone())).collect();
        mirror.members.insert(peer.clone(), local.record.clone());
        let mut moves = j.moves.iter().peekable();
        for (at, event) in j.backlog.iter().enumerate() {
            while let Some((_, member)) = moves.next_if(|(place, _)| *place <= at) {
                mirror.members.insert(member.peer.clone(), member.clone());
            }
            match event.as_ref() {
                Event::PeerJoined { member, .. } | Event::PeerUpdated { member, .. } => {
                    mirror.members.insert(member.peer.clone(), member.clone());
                }
                Event::PeerLeft { peer, .. } => {
                    mirror.members.remove(peer);
                }
                Event::Signal { .. }
                | Event::Broadcast { .. }
                | Event::Undeliverable { .. }
                | Event::RoomClosed { .. }
                | Event::HandOver { .. } => {}
            }
        }
        for (_, member) in moves {
            mirror.members.insert(member.peer.clone(), member.clone());
        }
        mirror.synced = true;
    }
    // In a quiet room a joiner that is not a host is told of the hosts only.
    let others = if mirror.members.len() <= presence_limit || is_host(&local.record) {
        others
    } else {
        others.into_iter().filter(|m| is_host(m)).collect()
    };
    let mut backlog = j.backlog;
    if j.resume {
        // A resumed member's session holds what arrives until its hand-over is
        // complete: the backlog goes there now, ahead of anything newer.
        for event in backlog.drain(..) {
            local.session.push(event);
        }
    }
    if let Some(done) = j.done.take() {
        // The session may have given up (timeout); then it removes itself.
        let _ = done.send(JoinDone { others, backlog });
    }
}

/// After a resync's marker and snapshot: members Redis has that we missed are
/// announced now; members we have that Redis lacks become suspects.
fn reconcile(node: &NodeId, room: &RoomId, mirror: &mut RoomMirror, grace_until: Instant, presence_limit: usize) {
    let Some(resync) = mirror.resync.take() else { return };
    let records = resync.records.unwrap_or_default();
    let in_redis: HashSet<PeerId> = records.iter().map(|m| m.peer.clone()).collect();
    for member in records {
        if resync.since.contains(&member.peer) || mirror.members.contains_key(&member.peer) {
            continue;
        }
        mirror.members.insert(member.peer.clone(), member.clone());
        deliver(
            mirror,
            Arc::new(Event::PeerJoined { room: room.clone(), member, frames: Frames::default() }),
            presence_limit,
        );
    }
    let missing: Vec<PeerId> = mirror
        .members
        .values()
        .filter(|m| !in_redis.contains(&m.peer) && !resync.since.contains(&m.peer) && !m.is_served_by(node))
        .map(|m| m.peer.clone())
        .collect();
    for peer in missing {
        mirror.suspects.entry(peer).or_insert(grace_until);
    }
}

#[cfg(test)]
mod tests {
    use protocol::{DisplayName, Payload, Role};
    use tokio::sync::oneshot::error::TryRecvError;

    use super::*;
    use crate::core::sessions::SessionInbox;

    fn member(peer: &PeerId, name: &str) -> Arc<MemberInfo> {
        Arc::new(MemberInfo {
            peer: peer.clone(),
            name: DisplayName::parse(name).unwrap(),
            role: Role::parse("participant").unwrap(),
            meta: Payload::empty_object(),
            node: Some(peer.node()),
        })
    }

    fn joined(room: &RoomId, m: &Arc<MemberInfo>, nonce: u64) -> BusEvent {
        BusEvent::Joined { room: room.clone(), member: (**m).clone(), nonce }
    }

    struct Fixture {
        rooms: Rooms,
        room: RoomId,
        me: Arc<MemberInfo>,
        inbox: SessionInbox,
        done: oneshot::Receiver<JoinDone>,
    }

    /// This node's member "me" has begun joining room "r" with nonce 7.
    fn joining() -> Fixture {
        let node = NodeId::parse("n1").unwrap();
        let rooms = Rooms::new(node.clone(), 100);
        let room = RoomId::parse("r").unwrap();
        let me = member(&PeerId::new_on(&node), "me");
        let (handle, inbox) = SessionHandle::new(me.peer.clone(), 16);
        let done = rooms.begin_join(&room, handle, me.clone(), 7, &Removals::default()).unwrap();
        Fixture { rooms, room, me, inbox, done }
    }

    fn names(members: &[Arc<MemberInfo>]) -> Vec<&str> {
        let mut names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        names.sort();
        names
    }

    fn later() -> Instant {
        Instant::now() + std::time::Duration::from_secs(5)
    }

    #[test]
    fn a_join_completes_once_both_the_snapshot_and_its_marker_arrived_in_either_order() {
        let other = member(&PeerId::new_on(&NodeId::parse("n2").unwrap()), "other");
        for marker_first in [true, false] {
            let mut f = joining();
            if marker_first {
                f.rooms.apply(&joined(&f.room, &f.me, 7), later());
                assert!(matches!(f.done.try_recv(), Err(TryRecvError::Empty)), "marker alone");
                f.rooms.join_snapshot(&f.room, &f.me.peer, vec![other.clone()], None);
            } else {
                f.rooms.join_snapshot(&f.room, &f.me.peer, vec![other.clone()], None);
                assert!(matches!(f.done.try_recv(), Err(TryRecvError::Empty)), "snapshot alone");
                f.rooms.apply(&joined(&f.room, &f.me, 7), later());
            }
            let done = f.done.try_recv().expect("complete");
            assert_eq!(names(&done.others), ["other"]);
            assert!(f.rooms.is_active_local(&f.room, &f.me.peer));
        }
    }

    #[test]
    fn events_before_the_marker_are_left_to_the_snapshot_and_events_after_it_follow_joined() {
        let f = joining();
        let n2 = NodeId::parse("n2").unwrap();
        let (early, late) = (member(&PeerId::new_on(&n2), "early"), member(&PeerId::new_on(&n2), "late"));
        // Before our marker: already in the snapshot, so not news to us.
        f.rooms.apply(&joined(&f.room, &early, 3), later());
        f.rooms.apply(&joined(&f.room, &f.me, 7), later());
        // After it: news, kept until `joined` has gone out.
        f.rooms.apply(&joined(&f.room, &late, 4), later());
        f.rooms.join_snapshot(&f.room, &f.me.peer, vec![early.clone()], None);
        let Fixture { rooms, room, mut done, inbox, .. } = f;
        let done = done.try_recv().expect("complete");
        assert_eq!(names(&done.others), ["early"]);
        assert!(
            matches!(done.backlog.as_slice(), [e] if matches!(e.as_ref(), Event::PeerJoined { member, .. } if member.name.as_str() == "late"))
        );
        assert!(inbox.try_pop().is_none(), "nothing was pushed before joined");
        // Once active, events go straight to the session.
        rooms.apply(&BusEvent::Left { room: room.clone(), peer: late.peer.clone(), reason: LeftReason::Left }, later());
        assert!(matches!(inbox.try_pop().unwrap().as_ref(), Event::PeerLeft { peer, .. } if *peer == late.peer));
    }

    #[test]
    fn a_signal_is_routed_by_the_mirror_to_the_node_the_member_record_names() {
        let f = joining();
        let stranger = PeerId::new_on(&NodeId::parse("n2").unwrap());
        let route = |rooms: &Rooms| match rooms.route(&f.room, &f.me.peer, &stranger) {
            (sender_in, None) => (sender_in, None),
            (sender_in, Some(Target::Away(node))) => (sender_in, Some(node.to_string())),
            (sender_in, Some(Target::Here(_))) => (sender_in, Some("here".to_owned())),
        };
        assert_eq!(route(&f.rooms), (false, None), "still joining");
        f.rooms.apply(&joined(&f.room, &f.me, 7), later());
        f.rooms.join_snapshot(&f.room, &f.me.peer, Vec::new(), None);
        assert_eq!(route(&f.rooms), (true, None), "not a member");
        // The id says n2, the record says n3: the record wins (ids need not name nodes).
        let moved =
            Arc::new(MemberInfo { node: Some(NodeId::parse("n3").unwrap()), ..(*member(&stranger, "x")).clone() });
        f.rooms.apply(&joined(&f.room, &moved, 9), later());
        assert_eq!(route(&f.rooms), (true, Some("n3".to_owned())));
    }

    #[test]
    fn beyond_the_presence_limit_news_of_non_hosts_reaches_hosts_only() {
        let (n1, n2) = (NodeId::parse("n1").unwrap(), NodeId::parse("n2").unwrap());
        let rooms = Rooms::new(n1.clone(), 3);
        let room = RoomId::parse("webinar").unwrap();
        let with_role =
            |m: Arc<MemberInfo>, role: &str| Arc::new(MemberInfo { role: Role::parse(role).unwrap(), ..(*m).clone() });
        // Joins a local member; its session's inbox and the others it was told of.
        let join_local = |name: &str, role: &str, nonce: u64| {
            let me = with_role(member(&PeerId::new_on(&n1), name), role);
            let (handle, inbox) = SessionHandle::new(me.peer.clone(), 64);
            let mut done = rooms.begin_join(&room, handle, me.clone(), nonce, &Removals::default()).unwrap();
            rooms.apply(&joined(&room, &me, nonce), later());
            rooms.join_snapshot(&room, &me.peer, Vec::new(), None);
            (me, inbox, names(&done.try_recv().expect("joined").others).join(","))
        };
        let news = |inbox: &SessionInbox| {
            let mut got = Vec::new();
            while let Some(event) = inbox.try_pop() {
                match event.as_ref() {
                    Event::PeerJoined { member, .. } => got.push(format!("+{}", member.name.as_str())),
                    Event::PeerLeft { member, .. } => got.push(format!("-{}", member.as_ref().unwrap().name.as_str())),
                    other => panic!("unexpected {other:?}"),
                }
            }
            got.join(" ")
        };
        let (_host, host_inbox, _) = join_local("host", "host", 1);
        let (_p, p_inbox, told_p) = join_local("p", "participant", 2);
        assert_eq!(told_p, "host");
        let remote = |name: &str, role: &str| with_role(member(&PeerId::new_on(&n2), name), role);
        let (r1, r2, speaker) = (remote("r1", "participant"), remote("r2", "participant"), remote("speaker", "host"));
        rooms.apply(&joined(&room, &r1, 0), later()); // 3 members: everyone hears
        rooms.apply(&joined(&room, &r2, 0), later()); // 4: beyond the limit
        rooms.apply(&joined(&room, &speaker, 0), later()); // a host: everyone hears
        rooms.apply(&BusEvent::Left { room: room.clone(), peer: r1.peer.clone(), reason: LeftReason::Left }, later());
        assert_eq!(news(&host_inbox), "+p +r1 +r2 +speaker -r1");
        assert_eq!(news(&p_inbox), "+r1 +speaker");
        // A joiner is told of the hosts only, unless it is one.
        let (_, _, told_q) = join_local("q", "participant", 3);
        assert_eq!(told_q, "host,speaker");
        let (_, _, told_h2) = join_local("h2", "host", 4);
        assert_eq!(told_h2, "host,p,q,r2,speaker");
        assert_eq!(news(&p_inbox), "+h2", "q is news to hosts only");
        assert_eq!(news(&host_inbox), "+q +h2");
    }
}
