//! What the node knows about messages the bus lost on their way to it: counted by
//! class when the bus dropped them (the node fell behind), and counted as gaps when
//! the subscription was re-established (whatever was published meanwhile never
//! arrived, and nobody can say how much it was).

use std::sync::atomic::{AtomicU64, Ordering};

use bus::LostMessages;
use protocol::EventClass;

#[derive(Default)]
pub struct BusStats {
    lost: [AtomicU64; EventClass::ALL.len()],
    gaps: AtomicU64,
    /// Envelopes that arrived but could not be decoded.
    unreadable: AtomicU64,
}

impl BusStats {
    pub fn record_lost(&self, lost: &LostMessages) {
        for class in EventClass::ALL {
            self.lost[class.index()].fetch_add(lost.get(class), Ordering::Relaxed);
        }
    }

    pub fn record_gap(&self) {
        self.record_gaps(1);
    }

    pub fn record_gaps(&self, gaps: u64) {
        self.gaps.fetch_add(gaps, Ordering::Relaxed);
    }

    pub fn record_unreadable(&self) {
        self.unreadable.fetch_add(1, Ordering::Relaxed);
    }

    /// Lost messages of one class since start.
    pub fn lost(&self, class: EventClass) -> u64 {
        self.lost[class.index()].load(Ordering::Relaxed)
    }

    pub fn lost_total(&self) -> u64 {
        self.lost.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }

    pub fn gaps(&self) -> u64 {
        self.gaps.load(Ordering::Relaxed)
    }

    pub fn unreadable(&self) -> u64 {
        self.unreadable.load(Ordering::Relaxed)
    }
}
