//! Signals bounced back to their sender's node: the target had left the node that
//! served it before the signal arrived (its sender's node had not heard `peer-left`
//! yet), so the sender is told `peer-unavailable` instead of losing the signal
//! silently.
//!
//! The dispatcher that finds the bounce must never wait on Redis (it would fall behind
//! the bus), so bounces go through a bounded queue to their own task. When a flood
//! of bounces fills it, further bounces are dropped and counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use protocol::NodeId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use bus::Backend;

/// Bounces waiting to be published. Each is one small envelope; a full queue means the
/// node is flooded with signals to peers that are gone.
const BOUNCE_QUEUE: usize = 1024;

pub struct Bounces {
    tx: mpsc::Sender<(NodeId, Bytes)>,
    rx: Mutex<Option<mpsc::Receiver<(NodeId, Bytes)>>>,
    dropped: AtomicU64,
}

impl Bounces {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(BOUNCE_QUEUE);
        Self { tx, rx: Mutex::new(Some(rx)), dropped: AtomicU64::new(0) }
    }

    /// Queues a bounce for the inbox of `node`; never waits.
    pub fn send(&self, node: NodeId, envelope: Bytes) {
        if self.tx.try_send((node, envelope)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Bounces {
    /// Publishes queued bounces through `store` until `stop`. Call once.
    pub async fn run(&self, store: &dyn Backend, stop: CancellationToken) {
        let Some(mut rx) = self.rx.lock().expect("bounces lock").take() else { return };
        loop {
            let (node, envelope) = tokio::select! {
                _ = stop.cancelled() => return,
                next = rx.recv() => match next {
                    Some(bounce) => bounce,
                    None => return,
                },
            };
            if let Err(e) = store.publish_node(&node, envelope).await {
                debug!(error = %e, "could not bounce a signal to its sender's node");
            }
        }
    }
}
