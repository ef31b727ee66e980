//! One member snapshot per room per node at a time.
//!
//! A join into a room that this node does not mirror yet reads every member from Redis
//! (the join script's snapshot). A burst of joins into a large room must not each do
//! so: with 10,000 members each read takes Redis about 10 ms, and a burst of them made
//! Redis time out every other command. So the first such join leads, and the others
//! wait until the mirror is complete (then they need no snapshot) or the leader is done
//! without completing it (then one of them leads).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::RoomId;
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Default)]
pub struct SnapshotLeads {
    leads: Mutex<HashMap<RoomId, Arc<Notify>>>,
}

/// Held by the join that takes a room's snapshot, until that join is done.
pub struct Lead<'a> {
    leads: &'a SnapshotLeads,
    room: RoomId,
    done: Arc<Notify>,
}

impl SnapshotLeads {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, Arc<Notify>>> {
        self.leads.lock().expect("snapshot leads lock")
    }

    /// None once `mirrored()` says the room needs no snapshot; otherwise the lead,
    /// after waiting while another join here holds it. A wait longer than `patience`
    /// gives up the lead (None): the join then takes a snapshot of its own if it needs
    /// one.
    pub async fn lead_unless_mirrored(
        &self,
        room: &RoomId,
        mirrored: impl Fn() -> bool,
        patience: Duration,
    ) -> Option<Lead<'_>> {
        let deadline = Instant::now() + patience;
        loop {
            if mirrored() {
                return None;
            }
            let done = {
                let mut leads = self.lock();
                match leads.get(room) {
                    Some(done) => done.clone(),
                    None => {
                        let done = Arc::new(Notify::new());
                        leads.insert(room.clone(), done.clone());
                        return Some(Lead { leads: self, room: room.clone(), done });
                    }
                }
            };
            let notified = done.notified();
            tokio::pin!(notified);
            // Registered before looking again, so a lead that ends from here on wakes us.
            notified.as_mut().enable();
            let still_led = self.lock().get(room).is_some_and(|d| Arc::ptr_eq(d, &done));
            if still_led && tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let mut leads = self.leads.lock();
        if leads.get(&self.room).is_some_and(|d| Arc::ptr_eq(d, &self.done)) {
            leads.remove(&self.room);
        }
        drop(leads);
        self.done.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    const PATIENCE: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn joins_behind_a_lead_wait_for_it_and_need_no_snapshot_once_the_room_is_mirrored() {
        let leads = Arc::new(SnapshotLeads::default());
        let mirrored = Arc::new(AtomicBool::new(false));
        let room = RoomId::parse("big").unwrap();
        let lead = leads.lead_unless_mirrored(&room, || mirrored.load(Ordering::SeqCst), PATIENCE).await;
        assert!(lead.is_some(), "the first join leads");
        let waiter = tokio::spawn({
            let (leads, mirrored, room) = (leads.clone(), mirrored.clone(), room.clone());
            async move {
                let lead = leads.lead_unless_mirrored(&room, || mirrored.load(Ordering::SeqCst), PATIENCE).await;
                lead.is_some()
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "a second join waits for the lead");
        mirrored.store(true, Ordering::SeqCst);
        drop(lead);
        let led = tokio::time::timeout(PATIENCE, waiter).await.unwrap().unwrap();
        assert!(!led, "the room is mirrored now: no snapshot, no lead");
    }

    #[tokio::test]
    async fn a_lead_that_ends_without_mirroring_the_room_passes_to_a_waiting_join() {
        let leads = Arc::new(SnapshotLeads::default());
        let room = RoomId::parse("big").unwrap();
        let lead = leads.lead_unless_mirrored(&room, || false, PATIENCE).await;
        let waiter = tokio::spawn({
            let (leads, room) = (leads.clone(), room.clone());
            async move { leads.lead_unless_mirrored(&room, || false, PATIENCE).await.is_some() }
        });
        tokio::task::yield_now().await;
        drop(lead);
        assert!(tokio::time::timeout(PATIENCE, waiter).await.unwrap().unwrap(), "the waiting join leads");
        assert!(leads.lock().is_empty(), "its lead ended with its task");
    }

    #[tokio::test]
    async fn a_join_waits_no_longer_than_its_patience() {
        let leads = SnapshotLeads::default();
        let room = RoomId::parse("big").unwrap();
        let _lead = leads.lead_unless_mirrored(&room, || false, PATIENCE).await;
        let patience = Duration::from_millis(50);
        let started = Instant::now();
        assert!(leads.lead_unless_mirrored(&room, || false, patience).await.is_none(), "gives up the lead");
        assert!(started.elapsed() >= patience);
    }
}
