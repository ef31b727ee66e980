//! What the core tells a session. Dialect-free: each transport renders these in its
//! own wire format. Shared by every local recipient of a room event, hence `Arc`; a
//! room-wide event also keeps the frames rendered for it ([`Frames`]), so a broadcast
//! to a 1,000-member room is rendered once per dialect rather than once per member.

use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;

use protocol::{CloseReason, LeftReason, MemberInfo, Payload, PeerId, RoomId, SignalKind};

#[derive(Debug, Clone)]
pub enum Event {
    PeerJoined {
        room: RoomId,
        member: Arc<MemberInfo>,
        frames: Frames,
    },
    PeerLeft {
        room: RoomId,
        peer: PeerId,
        reason: LeftReason,
        /// Its record as the mirror last knew it, for dialects that name the leaver
        /// (Socket.IO's `user-left` carries the user name). None when the mirror never
        /// saw it.
        member: Option<Arc<MemberInfo>>,
        frames: Frames,
    },
    PeerUpdated {
        room: RoomId,
        member: Arc<MemberInfo>,
        frames: Frames,
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
        frames: Frames,
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

/// How many ways of rendering an event there are (`transport::Rendering`): one per
/// dialect, and one per Socket.IO namespace.
pub const RENDERINGS: usize = 4;

/// The frames rendered for one room-wide event, one slot per way of rendering it: the
/// first recipient that reads it a given way renders it, the others share that frame.
/// Only for renderings that do not depend on the recipient.
#[derive(Debug, Clone, Default)]
pub struct Frames([OnceLock<Utf8Bytes>; RENDERINGS]);

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

    /// The frame for `rendering` (a `transport::Rendering`'s slot): for a room-wide
    /// event, rendered by the first recipient that asks and shared by the others; for
    /// any other event (it has one recipient), rendered each time.
    pub fn frame(&self, rendering: usize, render: impl FnOnce(&Event) -> Option<Utf8Bytes>) -> Option<Utf8Bytes> {
        let frames = match self {
            Event::PeerJoined { frames, .. }
            | Event::PeerLeft { frames, .. }
            | Event::PeerUpdated { frames, .. }
            | Event::Broadcast { frames, .. } => frames,
            _ => return render(self),
        };
        let slot = &frames.0[rendering];
        if let Some(frame) = slot.get() {
            return Some(frame.clone());
        }
        // Two recipients may render it at once: both frames are the same, one is kept.
        let frame = render(self)?;
        Some(slot.get_or_init(|| frame).clone())
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn broadcast() -> Event {
        Event::Broadcast {
            room: RoomId::parse("r").unwrap(),
            from: PeerId::parse("n1.a").unwrap(),
            kind: SignalKind::parse("chat").unwrap(),
            data: Payload::from_json("{}".into()).unwrap(),
            frames: Frames::default(),
        }
    }

    #[test]
    fn a_room_wide_event_is_rendered_once_per_rendering() {
        let event = broadcast();
        let renders = Cell::new(0);
        let render = |text: &'static str| {
            let renders = &renders;
            move |_: &Event| {
                renders.set(renders.get() + 1);
                Some(Utf8Bytes::from_static(text))
            }
        };
        let first = event.frame(0, render("one")).unwrap();
        let again = event.frame(0, render("other")).unwrap();
        assert_eq!(renders.get(), 1);
        assert_eq!(again.as_str(), "one");
        assert_eq!(first.as_str().as_ptr(), again.as_str().as_ptr(), "the recipients share one frame");
        // Another rendering has its own slot.
        assert_eq!(event.frame(1, render("two")).unwrap().as_str(), "two");
        assert_eq!(renders.get(), 2);
    }

    #[test]
    fn a_frame_the_dialect_does_not_show_is_asked_again() {
        let event = broadcast();
        assert!(event.frame(0, |_| None).is_none());
        assert_eq!(event.frame(0, |_| Some(Utf8Bytes::from_static("now"))).unwrap().as_str(), "now");
    }

    #[test]
    fn a_signal_is_rendered_for_each_recipient() {
        let signal = Event::Signal {
            room: RoomId::parse("r").unwrap(),
            from: PeerId::parse("n1.a").unwrap(),
            kind: SignalKind::parse("offer").unwrap(),
            data: Payload::from_json("{}".into()).unwrap(),
        };
        let renders = Cell::new(0);
        for _ in 0..2 {
            signal.frame(0, |_| {
                renders.set(renders.get() + 1);
                Some(Utf8Bytes::from_static("s"))
            });
        }
        assert_eq!(renders.get(), 2);
    }
}
