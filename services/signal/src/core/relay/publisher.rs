//! Signals for other nodes leave through one task. It takes everything queued at that
//! moment and publishes what is for one node as one message (a batch, see
//! [`protocol::batch`]) when that node reads batches: under load one PUBLISH, one read
//! on the receiving node and one dispatch carry several signals. Nothing waits to be
//! batched: a lone signal is published at once, alone.
//!
//! A sender whose request has an id waits for its publish, so an error echoes the id.
//! Any other sender moves on once its signal is queued; if the publish fails (the
//! target's node is gone, or Redis is), it hears `peer-unavailable` a moment later, as
//! for a bounce. Signals from one sender to one node keep their order: one queue, and
//! one publish at a time per node. A sender that goes on to do anything else (leave,
//! broadcast...) first waits for a barrier ([`Publisher::barrier`]), so what it does
//! next never overtakes its signals.

use std::collections::HashSet;
use std::sync::{Mutex, RwLock};

use bus::{Backend, BackendError};
use bytes::Bytes;
use futures::future::join_all;
use protocol::{BusEvent, Envelope, NodeId, PeerId, RoomId};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use super::gate::InFlight;
use crate::core::CoreError;
use crate::metrics::NodeMetrics;

/// Signals waiting for the publisher. A full queue means Redis is not keeping up: the
/// sender is told `unavailable` at once rather than the node buffering without bound.
const QUEUE: usize = 16 * 1024;

/// Most signals taken from the queue for one round of publishes.
const MOST_AT_ONCE: usize = 256;

/// Told of a signal, sent without an id, that could not be published: its room, its
/// sender and its target.
pub type OnFailure = dyn Fn(RoomId, PeerId, PeerId) + Send + Sync;

/// One signal for another node's inbox.
pub struct Outgoing {
    pub node: NodeId,
    pub envelope: Bytes,
    /// Its kind's metric slot (`NodeMetrics::kind_slot`), counted once published.
    pub kind_slot: usize,
    /// The sender waiting for the outcome; None: only a failure is told, later.
    pub answer: Option<oneshot::Sender<Result<(), CoreError>>>,
    /// Counted in since its route: a resume's fence waits until it is published.
    pub routing: InFlight,
    /// Its `publish` span when it is traced (else `Span::none()`): its Redis call is
    /// made inside it.
    pub span: tracing::Span,
}

/// What the publisher's queue holds.
enum Queued {
    Signal(Outgoing),
    /// Answered once everything queued before it is published.
    Barrier(oneshot::Sender<()>),
}

pub struct Publisher {
    tx: mpsc::Sender<Queued>,
    rx: Mutex<Option<mpsc::Receiver<Queued>>>,
    /// Nodes whose envelopes say they read batches; learnt from what they send.
    batch_readers: RwLock<HashSet<NodeId>>,
}

impl Publisher {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self { tx, rx: Mutex::new(Some(rx)), batch_readers: RwLock::new(HashSet::new()) }
    }

    /// Queues a signal; never waits. Fails when the queue is full or the publisher has
    /// stopped.
    pub fn queue(&self, outgoing: Outgoing) -> Result<(), CoreError> {
        self.tx
            .try_send(Queued::Signal(outgoing))
            .map_err(|_| CoreError::Unavailable(BackendError::Protocol("the node's publish queue is full".into())))
    }

    /// Returns once every signal queued before this call has been published (or has
    /// failed). At once when the queue is full or the publisher has stopped: the
    /// caller then merely loses the ordering this buys.
    pub async fn barrier(&self) {
        let (passed, waiting) = oneshot::channel();
        if self.tx.try_send(Queued::Barrier(passed)).is_ok() {
            let _ = waiting.await;
        }
    }

    /// Notes whether `node` reads batches, from an envelope it sent. Every envelope
    /// says so, so a node replaced by an older build under the same id is sent single
    /// envelopes again from its first message on.
    pub fn note_sender(&self, node: &NodeId, reads_batches: bool) {
        let known = self.batch_readers.read().expect("batch readers lock").contains(node);
        if known != reads_batches {
            let mut readers = self.batch_readers.write().expect("batch readers lock");
            if reads_batches {
                readers.insert(node.clone());
            } else {
                readers.remove(node);
            }
        }
    }

    fn reads_batches(&self, node: &NodeId) -> bool {
        self.batch_readers.read().expect("batch readers lock").contains(node)
    }

    /// Publishes queued signals through `store` until `stop`, then what is still
    /// queued. Call once.
    pub async fn run(
        &self,
        store: &dyn Backend,
        metrics: &NodeMetrics,
        on_failure: &OnFailure,
        stop: CancellationToken,
    ) {
        let Some(mut rx) = self.rx.lock().expect("publisher lock").take() else { return };
        let mut taken = Vec::with_capacity(MOST_AT_ONCE);
        let mut signals = Vec::with_capacity(MOST_AT_ONCE);
        let mut barriers = Vec::new();
        let mut stopping = false;
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled(), if !stopping => {
                    // Refuse new signals, publish those already queued, then end.
                    rx.close();
                    stopping = true;
                    continue;
                }
                n = rx.recv_many(&mut taken, MOST_AT_ONCE) => if n == 0 { return },
            }
            for queued in taken.drain(..) {
                match queued {
                    Queued::Signal(outgoing) => signals.push(outgoing),
                    Queued::Barrier(passed) => barriers.push(passed),
                }
            }
            if !signals.is_empty() {
                self.publish(store, metrics, on_failure, &mut signals).await;
            }
            // Everything queued before each of these was in this round or an earlier one.
            for passed in barriers.drain(..) {
                let _ = passed.send(());
            }
        }
    }

    /// Publishes `taken`, one message per node (or one per signal to a node that does
    /// not read batches), the nodes concurrently, and tells each sender its outcome.
    async fn publish(
        &self,
        store: &dyn Backend,
        metrics: &NodeMetrics,
        on_failure: &OnFailure,
        taken: &mut Vec<Outgoing>,
    ) {
        // A stable sort: each node's signals stay in the order they were queued.
        taken.sort_by(|a, b| a.node.cmp(&b.node));
        let groups = taken.chunk_by(|a, b| a.node == b.node);
        let outcomes = join_all(groups.map(|group| self.publish_to(store, metrics, group))).await;
        for (outgoing, outcome) in taken.drain(..).zip(outcomes.into_iter().flatten()) {
            let outcome = match outcome {
                Ok(0) => Err(CoreError::PeerUnavailable),
                Ok(_) => {
                    metrics.signal_relayed(outgoing.kind_slot, true);
                    Ok(())
                }
                Err(e) => Err(CoreError::Unavailable(e)),
            };
            // Published (or failed): a resume's fence need not wait for it any more.
            drop(outgoing.routing);
            match (outgoing.answer, outcome) {
                (Some(answer), outcome) => {
                    let _ = answer.send(outcome);
                }
                (None, Ok(())) => {}
                (None, Err(e)) => tell_failure(&outgoing.envelope, e, on_failure),
            }
        }
    }

    /// Publishes one node's signals; the receivers counted for each (0: nobody listens
    /// on that node's inbox).
    async fn publish_to(
        &self,
        store: &dyn Backend,
        metrics: &NodeMetrics,
        group: &[Outgoing],
    ) -> Vec<Result<u64, BackendError>> {
        let node = &group[0].node;
        // A traced signal is published alone, so that its trace shows its own Redis
        // call (traces are sampled: batching rarely loses anything to this).
        let traced = group.iter().any(|o| !o.span.is_none());
        if group.len() > 1 && !traced && self.reads_batches(node) {
            metrics.signals_per_publish.observe(group.len() as f64);
            let envelopes: Vec<&[u8]> = group.iter().map(|o| o.envelope.as_ref()).collect();
            let message = Bytes::from(protocol::batch::encode(&envelopes));
            let outcome = store.publish_node(node, message).await;
            return vec![outcome; group.len()];
        }
        let mut outcomes = Vec::with_capacity(group.len());
        for outgoing in group {
            metrics.signals_per_publish.observe(1.0);
            let publish = store.publish_node(node, outgoing.envelope.clone());
            outcomes.push(publish.instrument(outgoing.span.clone()).await);
        }
        outcomes
    }
}

/// Tells the sender of a signal that could not be published, read back from its
/// envelope (a rare path: the hot one carries no copy of the room and peers).
fn tell_failure(envelope: &[u8], error: CoreError, on_failure: &OnFailure) {
    debug!(%error, "a signal could not be published; telling its sender");
    if let Ok(Envelope { event: BusEvent::Signal { room, from, to, .. }, .. }) = Envelope::decode(envelope) {
        on_failure(room, from, to);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bus::{Inbound, MemoryBackend, PubSub};
    use protocol::{Payload, SignalKind};

    use super::*;
    use crate::core::relay::gate::PublishGate;

    const WAIT: Duration = Duration::from_secs(5);

    struct Setup {
        store: Arc<MemoryBackend>,
        inbox: mpsc::Receiver<Inbound>,
        publisher: Arc<Publisher>,
        gate: Arc<PublishGate>,
        told: Arc<Mutex<Vec<(RoomId, PeerId, PeerId)>>>,
        stop: CancellationToken,
    }

    fn node(name: &str) -> NodeId {
        NodeId::parse(name).unwrap()
    }

    /// A publisher over an in-process store where node `n2` listens on its inbox.
    async fn setup() -> Setup {
        let store = Arc::new(MemoryBackend::new());
        store.subscribe_node(&node("n2")).await.unwrap();
        let inbox = store.take_inbox().unwrap();
        Setup {
            store,
            inbox,
            publisher: Arc::new(Publisher::new()),
            gate: Arc::default(),
            told: Arc::default(),
            stop: CancellationToken::new(),
        }
    }

    impl Setup {
        fn signal(&self, to_node: &str, seq: u64, answer: Option<oneshot::Sender<Result<(), CoreError>>>) {
            let from = PeerId::new_on(&node("n1"));
            let to = PeerId::new_on(&node(to_node));
            let event = BusEvent::Signal {
                room: RoomId::parse("r").unwrap(),
                from,
                to,
                kind: SignalKind::parse("candidate").unwrap(),
                data: Payload::from_json(seq.to_string()).unwrap(),
            };
            let envelope = Bytes::from(Envelope::new(node("n1"), event).sent_at(seq).encode());
            let outgoing = Outgoing {
                node: node(to_node),
                envelope,
                kind_slot: 0,
                answer,
                routing: self.gate.enter(),
                span: tracing::Span::none(),
            };
            self.publisher.queue(outgoing).unwrap();
        }

        fn start(&self) -> tokio::task::JoinHandle<()> {
            let (publisher, store, told, stop) =
                (self.publisher.clone(), self.store.clone(), self.told.clone(), self.stop.clone());
            tokio::spawn(async move {
                let tell = move |room, from, to| told.lock().unwrap().push((room, from, to));
                publisher.run(store.as_ref(), &NodeMetrics::new(), &tell, stop).await
            })
        }

        /// The `sent_us` of each envelope in the next message on n2's inbox.
        async fn next_message(&mut self) -> Vec<u64> {
            let Some(Inbound::Message(bytes)) = tokio::time::timeout(WAIT, self.inbox.recv()).await.unwrap() else {
                panic!("expected a message")
            };
            protocol::batch::envelopes(&bytes).map(|e| Envelope::decode(e.unwrap()).unwrap().sent_us).collect()
        }
    }

    #[tokio::test]
    async fn signals_queued_together_for_a_node_that_reads_batches_leave_as_one_message_in_order() {
        let mut s = setup().await;
        s.publisher.note_sender(&node("n2"), true);
        for seq in 1..=3 {
            s.signal("n2", seq, None);
        }
        let _run = s.start();
        assert_eq!(s.next_message().await, [1, 2, 3]);
        // Published: a fence waiting for signals routed before it passes.
        tokio::time::timeout(WAIT, s.gate.fence()).await.unwrap();
        // A lone signal is published at once, alone.
        s.signal("n2", 4, None);
        assert_eq!(s.next_message().await, [4]);
    }

    #[tokio::test]
    async fn a_node_that_does_not_say_it_reads_batches_gets_one_envelope_a_message() {
        let mut s = setup().await;
        s.publisher.note_sender(&node("n2"), true);
        // Replaced by an older build under the same id: its envelopes no longer say so.
        s.publisher.note_sender(&node("n2"), false);
        for seq in 1..=3 {
            s.signal("n2", seq, None);
        }
        let _run = s.start();
        for seq in 1..=3 {
            assert_eq!(s.next_message().await, [seq]);
        }
    }

    #[tokio::test]
    async fn a_signal_nobody_listens_for_is_answered_or_told_to_its_sender() {
        let mut s = setup().await;
        let (answer, outcome) = oneshot::channel();
        s.signal("n3", 1, Some(answer));
        s.signal("n3", 2, None);
        s.signal("n2", 3, None);
        let _run = s.start();
        let outcome = tokio::time::timeout(WAIT, outcome).await.unwrap().unwrap();
        assert!(matches!(outcome, Err(CoreError::PeerUnavailable)), "{outcome:?}");
        assert_eq!(s.next_message().await, [3], "the other node's signal is unaffected");
        s.publisher.barrier().await;
        let told = s.told.lock().unwrap().clone();
        assert_eq!(told.len(), 1, "only the signal without an answer is told later");
        assert_eq!(told[0].2.node(), node("n3"));
    }

    #[tokio::test]
    async fn a_barrier_passes_once_what_was_queued_before_it_is_published() {
        let mut s = setup().await;
        s.publisher.note_sender(&node("n2"), true);
        s.signal("n2", 1, None);
        let barrier = tokio::spawn({
            let publisher = s.publisher.clone();
            async move { publisher.barrier().await }
        });
        tokio::task::yield_now().await;
        assert!(!barrier.is_finished(), "nothing is published before the publisher runs");
        let _run = s.start();
        tokio::time::timeout(WAIT, barrier).await.unwrap().unwrap();
        assert_eq!(s.next_message().await, [1], "published before the barrier passed");
    }

    #[tokio::test]
    async fn a_stopped_publisher_publishes_what_was_queued_and_refuses_more() {
        let mut s = setup().await;
        s.signal("n2", 1, None);
        s.stop.cancel();
        let run = s.start();
        assert_eq!(s.next_message().await, [1]);
        tokio::time::timeout(WAIT, run).await.unwrap().unwrap();
        let outgoing = Outgoing {
            node: node("n2"),
            envelope: Bytes::new(),
            kind_slot: 0,
            answer: None,
            routing: s.gate.enter(),
            span: tracing::Span::none(),
        };
        assert!(matches!(s.publisher.queue(outgoing), Err(CoreError::Unavailable(_))));
    }
}
