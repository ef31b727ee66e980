//! The rooms one connection is in, and the member id it has in each: the connection's
//! own peer id, or one its client chose (a plain registration). The session owns it;
//! every change of a connection's rooms goes through it.

use protocol::{PeerId, RoomId};

#[derive(Debug, Default)]
pub struct Memberships {
    rooms: Vec<RoomId>,
    /// The member ids its client chose, by room. Kept apart so that native connections,
    /// which choose none, hold no copy of their id per room (measured: 0.1 KiB per idle
    /// connection).
    chosen: Vec<(RoomId, PeerId)>,
}

impl Memberships {
    pub fn contains(&self, room: &RoomId) -> bool {
        self.rooms.contains(room)
    }

    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// The member id in `room` of a connection whose own id is `own` (its own id when
    /// not in the room: the core then refuses with `not-in-room`).
    pub fn member_in(&self, room: &RoomId, own: &PeerId) -> PeerId {
        self.chosen.iter().find(|(r, _)| r == room).map_or_else(|| own.clone(), |(_, m)| m.clone())
    }

    /// Now in `room`, as `chosen` if its client chose an id.
    pub fn enter(&mut self, room: RoomId, chosen: Option<PeerId>) {
        if let Some(member) = chosen {
            self.chosen.push((room.clone(), member));
        }
        self.rooms.push(room);
    }

    /// No longer in `room`; whether it was.
    pub fn leave(&mut self, room: &RoomId) -> bool {
        let was_in = self.contains(room);
        self.rooms.retain(|r| r != room);
        self.chosen.retain(|(r, _)| r != room);
        was_in
    }

    /// In exactly `rooms` now (a resume), as `chosen` in each if its client chose an id.
    pub fn resumed(&mut self, rooms: impl IntoIterator<Item = RoomId>, chosen: Option<&PeerId>) {
        self.rooms = rooms.into_iter().collect();
        self.chosen = match chosen {
            Some(member) => self.rooms.iter().map(|r| (r.clone(), member.clone())).collect(),
            None => Vec::new(),
        };
    }

    /// Every room with the member id in it, leaving none.
    pub fn take_all(&mut self, own: &PeerId) -> Vec<(RoomId, PeerId)> {
        let all = self.rooms.iter().map(|r| (r.clone(), self.member_in(r, own))).collect();
        self.rooms.clear();
        self.chosen.clear();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomId {
        RoomId::parse(name).unwrap()
    }

    #[test]
    fn a_chosen_id_is_the_member_in_its_room_only() {
        let own = PeerId::parse("n1.own").unwrap();
        let chosen = PeerId::parse("alice").unwrap();
        let mut rooms = Memberships::default();
        rooms.enter(room("a"), Some(chosen.clone()));
        rooms.enter(room("b"), None);
        assert_eq!(rooms.member_in(&room("a"), &own), chosen);
        assert_eq!(rooms.member_in(&room("b"), &own), own);
        assert!(rooms.leave(&room("a")));
        assert!(!rooms.leave(&room("a")), "only once");
        assert_eq!(rooms.member_in(&room("a"), &own), own, "its chosen id went with the room");
        assert_eq!(rooms.take_all(&own), vec![(room("b"), own.clone())]);
        assert!(rooms.is_empty());
    }

    #[test]
    fn a_resume_replaces_every_room() {
        let own = PeerId::parse("n1.own").unwrap();
        let chosen = PeerId::parse("bob").unwrap();
        let mut rooms = Memberships::default();
        rooms.enter(room("old"), None);
        rooms.resumed([room("x"), room("y")], Some(&chosen));
        assert!(!rooms.contains(&room("old")));
        assert_eq!(rooms.take_all(&own), vec![(room("x"), chosen.clone()), (room("y"), chosen)]);
    }
}
