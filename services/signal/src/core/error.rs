//! What a client command can fail with, and the protocol code each failure shows as.

use bus::BackendError;
use protocol::ErrorCode;

/// Failures of a client command; each maps to one protocol error code.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("already in this room")]
    AlreadyInRoom,
    #[error("this id is already taken in the room")]
    IdTaken,
    #[error("already in the maximum of {0} rooms")]
    TooManyRooms(usize),
    #[error("room is full")]
    RoomFull,
    #[error("too many joins: at most {0} a minute per connection")]
    TooManyJoins(u32),
    #[error("wrong or missing room token")]
    Unauthorized,
    #[error("room not found")]
    RoomNotFound,
    #[error("the role {role} may not {action} in this room")]
    RoleForbidden { role: String, action: String },
    #[error("only a host may do this: the room's creator, a host named at its creation, or a verified host role")]
    NotHost,
    #[error("room expired")]
    RoomExpired,
    #[error("the room is locked: a host locked it against new members")]
    RoomLocked,
    /// No valid identity: a token is required (AUTH_MODE=jwt) or the one presented
    /// was refused (the reason never echoes the token).
    #[error("{0}")]
    Unauthenticated(String),
    #[error("not in this room")]
    NotInRoom,
    #[error("no such peer in this room")]
    NoSuchPeer,
    #[error("peer is not reachable")]
    PeerUnavailable,
    #[error("signaling store unavailable, try again")]
    Unavailable(#[from] BackendError),
    #[error("the room's event stream did not confirm the join in time")]
    JoinTimeout,
    /// A resume the cluster cannot honour; the client joins afresh.
    #[error("{0}")]
    ResumeFailed(&'static str),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl CoreError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CoreError::AlreadyInRoom | CoreError::IdTaken | CoreError::TooManyRooms(_) => ErrorCode::BadRequest,
            CoreError::RoomFull => ErrorCode::RoomFull,
            CoreError::TooManyJoins(_) => ErrorCode::RateLimited,
            CoreError::Unauthorized | CoreError::Unauthenticated(_) => ErrorCode::Unauthorized,
            CoreError::RoomNotFound => ErrorCode::NotFound,
            CoreError::NotHost | CoreError::RoleForbidden { .. } | CoreError::RoomLocked => ErrorCode::Forbidden,
            CoreError::RoomExpired => ErrorCode::RoomExpired,
            CoreError::NotInRoom => ErrorCode::NotInRoom,
            CoreError::NoSuchPeer => ErrorCode::NotFound,
            CoreError::PeerUnavailable => ErrorCode::PeerUnavailable,
            CoreError::Unavailable(_) | CoreError::JoinTimeout => ErrorCode::Unavailable,
            CoreError::ResumeFailed(_) => ErrorCode::ResumeFailed,
            CoreError::Internal(_) => ErrorCode::Internal,
        }
    }
}
