//! Resumable connections' records: which node serves a connection that may resume,
//! the hash of the token that resumes it, and its rooms. Kept apart from membership
//! (one record per connection, not per room) so that any node can check a token and
//! take the connection over, also when the node that served it is gone.

use async_trait::async_trait;
use protocol::{NodeId, PeerId, RoomId};

use crate::BackendError;

/// How long a resumable record outlives its last change (a connection in its rooms for
/// longer keeps it by joining or leaving; the grace after a drop is far shorter).
pub const RESUMABLE_TTL_MS: u64 = 24 * 3600 * 1000;

/// A resumable connection as a claim found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The node that served it until now.
    pub node: NodeId,
    pub rooms: Vec<RoomId>,
}

#[async_trait]
pub trait ResumeStore: Send + Sync {
    /// Records that `peer`, served by `node` and resumable with the token whose SHA-256
    /// hex is `token_hash`, is in `room`.
    async fn note_resumable(
        &self,
        peer: &PeerId,
        token_hash: &str,
        node: &NodeId,
        room: &RoomId,
    ) -> Result<(), BackendError>;

    /// `peer` left `room`.
    async fn forget_resumable_room(&self, peer: &PeerId, room: &RoomId) -> Result<(), BackendError>;

    /// If `token_hash` is the record's, hands it to `node` with `new_token_hash` (so each
    /// token works once) and returns it as it was; None for an unknown or used token.
    async fn claim_resumable(
        &self,
        peer: &PeerId,
        token_hash: &str,
        new_token_hash: &str,
        node: &NodeId,
    ) -> Result<Option<Claimed>, BackendError>;

    /// Deletes the record unless another node has claimed it; true if `node` still held
    /// it (or there was none): only then may `node` announce the peer gone.
    async fn end_resumable(&self, peer: &PeerId, node: &NodeId) -> Result<bool, BackendError>;
}
