//! Native protocol v1 (`/ws`): JSON text frames, one object per frame with a `type`.
//! docs/protocol.md is the reference; the wire types live in `protocol::native`.

use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use protocol::native::{Authenticated, Joined, PeerJoined, PeerLeft, Pong, Reconnect, Resumed, RoomReply, Welcome};
use protocol::{ErrorCode, Limits, ServerMsg};

use super::{Decoded, Dialect, Greeting, Refused, Rendering};
use crate::core::Event;
use crate::session::Reply;

pub struct Native;

impl Native {
    fn render_reply(&mut self, reply: Reply, out: &mut Vec<Utf8Bytes>) {
        let msg = match reply {
            Reply::Joined { room, others, id, .. } => {
                ServerMsg::Joined(Joined { room, peers: others.iter().map(|m| (**m).clone()).collect(), id })
            }
            Reply::Left { room, id } => ServerMsg::Left(RoomReply { room, id }),
            Reply::Closed { room, id } => ServerMsg::Closed(RoomReply { room, id }),
            Reply::Done { room, id } => ServerMsg::Done(RoomReply { room, id }),
            Reply::Updated { room, id } => ServerMsg::Updated(RoomReply { room, id }),
            Reply::Members { room, members, id } => {
                ServerMsg::Members(Joined { room, peers: members.iter().map(|m| (**m).clone()).collect(), id })
            }
            Reply::Pong { id } => ServerMsg::Pong(Pong { id }),
            Reply::Authenticated { identity, id } => {
                let (subject, name, role) = identity.map_or((None, None, None), |i| (Some(i.subject), i.name, i.role));
                ServerMsg::Authenticated(Authenticated { subject, name, role, id })
            }
            Reply::Error { code, message, id } => ServerMsg::error(code, message, id),
            Reply::Events(events) => return out.extend(events.iter().filter_map(|e| self.render_event(e))),
            Reply::Resumed { peer, rooms, token, id } => ServerMsg::Resumed(Resumed {
                peer,
                rooms: rooms
                    .into_iter()
                    .map(|r| Joined { room: r.room, peers: r.others.iter().map(|m| (**m).clone()).collect(), id: None })
                    .collect(),
                resume: token,
                id,
            }),
        };
        out.push(frame(&msg));
    }
}

impl Dialect for Native {
    const NAME: &'static str = "native";
    const RESUMABLE: bool = true;

    /// Native replies carry the request's own `id`: nothing to remember.
    type Context = ();

    fn welcome(&mut self, greeting: &Greeting<'_>) -> Option<Utf8Bytes> {
        Some(frame(&ServerMsg::Welcome(Welcome {
            peer: greeting.peer.clone(),
            node: greeting.node.clone(),
            heartbeat_ms: greeting.heartbeat.as_millis() as u64,
            resume: greeting.resume.map(str::to_owned),
        })))
    }

    fn decode(&mut self, text: &str, limits: &Limits) -> Result<Decoded<()>, Refused<()>> {
        Ok(Decoded::Request(protocol::native::decode(text, limits)?, ()))
    }

    fn render_replies(&mut self, _context: Option<()>, replies: Vec<Reply>, out: &mut Vec<Utf8Bytes>) {
        for reply in replies {
            self.render_reply(reply, out);
        }
    }

    fn render_event(&self, event: &Event) -> Option<Utf8Bytes> {
        event.frame(Rendering::Native.slot(), render_frame)
    }

    fn reconnect(&self, after: Duration) -> Option<Utf8Bytes> {
        Some(frame(&ServerMsg::Reconnect(Reconnect { after_ms: after.as_millis() as u64, reason: "draining".into() })))
    }
}

fn render_frame(event: &Event) -> Option<Utf8Bytes> {
    let relayed = match event {
        Event::Signal { room, from, kind, data } => ServerMsg::relayed_json(false, room, from, kind, data),
        Event::Broadcast { room, from, kind, data, .. } => ServerMsg::relayed_json(true, room, from, kind, data),
        other => return render(other).map(|msg| frame(&msg)),
    };
    Some(Utf8Bytes::from(relayed))
}

/// Every event but a signal or a broadcast, as the message that shows it.
fn render(event: &Event) -> Option<ServerMsg> {
    Some(match event {
        Event::PeerJoined { room, member, .. } => {
            ServerMsg::PeerJoined(PeerJoined { room: room.clone(), peer: (**member).clone() })
        }
        Event::PeerUpdated { room, member, .. } => {
            ServerMsg::PeerUpdated(PeerJoined { room: room.clone(), peer: (**member).clone() })
        }
        Event::PeerLeft { room, peer, reason, .. } => {
            ServerMsg::PeerLeft(PeerLeft { room: room.clone(), peer: peer.clone(), reason: *reason })
        }
        Event::RoomClosed { room, reason, .. } => {
            ServerMsg::RoomClosed(protocol::native::RoomClosed { room: room.clone(), reason: *reason })
        }
        Event::Undeliverable { room, to } => ServerMsg::error(
            ErrorCode::PeerUnavailable,
            format!("signal to {to} in room {room} not delivered: the peer left"),
            None,
        ),
        Event::Signal { .. } | Event::Broadcast { .. } | Event::HandOver { .. } => return None,
    })
}

fn frame(msg: &ServerMsg) -> Utf8Bytes {
    Utf8Bytes::from(msg.to_json())
}
