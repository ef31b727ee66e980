//! The store's operations, named once: each backend call runs as one [`Operation`],
//! and an optional [`StoreObserver`] is told how long it took and whether it failed
//! (the node turns that into `signal_redis_command_seconds{op}` and
//! `signal_redis_errors_total{op}`). A Lua script carries its operation
//! ([`crate::scripts::Script`]), so its label cannot drift from what runs.

use std::time::Duration;

/// One kind of store call. `name()` is its metric label (pinned by a test: dashboards
/// and alerts read these strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Ping,
    Join,
    CreateRoom,
    RoomRecord,
    ActiveRooms,
    SetRoomLocked,
    UnregisterRoom,
    Restore,
    Leave,
    Update,
    Snapshot,
    Members,
    PublishNode,
    PublishRoom,
    SubscribeNode,
    Resubscribe,
    SubscribeRoom,
    UnsubscribeRoom,
    Heartbeat,
    NoteRoom,
    ForgetRoom,
    NodeRooms,
    DeadNodes,
    ClaimReap,
    ForgetNode,
    MoveMember,
    NoteResumable,
    ForgetResumableRoom,
    ClaimResumable,
    EndResumable,
    MemberRecord,
    LeaveIfUnchanged,
}

impl Operation {
    /// Every operation, in declaration order (`ALL[op.index()] == op`).
    pub const ALL: [Operation; 32] = [
        Operation::Ping,
        Operation::Join,
        Operation::CreateRoom,
        Operation::RoomRecord,
        Operation::ActiveRooms,
        Operation::SetRoomLocked,
        Operation::UnregisterRoom,
        Operation::Restore,
        Operation::Leave,
        Operation::Update,
        Operation::Snapshot,
        Operation::Members,
        Operation::PublishNode,
        Operation::PublishRoom,
        Operation::SubscribeNode,
        Operation::Resubscribe,
        Operation::SubscribeRoom,
        Operation::UnsubscribeRoom,
        Operation::Heartbeat,
        Operation::NoteRoom,
        Operation::ForgetRoom,
        Operation::NodeRooms,
        Operation::DeadNodes,
        Operation::ClaimReap,
        Operation::ForgetNode,
        Operation::MoveMember,
        Operation::NoteResumable,
        Operation::ForgetResumableRoom,
        Operation::ClaimResumable,
        Operation::EndResumable,
        Operation::MemberRecord,
        Operation::LeaveIfUnchanged,
    ];

    /// Its position in [`Operation::ALL`], for per-operation tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Its metric label.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Ping => "ping",
            Operation::Join => "join",
            Operation::CreateRoom => "create_room",
            Operation::RoomRecord => "room_record",
            Operation::ActiveRooms => "active_rooms",
            Operation::SetRoomLocked => "set_room_locked",
            Operation::UnregisterRoom => "unregister_room",
            Operation::Restore => "restore",
            Operation::Leave => "leave",
            Operation::Update => "update",
            Operation::Snapshot => "snapshot",
            Operation::Members => "members",
            Operation::PublishNode => "publish_node",
            Operation::PublishRoom => "publish_room",
            Operation::SubscribeNode => "subscribe_node",
            Operation::Resubscribe => "resubscribe",
            Operation::SubscribeRoom => "subscribe_room",
            Operation::UnsubscribeRoom => "unsubscribe_room",
            Operation::Heartbeat => "heartbeat",
            Operation::NoteRoom => "note_room",
            Operation::ForgetRoom => "forget_room",
            Operation::NodeRooms => "node_rooms",
            Operation::DeadNodes => "dead_nodes",
            Operation::ClaimReap => "claim_reap",
            Operation::ForgetNode => "forget_node",
            Operation::MoveMember => "move_member",
            Operation::NoteResumable => "note_resumable",
            Operation::ForgetResumableRoom => "forget_resumable_room",
            Operation::ClaimResumable => "claim_resumable",
            Operation::EndResumable => "end_resumable",
            Operation::MemberRecord => "member_record",
            Operation::LeaveIfUnchanged => "leave_if_unchanged",
        }
    }
}

/// Told of every store operation as it completes. Calls run on the caller's task:
/// implementations must be cheap (a histogram observation) and never block.
pub trait StoreObserver: Send + Sync {
    /// A span to run `operation` in, if the caller is being traced.
    fn span(&self, operation: Operation) -> Option<tracing::Span>;

    fn observed(&self, operation: Operation, elapsed: Duration, ok: bool);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_sits_at_its_own_index_under_a_unique_pinned_name() {
        for (i, op) in Operation::ALL.iter().enumerate() {
            assert_eq!(op.index(), i, "{op:?}");
        }
        let names: Vec<&str> = Operation::ALL.iter().map(|op| op.name()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "labels are unique");
        // Dashboards and alerts read these.
        for pinned in ["join", "leave", "update", "snapshot", "members", "publish_node", "publish_room", "heartbeat"] {
            assert!(names.contains(&pinned), "{pinned}");
        }
    }
}
