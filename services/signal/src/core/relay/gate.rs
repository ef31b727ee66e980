//! Lets a fence wait until every signal routed before it has been published, without
//! costing signals more than a few atomic operations (the count, and the guard's hold on
//! the gate, which travels with a signal queued for the publisher): each signal counts
//! itself in the current epoch for as long as it routes and publishes; a fence moves on to the next
//! epoch and waits until the previous one's count drains to zero. Signals that start
//! after the move count in the new epoch, so a busy node cannot keep a fence waiting.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use tokio::sync::{Mutex, Notify};

#[derive(Default)]
pub struct PublishGate {
    epoch: AtomicUsize,
    in_flight: [AtomicUsize; 2],
    drained: Notify,
    /// One fence at a time: two epochs are enough only if a fence never moves on while
    /// another still waits for the old one.
    fences: Mutex<()>,
}

/// A signal between its route and its publish. It owns its gate, as a signal may wait
/// for its publish in the publisher's queue after its sender has moved on.
pub struct InFlight {
    gate: Arc<PublishGate>,
    slot: usize,
}

impl PublishGate {
    /// Counts a signal in; the count ends when the guard drops.
    pub fn enter(self: &Arc<Self>) -> InFlight {
        loop {
            let slot = self.epoch.load(SeqCst) & 1;
            self.in_flight[slot].fetch_add(1, SeqCst);
            // A fence that moved on between the load and the count must not miss us:
            // count again in the new epoch instead.
            if self.epoch.load(SeqCst) & 1 == slot {
                return InFlight { gate: self.clone(), slot };
            }
            self.leave(slot);
        }
    }

    /// Returns once every signal counted before this call has been published.
    pub async fn fence(&self) {
        let _one = self.fences.lock().await;
        let old = self.epoch.fetch_add(1, SeqCst) & 1;
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.in_flight[old].load(SeqCst) == 0 {
                return;
            }
            drained.await;
        }
    }

    fn leave(&self, slot: usize) {
        if self.in_flight[slot].fetch_sub(1, SeqCst) == 1 && self.epoch.load(SeqCst) & 1 != slot {
            self.drained.notify_waiters();
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gate.leave(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_fence_waits_for_signals_counted_before_it_and_not_for_later_ones() {
        let gate = Arc::new(PublishGate::default());
        let before = gate.enter();
        let fence = tokio::spawn({
            let gate = gate.clone();
            async move { gate.fence().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!fence.is_finished(), "a signal counted before the fence is still in flight");
        // One that starts after the fence does not hold it up.
        let after = gate.enter();
        drop(before);
        tokio::time::timeout(Duration::from_secs(1), fence).await.expect("the fence passes").unwrap();
        drop(after);
        tokio::time::timeout(Duration::from_secs(1), gate.fence()).await.expect("an idle gate passes at once");
    }
}
