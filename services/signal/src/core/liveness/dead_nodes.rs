//! When a dead node's members may be reaped: the resume grace after its last heartbeat,
//! so that its members' clients can resume on other nodes first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use protocol::NodeId;

pub struct DeadNodes {
    grace: Duration,
    /// When each dead node was last heard from, as far as this node knows.
    since: Mutex<HashMap<NodeId, Instant>>,
}

impl DeadNodes {
    pub fn new(grace: Duration) -> Self {
        Self { grace, since: Mutex::default() }
    }

    /// Forgets nodes that are not dead any more (`dead` lists those that are).
    pub fn forget_revived(&self, dead: &[NodeId]) {
        self.since.lock().expect("dead nodes lock").retain(|node, _| dead.contains(node));
    }

    /// Whether a dead node's members may be reaped now: the grace has passed since its
    /// last heartbeat, which was `silent_for` ago (as Redis measures it), or, for a
    /// node that does not say (an older version), since this node first saw it dead.
    pub fn reap_due(&self, dead: &NodeId, silent_for: Option<Duration>, now: Instant) -> bool {
        let mut since = self.since.lock().expect("dead nodes lock");
        let last_heard = silent_for.and_then(|silent| now.checked_sub(silent)).unwrap_or(now);
        let entry = since.entry(dead.clone()).or_insert(last_heard);
        *entry = (*entry).min(last_heard);
        if now.duration_since(*entry) >= self.grace {
            since.remove(dead);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_node_is_reaped_only_after_the_grace() {
        let dead_nodes = DeadNodes::new(Duration::from_secs(15));
        let dead = NodeId::parse("n2").unwrap();
        let t0 = Instant::now();
        assert!(!dead_nodes.reap_due(&dead, None, t0));
        assert!(!dead_nodes.reap_due(&dead, None, t0 + Duration::from_secs(14)));
        assert!(dead_nodes.reap_due(&dead, None, t0 + Duration::from_secs(15)));
        assert!(DeadNodes::new(Duration::ZERO).reap_due(&dead, None, t0), "no grace: at once");
    }

    #[test]
    fn a_dead_nodes_grace_counts_from_its_last_heartbeat_not_from_its_detection() {
        let dead_nodes = DeadNodes::new(Duration::from_secs(15));
        let dead = NodeId::parse("n2").unwrap();
        let t0 = Instant::now() + Duration::from_secs(60);
        // Noticed 8 s after its last heartbeat: 7 s of grace are left, not 15.
        assert!(!dead_nodes.reap_due(&dead, Some(Duration::from_secs(8)), t0));
        assert!(!dead_nodes.reap_due(&dead, Some(Duration::from_secs(14)), t0 + Duration::from_secs(6)));
        assert!(dead_nodes.reap_due(&dead, Some(Duration::from_secs(15)), t0 + Duration::from_secs(7)));
    }

    #[test]
    fn a_node_that_came_back_starts_afresh_when_it_dies_again() {
        let dead_nodes = DeadNodes::new(Duration::from_secs(15));
        let dead = NodeId::parse("n2").unwrap();
        let t0 = Instant::now();
        assert!(!dead_nodes.reap_due(&dead, None, t0));
        dead_nodes.forget_revived(&[]);
        assert!(!dead_nodes.reap_due(&dead, None, t0 + Duration::from_secs(15)), "its grace starts again");
    }
}
