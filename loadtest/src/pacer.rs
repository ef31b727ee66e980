//! The open-loop schedule. Send number k is due at `start + k / rate`, whatever
//! happened to earlier sends, and carries that intended time, so a slow server shows
//! up as latency instead of silently lowering the offered load (no coordinated
//! omission). The schedule runs on its own OS thread because tokio's timer has 1 ms
//! resolution, which would add up to a millisecond to every measured latency.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

/// Sends due sends, round-robin over `senders`, until `duration` has passed or
/// `stop` is set. Returns how many it dispatched.
pub fn spawn(
    rate_per_sec: f64,
    start: Instant,
    duration: Duration,
    senders: Vec<UnboundedSender<Instant>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<u64> {
    std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || run(rate_per_sec, start, duration, &senders, &stop))
        .expect("spawn pacer thread")
}

fn run(rate: f64, start: Instant, duration: Duration, senders: &[UnboundedSender<Instant>], stop: &AtomicBool) -> u64 {
    if senders.is_empty() || rate <= 0.0 {
        return 0;
    }
    let total = total_sends(rate, duration);
    let mut k = 0u64;
    while k < total && !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let mut due = intended(start, rate, k);
        while due <= now && k < total {
            // A closed queue means its connection died; the send is counted lost there.
            let _ = senders[(k % senders.len() as u64) as usize].send(due);
            k += 1;
            due = intended(start, rate, k);
        }
        if k < total {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }
    k
}

pub fn total_sends(rate: f64, duration: Duration) -> u64 {
    (rate * duration.as_secs_f64()).floor() as u64
}

pub fn intended(start: Instant, rate: f64, k: u64) -> Instant {
    start + Duration::from_secs_f64(k as f64 / rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatches_exactly_rate_times_duration_round_robin_with_intended_times() {
        let (a_tx, mut a_rx) = tokio::sync::mpsc::unbounded_channel();
        let (b_tx, mut b_rx) = tokio::sync::mpsc::unbounded_channel();
        let start = Instant::now();
        let sent = spawn(1000.0, start, Duration::from_millis(50), vec![a_tx, b_tx], Arc::default()).join().unwrap();
        assert_eq!(sent, 50);
        let mut a = Vec::new();
        while let Ok(t) = a_rx.try_recv() {
            a.push(t);
        }
        let mut b = Vec::new();
        while let Ok(t) = b_rx.try_recv() {
            b.push(t);
        }
        assert_eq!((a.len(), b.len()), (25, 25));
        assert_eq!(a[1] - a[0], Duration::from_millis(2), "every other send of 1000/s");
        assert_eq!(b[0] - start, Duration::from_millis(1));
    }
}
