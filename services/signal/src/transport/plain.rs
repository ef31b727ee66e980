//! The plain-JSON dialect of the S4 server (FastAPI + websockets), served at
//! `PLAIN_PATH` (default `/`, where its clients connect). A client registers one peer
//! id of its choosing in one room, then sends whole JSON messages addressed by `sender`
//! and `target`, which reach the target unchanged. docs/dialects.md documents every
//! message and how it maps to the other dialects.
//!
//! The codec keeps its client's registration: every message after `register` is
//! checked against it (a spoofed `sender` is refused) and is about its room.
//!
//! Its clients never see a resume token. A registration with a room token (or a
//! verified identity) is resumed by registering again: a connection that drops
//! without a close for good leaves its member away for RESUME_GRACE_MS, and a
//! `register` of the same peer id in the same room, with the same token, on any node,
//! takes its place (`Session::resume_registration`): `registered_auth` again, then what
//! was held for it, and the room sees no `peer_left`/`peer_joined`.

use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use protocol::{
    Command, DecodeError, DisplayName, ErrorCode, LeftReason, Limits, Payload, PeerId, Request, Role, RoomId,
    SignalKind,
};
use serde::Deserialize;
use serde_json::json;

use super::{Decoded, Dialect, Greeting, Keepalive, Ping, Refused, Rendering};
use crate::core::Event;
use crate::session::Reply;

/// One connection's codec.
#[derive(Default)]
pub struct Plain {
    /// Set once the node confirmed the registration.
    registered: Option<Registration>,
}

/// What a request was, for rendering its outcome.
#[derive(Debug)]
pub enum Asked {
    /// A `register`: confirmed with `registered_auth` once the node joined (or resumed)
    /// it; a refused one leaves the connection free to register again.
    Register(Registration),
    /// Anything else.
    Other,
}

#[derive(Debug, Clone)]
pub struct Registration {
    room: RoomId,
    peer: PeerId,
    /// The room token: checked by the join (a created room's token, or the lock the
    /// first member of an implicit room set), echoed in `registered_auth`.
    token: Option<String>,
}

/// The fields this dialect reads; a message keeps all its others untouched.
#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    ty: String,
    peer_id: Option<String>,
    room_id: Option<String>,
    token: Option<String>,
    id_token: Option<String>,
    sender: Option<String>,
    target: Option<String>,
}

/// The message types relayed whole from one peer to another.
const RELAYED: [&str; 3] = ["offer", "answer", "candidate"];

fn refuse(reason: impl Into<String>) -> DecodeError {
    DecodeError::bad(reason, None)
}

impl Plain {
    fn registration(&self) -> Result<&Registration, DecodeError> {
        self.registered.as_ref().ok_or_else(|| refuse("Not registered: send register first."))
    }

    fn register(&self, head: Head, limits: &Limits) -> Result<(Command, Registration), DecodeError> {
        if self.registered.is_some() {
            return Err(refuse("Already registered on this connection."));
        }
        let (Some(peer), Some(room)) = (head.peer_id.filter(|p| !p.is_empty()), head.room_id.filter(|r| !r.is_empty()))
        else {
            return Err(refuse("Missing required fields during registration."));
        };
        let peer = PeerId::parse(&peer).map_err(|e| refuse(format!("Invalid peer_id: {e}")))?;
        let room =
            RoomId::parse_with_max(&room, limits.room_id_chars).map_err(|e| refuse(format!("Invalid room_id: {e}")))?;
        // The peer id doubles as the display name the other dialects show.
        let shown: String = peer.as_str().chars().take(limits.name_chars).collect();
        let name = DisplayName::parse_with_max(&shown, limits.name_chars).map_err(|e| refuse(e.to_string()))?;
        let token = head.token.filter(|t| !t.is_empty());
        if token.as_ref().is_some_and(|t| t.len() > protocol::native::TOKEN_MAX_BYTES) {
            return Err(refuse("Invalid token"));
        }
        let registration = Registration { room: room.clone(), peer: peer.clone(), token: token.clone() };
        let join = Command::Join {
            room,
            name,
            role: Role::parse(protocol::native::DEFAULT_ROLE).expect("the default role is valid"),
            token,
            meta: Payload::empty_object(),
            member: Some(peer),
        };
        Ok((join, registration))
    }

    fn relay(&self, head: Head, text: &str) -> Result<Command, DecodeError> {
        let me = self.registration()?;
        let Some(sender) = head.sender else { return Err(refuse("Missing sender.")) };
        if sender != me.peer.as_str() {
            return Err(refuse("Sender does not match the registered peer_id."));
        }
        let Some(target) = head.target else { return Err(refuse("Missing target.")) };
        let to = PeerId::parse(&target).map_err(|e| refuse(format!("Invalid target: {e}")))?;
        let kind = SignalKind::parse(&head.ty).map_err(|e| refuse(e.to_string()))?;
        // The whole message travels, byte for byte: plain targets get it as it was sent.
        let data = Payload::from_json(text.to_owned()).map_err(|_| refuse("Invalid JSON."))?;
        Ok(Command::Signal { room: me.room.clone(), to, kind, data })
    }

    fn registered_auth(&mut self, reg: Registration) -> Utf8Bytes {
        let frame = json!({"type": "registered_auth", "room_id": reg.room, "token": reg.token, "peer_id": reg.peer});
        self.registered = Some(reg);
        frame_of(&frame)
    }

    /// A signal as this client sees it: a plain sender's own message as it was sent; any
    /// other dialect's signal wrapped with the same addressing fields.
    fn signal_frame(&self, from: &PeerId, kind: &SignalKind, data: &Payload) -> Utf8Bytes {
        #[derive(Deserialize)]
        struct Addressed<'a> {
            #[serde(rename = "type", borrow)]
            ty: &'a str,
            #[serde(borrow)]
            sender: &'a str,
        }
        let as_sent = serde_json::from_str::<Addressed>(data.get())
            .is_ok_and(|m| m.ty == kind.as_str() && m.sender == from.as_str());
        if as_sent {
            return Utf8Bytes::from(data.get().to_owned());
        }
        let target = self.registered.as_ref().map(|r| r.peer.as_str()).unwrap_or_default();
        Utf8Bytes::from(format!(
            r#"{{"type":{},"sender":{},"target":{},"data":{}}}"#,
            quoted(kind.as_str()),
            quoted(from.as_str()),
            quoted(target),
            data.get()
        ))
    }
}

impl Plain {
    fn render_reply(&mut self, asked: &mut Option<Asked>, reply: Reply, out: &mut Vec<Utf8Bytes>) {
        let frame = match reply {
            // A registration that resumed a dropped one is confirmed the same way.
            Reply::Joined { .. } | Reply::Resumed { .. } => match asked.take() {
                Some(Asked::Register(reg)) => Some(self.registered_auth(reg)),
                _ => None,
            },
            Reply::Members { members, .. } => {
                let peers: Vec<&str> = members.iter().map(|m| m.peer.as_str()).collect();
                Some(frame_of(&json!({"type": "available_peers", "peers": peers})))
            }
            Reply::Pong { .. } => Some(frame_of(&json!({"type": "pong"}))),
            Reply::Error { code, message, .. } => Some(error_frame(&reason(code, &message))),
            Reply::Left { .. }
            | Reply::Updated { .. }
            | Reply::Authenticated { .. }
            | Reply::Closed { .. }
            | Reply::Done { .. } => None,
            Reply::Events(events) => return out.extend(events.iter().filter_map(|e| self.render_event(e))),
        };
        out.extend(frame);
    }
}

impl Dialect for Plain {
    const NAME: &'static str = "plain";
    const RESUMABLE: bool = true;

    type Context = Asked;

    fn welcome(&mut self, _greeting: &Greeting<'_>) -> Option<Utf8Bytes> {
        None
    }

    fn decode(&mut self, text: &str, limits: &Limits) -> Result<Decoded<Asked>, Refused<Asked>> {
        if text.len() > limits.frame_bytes {
            return Err(DecodeError::too_large(limits.frame_bytes).into());
        }
        let head: Head = serde_json::from_str(text).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                refuse("Invalid JSON.")
            } else {
                refuse(format!("Invalid message: {e}"))
            }
        })?;
        let command = match head.ty.as_str() {
            "register" => {
                // An identity token is verified first; the registration runs only if
                // it holds.
                let id_token = head.id_token.clone().filter(|t| !t.is_empty());
                let (join, registration) = self.register(head, limits)?;
                let command = match id_token {
                    None => join,
                    Some(token) if token.len() > protocol::native::AUTH_TOKEN_MAX_BYTES => {
                        return Err(refuse("Invalid token").into());
                    }
                    Some(token) => Command::AuthenticateThen { token: Some(token), then: Box::new(join) },
                };
                return Ok(Decoded::Request(Request::new(None, command), Asked::Register(registration)));
            }
            ty if RELAYED.contains(&ty) => self.relay(head, text)?,
            "query" => Command::Members { room: self.registration()?.room.clone() },
            "ping" => Command::Ping,
            other => {
                let shown: String = other.chars().take(32).collect();
                return Err(refuse(format!("Unknown message type: {shown}")).into());
            }
        };
        Ok(Decoded::Request(Request::new(None, command), Asked::Other))
    }

    fn render_replies(&mut self, context: Option<Asked>, replies: Vec<Reply>, out: &mut Vec<Utf8Bytes>) {
        let mut asked = context;
        for reply in replies {
            self.render_reply(&mut asked, reply, out);
        }
    }

    fn render_event(&self, event: &Event) -> Option<Utf8Bytes> {
        match event {
            Event::Signal { from, kind, data, .. } => Some(self.signal_frame(from, kind, data)),
            _ => event.frame(Rendering::Plain.slot(), render_shared),
        }
    }

    fn reconnect(&self, after: Duration) -> Option<Utf8Bytes> {
        Some(frame_of(&json!({"type": "reconnect", "after_ms": after.as_millis() as u64, "reason": "draining"})))
    }

    /// S4 clients send nothing while they wait: the node pings them (their WebSocket
    /// answers by itself).
    fn keepalive(&self, heartbeat: Duration) -> Keepalive {
        Keepalive { ping: Some((heartbeat, Ping::Transport)), idle_after: heartbeat * 2 }
    }
}

/// An event's frame when it is the same for every recipient: every event but a signal
/// (its frame names the recipient's registration).
fn render_shared(event: &Event) -> Option<Utf8Bytes> {
    Some(match event {
        Event::Broadcast { from, kind, data, .. } => Utf8Bytes::from(format!(
            r#"{{"type":"broadcast","sender":{},"kind":{},"data":{}}}"#,
            quoted(from.as_str()),
            quoted(kind.as_str()),
            data.get()
        )),
        Event::PeerJoined { room, member, .. } => {
            frame_of(&json!({"type": "peer_joined", "room_id": room, "peer_id": member.peer}))
        }
        Event::PeerLeft { room, peer, reason, .. } => {
            frame_of(&json!({"type": "peer_left", "room_id": room, "peer_id": peer, "reason": left_reason(*reason)}))
        }
        Event::PeerUpdated { .. } | Event::HandOver { .. } | Event::Signal { .. } => return None,
        Event::Undeliverable { to, .. } => error_frame(&format!("Peer {to} is not reachable: it left.")),
        Event::RoomClosed { reason: protocol::CloseReason::Expired, .. } => error_frame("Room expired"),
        Event::RoomClosed { reason: protocol::CloseReason::Removed, .. } => error_frame("Removed from the room"),
        Event::RoomClosed { .. } => error_frame("Room closed"),
    })
}

/// The reason S4 clients know for the errors it had; ours otherwise.
fn reason(code: ErrorCode, message: &str) -> String {
    match code {
        ErrorCode::Unauthorized => "Invalid token".into(),
        ErrorCode::NotFound if message == "room not found" => "Room not found".into(),
        ErrorCode::RoomExpired => "Room expired".into(),
        _ => {
            let mut chars = message.chars();
            chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
        }
    }
}

fn left_reason(reason: LeftReason) -> &'static str {
    match reason {
        LeftReason::Left => "left",
        LeftReason::Disconnected => "disconnected",
        LeftReason::NodeLost => "node-lost",
        LeftReason::Closed => "closed",
        LeftReason::Removed => "removed",
    }
}

fn error_frame(reason: &str) -> Utf8Bytes {
    frame_of(&json!({"type": "error", "reason": reason}))
}

fn frame_of(value: &serde_json::Value) -> Utf8Bytes {
    Utf8Bytes::from(value.to_string())
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request a frame decodes to, with its context.
    fn asked(plain: &mut Plain, text: &str) -> Result<(Command, Asked), String> {
        match plain.decode(text, &Limits::default()) {
            Ok(Decoded::Request(req, asked)) => Ok((req.command, asked)),
            Ok(other) => panic!("{other:?}"),
            Err(refused) => Err(refused.error.message),
        }
    }

    fn decode(plain: &mut Plain, text: &str) -> Result<Command, String> {
        asked(plain, text).map(|(command, _)| command)
    }

    fn registered() -> Plain {
        let mut plain = Plain::default();
        let (_, asked) =
            asked(&mut plain, r#"{"type":"register","peer_id":"Worker-1","room_id":"r","token":"t"}"#).unwrap();
        let mut out = Vec::new();
        let name = DisplayName::parse("Worker-1").unwrap();
        let joined = Reply::Joined { room: RoomId::parse("r").unwrap(), others: Vec::new(), name, id: None };
        plain.render_replies(Some(asked), vec![joined], &mut out);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(out[0].as_str()).unwrap(),
            json!({"type": "registered_auth", "room_id": "r", "token": "t", "peer_id": "Worker-1"})
        );
        plain
    }

    #[test]
    fn register_becomes_a_join_under_the_chosen_id_and_is_confirmed_with_the_token_echoed() {
        let mut plain = Plain::default();
        let cmd = decode(&mut plain, r#"{"type":"register","peer_id":"Worker-1","room_id":"r","token":"t"}"#).unwrap();
        assert!(
            matches!(cmd, Command::Join { member: Some(m), token: Some(t), .. } if m.as_str() == "Worker-1" && t == "t")
        );
        registered();
    }

    #[test]
    fn a_registration_with_an_identity_token_is_one_request_that_authenticates_first() {
        let mut plain = Plain::default();
        let register = r#"{"type":"register","peer_id":"Worker-1","room_id":"r","token":"t","id_token":"eyJ.x.y"}"#;
        let (cmd, asked) = asked(&mut plain, register).unwrap();
        let Command::AuthenticateThen { token: Some(token), then } = cmd else { panic!("{cmd:?}") };
        assert_eq!(token, "eyJ.x.y");
        assert!(matches!(*then, Command::Join { member: Some(m), .. } if m.as_str() == "Worker-1"));
        // Its one outcome: the authentication's answer shows nothing, the join confirms.
        let mut out = Vec::new();
        let authenticated = Reply::Authenticated { identity: None, id: None };
        let name = DisplayName::parse("Worker-1").unwrap();
        let joined = Reply::Joined { room: RoomId::parse("r").unwrap(), others: Vec::new(), name, id: None };
        plain.render_replies(Some(asked), vec![authenticated, joined], &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(serde_json::from_str::<serde_json::Value>(out[0].as_str()).unwrap()["type"], "registered_auth");
        let oversized = format!(
            r#"{{"type":"register","peer_id":"W","room_id":"r","id_token":"{}"}}"#,
            "x".repeat(protocol::native::AUTH_TOKEN_MAX_BYTES + 1)
        );
        assert_eq!(decode(&mut Plain::default(), &oversized).unwrap_err(), "Invalid token");
    }

    #[test]
    fn a_registration_that_resumed_a_dropped_one_is_confirmed_as_any_other() {
        let mut plain = Plain::default();
        let (_, asked) =
            asked(&mut plain, r#"{"type":"register","peer_id":"Worker-1","room_id":"r","token":"t"}"#).unwrap();
        let resumed = Reply::Resumed {
            peer: PeerId::parse("r:abc").unwrap(),
            rooms: Vec::new(),
            token: "r:abc.secret".into(),
            id: None,
        };
        let mut out = Vec::new();
        plain.render_replies(Some(asked), vec![resumed], &mut out);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(out[0].as_str()).unwrap(),
            json!({"type": "registered_auth", "room_id": "r", "token": "t", "peer_id": "Worker-1"}),
            "the token given is never shown"
        );
        let relayed = decode(&mut plain, r#"{"type":"offer","sender":"Worker-1","target":"W-2"}"#).unwrap();
        assert!(matches!(relayed, Command::Signal { .. }), "registered");
    }

    #[test]
    fn a_refused_registration_leaves_the_connection_free_to_register_again() {
        let mut plain = Plain::default();
        let register = r#"{"type":"register","peer_id":"Worker-1","room_id":"r","token":"wrong"}"#;
        let (_, first) = asked(&mut plain, register).unwrap();
        let refused = Reply::Error { code: ErrorCode::Unauthorized, message: "room token mismatch".into(), id: None };
        let mut out = Vec::new();
        plain.render_replies(Some(first), vec![refused], &mut out);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(out[0].as_str()).unwrap(),
            json!({"type": "error", "reason": "Invalid token"})
        );
        let offer = r#"{"type":"offer","sender":"Worker-1","target":"Worker-2"}"#;
        assert!(decode(&mut plain, offer).unwrap_err().starts_with("Not registered"), "not registered by a refusal");
        assert!(matches!(decode(&mut plain, register).unwrap(), Command::Join { .. }), "may register again");
    }

    #[test]
    fn registration_needs_its_fields_and_happens_once() {
        let mut plain = Plain::default();
        for bad in [r#"{"type":"register","room_id":"r"}"#, r#"{"type":"register","peer_id":"","room_id":"r"}"#] {
            assert_eq!(decode(&mut plain, bad).unwrap_err(), "Missing required fields during registration.");
        }
        let mut plain = registered();
        let again = decode(&mut plain, r#"{"type":"register","peer_id":"W","room_id":"r"}"#).unwrap_err();
        assert!(again.starts_with("Already registered"), "{again}");
    }

    #[test]
    fn a_relayed_message_travels_whole_and_a_spoofed_sender_is_refused() {
        let mut plain = Plain::default();
        let early = r#"{"type":"offer","sender":"Worker-1","target":"Worker-2","sdp":"v=0"}"#;
        assert!(decode(&mut plain, early).unwrap_err().starts_with("Not registered"));
        let mut plain = registered();
        match decode(&mut plain, early).unwrap() {
            Command::Signal { to, kind, data, room } => {
                assert_eq!((to.as_str(), kind.as_str(), room.as_str()), ("Worker-2", "offer", "r"));
                assert_eq!(data.get(), early);
            }
            other => panic!("{other:?}"),
        }
        let spoofed = r#"{"type":"answer","sender":"Worker-9","target":"Worker-2"}"#;
        assert_eq!(decode(&mut plain, spoofed).unwrap_err(), "Sender does not match the registered peer_id.");
    }

    #[test]
    fn garbage_is_answered_not_ignored() {
        let mut plain = registered();
        assert_eq!(decode(&mut plain, "{not json").unwrap_err(), "Invalid JSON.");
        assert!(decode(&mut plain, r#"{"type":"teleport"}"#).unwrap_err().starts_with("Unknown message type"));
        assert!(decode(&mut plain, r#"{"type":42}"#).unwrap_err().starts_with("Invalid message"));
    }

    #[test]
    fn a_signal_from_another_dialect_is_wrapped_and_a_plain_one_arrives_as_sent() {
        let plain = registered();
        let from = PeerId::parse("n1.abc").unwrap();
        let kind = SignalKind::parse("offer").unwrap();
        let native = Payload::from_json(r#"{"sdp":"v=0"}"#.into()).unwrap();
        assert_eq!(
            plain.signal_frame(&from, &kind, &native).as_str(),
            r#"{"type":"offer","sender":"n1.abc","target":"Worker-1","data":{"sdp":"v=0"}}"#
        );
        let sent = r#"{"type":"offer", "sender":"n1.abc","target":"Worker-1","sdp":"v=0"}"#;
        let as_sent = Payload::from_json(sent.into()).unwrap();
        assert_eq!(plain.signal_frame(&from, &kind, &as_sent).as_str(), sent);
    }
}
