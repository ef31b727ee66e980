//! One connection's outbound queue: the events the core has for its client, in order
//! and bounded, and two alarms its connection watches (the queue overflowed; the node
//! is draining).
//!
//! Every connection has one, idle or not, so it is kept small: the queue's buffer is
//! released once a burst has been written, and the alarms are flags with one waker
//! each rather than a channel and cancellation tokens (a node-wide token made every
//! connection's wake-up take the same lock).
//!
//! Pushing never waits: an event that finds the queue full is dropped and raises the
//! `too-slow` alarm instead (the connection then closes, see `connection`). One task
//! reads the queue and one task watches the alarms at a time (the connection's task
//! does both; an away member's forwarder reads while its grace timer watches).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use futures::task::AtomicWaker;

use super::events::Event;

const TOO_SLOW: u8 = 1;
const DRAINING: u8 = 2;

/// A queue that grew beyond this many slots is given back once it is empty again.
const KEPT_SLOTS: usize = 8;

#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<VecDeque<Arc<Event>>>,
    capacity: usize,
    alarms: AtomicU8,
    /// The reader's waker: a push wakes it.
    reader: AtomicWaker,
    /// The alarm watcher's waker: an alarm wakes it.
    watcher: AtomicWaker,
}

impl Outbox {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            alarms: AtomicU8::new(0),
            reader: AtomicWaker::new(),
            watcher: AtomicWaker::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Event>>> {
        self.queue.lock().expect("outbox lock")
    }

    /// Queues `event`; when the queue is full, drops it and raises `too-slow`.
    pub fn push(&self, event: Arc<Event>) {
        let mut queue = self.lock();
        if queue.len() >= self.capacity {
            drop(queue);
            return self.raise(TOO_SLOW);
        }
        queue.push_back(event);
        drop(queue);
        self.reader.wake();
    }

    /// The next queued event, if any.
    pub fn try_pop(&self) -> Option<Arc<Event>> {
        let mut queue = self.lock();
        let event = queue.pop_front();
        if queue.is_empty() && queue.capacity() > KEPT_SLOTS {
            *queue = VecDeque::new();
        }
        event
    }

    /// Waits for the next event.
    pub async fn recv(&self) -> Arc<Event> {
        poll_fn(|cx| {
            // Registered before looking, so a push after the look wakes this task.
            self.reader.register(cx.waker());
            self.try_pop().map_or(Poll::Pending, Poll::Ready)
        })
        .await
    }

    /// Events waiting to be written.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Ends the connection as too slow (its queue, or a hold for it, overflowed; or a
    /// resume elsewhere took it over).
    pub fn raise_too_slow(&self) {
        self.raise(TOO_SLOW);
    }

    pub fn is_too_slow(&self) -> bool {
        self.alarms.load(Ordering::Acquire) & TOO_SLOW != 0
    }

    /// Resolves once the queue has overflowed.
    pub async fn too_slow(&self) {
        self.alarm(TOO_SLOW).await;
    }

    /// Tells the connection that the node is draining.
    pub fn ask_to_drain(&self) {
        self.raise(DRAINING);
    }

    /// Resolves once the node has asked the connection to drain.
    pub async fn drain_asked(&self) {
        self.alarm(DRAINING).await;
    }

    fn raise(&self, alarm: u8) {
        self.alarms.fetch_or(alarm, Ordering::AcqRel);
        self.watcher.wake();
    }

    async fn alarm(&self, alarm: u8) {
        poll_fn(|cx| {
            if self.alarms.load(Ordering::Acquire) & alarm != 0 {
                return Poll::Ready(());
            }
            self.watcher.register(cx.waker());
            if self.alarms.load(Ordering::Acquire) & alarm != 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use protocol::{PeerId, RoomId};

    use super::*;

    fn event(n: usize) -> Arc<Event> {
        Arc::new(Event::Undeliverable {
            room: RoomId::parse(&format!("r{n}")).unwrap(),
            to: PeerId::parse("n1.a").unwrap(),
        })
    }

    #[tokio::test]
    async fn events_come_out_in_order_and_a_waiting_reader_is_woken() {
        let outbox = Outbox::new(4);
        let reader = tokio::spawn({
            let outbox = outbox.clone();
            async move { (outbox.recv().await.room().to_string(), outbox.recv().await.room().to_string()) }
        });
        tokio::task::yield_now().await;
        outbox.push(event(1));
        outbox.push(event(2));
        let got = tokio::time::timeout(Duration::from_secs(5), reader).await.unwrap().unwrap();
        assert_eq!(got, ("r1".to_owned(), "r2".to_owned()));
        assert!(!outbox.is_too_slow());
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_event_and_raises_too_slow() {
        let outbox = Outbox::new(2);
        let watcher = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.too_slow().await }
        });
        outbox.push(event(1));
        outbox.push(event(2));
        assert!(!outbox.is_too_slow());
        outbox.push(event(3));
        assert!(outbox.is_too_slow());
        tokio::time::timeout(Duration::from_secs(5), watcher).await.unwrap().unwrap();
        assert_eq!(outbox.len(), 2, "what overflowed is not queued");
    }

    #[tokio::test]
    async fn draining_is_its_own_alarm() {
        let outbox = Outbox::new(2);
        let asked = tokio::spawn({
            let outbox = outbox.clone();
            async move { outbox.drain_asked().await }
        });
        tokio::task::yield_now().await;
        outbox.ask_to_drain();
        tokio::time::timeout(Duration::from_secs(5), asked).await.unwrap().unwrap();
        assert!(!outbox.is_too_slow());
    }

    #[test]
    fn a_drained_burst_gives_its_buffer_back() {
        let outbox = Outbox::new(100);
        for n in 0..50 {
            outbox.push(event(n));
        }
        while outbox.try_pop().is_some() {}
        assert_eq!(outbox.lock().capacity(), 0);
    }
}
