//! What the core tells a session. Dialect-free: each transport renders these in its
//! own wire format. Shared by every local recipient of a room event, hence `Arc`.

use std::sync::Arc;

use protocol::{LeftReason, MemberInfo, Payload, PeerId, RoomId, SignalKind};

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
}

impl Event {
    /// The peer an event is about; it is never sent to that peer itself.
    pub fn subject(&self) -> &PeerId {
        match self {
            Event::PeerJoined { member, .. } | Event::PeerUpdated { member, .. } => &member.peer,
            Event::PeerLeft { peer, .. } => peer,
            Event::Signal { from, .. } | Event::Broadcast { from, .. } => from,
            Event::Undeliverable { to, .. } => to,
        }
    }
}
