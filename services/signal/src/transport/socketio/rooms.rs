//! Namespace `/`: the S1 interview-room events.
//!
//! - `join-room {roomId, userName, userRole}`: the joiner gets `existing-users`, the
//!   others `user-joined {userId, userName, userRole}`.
//! - `offer` / `answer` / `ice-candidate {targetUserId, offer|answer|candidate,
//!   roomId}`: the target gets the same event with `fromUserId`; the payload passes
//!   through untouched. Only members of a shared room may signal each other.
//! - A disconnect: the others get `user-left {userId, userName}`, once.
//! - S2's calls: `call-offer {target, offer}`, `call-answer {target, answer}`,
//!   `call-end {target}`, and `ice-candidate` with a bare RTCIceCandidate (no
//!   `targetUserId`: it goes to the socket's call partner, the other side of its last
//!   call-offer or call-answer). The target gets the same event with `from`. A call is
//!   relayed within a room both sockets are in (`roomId`, or the socket's only room),
//!   like every signal of the cluster.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use protocol::{Command, DecodeError, DisplayName, ErrorCode, Limits, MemberInfo, Payload, PeerId, Role, RoomId};
use serde_json::value::RawValue;

use super::fields::{event_frame, quoted, shown, Fields};
use super::{bad, Action, Ns, SocketIo};
use crate::core::Event;

/// The S1 server's limits on its fields.
const ROOM_ID_MAX: usize = 100;
const USER_NAME_MAX: usize = 50;
const ROLES: [&str; 3] = ["interviewer", "candidate", "observer"];

/// S2's call events, each also the signal kind it travels as.
pub(super) const CALL_OFFER: &str = "call-offer";
pub(super) const CALL_ANSWER: &str = "call-answer";
pub(super) const CALL_END: &str = "call-end";
/// A bare candidate for the call partner travels as this kind (S1's `candidate` names
/// its target).
const CALL_CANDIDATE: &str = "call-candidate";

/// The three relayed events: (event, its payload field, the cluster's signal kind).
const RELAYS: [(&str, &str, &str); 3] =
    [("offer", "offer", "offer"), ("answer", "answer", "answer"), ("ice-candidate", "candidate", "candidate")];

pub(super) fn decode(
    sio: &SocketIo,
    action: &mut Action,
    event: &str,
    arg: Option<&RawValue>,
    limits: &Limits,
) -> Result<Command, DecodeError> {
    match event {
        "join-room" => join(sio, action, arg, limits),
        "leave-room" => {
            let fields = Fields::of(arg).ok_or_else(|| bad("Invalid payload: expected an object"))?;
            Ok(Command::Leave { room: room_of(sio, &fields, limits)? })
        }
        CALL_OFFER | CALL_ANSWER | CALL_END => relay(sio, action, event, arg, limits),
        _ if RELAYS.iter().any(|(name, ..)| *name == event) => relay(sio, action, event, arg, limits),
        _ => Err(bad(format!("Unknown event: {}", shown(event, 32)))),
    }
}

/// A relayed event as the signal it asks for, its argument read once: S1's `offer`,
/// `answer` and `ice-candidate` to `targetUserId`, S2's calls to `target`, and S2's
/// bare `ice-candidate` (an RTCIceCandidate, no target) to the call partner.
fn relay(
    sio: &SocketIo,
    action: &mut Action,
    event: &str,
    arg: Option<&RawValue>,
    limits: &Limits,
) -> Result<Command, DecodeError> {
    let fields = Fields::of(arg).ok_or_else(|| bad("Invalid payload: expected an object"))?;
    let payload = |field: &str| fields.raw(&[field]).map(|v| v.get()).ok_or_else(|| bad(format!("Missing {field}")));
    let addressed = |name: &str, refusal: &'static str| -> Result<(String, PeerId), DecodeError> {
        let target = fields.text(&[name]).ok_or_else(|| bad(refusal))?;
        let to = PeerId::parse(&target).map_err(|_| bad(refusal))?;
        Ok((target, to))
    };
    let ((target, to), kind, data) = match event {
        CALL_OFFER => (addressed("target", "Invalid target")?, CALL_OFFER, payload("offer")?),
        CALL_ANSWER => (addressed("target", "Invalid target")?, CALL_ANSWER, payload("answer")?),
        CALL_END => (addressed("target", "Invalid target")?, CALL_END, "{}"),
        "ice-candidate" if fields.raw(&["targetUserId"]).is_none() => {
            let partner =
                sio.call_partner().ok_or_else(|| bad("No call in progress: send call-offer or call-answer first"))?;
            let whole = arg.map_or("{}", RawValue::get);
            ((partner.as_str().to_owned(), partner), CALL_CANDIDATE, whole)
        }
        _ => {
            let &(_, field, kind) = RELAYS.iter().find(|(name, ..)| *name == event).expect("decode checked the event");
            (addressed("targetUserId", "Invalid target user ID")?, kind, payload(field)?)
        }
    };
    let room = room_of(sio, &fields, limits)?;
    sio.note_call(kind, &to);
    *action = Action::Signal { room: room.clone(), target };
    Ok(Command::Signal {
        room,
        to,
        kind: protocol::SignalKind::parse(kind).expect("a known kind"),
        data: Payload::from_json(data.to_owned()).map_err(|_| bad("Invalid JSON"))?,
    })
}

fn join(sio: &SocketIo, action: &mut Action, arg: Option<&RawValue>, limits: &Limits) -> Result<Command, DecodeError> {
    let fields = Fields::of(arg).ok_or_else(|| bad("Invalid payload: expected {roomId, userName, userRole}"))?;
    let room = fields
        .text(&["roomId"])
        .and_then(|r| RoomId::parse_with_max(&r, ROOM_ID_MAX.min(limits.room_id_chars)).ok())
        .ok_or_else(|| bad("Invalid room ID"))?;
    let name = fields
        .text(&["userName"])
        .and_then(|n| DisplayName::parse_with_max(&n, USER_NAME_MAX.min(limits.name_chars)).ok())
        .ok_or_else(|| bad("Invalid user name"))?;
    if sio.namespace_of(&room) == Some(Ns::Rooms) {
        // Already in (a client re-emits its join after a recovered reconnect).
        *action = Action::Rejoin;
        return Ok(Command::Members { room });
    }
    let role = fields
        .text(&["userRole"])
        .filter(|r| ROLES.contains(&r.as_str()))
        .and_then(|r| Role::parse(&r).ok())
        .ok_or_else(|| bad("Invalid user role: expected interviewer, candidate or observer"))?;
    let meta = format!(r#"{{"joinedAt":{}}}"#, quoted(&now_iso()));
    let token = room_token(&fields)?;
    *action = Action::JoinRoom;
    Ok(Command::Join { room, name, role, token, meta: Payload::from_json(meta).expect("valid JSON"), member: None })
}

/// A room token (`token` or `roomToken`), for rooms created ahead; S1 had none.
pub(super) fn room_token(fields: &Fields<'_>) -> Result<Option<String>, DecodeError> {
    match fields.string(&["token", "roomToken"]) {
        Ok(Some(token)) if token.len() > protocol::native::TOKEN_MAX_BYTES => Err(bad("Invalid token")),
        Ok(token) => Ok(token.filter(|t| !t.is_empty())),
        Err(()) => Err(bad("Invalid token")),
    }
}

/// The event's `roomId`, or the socket's only room when it names none.
fn room_of(sio: &SocketIo, fields: &Fields<'_>, limits: &Limits) -> Result<RoomId, DecodeError> {
    match fields.string(&["roomId"]) {
        Ok(Some(room)) => RoomId::parse_with_max(&room, limits.room_id_chars).map_err(|_| bad("Invalid room ID")),
        Ok(None) => sio.only_room(Ns::Rooms).cloned().ok_or_else(|| bad("Invalid room ID")),
        Err(()) => Err(bad("Invalid room ID")),
    }
}

/// The current time as the S1 server wrote `new Date()`.
pub(super) fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A member's `joinedAt` (from its metadata), or null when its dialect set none.
fn joined_at(member: &MemberInfo) -> String {
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(member.meta.get())
        .ok()
        .and_then(|meta| meta.get("joinedAt").map(|v| v.to_string()))
        .unwrap_or_else(|| "null".into())
}

/// `existing-users`: the room's other members.
pub(super) fn existing_users(others: &[Arc<MemberInfo>]) -> Utf8Bytes {
    let users: Vec<String> = others
        .iter()
        .map(|m| {
            format!(
                r#"{{"id":{id},"name":{},"role":{},"socketId":{id},"joinedAt":{}}}"#,
                quoted(m.name.as_str()),
                quoted(m.role.as_str()),
                joined_at(m),
                id = quoted(m.peer.as_str()),
            )
        })
        .collect();
    event_frame("/", "existing-users", &format!("[{}]", users.join(",")))
}

pub(super) fn render_event(event: &Event) -> Option<Utf8Bytes> {
    Some(match event {
        Event::PeerJoined { member, .. } => event_frame(
            "/",
            "user-joined",
            &format!(
                r#"{{"userId":{},"userName":{},"userRole":{},"joinedAt":{}}}"#,
                quoted(member.peer.as_str()),
                quoted(member.name.as_str()),
                quoted(member.role.as_str()),
                joined_at(member),
            ),
        ),
        Event::PeerLeft { peer, member, .. } => {
            let name = member.as_ref().map_or_else(|| "null".into(), |m| quoted(m.name.as_str()));
            event_frame("/", "user-left", &format!(r#"{{"userId":{},"userName":{name}}}"#, quoted(peer.as_str())))
        }
        Event::Signal { room, from, kind, data } => {
            if let Some(frame) = call_event(room, from, kind.as_str(), data) {
                return Some(frame);
            }
            let (event, field) = match kind.as_str() {
                "offer" => ("offer", "offer"),
                "answer" => ("answer", "answer"),
                "candidate" => ("ice-candidate", "candidate"),
                other => {
                    return Some(event_frame(
                        "/",
                        "signal",
                        &format!(
                            r#"{{"fromUserId":{},"kind":{},"data":{},"roomId":{}}}"#,
                            quoted(from.as_str()),
                            quoted(other),
                            data.get(),
                            quoted(room.as_str())
                        ),
                    ))
                }
            };
            event_frame(
                "/",
                event,
                &format!(
                    r#"{{"fromUserId":{},"{field}":{},"roomId":{}}}"#,
                    quoted(from.as_str()),
                    data.get(),
                    quoted(room.as_str())
                ),
            )
        }
        Event::Broadcast { room, from, kind, data, .. } => event_frame(
            "/",
            "broadcast",
            &format!(
                r#"{{"fromUserId":{},"kind":{},"data":{},"roomId":{}}}"#,
                quoted(from.as_str()),
                quoted(kind.as_str()),
                data.get(),
                quoted(room.as_str())
            ),
        ),
        // S1 has no event for a member's metadata changing; a room closing is told by
        // `render_room_closed`.
        Event::PeerUpdated { .. } | Event::RoomClosed { .. } | Event::HandOver { .. } => return None,
        Event::Undeliverable { room, to } => event_frame(
            "/",
            "error",
            &format!(
                r#"{{"message":{},"code":"peer-unavailable","targetUserId":{},"roomId":{}}}"#,
                quoted(&format!("User {to} is not reachable: they left the room")),
                quoted(to.as_str()),
                quoted(room.as_str())
            ),
        ),
    })
}

/// An S2 call event, as its target receives it: the event with the sender's `from`.
fn call_event(room: &RoomId, from: &PeerId, kind: &str, data: &Payload) -> Option<Utf8Bytes> {
    let (event, field) = match kind {
        CALL_OFFER => (CALL_OFFER, Some("offer")),
        CALL_ANSWER => (CALL_ANSWER, Some("answer")),
        CALL_END => (CALL_END, None),
        CALL_CANDIDATE => ("ice-candidate", Some("candidate")),
        _ => return None,
    };
    let payload = match field {
        Some(field) => format!(
            r#"{{"from":{},"{field}":{},"roomId":{}}}"#,
            quoted(from.as_str()),
            data.get(),
            quoted(room.as_str())
        ),
        None => format!(r#"{{"from":{},"roomId":{}}}"#, quoted(from.as_str()), quoted(room.as_str())),
    };
    Some(event_frame("/", event, &payload))
}

/// `error {message, code}`, naming the target of a refused signal.
pub(super) fn error_frame(code: ErrorCode, message: &str, action: Option<&Action>) -> Utf8Bytes {
    let target = match action {
        Some(Action::Signal { target, room }) => {
            format!(r#","targetUserId":{},"roomId":{}"#, quoted(target), quoted(room.as_str()))
        }
        _ => String::new(),
    };
    event_frame("/", "error", &format!(r#"{{"message":{},"code":{}{target}}}"#, quoted(message), quoted(code.as_str())))
}

/// A room closing, as S1 clients can understand it: every other member leaves
/// (`user-left`), then an `error` says why.
pub(super) fn render_room_closed(event: &Event, me: &PeerId) -> Vec<Utf8Bytes> {
    let Event::RoomClosed { room, reason, members } = event else { return Vec::new() };
    let mut frames: Vec<Utf8Bytes> = members
        .iter()
        .filter(|m| &m.peer != me)
        .map(|m| {
            let left = format!(r#"{{"userId":{},"userName":{}}}"#, quoted(m.peer.as_str()), quoted(m.name.as_str()));
            event_frame("/", "user-left", &left)
        })
        .collect();
    let message = match reason {
        protocol::CloseReason::Expired => "Room expired",
        protocol::CloseReason::Ended => "Room closed",
        protocol::CloseReason::Removed => "Removed from the room by a host",
    };
    let error = format!(
        r#"{{"message":{},"code":"room-closed","reason":{},"roomId":{}}}"#,
        quoted(message),
        quoted(reason.as_str()),
        quoted(room.as_str())
    );
    frames.push(event_frame("/", "error", &error));
    frames
}
