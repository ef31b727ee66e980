//! Namespace `/meetings`: the S3 meetings gateway (a NestJS gateway with simple-peer
//! clients). Its original documents only the event names; the payloads here are the
//! ones such a gateway sends, and the common spellings of each field are accepted
//! (docs/dialects.md lists them with examples).
//!
//! A participant's media state and readiness live in its member metadata, merged by
//! this codec (which keeps the participant's own state), so later joiners see them in
//! `meeting-joined`. `change` in the metadata says what the last update changed, so
//! the others hear `participant-media-changed` or `participant-ready`.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use protocol::{
    Command, DecodeError, DisplayName, ErrorCode, Limits, MemberInfo, Payload, PeerId, Role, RoomId, SignalKind,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::fields::{event_frame, quoted, shown, Fields};
use super::rooms::now_iso;
use super::{bad, Action, SocketIo};
use crate::core::Event;

const NS: &str = "/meetings";

/// Spellings accepted for each field.
const MEETING_ID: &[&str] = &["meetingId", "roomId", "meeting_id", "room"];
const NAME: &[&str] = &["displayName", "name", "userName", "participantName"];
const TARGET: &[&str] = &["targetParticipantId", "targetId", "target", "to", "targetUserId", "participantId"];
const TEXT: &[&str] = &["text", "message", "content"];

/// The signalling events: (event, payload field spellings, the cluster's signal kind).
const SIGNALS: [(&str, &[&str], &str); 4] = [
    ("webrtc-signal", &["signal", "data"], "signal"),
    ("webrtc-offer", &["offer", "sdp", "signal"], "offer"),
    ("webrtc-answer", &["answer", "sdp", "signal"], "answer"),
    ("webrtc-ice-candidate", &["candidate", "signal"], "candidate"),
];

/// Longest chat text, in characters.
const CHAT_TEXT_MAX: usize = 4000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Media {
    audio: bool,
    video: bool,
    screen: bool,
}

impl Default for Media {
    fn default() -> Self {
        Media { audio: true, video: true, screen: false }
    }
}

/// What the last update of a participant changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    Joined,
    Media,
    Ready,
}

/// This connection's own state in one meeting.
#[derive(Debug, Clone)]
pub(super) struct Me {
    pub(super) room: RoomId,
    name: DisplayName,
    media: Media,
    ready: bool,
    joined_at: String,
    change: Change,
}

impl Me {
    /// This state under the name the node recorded (a token's claim wins).
    pub(super) fn recorded_as(&self, name: protocol::DisplayName) -> Me {
        Me { name, ..self.clone() }
    }

    /// The state a participant's record keeps in its metadata, for a recovered
    /// session; None for a member that did not join from this namespace.
    pub(super) fn from_record(room: &RoomId, member: &MemberInfo) -> Option<Me> {
        let meta = meta_view(member);
        Some(Me {
            room: room.clone(),
            name: member.name.clone(),
            media: meta.media?,
            ready: meta.ready.unwrap_or(false),
            joined_at: meta.joined_at.and_then(|at| at.as_str().map(str::to_owned)).unwrap_or_else(now_iso),
            change: Change::Joined,
        })
    }

    fn meta(&self) -> Payload {
        let change = match self.change {
            Change::Joined => "joined",
            Change::Media => "media",
            Change::Ready => "ready",
        };
        let meta = json!({"joinedAt": self.joined_at, "media": self.media, "ready": self.ready, "change": change});
        Payload::from_json(meta.to_string()).expect("valid JSON")
    }
}

pub(super) fn decode(
    sio: &mut SocketIo,
    action: &mut Action,
    event: &str,
    arg: Option<&RawValue>,
    limits: &Limits,
) -> Result<Command, DecodeError> {
    let fields = Fields::of(arg).ok_or_else(|| bad("Invalid payload: expected an object with meetingId"))?;
    let room = fields
        .text(MEETING_ID)
        .and_then(|m| RoomId::parse_with_max(&m, limits.room_id_chars).ok())
        .ok_or_else(|| bad("Invalid meeting ID"))?;
    if event == "join-meeting" {
        if sio.meeting(&room).is_some() {
            *action = Action::Rejoin;
            return Ok(Command::Members { room });
        }
        return join(action, room, &fields, limits);
    }
    if let Some(&(_, names, kind)) = SIGNALS.iter().find(|(name, ..)| *name == event) {
        return signal(action, room, &fields, names, kind);
    }
    let me = sio.meeting(&room).cloned().ok_or_else(|| DecodeError {
        code: ErrorCode::NotInRoom,
        message: "Not in this meeting".into(),
        id: None,
    })?;
    match event {
        "leave-meeting" => Ok(Command::Leave { room }),
        "toggle-media" => {
            let media = toggled(me.media, &fields)?;
            update(action, Me { media, change: Change::Media, ..me })
        }
        "participant-ready" => {
            let ready = fields.boolean(&["ready", "isReady"]).unwrap_or(true);
            update(action, Me { ready, change: Change::Ready, ..me })
        }
        "chat-message" => chat(sio, action, me, &fields),
        "end-meeting" => Ok(Command::Close { room }),
        "remove-participant" => {
            let target = fields.text(TARGET).ok_or_else(|| bad("Invalid participant ID"))?;
            let peer = PeerId::parse(&target).map_err(|_| bad("Invalid participant ID"))?;
            Ok(Command::Remove { room, peer })
        }
        "lock-meeting" => Ok(Command::Lock { room, locked: fields.boolean(&["locked", "lock"]).unwrap_or(true) }),
        other => Err(bad(format!("Unknown event: {}", shown(other, 32)))),
    }
}

fn join(action: &mut Action, room: RoomId, fields: &Fields<'_>, limits: &Limits) -> Result<Command, DecodeError> {
    let name = fields
        .string(NAME)
        .map_err(|()| bad("Invalid display name"))?
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| "Guest".into());
    let name =
        DisplayName::parse_with_max(&name, limits.name_chars).map_err(|e| bad(format!("Invalid display name: {e}")))?;
    let role = match fields.string(&["role"]) {
        Ok(Some(role)) => Role::parse(&role).map_err(|e| bad(format!("Invalid role: {e}")))?,
        Ok(None) => Role::parse("participant").expect("a valid role"),
        Err(()) => return Err(bad("Invalid role")),
    };
    let media = match fields.raw(&["media", "mediaState"]) {
        Some(raw) => toggled(Media::default(), &Fields::of(Some(raw)).ok_or_else(|| bad("Invalid media state"))?)?,
        None => Media::default(),
    };
    let me = Me {
        room: room.clone(),
        name: name.clone(),
        media,
        ready: false,
        joined_at: now_iso(),
        change: Change::Joined,
    };
    let meta = me.meta();
    let token = super::rooms::room_token(fields)?;
    *action = Action::JoinMeeting(me);
    Ok(Command::Join { room, name, role, token, meta, member: None })
}

/// Media state after a toggle: `{audio, video, screen}` (any subset), or
/// `{type|kind: "audio"|"video"|"screen", enabled}`.
fn toggled(mut media: Media, fields: &Fields<'_>) -> Result<Media, DecodeError> {
    let mut changed = false;
    for (names, slot) in [
        (&["audio", "audioEnabled", "isAudioEnabled"][..], &mut media.audio),
        (&["video", "videoEnabled", "isVideoEnabled"][..], &mut media.video),
        (&["screen", "screenShare", "isScreenSharing"][..], &mut media.screen),
    ] {
        if let Some(on) = fields.boolean(names) {
            *slot = on;
            changed = true;
        }
    }
    if let (Ok(Some(kind)), Some(on)) =
        (fields.string(&["type", "kind", "mediaType"]), fields.boolean(&["enabled", "state", "on"]))
    {
        match kind.as_str() {
            "audio" => media.audio = on,
            "video" => media.video = on,
            "screen" => media.screen = on,
            _ => return Err(bad("Invalid media type: expected audio, video or screen")),
        }
        changed = true;
    }
    if !changed {
        return Err(bad("Invalid media state: expected audio, video or screen as booleans"));
    }
    Ok(media)
}

fn update(action: &mut Action, me: Me) -> Result<Command, DecodeError> {
    let (room, meta) = (me.room.clone(), me.meta());
    *action = Action::UpdateMeeting(me);
    Ok(Command::Update { room, meta })
}

fn signal(
    action: &mut Action,
    room: RoomId,
    fields: &Fields<'_>,
    names: &[&str],
    kind: &str,
) -> Result<Command, DecodeError> {
    let target = fields.text(TARGET).ok_or_else(|| bad("Invalid target participant ID"))?;
    let to = PeerId::parse(&target).map_err(|_| bad("Invalid target participant ID"))?;
    let data = fields.raw(names).ok_or_else(|| bad(format!("Missing {}", names[0])))?;
    *action = Action::Signal { room: room.clone(), target };
    Ok(Command::Signal {
        room,
        to,
        kind: SignalKind::parse(kind).expect("a known kind"),
        data: Payload::from_json(data.get().to_owned()).map_err(|_| bad("Invalid JSON"))?,
    })
}

fn chat(sio: &mut SocketIo, action: &mut Action, me: Me, fields: &Fields<'_>) -> Result<Command, DecodeError> {
    let text = fields.text(TEXT).ok_or_else(|| bad("Invalid chat message: expected a non-empty text"))?;
    if text.chars().count() > CHAT_TEXT_MAX {
        return Err(bad(format!("Chat message longer than {CHAT_TEXT_MAX} characters")));
    }
    sio.chats_sent += 1;
    let sender = sio.peer().clone();
    let message = json!({
        // The time keeps ids unique across a recovered session's connections.
        "id": format!("{sender}-{}-{}", chrono::Utc::now().timestamp_millis(), sio.chats_sent),
        "meetingId": me.room,
        "senderId": sender,
        "senderName": me.name,
        "text": text,
        "timestamp": now_iso(),
    })
    .to_string();
    let data = Payload::from_json(message.clone()).expect("valid JSON");
    *action = Action::Chat { message };
    Ok(Command::Broadcast { room: me.room, kind: SignalKind::parse("chat").expect("a valid kind"), data })
}

/// A member's metadata as this namespace reads it: any dialect's member shows, with
/// defaults for what it did not set.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaView {
    media: Option<Media>,
    ready: Option<bool>,
    joined_at: Option<Value>,
    change: Option<String>,
}

fn meta_view(member: &MemberInfo) -> MetaView {
    serde_json::from_str(member.meta.get()).unwrap_or_default()
}

fn participant(member: &MemberInfo) -> Value {
    let meta = meta_view(member);
    json!({
        "participantId": member.peer,
        "displayName": member.name,
        "role": member.role,
        "media": meta.media.unwrap_or_default(),
        "ready": meta.ready.unwrap_or(false),
        "joinedAt": meta.joined_at,
    })
}

fn frame(name: &str, value: &Value) -> Utf8Bytes {
    event_frame(NS, name, &value.to_string())
}

/// `meeting-joined` for the joiner, and `meeting-started` when it is the first to
/// `join` (not when a participant joins again the meeting it is in).
pub(super) fn render_joined(me: &Me, peer: &PeerId, others: &[Arc<MemberInfo>], join: bool, out: &mut Vec<Utf8Bytes>) {
    let participants: Vec<Value> = others.iter().map(|m| participant(m)).collect();
    out.push(frame(
        "meeting-joined",
        &json!({
            "meetingId": me.room,
            "participantId": peer,
            "participant": {"participantId": peer, "displayName": me.name, "media": me.media, "ready": me.ready, "joinedAt": me.joined_at},
            "participants": participants,
        }),
    ));
    if join && others.is_empty() {
        out.push(frame(
            "meeting-started",
            &json!({"meetingId": me.room, "startedAt": me.joined_at, "startedBy": peer}),
        ));
    }
}

pub(super) fn render_event(event: &Event) -> Option<Utf8Bytes> {
    Some(match event {
        Event::PeerJoined { room, member, .. } => {
            frame("participant-joined", &json!({"meetingId": room, "participant": participant(member)}))
        }
        Event::PeerLeft { room, peer, reason, member, .. } => frame(
            "participant-left",
            &json!({
                "meetingId": room,
                "participantId": peer,
                "displayName": member.as_ref().map(|m| m.name.as_str()),
                "reason": reason,
            }),
        ),
        Event::PeerUpdated { room, member, .. } => {
            let meta = meta_view(member);
            if meta.change.as_deref() == Some("ready") {
                frame(
                    "participant-ready",
                    &json!({"meetingId": room, "participantId": member.peer, "ready": meta.ready.unwrap_or(true)}),
                )
            } else {
                frame(
                    "participant-media-changed",
                    &json!({"meetingId": room, "participantId": member.peer, "media": meta.media.unwrap_or_default()}),
                )
            }
        }
        Event::Signal { room, from, kind, data } => {
            let (event, field) = match kind.as_str() {
                "offer" => ("webrtc-offer", "offer"),
                "answer" => ("webrtc-answer", "answer"),
                "candidate" => ("webrtc-ice-candidate", "candidate"),
                _ => ("webrtc-signal", "signal"),
            };
            event_frame(
                NS,
                event,
                &format!(
                    r#"{{"meetingId":{},"fromParticipantId":{},"kind":{},"{field}":{}}}"#,
                    quoted(room.as_str()),
                    quoted(from.as_str()),
                    quoted(kind.as_str()),
                    data.get()
                ),
            )
        }
        // Chat messages are written whole by the sending participant's codec; other
        // dialects' broadcasts have no event here.
        Event::Broadcast { kind, data, .. } if kind.as_str() == "chat" && data.is_object() => {
            event_frame(NS, "chat-message", data.get())
        }
        Event::Broadcast { .. } | Event::HandOver { .. } => return None,
        Event::RoomClosed { room, reason, .. } => {
            frame("meeting-ended", &json!({"meetingId": room, "reason": reason, "endedAt": now_iso()}))
        }
        Event::Undeliverable { room, to } => frame(
            "webrtc-error",
            &json!({
                "meetingId": room,
                "targetParticipantId": to,
                "code": "peer-unavailable",
                "message": format!("Participant {to} is not reachable: they left the meeting"),
            }),
        ),
    })
}

/// A refusal: `webrtc-error` for a signal, NestJS's `exception` for anything else.
pub(super) fn error_frame(code: ErrorCode, message: &str, action: Option<&Action>) -> Utf8Bytes {
    match action {
        Some(Action::Signal { room, target }) => frame(
            "webrtc-error",
            &json!({"meetingId": room, "targetParticipantId": target, "code": code.as_str(), "message": message}),
        ),
        _ => frame("exception", &json!({"status": "error", "code": code.as_str(), "message": message})),
    }
}
