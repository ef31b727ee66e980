//! Shared state and node-to-node messaging behind [`Backend`], made of cohesive parts:
//! [`Membership`] (room changes, each with its announcement), [`PubSub`] (node inboxes
//! and room channels), [`ResumeStore`] (resumable connections) and, in a cluster only,
//! a [`Registry`] of live nodes and their rooms.
//!
//! Two implementations run the same protocol tests: [`RedisBackend`] (fred; standalone,
//! Sentinel or Cluster) for a cluster, and [`MemoryBackend`] for a single node with no
//! Redis. Methods name what the cluster needs, not Redis commands. The backend applies
//! conditions the core hands it (capacity, token hash) atomically, but decides no room
//! rule itself; every key and channel name comes from [`keys`].
//!
//! Room-changing calls (`join`, `leave`, `update`, `restore`, `snapshot`) publish their
//! announcement on the room channel in the same atomic step as the change, so the
//! order of a room channel is the order of that room's changes. The core's join
//! handshake relies on this (see `signal::core::rooms`).

mod keys;
mod memory;
mod operation;
mod redis;
mod resume;
mod scripts;

use async_trait::async_trait;
use bytes::Bytes;
use protocol::{EventClass, NodeId, PeerId, RoomId};
use tokio::sync::mpsc;

pub use keys::*;
pub use memory::MemoryBackend;
pub use operation::{Operation, StoreObserver};
pub use redis::{RedisBackend, RedisOptions};
pub use resume::{Claimed, ResumeStore, RESUMABLE_TTL_MS};

/// A store failure, whatever the store. Every variant means "the store could not do
/// it now"; clients see `unavailable`, and `/readyz` reflects it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The store did not answer, refused the command, or could not be configured; the
    /// implementation's own error stays reachable as the source.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] std::sync::Arc<dyn std::error::Error + Send + Sync>),
    #[error("the store replied with an unexpected shape: {0}")]
    Protocol(String),
}

/// What the bus delivers to a node.
#[derive(Debug)]
pub enum Inbound {
    /// An envelope published on this node's inbox or on a room channel it follows.
    Message(Bytes),
    /// The subscription was re-established (after a reconnect): messages published
    /// meanwhile are lost, uncounted; the node must resynchronise its rooms.
    Resync(&'static str),
    /// Messages lost because the node fell behind the bus (overload), by class: the
    /// node must count them and resynchronise its rooms.
    Lost(LostMessages),
}

/// Messages the bus dropped, counted by what they carried.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LostMessages {
    counts: [u64; EventClass::ALL.len()],
}

impl LostMessages {
    pub fn add(&mut self, class: EventClass, n: u64) {
        self.counts[class.index()] += n;
    }

    pub fn get(&self, class: EventClass) -> u64 {
        self.counts[class.index()]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }
}

/// A room created ahead through the HTTP API (the room registry). Stored in the
/// room's metadata hash, which outlives the room's members until `expires_ms` (plus a
/// day, so that late joiners hear "expired" rather than "not found").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoomRecord {
    /// SHA-256 hex of the join token.
    pub token_hash: String,
    /// The subject that created it.
    pub creator: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// At most this many members (the node's ROOM_CAPACITY applies too).
    pub capacity: Option<u32>,
    /// Subjects with host powers besides the creator.
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// How long a created room's record is kept after it expires.
pub const EXPIRED_ROOM_MEMORY_MS: u64 = 24 * 3600 * 1000;

/// What a join must satisfy, checked atomically with the write.
#[derive(Debug, Clone, Copy)]
pub struct JoinPolicy<'a> {
    /// The node's ROOM_CAPACITY (a created room may set a lower one).
    pub capacity: usize,
    /// SHA-256 hex of the token the joiner presented.
    pub token_hash: Option<&'a str>,
    /// Only rooms created through the registry may be joined.
    pub require_registered: bool,
    /// Now, in Unix milliseconds (to check a created room's expiry).
    pub now_ms: u64,
    /// Whether the outcome lists the room's other members. A node that already mirrors
    /// the room does without: in a room of n members, the list makes every join cost
    /// O(n) in Redis, on the wire and in the node.
    pub with_others: bool,
}

/// The outcome of the atomic join step.
#[derive(Debug)]
pub enum JoinOutcome {
    /// Added. `others` are the stored member records of everyone else in the room
    /// (none unless the policy asked for them); `token_hash` is the room's lock, if it
    /// has one.
    Joined {
        others: Vec<Bytes>,
        token_hash: Option<String>,
        /// When a room created ahead expires (Unix ms).
        expires_ms: Option<u64>,
    },
    Full,
    BadToken,
    /// The room was never created and the policy requires it.
    NotFound,
    /// The room was created and has expired.
    Expired,
    /// A host locked the room: no new members.
    Locked,
    /// A member with this id is already in the room (ids a client chose must be unique
    /// there).
    Taken,
}

/// The outcome of moving a member to another node (it resumed there).
#[derive(Debug)]
pub enum MoveOutcome {
    /// Moved; as [`JoinOutcome::Joined`].
    Moved { others: Vec<Bytes>, token_hash: Option<String>, expires_ms: Option<u64> },
    /// It is no longer a member (it left, was removed, or its node was reaped).
    Gone,
    /// Its record is not the one expected any more (an update landed first): read it again.
    Changed,
}

/// One member write: the member's stored record and the announcement to publish.
#[derive(Debug, Clone)]
pub struct MemberWrite<'a> {
    pub room: &'a RoomId,
    pub peer: &'a PeerId,
    pub record: Bytes,
    pub announcement: Bytes,
}

/// What the heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// The node's liveness key was still there.
    Continued,
    /// The key was missing: this is the first beat, or Redis lost it (restart,
    /// FLUSHALL, or this node was cut off long enough to be declared dead).
    Fresh,
}

/// Everything a node needs from the store: membership, messaging and resumable
/// records everywhere, and a node registry only in a cluster.
pub trait Backend: Membership + PubSub + ResumeStore + 'static {
    /// Node liveness and the room index that reapers read. None for the embedded
    /// backend: one node, which cannot outlive its own store, has nobody to reap.
    fn registry(&self) -> Option<&dyn Registry>;
}

/// Room membership and the rooms created ahead. Every change that others must hear of
/// publishes its announcement in the same atomic step.
#[async_trait]
pub trait Membership: Send + Sync {
    /// Adds a member if the policy allows: the room has room, the token matches the
    /// room's lock (a created room's token, or the first joiner's), a created room has
    /// not expired, and (if required) the room was created. Publishes the announcement.
    async fn join(&self, write: MemberWrite<'_>, policy: JoinPolicy<'_>) -> Result<JoinOutcome, BackendError>;

    /// Registers a room created through the API. False if the room exists already
    /// (created, or implicitly with members).
    async fn create_room(&self, room: &RoomId, record: &RoomRecord) -> Result<bool, BackendError>;

    /// A created room's record.
    async fn room_record(&self, room: &RoomId) -> Result<Option<RoomRecord>, BackendError>;

    /// Every room some node has (or recently had) members in, cluster-wide, from the
    /// nodes' room indexes; for status pages, not for routing.
    async fn active_rooms(&self) -> Result<Vec<RoomId>, BackendError>;

    /// Locks a room against new joins, or unlocks it. The lock ends with the room (when
    /// it empties, or its registration goes).
    async fn set_room_locked(&self, room: &RoomId, locked: bool) -> Result<(), BackendError>;

    /// Deletes a room's registration and lock (its members leave by themselves).
    async fn unregister_room(&self, room: &RoomId) -> Result<(), BackendError>;

    /// Writes a member back if it is missing (after Redis lost it), publishing the
    /// announcement only if it was missing. Ignores capacity. Returns whether it wrote.
    async fn restore(&self, write: MemberWrite<'_>, token_hash: Option<&str>) -> Result<bool, BackendError>;

    /// Replaces a member's record with one naming its new node, if its record is still
    /// `expected`, publishing the announcement; returns the others as `join` does.
    async fn move_member(&self, write: MemberWrite<'_>, expected: Bytes) -> Result<MoveOutcome, BackendError>;

    /// One member's stored record.
    async fn member_record(&self, room: &RoomId, peer: &PeerId) -> Result<Option<Bytes>, BackendError>;

    /// Removes a member, publishing the announcement only if it was there.
    async fn leave(&self, room: &RoomId, peer: &PeerId, announcement: Bytes) -> Result<bool, BackendError>;

    /// Removes a member only if its record is still `expected` (a reaper must not remove
    /// a member that moved to a live node since it read the record).
    async fn leave_if_unchanged(
        &self,
        room: &RoomId,
        peer: &PeerId,
        expected: Bytes,
        announcement: Bytes,
    ) -> Result<bool, BackendError>;

    /// Replaces a member's record if it is a member, publishing the announcement.
    async fn update(&self, write: MemberWrite<'_>) -> Result<bool, BackendError>;

    /// Reads every member record and publishes `marker` in the same step.
    async fn snapshot(&self, room: &RoomId, marker: Bytes) -> Result<Vec<Bytes>, BackendError>;

    /// Reads every member record.
    async fn members(&self, room: &RoomId) -> Result<Vec<Bytes>, BackendError>;
}

/// Messaging between nodes: each node's inbox and the room channels.
#[async_trait]
pub trait PubSub: Send + Sync {
    /// Takes the node's inbound stream. Call once, before subscribing.
    fn take_inbox(&self) -> Option<mpsc::Receiver<Inbound>>;

    /// Round trip to the store.
    async fn ping(&self) -> Result<(), BackendError>;

    /// Publishes to the inbox of `node`; returns how many subscribers received it
    /// (0 means no node is serving that inbox).
    async fn publish_node(&self, node: &NodeId, msg: Bytes) -> Result<u64, BackendError>;

    /// Publishes to a room channel; returns how many nodes received it.
    async fn publish_room(&self, room: &RoomId, msg: Bytes) -> Result<u64, BackendError>;

    async fn subscribe_node(&self, node: &NodeId) -> Result<(), BackendError>;

    /// Re-establishes the subscription connection (when probes stop coming back); the
    /// inbox then yields [`Inbound::Resync`].
    async fn resubscribe(&self) -> Result<(), BackendError>;
    async fn subscribe_room(&self, room: &RoomId) -> Result<(), BackendError>;
    async fn unsubscribe_room(&self, room: &RoomId) -> Result<(), BackendError>;
}

/// A registered node whose liveness key has expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadNode {
    pub node: NodeId,
    /// How long ago its last heartbeat was, as Redis measures it (no clock of any node
    /// is involved); None when it left no record of it (a node of an older version).
    pub silent_for: Option<std::time::Duration>,
}

/// Which nodes are alive, and where each has members: how a dead node's members are
/// found and announced lost.
#[async_trait]
pub trait Registry: Send + Sync {
    /// Marks `node` alive for `ttl_ms` and registers it.
    async fn heartbeat(&self, node: &NodeId, ttl_ms: u64) -> Result<Heartbeat, BackendError>;

    /// Records that `node` has members in `room` (so a reaper can find them).
    async fn note_room(&self, node: &NodeId, room: &RoomId) -> Result<(), BackendError>;
    async fn forget_room(&self, node: &NodeId, room: &RoomId) -> Result<(), BackendError>;
    async fn node_rooms(&self, node: &NodeId) -> Result<Vec<RoomId>, BackendError>;

    /// Registered nodes whose liveness key has expired.
    async fn dead_nodes(&self, me: &NodeId) -> Result<Vec<DeadNode>, BackendError>;

    /// Claims the clean-up of a dead node for `ttl_ms`; false if another node has it.
    async fn claim_reap(&self, dead: &NodeId, me: &NodeId, ttl_ms: u64) -> Result<bool, BackendError>;

    /// Removes a node's liveness key, room index and registration.
    async fn forget_node(&self, node: &NodeId) -> Result<(), BackendError>;
}
