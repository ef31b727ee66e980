//! The live view: a progress bar on stderr (hidden when stderr is not a terminal or
//! with --quiet) and the once-a-second timeline tick that the reports draw from.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::{Counter, Metrics};

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_msg}").expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar }
    }

    /// A set-up step ("connecting 1200/5000").
    pub fn step(&self, msg: impl Into<String>) {
        self.bar.set_message(msg.into());
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Ticks the timeline once a second and shows sent/delivered rates until `stop`.
    pub fn measure(
        self: &Arc<Self>,
        metrics: Arc<Metrics>,
        length: Duration,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut every =
                tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
            let (mut last_sent, mut last_delivered) = (0, 0);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = stop.cancelled() => return,
                }
                metrics.tick();
                let (sent, delivered) = (metrics.get(Counter::Sent), metrics.get(Counter::Delivered));
                this.bar.set_message(format!(
                    "measuring {:>4.0}s/{:.0}s  sent {sent} ({}/s)  delivered {delivered} ({}/s)  lost-so-far {}",
                    start.elapsed().as_secs_f64(),
                    length.as_secs_f64(),
                    sent - last_sent,
                    delivered - last_delivered,
                    metrics.get(Counter::Expected).saturating_sub(delivered),
                ));
                (last_sent, last_delivered) = (sent, delivered);
            }
        })
    }
}
