//! Proof that the node's room-channel subscriptions still deliver. The inbox probe
//! (see [`super::liveness`]) proves only the inbox channel; a room channel can be lost
//! on its own (a resubscribe after a reconnect that failed for some channels, a
//! Cluster shard whose connection was replaced, a slot that moved), and then the node
//! silently stops hearing that room.
//!
//! Each heartbeat the node publishes a probe on a few of the room channels it follows,
//! in rotation, so that every room is proven at least once per [`ROOM_PROBE_CYCLE`]
//! however many there are. Other nodes in the room ignore probes that are not theirs.
//! A probe that reaches no subscriber at all, or does not come back within the same
//! patience as the inbox probe, gets its room resubscribed and resynchronised.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::{BusEvent, Envelope, RoomId};
use tracing::{debug, warn};

use super::RoomDirectory;

/// Every followed room is probed at least this often.
const ROOM_PROBE_CYCLE: Duration = Duration::from_secs(30);

/// Rooms probed per heartbeat at the least (small nodes prove every room quickly).
const MIN_ROOM_PROBES: usize = 8;

#[derive(Default)]
pub struct RoomProbes {
    outstanding: Mutex<HashMap<u64, (RoomId, Instant)>>,
    /// Rooms still to probe in this cycle.
    queue: Mutex<VecDeque<RoomId>>,
}

impl RoomProbes {
    /// A probe came back; true if it was one of ours.
    pub fn returned(&self, nonce: u64) -> bool {
        self.outstanding.lock().expect("room probes lock").remove(&nonce).is_some()
    }

    fn overdue(&self, now: Instant, patience: Duration) -> Vec<RoomId> {
        let mut outstanding = self.outstanding.lock().expect("room probes lock");
        let late: Vec<u64> =
            outstanding.iter().filter(|(_, (_, sent))| now.duration_since(*sent) > patience).map(|(n, _)| *n).collect();
        late.iter().filter_map(|n| outstanding.remove(n)).map(|(room, _)| room).collect()
    }

    fn is_probing(&self, room: &RoomId) -> bool {
        self.outstanding.lock().expect("room probes lock").values().any(|(r, _)| r == room)
    }

    /// The next `n` rooms of the rotation; a new cycle starts from `followed`.
    fn next(&self, n: usize, followed: impl FnOnce() -> Vec<RoomId>) -> Vec<RoomId> {
        let mut queue = self.queue.lock().expect("room probes lock");
        if queue.is_empty() {
            queue.extend(followed());
        }
        let n = n.min(queue.len());
        queue.drain(..n).collect()
    }

    fn start(&self, room: RoomId) -> u64 {
        let nonce = rand::random();
        self.outstanding.lock().expect("room probes lock").insert(nonce, (room, Instant::now()));
        nonce
    }
}

/// Rooms to probe per heartbeat so that `rooms` are all proven within the cycle.
fn probes_per_tick(rooms: usize, interval: Duration) -> usize {
    let ticks_per_cycle = (ROOM_PROBE_CYCLE.as_secs_f64() / interval.as_secs_f64()).max(1.0);
    ((rooms as f64 / ticks_per_cycle).ceil() as usize).max(MIN_ROOM_PROBES)
}

impl RoomDirectory {
    /// One round of room probes: repair what did not answer, then probe the next rooms.
    /// Returns how many room channels had to be resubscribed: their events may have
    /// been missed meanwhile, so the caller counts a gap for each and resynchronises.
    pub async fn probe_rooms(&self, patience: Duration) -> usize {
        let mut repaired = 0;
        for room in self.probes.overdue(Instant::now(), patience) {
            warn!(%room, "a room channel did not deliver our probe; resubscribing it");
            repaired += usize::from(self.repair_room_subscription(&room).await);
        }
        let followed = self.subs.subscribed();
        let batch = probes_per_tick(followed.len(), self.settings.heartbeat_interval);
        for room in self.probes.next(batch, || followed) {
            if self.probes.is_probing(&room) {
                continue;
            }
            let nonce = self.probes.start(room.clone());
            let probe = Bytes::from(Envelope::new(self.node.clone(), BusEvent::Probe { nonce }).encode());
            match self.store.publish_room(&room, probe).await {
                // Nobody follows the channel, so neither do we (unless we just left it).
                Ok(0) => {
                    self.probes.returned(nonce);
                    if self.subs.is_subscribed(&room).await {
                        warn!(%room, "a room channel we follow has no subscriber; resubscribing it");
                        repaired += usize::from(self.repair_room_subscription(&room).await);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.probes.returned(nonce);
                    debug!(error = %e, "room probe publish failed");
                    break;
                }
            }
        }
        repaired
    }

    /// Subscribes the room's channel again (if the node still follows it); true if it
    /// did.
    async fn repair_room_subscription(&self, room: &RoomId) -> bool {
        match self.subs.resubscribe(self.store.as_ref(), room).await {
            Ok(resubscribed) => resubscribed,
            Err(e) => {
                debug!(%room, error = %e, "resubscribing a room channel failed; the next probe retries");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_room_is_probed_within_the_cycle_and_small_nodes_probe_all_at_once() {
        let interval = Duration::from_secs(2);
        assert_eq!(probes_per_tick(3, interval), MIN_ROOM_PROBES);
        // 10,000 rooms, 15 ticks per 30 s cycle: 667 per tick.
        assert_eq!(probes_per_tick(10_000, interval), 667);
        assert!(probes_per_tick(10_000, interval) * 15 >= 10_000);
    }

    #[test]
    fn the_rotation_visits_every_room_before_starting_again() {
        let probes = RoomProbes::default();
        let rooms: Vec<RoomId> = ["a", "b", "c"].iter().map(|r| RoomId::parse(r).unwrap()).collect();
        let first = probes.next(2, || rooms.clone());
        let second = probes.next(2, || panic!("the cycle is not over"));
        assert_eq!([first, second].concat(), rooms);
        assert_eq!(probes.next(2, || rooms.clone()).len(), 2);
    }

    #[test]
    fn a_probe_is_overdue_after_the_patience_and_only_once() {
        let probes = RoomProbes::default();
        let nonce = probes.start(RoomId::parse("r").unwrap());
        let later = Instant::now() + Duration::from_secs(10);
        assert!(probes.overdue(Instant::now(), Duration::from_secs(5)).is_empty());
        assert_eq!(probes.overdue(later, Duration::from_secs(5)), vec![RoomId::parse("r").unwrap()]);
        assert!(probes.overdue(later, Duration::from_secs(5)).is_empty());
        assert!(!probes.returned(nonce));
    }
}
