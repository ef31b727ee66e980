//! The tracker and stop token the core was started with. Every task a part of the core
//! starts runs on them, so a drain waits for them (boundedly) and stops them.

use std::future::Future;
use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

#[derive(Default)]
pub struct Tasks {
    started: OnceLock<(TaskTracker, CancellationToken)>,
}

impl Tasks {
    /// Called once, by `Core::start`.
    pub fn start(&self, tracker: &TaskTracker, stop: &CancellationToken) {
        let _ = self.started.set((tracker.clone(), stop.clone()));
    }

    /// Starts a task on the node's tracker; it is dropped when the node stops (by then
    /// the drain has settled every member it could be working for).
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let Some((tracker, stop)) = self.started.get() else {
            // Only a core that was never started gets here (no sessions, no bus).
            warn!("a core task before Core::start; not started");
            return;
        };
        let stop = stop.clone();
        tracker.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = task => {}
            }
        });
    }
}
