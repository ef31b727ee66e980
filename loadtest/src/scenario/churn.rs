//! `churn`: peers join and leave rooms continuously (half leave politely, half
//! disconnect) and every member checks the announcements it gets. Afterwards the
//! harness checks, from what it knows it did, that every peer-joined and peer-left
//! reached the right members exactly once:
//! - a violation is an announcement twice in a row about the same peer, a peer-left
//!   about a peer not known to be there, or an announcement for another room;
//! - a missing announcement is a peer that was certainly in the room while an
//!   observer was (by more than `--settle` on both sides) and that the observer
//!   never heard of, or that certainly left before the observer and whose peer-left
//!   never came.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{connect_one, join, Measurement, RunContext};
use crate::cli::parse_duration;
use crate::driver::{Command, Connection, Event};
use crate::metrics::{Counter, Metrics, Results};
use crate::plan::room_name;

#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct ChurnArgs {
    /// Peers cycling at once, over all workers.
    #[arg(long, env = "LOADTEST_PEERS", default_value_t = 100)]
    pub peers: usize,
    /// Rooms they cycle through, over all workers.
    #[arg(long, env = "LOADTEST_ROOMS", default_value_t = 10)]
    pub rooms: usize,
    /// Shortest stay in a room.
    #[arg(long, env = "LOADTEST_STAY_MIN", default_value = "300ms", value_parser = parse_duration)]
    #[serde(with = "crate::cli::duration_text")]
    pub stay_min: Duration,
    /// Longest stay in a room.
    #[arg(long, env = "LOADTEST_STAY_MAX", default_value = "2s", value_parser = parse_duration)]
    #[serde(with = "crate::cli::duration_text")]
    pub stay_max: Duration,
    /// Margin for "certainly": overlaps shorter than this are not judged.
    #[arg(long, env = "LOADTEST_SETTLE", default_value = "500ms", value_parser = parse_duration)]
    #[serde(with = "crate::cli::duration_text")]
    pub settle: Duration,
    /// How long peers keep cycling.
    #[arg(long, env = "LOADTEST_DURATION", default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "crate::cli::duration_text")]
    pub duration: Duration,
}

/// One stay of one peer in one room, as the harness saw it.
#[derive(Debug, Clone)]
struct Stay {
    peer: String,
    room: String,
    /// When `joined` arrived.
    joined: Instant,
    /// When the peer sent `leave` or closed.
    leaving: Instant,
    /// When the leave was complete (`left` arrived, or the socket closed).
    gone: Instant,
    /// Peers it knew at any time (listed in `joined` or announced).
    ever_known: HashSet<String>,
    /// Peers whose peer-left it got.
    lefts_heard: HashSet<String>,
}

/// Per-observer view of one other peer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Seen {
    Present,
    Gone,
}

pub async fn run(args: &ChurnArgs, ctx: &RunContext) -> anyhow::Result<Results> {
    if args.peers == 0 || args.rooms == 0 || args.stay_min > args.stay_max {
        bail!("churn needs --peers > 0, --rooms > 0 and --stay-min <= --stay-max");
    }
    let metrics = Arc::new(Metrics::new("membership"));
    // Shard by room: this worker's peers cycle through this worker's rooms only.
    let local_rooms: Vec<String> = ctx.shard.rooms(args.rooms).map(|r| room_name(&ctx.run_id, "churn", r)).collect();
    if local_rooms.is_empty() {
        return Ok(metrics.snapshot("churn", Duration::ZERO, None));
    }
    let local_peers = ctx.shard.share(args.peers as f64, args.rooms).round().max(1.0) as usize;
    let stays: Arc<Mutex<Vec<Stay>>> = Arc::default();
    let join_sent: Arc<Mutex<HashMap<(String, String), Instant>>> = Arc::default();

    let measurement = Measurement::begin(ctx, &metrics, args.duration).await?;
    let start = measurement.start;
    let end = start + args.duration;
    let mut slots = Vec::new();
    for slot in 0..local_peers {
        let url = ctx.urls[slot % ctx.urls.len()].clone();
        let (driver, metrics, stays, join_sent) =
            (ctx.driver.clone(), metrics.clone(), stays.clone(), join_sent.clone());
        let (rooms, args, timeout) = (local_rooms.clone(), args.clone(), ctx.setup_timeout);
        slots.push(tokio::spawn(async move {
            // Spread the first joins over the first stay.
            let offset = args.stay_min.mul_f64(slot as f64 / local_peers as f64);
            tokio::time::sleep(offset).await;
            let mut conn: Option<Connection> = None;
            while Instant::now() < end {
                if conn.is_none() {
                    conn = connect_one(&*driver, &url, &metrics, timeout).await;
                    if conn.is_none() {
                        // Refused or timed out: a moment before the next try.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
                let c = conn.as_mut().expect("connected above");
                let room = rooms[rand::rng().random_range(0..rooms.len())].clone();
                let stay = rand::rng().random_range(args.stay_min..=args.stay_max);
                let disconnect = rand::rng().random_bool(0.5);
                match one_stay(c, &room, stay, disconnect, &metrics, &join_sent, timeout).await {
                    Some(s) => stays.lock().expect("stays lock").push(s),
                    None => {
                        conn = None;
                        continue;
                    }
                }
                if disconnect {
                    conn = None;
                }
            }
            if let Some(mut c) = conn {
                c.tx.close().await;
            }
        }));
    }
    for slot in slots {
        slot.await.context("churn slot")?;
    }
    let elapsed = start.elapsed();
    measurement.end().await;

    let stays = std::mem::take(&mut *stays.lock().expect("stays lock"));
    let (checked, missing) = judge(&stays, args.settle);
    metrics.add(Counter::Expected, checked);
    metrics.add(Counter::Delivered, checked - missing);
    metrics.add(Counter::MembershipMissing, missing);
    Ok(metrics.snapshot("churn", elapsed, None))
}

/// Joins `room`, stays `stay` while checking announcements, then leaves (or
/// disconnects). Returns the stay, or None if the connection failed.
async fn one_stay(
    conn: &mut Connection,
    room: &str,
    stay: Duration,
    disconnect: bool,
    metrics: &Metrics,
    join_sent: &Mutex<HashMap<(String, String), Instant>>,
    timeout: Duration,
) -> Option<Stay> {
    join_sent.lock().expect("join lock").insert((conn.peer.clone(), room.to_owned()), Instant::now());
    let present =
        join(conn, room, &format!("churn-{}", &conn.peer[conn.peer.len().saturating_sub(6)..]), None, metrics, timeout)
            .await?;
    let joined = Instant::now();
    let mut seen: HashMap<String, Seen> = present.iter().map(|p| (p.clone(), Seen::Present)).collect();
    let mut ever_known: HashSet<String> = present.iter().cloned().collect();
    let mut lefts_heard: HashSet<String> = HashSet::new();
    let mut observe = |event: Event| match event {
        Event::PeerJoined { room: r, peer } => {
            if r != room || seen.get(&peer) == Some(&Seen::Present) {
                metrics.add(Counter::MembershipViolations, 1);
                metrics.error("duplicate-or-misrouted-peer-joined");
                return;
            }
            if let Some(sent) = join_sent.lock().expect("join lock").get(&(peer.clone(), room.to_owned())) {
                metrics.record("membership", sent.elapsed());
            }
            seen.insert(peer.clone(), Seen::Present);
            ever_known.insert(peer);
        }
        Event::PeerLeft { room: r, peer, reason } => {
            if r != room
                || seen.get(&peer) != Some(&Seen::Present)
                || !matches!(reason.as_str(), "left" | "disconnected")
            {
                metrics.add(Counter::MembershipViolations, 1);
                metrics.error("unexpected-peer-left");
                return;
            }
            seen.insert(peer.clone(), Seen::Gone);
            lefts_heard.insert(peer);
        }
        Event::Error { code, .. } => metrics.error(&code),
        _ => {}
    };
    let until = tokio::time::Instant::now() + stay;
    loop {
        match tokio::time::timeout_at(until, conn.rx.next()).await {
            Err(_) => break,
            Ok(Ok(event)) => observe(event),
            Ok(Err(e)) => {
                metrics.error(e.label());
                return None;
            }
        }
    }
    let leaving = Instant::now();
    if disconnect {
        conn.tx.close().await;
    } else {
        if let Err(e) = conn.tx.send(&Command::Leave { room: room.to_owned() }).await {
            metrics.error(e.label());
            return None;
        }
        let acked = tokio::time::timeout(timeout, async {
            loop {
                match conn.rx.next().await {
                    Ok(Event::Left { room: r }) if r == room => return true,
                    Ok(event) => observe(event),
                    Err(_) => return false,
                }
            }
        })
        .await;
        if acked != Ok(true) {
            metrics.error("leave-not-acknowledged");
            return None;
        }
    }
    Some(Stay {
        peer: conn.peer.clone(),
        room: room.to_owned(),
        joined,
        leaving,
        gone: Instant::now(),
        ever_known,
        lefts_heard,
    })
}

/// Checks every pair of stays in the same room; returns (announcements that had
/// to arrive, how many did not).
fn judge(stays: &[Stay], settle: Duration) -> (u64, u64) {
    let mut by_room: HashMap<&str, Vec<&Stay>> = HashMap::new();
    for s in stays {
        by_room.entry(&s.room).or_default().push(s);
    }
    let (mut checked, mut missing) = (0, 0);
    for members in by_room.values() {
        for a in members {
            // Peers that were certainly in the room with `a`, and those that also
            // certainly left before `a` did.
            let mut must_know: HashSet<&str> = HashSet::new();
            let mut must_hear_left: HashSet<&str> = HashSet::new();
            for b in members.iter().filter(|b| b.peer != a.peer) {
                if b.joined + settle < a.leaving && a.joined + settle < b.leaving {
                    must_know.insert(&b.peer);
                    if b.gone + settle < a.leaving {
                        must_hear_left.insert(&b.peer);
                    }
                }
            }
            checked += (must_know.len() + must_hear_left.len()) as u64;
            missing += must_know.iter().filter(|p| !a.ever_known.contains(**p)).count() as u64;
            missing += must_hear_left.iter().filter(|p| !a.lefts_heard.contains(**p)).count() as u64;
        }
    }
    (checked, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stay(peer: &str, t0: Instant, joined_ms: u64, leaving_ms: u64, knows: &[&str], heard_left: &[&str]) -> Stay {
        Stay {
            peer: peer.into(),
            room: "r".into(),
            joined: t0 + Duration::from_millis(joined_ms),
            leaving: t0 + Duration::from_millis(leaving_ms),
            gone: t0 + Duration::from_millis(leaving_ms + 5),
            ever_known: knows.iter().map(|p| p.to_string()).collect(),
            lefts_heard: heard_left.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn a_complete_history_has_nothing_missing() {
        let t0 = Instant::now();
        let stays = [stay("a", t0, 0, 5000, &["b"], &["b"]), stay("b", t0, 1000, 3000, &["a"], &[])];
        assert_eq!(judge(&stays, Duration::from_millis(500)), (3, 0));
    }

    #[test]
    fn unheard_joins_and_lefts_are_missing() {
        let t0 = Instant::now();
        let stays = [stay("a", t0, 0, 5000, &[], &[]), stay("b", t0, 1000, 3000, &["a"], &[])];
        assert_eq!(judge(&stays, Duration::from_millis(500)), (3, 2));
    }

    #[test]
    fn overlaps_within_the_settle_margin_are_not_judged() {
        let t0 = Instant::now();
        let stays = [stay("a", t0, 0, 1200, &[], &[]), stay("b", t0, 1000, 3000, &[], &[])];
        assert_eq!(judge(&stays, Duration::from_millis(500)), (0, 0));
    }
}
