//! What clients ask of a node and how the node refuses, independent of the dialect
//! they speak: the native protocol, Socket.IO and plain JSON decode their frames into
//! these, the session executes them, and each dialect renders the answers its own way.

use serde::{Deserialize, Serialize};

use crate::ids::{DisplayName, PeerId, Role, RoomId, SignalKind};
use crate::payload::Payload;

/// Size limits applied at the edge. Defaults match docs/protocol.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted text frame, in bytes.
    pub frame_bytes: usize,
    pub room_id_chars: usize,
    pub name_chars: usize,
    /// Largest `meta` object on join/update, in bytes of JSON text.
    pub meta_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            frame_bytes: 64 * 1024,
            room_id_chars: RoomId::DEFAULT_MAX_CHARS,
            name_chars: DisplayName::DEFAULT_MAX_CHARS,
            meta_bytes: 4 * 1024,
        }
    }
}

/// A request id chosen by the client, echoed on the reply or error to that request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    Num(serde_json::Number),
    Str(String),
}

/// One decoded client frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Option<RequestId>,
    pub command: Command,
    /// The client's W3C trace context, when it sent one: the server continues that trace.
    pub traceparent: Option<Traceparent>,
}

impl Request {
    /// A request without a client trace context.
    pub fn new(id: Option<RequestId>, command: Command) -> Self {
        Self { id, command, traceparent: None }
    }
}

/// A W3C `traceparent` (version 00): `00-<32 hex trace id>-<16 hex parent id>-<2 hex
/// flags>`, with non-zero ids. Anything else is not one (the spec says to ignore it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traceparent(String);

impl Traceparent {
    pub const LEN: usize = 55;

    pub fn parse(s: &str) -> Option<Traceparent> {
        let parts: Vec<&str> = s.split('-').collect();
        let hex = |p: &str, len: usize| p.len() == len && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let nonzero = |p: &str| p.bytes().any(|b| b != b'0');
        let valid = s.len() == Self::LEN
            && parts.len() == 4
            && parts[0] == "00"
            && hex(parts[1], 32)
            && nonzero(parts[1])
            && hex(parts[2], 16)
            && nonzero(parts[2])
            && hex(parts[3], 2);
        valid.then(|| Traceparent(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a client asks of its node, whatever dialect it speaks.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `member`: the public id the client chose for itself in this room (dialects whose
    /// clients choose one); None for the id the node minted for the connection.
    Join {
        room: RoomId,
        name: DisplayName,
        role: Role,
        token: Option<String>,
        meta: Payload,
        member: Option<PeerId>,
    },
    Leave {
        room: RoomId,
    },
    Signal {
        room: RoomId,
        to: PeerId,
        kind: SignalKind,
        data: Payload,
    },
    Broadcast {
        room: RoomId,
        kind: SignalKind,
        data: Payload,
    },
    Update {
        room: RoomId,
        meta: Payload,
    },
    /// Lists the room's other members (the sender must be one).
    Members {
        room: RoomId,
    },
    /// Ends the room for everyone (a host power).
    Close {
        room: RoomId,
    },
    /// Removes one member from the room (a host power).
    Remove {
        room: RoomId,
        peer: PeerId,
    },
    /// Locks the room (no new joins) or unlocks it (a host power).
    Lock {
        room: RoomId,
        locked: bool,
    },
    /// Presents an identity token (a JWT), or with None asks whether the connection
    /// may proceed as it is (a Socket.IO namespace connect).
    Authenticate {
        token: Option<String>,
    },
    /// Presents an identity token and, only if it holds, runs `then`: one request with
    /// one outcome for a dialect whose first message does both (a plain `register` with
    /// an `id_token`, a Socket.IO namespace connect that recovers a session).
    AuthenticateThen {
        token: Option<String>,
        then: Box<Command>,
    },
    /// Takes back a dropped connection's peer id and rooms (the token its welcome or
    /// its last `resumed` gave), on any node. Only as a connection's first command.
    Resume {
        token: String,
        /// Keep the same token for the next resume instead of issuing a new one: a
        /// Socket.IO client recognises its recovered session by an unchanged `pid`.
        keep_token: bool,
    },
    Ping,
}

impl Command {
    /// The command's name (the native wire `type`), for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Join { .. } => "join",
            Command::Leave { .. } => "leave",
            Command::Signal { .. } => "signal",
            Command::Broadcast { .. } => "broadcast",
            Command::Update { .. } => "update",
            Command::Members { .. } => "members",
            Command::Authenticate { .. } | Command::AuthenticateThen { .. } => "auth",
            Command::Resume { .. } => "resume",
            Command::Close { .. } => "close",
            Command::Remove { .. } => "remove",
            Command::Lock { .. } => "lock",
            Command::Ping => "ping",
        }
    }

    pub fn room(&self) -> Option<&RoomId> {
        match self {
            Command::Join { room, .. }
            | Command::Leave { room }
            | Command::Signal { room, .. }
            | Command::Broadcast { room, .. }
            | Command::Update { room, .. }
            | Command::Members { room }
            | Command::Close { room }
            | Command::Remove { room, .. }
            | Command::Lock { room, .. } => Some(room),
            Command::AuthenticateThen { then, .. } => then.room(),
            Command::Authenticate { .. } | Command::Resume { .. } | Command::Ping => None,
        }
    }
}

/// Protocol error codes; also the `code` label of error metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    BadRequest,
    TooLarge,
    Unauthorized,
    Forbidden,
    NotFound,
    RoomFull,
    RoomExpired,
    NotInRoom,
    PeerUnavailable,
    RateLimited,
    Unavailable,
    Internal,
    /// A `resume` the cluster cannot honour: the token is unknown, was used already, or
    /// its grace ran out. The client joins afresh.
    ResumeFailed,
}

impl ErrorCode {
    /// Every code, for metrics that show each from the start.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::BadRequest,
        ErrorCode::TooLarge,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::RoomFull,
        ErrorCode::RoomExpired,
        ErrorCode::NotInRoom,
        ErrorCode::PeerUnavailable,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::ResumeFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad-request",
            ErrorCode::TooLarge => "too-large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not-found",
            ErrorCode::RoomFull => "room-full",
            ErrorCode::RoomExpired => "room-expired",
            ErrorCode::NotInRoom => "not-in-room",
            ErrorCode::PeerUnavailable => "peer-unavailable",
            ErrorCode::RateLimited => "rate-limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::ResumeFailed => "resume-failed",
        }
    }
}

/// Why a member left a room, as `peer-left` tells the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeftReason {
    /// It sent `leave`.
    Left,
    /// Its connection closed.
    Disconnected,
    /// The node serving it stopped heartbeating.
    NodeLost,
    /// The room was closed (ended by a host, deleted, or expired).
    Closed,
    /// A host removed it.
    Removed,
}

/// A frame the node could not accept. `id` is echoed when the frame had a readable one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
    pub id: Option<RequestId>,
}

impl DecodeError {
    pub fn bad(message: impl Into<String>, id: Option<RequestId>) -> Self {
        Self { code: ErrorCode::BadRequest, message: message.into(), id }
    }

    pub fn too_large(limit: usize) -> Self {
        Self { code: ErrorCode::TooLarge, message: format!("frame exceeds the limit of {limit} bytes"), id: None }
    }
}
