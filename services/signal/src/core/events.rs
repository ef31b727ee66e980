//! What the core tells a session. Dialect-free: each transport renders these in its
//! own wire format. Shared by every local recipient of a room event, hence `Arc`.

use std::sync::Arc;

use protocol::{CloseReason, LeftReason, MemberInfo, Payload, PeerId, RoomId, SignalKind};

#[derive(Debug, Clone)]
pub enum Event {
    PeerJoined {
        room: RoomId,
        member: Arc<MemberInfo>,
    },
    PeerLeft {
        room: RoomId,
        peer: PeerId,
        reason: LeftReason,
        /// Its record as the mirror last knew it, for dialects that name the leaver
        /// (Socket.IO's `user-left` carries the user name). None when the mirror never
        /// saw it.
        member: Option<Arc<MemberInfo>>,
    },
    PeerUpdated {
        room: RoomId,
        member: Arc<MemberInfo>,
    },
    Signal {
        room: RoomId,
        from: PeerId,
        kind: SignalKind,
        data: Payload,
    },
    Broadcast {
        room: RoomId,
        from: PeerId,
        kind: SignalKind,
        data: Payload,
    },
    /// A signal this session sent to `to` could not be delivered: `to` had left.
    Undeliverable {
        room: RoomId,
        to: PeerId,
    },
    /// The room was closed: the session leaves it (reason `closed`) after showing this.
    RoomClosed {
        room: RoomId,
        reason: CloseReason,
        /// Everyone the mirror knew in the room at the close (dialects that tell each
        /// departure, as S1's `user-left`, use it).
        members: Vec<Arc<MemberInfo>>,
    },
    /// Never shown to a client: a mark in the queue of a member that is away and has
    /// resumed on another node, forwarded there in order with what is held (see
    /// `core::resume`).
    HandOver {
        room: RoomId,
        mark: HandOverMark,
    },
}

/// What a hand-over mark says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandOverMark {
    /// This node saw the member's `moved` in the room: every room event before it has
    /// been queued.
    RoomDone,
    /// `NodeId` routes nothing more for the member in the room through this node.
    Fence(protocol::NodeId),
}

impl Event {
    /// The peer an event is about; it is never sent to that peer itself.
    pub fn subject(&self) -> Option<&PeerId> {
        match self {
            Event::PeerJoined { member, .. } | Event::PeerUpdated { member, .. } => Some(&member.peer),
            Event::PeerLeft { peer, .. } => Some(peer),
            Event::Signal { from, .. } | Event::Broadcast { from, .. } => Some(from),
            Event::Undeliverable { to, .. } => Some(to),
            Event::RoomClosed { .. } | Event::HandOver { .. } => None,
        }
    }

    /// The room the event is about.
    pub fn room(&self) -> &RoomId {
        match self {
            Event::PeerJoined { room, .. }
            | Event::PeerLeft { room, .. }
            | Event::PeerUpdated { room, .. }
            | Event::Signal { room, .. }
            | Event::Broadcast { room, .. }
            | Event::Undeliverable { room, .. }
            | Event::RoomClosed { room, .. }
            | Event::HandOver { room, .. } => room,
        }
    }
}
