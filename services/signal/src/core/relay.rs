//! The relay: a signal to one peer goes to its local session, or as one publish to the
//! inbox of the node that serves it; a broadcast is one publish to the room channel,
//! whatever the room's size. On the receiving node a signal is delivered to its
//! target's session, or bounced back to its sender's node when the target has left
//! meanwhile ([`bounces`]).
//!
//! It owns the bounce queue, the signal publisher ([`publisher`]: signals for other
//! nodes, batched per node) and the publish gate ([`gate`]): every signal is counted in
//! from its route to its publish, so a resume's fence can wait for every signal routed
//! the old way. Where a member is, and whether it may signal, the core decides (from
//! the room directory and the room rules) before the relay is asked.

mod bounces;
mod gate;
mod publisher;

use std::sync::Arc;

use bus::Backend;
use protocol::{BusEvent, NodeId, Payload, PeerId, RoomId, SignalKind};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use super::directory::Target;
use super::events::Event;
use super::sessions::SessionHandle;
use super::{envelope, now_us, CoreError};
use crate::metrics::NodeMetrics;

pub use gate::InFlight as Routing;
pub use publisher::OnFailure;

pub struct Relay {
    node: NodeId,
    store: Arc<dyn Backend>,
    metrics: Arc<NodeMetrics>,
    bounces: bounces::Bounces,
    publisher: publisher::Publisher,
    gate: Arc<gate::PublishGate>,
}

impl Relay {
    pub fn new(node: NodeId, store: Arc<dyn Backend>, metrics: Arc<NodeMetrics>) -> Self {
        Self {
            node,
            store,
            metrics,
            bounces: bounces::Bounces::new(),
            publisher: publisher::Publisher::new(),
            gate: Arc::default(),
        }
    }

    /// Counts a signal in from its route to its publish; the count ends when the guard
    /// drops.
    pub fn routing(&self) -> Routing {
        self.gate.enter()
    }

    /// Waits until every signal counted in before this call has been published.
    pub async fn fence(&self) {
        self.gate.fence().await;
    }

    /// Sends a signal to `target`, where the room directory placed it: pushed to its
    /// session here, or queued for the publisher to the inbox of the node serving it.
    /// With `wait`, returns once it is published (so that a failure answers the
    /// request); otherwise once it is queued, a failure being told to the sender later.
    #[allow(clippy::too_many_arguments)]
    pub async fn send_signal(
        &self,
        target: Target,
        routing: Routing,
        room: &RoomId,
        from: &PeerId,
        to: &PeerId,
        kind: SignalKind,
        data: Payload,
        wait: bool,
    ) -> Result<(), CoreError> {
        let kind_slot = NodeMetrics::kind_slot(kind.as_str());
        let node = match target {
            Target::Away(node) => node,
            Target::Here(Some(session)) => {
                self.metrics.signal_relayed(kind_slot, false);
                session.push(Arc::new(Event::Signal { room: room.clone(), from: from.clone(), kind, data }));
                return Ok(());
            }
            Target::Here(None) => return Err(CoreError::PeerUnavailable),
        };
        let span = publish_span(&node);
        let envelope = self.traced_envelope(
            BusEvent::Signal { room: room.clone(), from: from.clone(), to: to.clone(), kind, data },
            &span,
        );
        let (answer, outcome) = if wait {
            let (answer, outcome) = oneshot::channel();
            (Some(answer), Some(outcome))
        } else {
            (None, None)
        };
        self.publisher.queue(publisher::Outgoing { node, envelope, kind_slot, answer, routing, span })?;
        match outcome {
            // The publisher ended without publishing it: the node is stopping.
            Some(outcome) => outcome.await.unwrap_or(Err(CoreError::Internal("the node is stopping"))),
            None => Ok(()),
        }
    }

    /// Returns once every signal queued so far has been published.
    pub async fn signals_published(&self) {
        self.publisher.barrier().await;
    }

    /// Notes whether the node that sent an envelope reads batches.
    pub fn note_sender(&self, node: &NodeId, reads_batches: bool) {
        self.publisher.note_sender(node, reads_batches);
    }

    /// Publishes queued signals until `stop`, telling `on_failure` of those sent
    /// without an id that could not be published. Call once.
    pub async fn run_publisher(&self, on_failure: &OnFailure, stop: CancellationToken) {
        self.publisher.run(self.store.as_ref(), &self.metrics, on_failure, stop).await;
    }

    /// Sends to every other member of the room: one publish to the room channel.
    pub async fn broadcast(
        &self,
        room: &RoomId,
        from: &PeerId,
        kind: SignalKind,
        data: Payload,
    ) -> Result<(), CoreError> {
        let span = publish_span(room);
        let msg =
            self.traced_envelope(BusEvent::Broadcast { room: room.clone(), from: from.clone(), kind, data }, &span);
        self.store.publish_room(room, msg).instrument(span).await?;
        self.metrics.broadcasts.inc();
        Ok(())
    }

    /// Delivers a signal another node published here to `target`'s session; without
    /// one (the target left while the signal was on its way: its sender's node had not
    /// heard `peer-left` yet), tells the sender instead of dropping it silently.
    #[allow(clippy::too_many_arguments)]
    pub fn deliver_signal(
        &self,
        target: Option<SessionHandle>,
        from_node: NodeId,
        room: RoomId,
        from: PeerId,
        to: PeerId,
        kind: SignalKind,
        data: Payload,
        sent_us: u64,
    ) {
        match target {
            Some(target) => {
                target.push(Arc::new(Event::Signal { room, from, kind, data }));
                if sent_us > 0 {
                    let seconds = now_us().saturating_sub(sent_us) as f64 / 1e6;
                    self.metrics.cross_node_relay.observe(seconds);
                }
            }
            None => {
                debug!(%room, "signal for a peer no longer here; bouncing it to the sender");
                let bounce = BusEvent::Undeliverable { room, from, to };
                self.bounces.send(from_node, envelope(&self.node, bounce));
            }
        }
    }

    /// Publishes bounced signals until `stop`. Call once.
    pub async fn run_bounces(&self, stop: CancellationToken) {
        self.bounces.run(self.store.as_ref(), stop).await;
    }

    /// Bounces dropped because their queue was full (for metrics).
    pub fn dropped_bounces(&self) -> u64 {
        self.bounces.dropped()
    }

    /// An envelope carrying the trace context of `span` (when traces are on), so the
    /// receiving node's delivery joins the sender's trace.
    fn traced_envelope(&self, event: BusEvent, span: &tracing::Span) -> bytes::Bytes {
        let mut envelope = protocol::Envelope::new(self.node.clone(), event).sent_at(now_us());
        envelope.traceparent = telemetry::traces::traceparent(span);
        bytes::Bytes::from(envelope.encode())
    }
}

/// The span of a publish to the bus (`to`: a node or a room), within a recorded trace.
fn publish_span(to: &dyn std::fmt::Display) -> tracing::Span {
    if !telemetry::traces::in_trace() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: telemetry::traces::TARGET,
        "publish",
        otel.kind = "producer",
        messaging.system = "redis",
        messaging.destination.name = %to
    )
}
