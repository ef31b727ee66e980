//! The room registry as HTTP sees it: rooms created ahead, and the cluster's rooms with
//! their members (status pages, host tools). A front over the store that speaks in
//! core terms, so no HTTP handler touches the store or its errors directly.

use bus::{Backend, RoomRecord};
use protocol::{MemberInfo, PeerId, RoomId};

use super::CoreError;

/// Borrowed from the core for one request.
pub struct RoomRegistry<'a> {
    pub(super) backend: &'a dyn Backend,
}

impl RoomRegistry<'_> {
    /// Registers a room created ahead; false if a room with this id exists.
    pub async fn create(&self, room: &RoomId, record: &RoomRecord) -> Result<bool, CoreError> {
        Ok(self.backend.create_room(room, record).await?)
    }

    /// A created room's record.
    pub async fn record(&self, room: &RoomId) -> Result<Option<RoomRecord>, CoreError> {
        Ok(self.backend.room_record(room).await?)
    }

    /// Every room with members, cluster-wide, with its members (records that cannot be
    /// read are skipped). Reads each room in turn: for status pages, not a hot path.
    pub async fn rooms_with_members(&self) -> Result<Vec<(RoomId, Vec<MemberInfo>)>, CoreError> {
        let mut rooms = Vec::new();
        for room in self.backend.active_rooms().await? {
            let members: Vec<MemberInfo> =
                self.backend.members(&room).await?.iter().filter_map(|r| MemberInfo::decode(r).ok()).collect();
            if !members.is_empty() {
                rooms.push((room, members));
            }
        }
        Ok(rooms)
    }

    /// The room a member is in (the first found), cluster-wide.
    pub async fn room_of(&self, peer: &PeerId) -> Result<Option<RoomId>, CoreError> {
        for room in self.backend.active_rooms().await? {
            let members = self.backend.members(&room).await?;
            if members.iter().filter_map(|r| MemberInfo::decode(r).ok()).any(|m| &m.peer == peer) {
                return Ok(Some(room));
            }
        }
        Ok(None)
    }
}
