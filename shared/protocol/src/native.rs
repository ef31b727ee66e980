//! Native protocol v1: JSON text frames between a client and its node at `/ws`.
//! docs/protocol.md is the reference for clients; this module is its source of truth.
//!
//! Decoding takes two steps: read `type` (and `id`), then the variant's own struct.
//! `serde_json`'s `RawValue` cannot sit inside `#[serde(tag)]` enums, and `data` must
//! stay raw (see [`Payload`]).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::command::{Command, DecodeError, ErrorCode, LeftReason, Limits, Request, RequestId, Traceparent};
use crate::envelope::MemberInfo;
use crate::ids::{DisplayName, IdError, NodeId, PeerId, Role, RoomId, SignalKind};
use crate::payload::Payload;

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    ty: Option<String>,
    #[serde(default)]
    id: Option<RequestId>,
    /// Optional W3C trace context; ignored unless well-formed.
    #[serde(default)]
    traceparent: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct JoinWire {
    room: String,
    name: Option<String>,
    role: Option<String>,
    token: Option<String>,
    meta: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct RoomWire {
    room: String,
}

#[derive(Deserialize)]
struct SignalWire {
    room: String,
    to: String,
    kind: String,
    data: Box<RawValue>,
}

#[derive(Deserialize)]
struct BroadcastWire {
    room: String,
    kind: String,
    data: Box<RawValue>,
}

#[derive(Deserialize)]
struct UpdateWire {
    room: String,
    meta: Box<RawValue>,
}

/// Longest room token a client may present on join.
pub const TOKEN_MAX_BYTES: usize = 512;
/// Longest identity token (a JWT; identity providers' ID tokens run to a few KiB).
pub const AUTH_TOKEN_MAX_BYTES: usize = 8 * 1024;

#[derive(Deserialize)]
struct RemoveWire {
    room: String,
    peer: String,
}

#[derive(Deserialize)]
struct LockWire {
    room: String,
    locked: Option<bool>,
}

#[derive(Deserialize)]
struct AuthWire {
    token: String,
}

/// Longest resume token (a peer id, a dot and 43 characters).
pub const RESUME_TOKEN_MAX_BYTES: usize = 256;
pub const DEFAULT_NAME: &str = "guest";
pub const DEFAULT_ROLE: &str = "participant";

/// Decodes and validates one native text frame. Every refusal names the offending field.
pub fn decode(text: &str, limits: &Limits) -> Result<Request, DecodeError> {
    if text.len() > limits.frame_bytes {
        return Err(DecodeError { id: readable_id(text), ..DecodeError::too_large(limits.frame_bytes) });
    }
    let head: Head = serde_json::from_str(text).map_err(|e| {
        DecodeError::bad(
            format!("not a JSON object with a string `type` (and a string or number `id`): {e}"),
            readable_id(text),
        )
    })?;
    let id = head.id;
    let ty = head.ty.ok_or_else(|| DecodeError::bad("missing field `type`", id.clone()))?;
    let field = |e: IdError| DecodeError::bad(e.to_string(), id.clone());
    let parse = |e: serde_json::Error| DecodeError::bad(format!("{ty}: {e}"), id.clone());
    let room = |s: &str| RoomId::parse_with_max(s, limits.room_id_chars).map_err(field);
    let msg = match ty.as_str() {
        "join" => {
            let w: JoinWire = serde_json::from_str(text).map_err(parse)?;
            if w.token.as_ref().is_some_and(|t| t.len() > TOKEN_MAX_BYTES) {
                return Err(DecodeError::bad("token is too long", id));
            }
            Command::Join {
                room: room(&w.room)?,
                name: DisplayName::parse_with_max(w.name.as_deref().unwrap_or(DEFAULT_NAME), limits.name_chars)
                    .map_err(field)?,
                role: Role::parse(w.role.as_deref().unwrap_or(DEFAULT_ROLE)).map_err(field)?,
                token: w.token,
                meta: match w.meta {
                    Some(raw) => meta(raw, limits, &id)?,
                    None => Payload::empty_object(),
                },
                member: None,
            }
        }
        "leave" => {
            let w: RoomWire = serde_json::from_str(text).map_err(parse)?;
            Command::Leave { room: room(&w.room)? }
        }
        "signal" => {
            let w: SignalWire = serde_json::from_str(text).map_err(parse)?;
            Command::Signal {
                room: room(&w.room)?,
                to: PeerId::parse(&w.to).map_err(field)?,
                kind: SignalKind::parse(&w.kind).map_err(field)?,
                data: Payload::from_raw(w.data),
            }
        }
        "broadcast" => {
            let w: BroadcastWire = serde_json::from_str(text).map_err(parse)?;
            Command::Broadcast {
                room: room(&w.room)?,
                kind: SignalKind::parse(&w.kind).map_err(field)?,
                data: Payload::from_raw(w.data),
            }
        }
        "members" => {
            let w: RoomWire = serde_json::from_str(text).map_err(parse)?;
            Command::Members { room: room(&w.room)? }
        }
        "update" => {
            let w: UpdateWire = serde_json::from_str(text).map_err(parse)?;
            Command::Update { room: room(&w.room)?, meta: meta(w.meta, limits, &id)? }
        }
        "ping" => Command::Ping,
        "close" => {
            let w: RoomWire = serde_json::from_str(text).map_err(parse)?;
            Command::Close { room: room(&w.room)? }
        }
        "remove" => {
            let w: RemoveWire = serde_json::from_str(text).map_err(parse)?;
            Command::Remove { room: room(&w.room)?, peer: PeerId::parse(&w.peer).map_err(field)? }
        }
        "lock" => {
            let w: LockWire = serde_json::from_str(text).map_err(parse)?;
            Command::Lock { room: room(&w.room)?, locked: w.locked.unwrap_or(true) }
        }
        "auth" => {
            let w: AuthWire = serde_json::from_str(text).map_err(parse)?;
            if w.token.is_empty() || w.token.len() > AUTH_TOKEN_MAX_BYTES {
                return Err(DecodeError::bad(format!("token must be 1 to {AUTH_TOKEN_MAX_BYTES} bytes"), id));
            }
            Command::Authenticate { token: Some(w.token) }
        }
        "resume" => {
            let w: AuthWire = serde_json::from_str(text).map_err(parse)?;
            if w.token.is_empty() || w.token.len() > RESUME_TOKEN_MAX_BYTES {
                return Err(DecodeError::bad(format!("token must be 1 to {RESUME_TOKEN_MAX_BYTES} bytes"), id));
            }
            Command::Resume { token: w.token, keep_token: false }
        }
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(DecodeError::bad(format!("unknown type `{shown}`"), id));
        }
    };
    let traceparent = head.traceparent.as_deref().and_then(|raw| {
        let text: &str = serde_json::from_str(raw.get()).ok()?;
        Traceparent::parse(text)
    });
    Ok(Request { id, command: msg, traceparent })
}

/// The `id` of a frame whose head could not be read (a `type` that is not a string, a
/// frame over the size limit): any JSON object with a string or number `id` gets it
/// echoed. Only runs on the error path, so well-formed frames are parsed once.
fn readable_id(text: &str) -> Option<RequestId> {
    #[derive(Deserialize)]
    struct IdOnly {
        #[serde(default)]
        id: Option<RequestId>,
    }
    serde_json::from_str::<IdOnly>(text).ok().and_then(|h| h.id)
}

fn meta(raw: Box<RawValue>, limits: &Limits, id: &Option<RequestId>) -> Result<Payload, DecodeError> {
    let meta = Payload::from_raw(raw);
    if !meta.is_object() {
        return Err(DecodeError::bad("meta must be a JSON object", id.clone()));
    }
    if meta.get().len() > limits.meta_bytes {
        return Err(DecodeError {
            code: ErrorCode::TooLarge,
            message: format!("meta exceeds {} bytes", limits.meta_bytes),
            id: id.clone(),
        });
    }
    Ok(meta)
}

/// What a node tells a client. Serialises to the wire form with `type` first.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMsg {
    Welcome(Welcome),
    Joined(Joined),
    PeerJoined(PeerJoined),
    Left(RoomReply),
    PeerLeft(PeerLeft),
    Signal(Relayed),
    Broadcast(Relayed),
    Updated(RoomReply),
    PeerUpdated(PeerJoined),
    /// The answer to `members`: the room's other members, shaped as `joined`.
    Members(Joined),
    Pong(Pong),
    Error(ErrorMsg),
    Reconnect(Reconnect),
    /// The answer to `auth`: who the token says the client is.
    Authenticated(Authenticated),
    /// The room was closed; the client is no longer in it.
    RoomClosed(RoomClosed),
    /// The answer to `close`.
    Closed(RoomReply),
    /// The answer to `remove` and `lock`.
    Done(RoomReply),
    /// The answer to `resume`: the connection is the peer it resumes, in these rooms;
    /// what was held for it follows, in order.
    Resumed(Resumed),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resumed {
    pub peer: PeerId,
    /// The rooms it is back in, each with its other members (shaped as `joined`).
    pub rooms: Vec<Joined>,
    /// The token for the next resume (each token works once).
    pub resume: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomClosed {
    pub room: RoomId,
    pub reason: crate::envelope::CloseReason,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Authenticated {
    /// None: anonymous.
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    pub peer: PeerId,
    pub node: NodeId,
    pub heartbeat_ms: u64,
    /// The token that resumes this connection on any node after it drops (absent when
    /// the node has resume turned off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Joined {
    pub room: RoomId,
    /// The others already there, not the joiner.
    pub peers: Vec<MemberInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
}

/// `peer-joined` and `peer-updated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerJoined {
    pub room: RoomId,
    pub peer: MemberInfo,
}

/// `left` and `updated`: the acknowledgement of a request about one room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomReply {
    pub room: RoomId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerLeft {
    pub room: RoomId,
    pub peer: PeerId,
    pub reason: LeftReason,
}

/// `signal` and `broadcast` as the receiver sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Relayed {
    pub room: RoomId,
    pub from: PeerId,
    pub kind: SignalKind,
    pub data: Payload,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pong {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorMsg {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<RequestId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reconnect {
    pub after_ms: u64,
    pub reason: String,
}

impl ServerMsg {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages serialise")
    }

    /// A `signal` (or, with `broadcast`, a `broadcast`) frame written from borrowed
    /// parts: the text of `ServerMsg::Signal(..).to_json()`, without copying each part
    /// into a message first (a relay writes one per delivery).
    pub fn relayed_json(broadcast: bool, room: &RoomId, from: &PeerId, kind: &SignalKind, data: &Payload) -> String {
        #[derive(Serialize)]
        struct RelayedRef<'a> {
            #[serde(rename = "type")]
            ty: &'static str,
            room: &'a RoomId,
            from: &'a PeerId,
            kind: &'a SignalKind,
            data: &'a Payload,
        }
        let ty = if broadcast { "broadcast" } else { "signal" };
        serde_json::to_string(&RelayedRef { ty, room, from, kind, data }).expect("server messages serialise")
    }

    pub fn error(code: ErrorCode, message: impl Into<String>, id: Option<RequestId>) -> Self {
        ServerMsg::Error(ErrorMsg { code, message: message.into(), id })
    }

    /// Reads a server frame (clients, tests and the load-test harness use this).
    pub fn decode(text: &str) -> Result<ServerMsg, serde_json::Error> {
        #[derive(Deserialize)]
        struct Type {
            #[serde(rename = "type")]
            ty: String,
        }
        let t: Type = serde_json::from_str(text)?;
        Ok(match t.ty.as_str() {
            "welcome" => ServerMsg::Welcome(serde_json::from_str(text)?),
            "joined" => ServerMsg::Joined(serde_json::from_str(text)?),
            "peer-joined" => ServerMsg::PeerJoined(serde_json::from_str(text)?),
            "left" => ServerMsg::Left(serde_json::from_str(text)?),
            "peer-left" => ServerMsg::PeerLeft(serde_json::from_str(text)?),
            "signal" => ServerMsg::Signal(serde_json::from_str(text)?),
            "broadcast" => ServerMsg::Broadcast(serde_json::from_str(text)?),
            "updated" => ServerMsg::Updated(serde_json::from_str(text)?),
            "peer-updated" => ServerMsg::PeerUpdated(serde_json::from_str(text)?),
            "members" => ServerMsg::Members(serde_json::from_str(text)?),
            "pong" => ServerMsg::Pong(serde_json::from_str(text)?),
            "error" => ServerMsg::Error(serde_json::from_str(text)?),
            "reconnect" => ServerMsg::Reconnect(serde_json::from_str(text)?),
            "authenticated" => ServerMsg::Authenticated(serde_json::from_str(text)?),
            "room-closed" => ServerMsg::RoomClosed(serde_json::from_str(text)?),
            "closed" => ServerMsg::Closed(serde_json::from_str(text)?),
            "done" => ServerMsg::Done(serde_json::from_str(text)?),
            "resumed" => ServerMsg::Resumed(serde_json::from_str(text)?),
            other => {
                return Err(serde::de::Error::custom(format!("unknown server message type {other}")));
            }
        })
    }
}

#[cfg(test)]
mod tests;
