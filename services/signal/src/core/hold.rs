//! The order a resumed connection's events are written in.
//!
//! Two streams reach a member that resumed here: what its earlier node held for it and
//! forwards (in the order it arrived there), and what reaches it here directly once the
//! others route to this node. Per-pair order needs every forwarded event first. So the
//! hold keeps forwarded events until `resumed` is written, and direct events until the
//! earlier node has forwarded everything that went there: its `room handed over`
//! marker for each room (it saw the member's `moved` there), and a fence from every node
//! that had members in the room (that node routes nothing more through the earlier node).
//! Then it opens, and pushes go straight to the queue.
//!
//! Every release sends under the hold's lock and sets `open` last, so a push racing the
//! release either lands in the batch or queues after it.

use std::collections::HashSet;
use std::mem;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::events::Event;
use super::outbox::Outbox;
use protocol::{NodeId, RoomId};

#[derive(Debug)]
pub struct Hold {
    outbox: Arc<Outbox>,
    open: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// `resumed` has been written: forwarded events may follow it.
    forwarded_open: bool,
    forwarded: Vec<Arc<Event>>,
    direct: Vec<Arc<Event>>,
    /// Rooms whose hand-over from the earlier node has not arrived yet.
    rooms: HashSet<RoomId>,
    /// Fences still to come through the earlier node, by room and sending node.
    fences: HashSet<(RoomId, NodeId)>,
    /// Fences that came before this node knew to expect them.
    seen: HashSet<(RoomId, NodeId)>,
}

impl Hold {
    /// A hold waiting for the hand-over of `rooms`.
    pub fn new(outbox: Arc<Outbox>, rooms: impl IntoIterator<Item = RoomId>) -> Arc<Self> {
        let state = State { rooms: rooms.into_iter().collect(), ..State::default() };
        Arc::new(Self { outbox, open: AtomicBool::new(false), state: Mutex::new(state) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("hold lock")
    }

    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// An event that reached the member here directly.
    pub fn push_direct(&self, event: Arc<Event>) {
        if self.is_open() {
            return self.send(event);
        }
        let mut state = self.lock();
        if self.is_open() {
            drop(state);
            return self.send(event);
        }
        if state.direct.len() >= self.outbox.capacity() {
            return self.outbox.raise_too_slow();
        }
        state.direct.push(event);
    }

    /// An event the earlier node held and forwarded.
    pub fn push_forwarded(&self, event: Arc<Event>) {
        let mut state = self.lock();
        if state.forwarded_open {
            return self.send(event);
        }
        if state.forwarded.len() >= self.outbox.capacity() {
            return self.outbox.raise_too_slow();
        }
        state.forwarded.push(event);
    }

    /// `resumed` is about to be written: the forwarded events so far (to write right
    /// after it), and the direct ones too if nothing is awaited any more.
    pub fn open_forwarded(&self) -> Vec<Arc<Event>> {
        let mut state = self.lock();
        state.forwarded_open = true;
        let mut out = mem::take(&mut state.forwarded);
        if state.rooms.is_empty() && state.fences.is_empty() {
            out.append(&mut state.direct);
            self.open.store(true, Ordering::Release);
        }
        out
    }

    /// Fences to wait for in `room`: one from each node that serves other members there.
    pub fn expect_fences(&self, room: &RoomId, nodes: impl IntoIterator<Item = NodeId>) {
        let mut state = self.lock();
        for node in nodes {
            let key = (room.clone(), node);
            if !state.seen.remove(&key) {
                state.fences.insert(key);
            }
        }
    }

    pub fn fence_seen(&self, room: RoomId, node: NodeId) {
        let mut state = self.lock();
        let key = (room, node);
        if !state.fences.remove(&key) {
            state.seen.insert(key);
        }
        self.release_if_done(state);
    }

    /// The earlier node has forwarded everything it had for `room`.
    pub fn room_handed_over(&self, room: &RoomId) {
        let mut state = self.lock();
        state.rooms.remove(room);
        self.release_if_done(state);
    }

    /// The member is no longer in `room` (it was removed while away): nothing comes.
    pub fn room_gone(&self, room: &RoomId) {
        let mut state = self.lock();
        state.rooms.remove(room);
        state.fences.retain(|(r, _)| r != room);
        self.release_if_done(state);
    }

    /// The earlier node is gone, or does not hold the member: no hand-over will come.
    pub fn no_hand_over(&self) {
        let mut state = self.lock();
        state.rooms.clear();
        self.release_if_done(state);
    }

    /// Stops waiting (a fence did not come in time); true if something was awaited.
    pub fn force_open(&self) -> bool {
        let mut state = self.lock();
        if self.is_open() {
            return false;
        }
        state.forwarded_open = true;
        let mut events = mem::take(&mut state.forwarded);
        events.append(&mut state.direct);
        for event in events {
            self.send(event);
        }
        self.open.store(true, Ordering::Release);
        true
    }

    fn release_if_done(&self, mut state: std::sync::MutexGuard<'_, State>) {
        if self.is_open() || !state.forwarded_open || !state.rooms.is_empty() || !state.fences.is_empty() {
            return;
        }
        for event in mem::take(&mut state.direct) {
            self.send(event);
        }
        self.open.store(true, Ordering::Release);
    }

    fn send(&self, event: Arc<Event>) {
        self.outbox.push(event);
    }
}

#[cfg(test)]
mod tests {
    use protocol::{Payload, PeerId, SignalKind};

    use super::*;

    fn signal(n: u32) -> Arc<Event> {
        Arc::new(Event::Signal {
            room: RoomId::parse("r").unwrap(),
            from: PeerId::parse("n9.x").unwrap(),
            kind: SignalKind::parse("candidate").unwrap(),
            data: Payload::from_json(n.to_string()).unwrap(),
        })
    }

    fn order(outbox: &Outbox, mut first: Vec<Arc<Event>>) -> Vec<String> {
        while let Some(e) = outbox.try_pop() {
            first.push(e);
        }
        first
            .iter()
            .map(|e| match e.as_ref() {
                Event::Signal { data, .. } => data.get().to_owned(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn direct_events_wait_for_the_hand_over_and_every_fence_and_forwarded_ones_go_first() {
        let outbox = Outbox::new(16);
        let room = RoomId::parse("r").unwrap();
        let (n2, n3) = (NodeId::parse("n2").unwrap(), NodeId::parse("n3").unwrap());
        let hold = Hold::new(outbox.clone(), [room.clone()]);
        hold.push_forwarded(signal(1));
        hold.push_direct(signal(4));
        hold.expect_fences(&room, [n2.clone()]);
        // n3's fence arrives before its expectation: it still counts.
        hold.fence_seen(room.clone(), n3.clone());
        hold.expect_fences(&room, [n3]);
        let first = hold.open_forwarded();
        hold.push_forwarded(signal(2));
        hold.room_handed_over(&room);
        hold.push_forwarded(signal(3));
        assert!(!hold.is_open(), "n2's fence is still awaited");
        hold.fence_seen(room, n2);
        assert!(hold.is_open());
        hold.push_direct(signal(5));
        assert_eq!(order(&outbox, first), ["1", "2", "3", "4", "5"]);
    }

    #[test]
    fn a_hold_that_overflows_cuts_the_connection_off() {
        let outbox = Outbox::new(2);
        let hold = Hold::new(outbox.clone(), [RoomId::parse("r").unwrap()]);
        for n in 0..3 {
            hold.push_direct(signal(n));
        }
        assert!(outbox.is_too_slow());
    }

    #[test]
    fn forcing_it_open_releases_everything_in_order() {
        let outbox = Outbox::new(16);
        let hold = Hold::new(outbox.clone(), [RoomId::parse("r").unwrap()]);
        hold.push_forwarded(signal(1));
        hold.push_direct(signal(2));
        assert!(hold.force_open());
        assert!(!hold.force_open(), "only once");
        assert_eq!(order(&outbox, Vec::new()), ["1", "2"]);
    }
}
