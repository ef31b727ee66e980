//! Caps on concurrent connections per key (a client address): a connection holds a
//! [`Held`] for its whole life, and the count drops when it is dropped, however the
//! connection ends. Keys with nothing held are forgotten, so memory follows the
//! connections, not every address ever seen.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub struct ConnectionCaps {
    per_key: usize,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place under its key's cap.
pub struct Held {
    key: IpAddr,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ConnectionCaps {
    /// At most `per_key` connections per address (0: no cap).
    pub fn new(per_key: usize) -> Self {
        Self { per_key, held: Arc::default() }
    }

    /// Whether there is a cap at all.
    pub fn is_capped(&self) -> bool {
        self.per_key > 0
    }

    /// A place for one more connection from `key`, or None at the cap.
    pub fn try_hold(&self, key: IpAddr) -> Option<Held> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(key).or_insert(0);
        if self.per_key > 0 && *count >= self.per_key {
            return None;
        }
        *count += 1;
        Some(Held { key, held: self.held.clone() })
    }

    pub fn held_by(&self, key: IpAddr) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).get(&key).copied().unwrap_or(0)
    }

    pub fn tracked_keys(&self) -> usize {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_at_most_its_cap_and_gets_places_back_when_connections_end() {
        let caps = ConnectionCaps::new(2);
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let other: IpAddr = "203.0.113.8".parse().unwrap();
        let (a, b) = (caps.try_hold(ip).unwrap(), caps.try_hold(ip).unwrap());
        assert!(caps.try_hold(ip).is_none());
        assert!(caps.try_hold(other).is_some(), "caps are per address");
        drop(a);
        let c = caps.try_hold(ip).expect("a place came back");
        drop((b, c));
        assert_eq!((caps.held_by(ip), caps.tracked_keys()), (0, 0), "nothing is kept for idle addresses");
        assert!(ConnectionCaps::new(0).try_hold(ip).is_some(), "0: no cap");
    }
}
