//! Sequence tracking on one sender → receiver pair: which deliveries are new, which
//! are duplicates and which overtook an earlier message (order violations).

use std::collections::BTreeSet;

/// Gaps larger than this are not remembered one by one (a late arrival from such a
/// gap then counts as a duplicate); keeps memory bounded under heavy loss.
const MAX_TRACKED_GAP: u64 = 10_000;

#[derive(Debug, Default)]
pub struct SeqTracker {
    next: u64,
    missing: BTreeSet<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next expected message.
    InOrder,
    /// New, but later messages had already arrived: an order violation.
    Late,
    /// New, and it skipped some that have not arrived (yet).
    Ahead,
    Duplicate,
}

impl Arrival {
    pub fn is_new(self) -> bool {
        self != Arrival::Duplicate
    }
}

impl SeqTracker {
    pub fn observe(&mut self, seq: u64) -> Arrival {
        if seq == self.next {
            self.next += 1;
            Arrival::InOrder
        } else if seq > self.next {
            if seq - self.next <= MAX_TRACKED_GAP {
                self.missing.extend(self.next..seq);
            }
            self.next = seq + 1;
            Arrival::Ahead
        } else if self.missing.remove(&seq) {
            Arrival::Late
        } else {
            Arrival::Duplicate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_in_order_gaps_late_arrivals_and_duplicates() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(0), Arrival::InOrder);
        assert_eq!(t.observe(1), Arrival::InOrder);
        assert_eq!(t.observe(1), Arrival::Duplicate);
        assert_eq!(t.observe(4), Arrival::Ahead);
        assert_eq!(t.observe(2), Arrival::Late);
        assert_eq!(t.observe(2), Arrival::Duplicate);
        assert_eq!(t.observe(3), Arrival::Late);
        assert_eq!(t.observe(5), Arrival::InOrder);
        assert_eq!(t.observe(0), Arrival::Duplicate);
    }
}
