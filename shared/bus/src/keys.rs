//! Every Redis key and channel the cluster uses. One room's keys and channel share the
//! hash tag `{room:<id>}`, so they live on one Cluster slot and a Lua script may touch
//! them together (and SPUBLISH on that shard). A node's keys share `{node:<id>}`.

use protocol::{NodeId, PeerId, RoomId};

/// Hash of member peer id -> member record (MessagePack [`protocol::MemberInfo`]).
pub fn room_members(room: &RoomId) -> String {
    format!("sig:{{room:{room}}}:members")
}

/// Hash of room metadata: `token` (SHA-256 hex of the room token).
pub fn room_meta(room: &RoomId) -> String {
    format!("sig:{{room:{room}}}:meta")
}

/// Room-wide events: joined, left, updated, broadcast, markers.
pub fn room_channel(room: &RoomId) -> String {
    format!("sig:{{room:{room}}}:events")
}

/// A node's inbox: signals to its peers and its own readiness probes.
pub fn node_channel(node: &NodeId) -> String {
    format!("sig:{{node:{node}}}:inbox")
}

/// Liveness key with a TTL, refreshed by the node's heartbeat.
pub fn node_alive(node: &NodeId) -> String {
    format!("sig:{{node:{node}}}:alive")
}

/// Refreshed with the liveness key but kept for [`NODE_SEEN_TTL_MS`]: its remaining TTL
/// tells how long ago a dead node's last heartbeat was, so its members' resume grace
/// counts from its death rather than from the moment another node noticed.
pub fn node_seen(node: &NodeId) -> String {
    format!("sig:{{node:{node}}}:seen")
}

/// How long [`node_seen`] outlives a node's last heartbeat (longer than any grace).
pub const NODE_SEEN_TTL_MS: u64 = 24 * 3600 * 1000;

/// Set of rooms in which the node has (or had) members.
pub fn node_rooms(node: &NodeId) -> String {
    format!("sig:{{node:{node}}}:rooms")
}

/// Lock held by the node that cleans up after a dead node.
pub fn node_reaper(node: &NodeId) -> String {
    format!("sig:{{node:{node}}}:reaper")
}

/// Hash of a resumable connection's record: `token` (SHA-256 hex of its resume token),
/// `node` (the node serving it) and one `r:<room>` field per room it is in.
pub fn resumable(peer: &PeerId) -> String {
    format!("sig:{{peer:{peer}}}:resume")
}

/// Set of every registered node id.
pub const NODES: &str = "sig:nodes";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_strings_are_pinned() {
        let room = RoomId::parse("r 1").unwrap();
        let node = NodeId::parse("n1").unwrap();
        assert_eq!(room_members(&room), "sig:{room:r 1}:members");
        assert_eq!(room_meta(&room), "sig:{room:r 1}:meta");
        assert_eq!(room_channel(&room), "sig:{room:r 1}:events");
        assert_eq!(node_channel(&node), "sig:{node:n1}:inbox");
        assert_eq!(node_alive(&node), "sig:{node:n1}:alive");
        assert_eq!(node_rooms(&node), "sig:{node:n1}:rooms");
        assert_eq!(node_seen(&node), "sig:{node:n1}:seen");
        assert_eq!(node_reaper(&node), "sig:{node:n1}:reaper");
        assert_eq!(resumable(&PeerId::parse("n1.abc").unwrap()), "sig:{peer:n1.abc}:resume");
        assert_eq!(NODES, "sig:nodes");
    }
}
