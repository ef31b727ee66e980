//! `meeting`: a realistic mix at a target number of concurrent meetings. In each,
//! participants join one after another; each newcomer sends an offer to everyone
//! present, who answer; both sides trickle ICE candidates; then participants toggle
//! mute (`update`) and chat (`broadcast`) now and then until the meeting ends,
//! everyone leaves and a new meeting takes the slot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{join, Measurement, RunContext};
use crate::cli::parse_duration;
use crate::driver::{Command, CommandSink, Connection, Event};
use crate::metrics::{Counter, Metrics, Results};
use crate::payload::{chat_data, read_stamp, signal_data, Stamp};
use crate::plan::url_for;

/// Candidates each side trickles per peer connection.
const CANDIDATES: u64 = 8;
/// Activity stops this long before a meeting ends, so nothing is in flight to
/// someone who is leaving.
const QUIET_BEFORE_END: Duration = Duration::from_secs(1);
/// Gap between participants joining a meeting.
const JOIN_GAP: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
pub struct MeetingArgs {
    /// Meetings running at once, over all workers.
    #[arg(long, env = "LOADTEST_MEETINGS", default_value_t = 10)]
    pub meetings: usize,
    /// Participants per meeting.
    #[arg(long, env = "LOADTEST_MEETING_SIZE", default_value_t = 4)]
    pub size: usize,
    /// How long one meeting lasts before everyone leaves.
    #[arg(long, env = "LOADTEST_MEETING_LENGTH", default_value = "10s", value_parser = parse_duration)]
    #[serde(with = "crate::cli::duration_text")]
    pub length: Duration,
    /// Average gap between one participant's mute toggles.
    #[arg(long, env = "LOADTEST_UPDATE_EVERY", default_value = "3s", value_parser = parse_duration)]
    #[serde(with = "crate::cli::duration_text")]
    pub update_every: Duration,
    /// Average gap between one participant's chat messages.
    #[arg(long, env = "LOADTEST_CHAT_EVERY", default_value = "2s", value_parser = parse_duration)]
    #[serde(with = "crate::cli::duration_text")]
    pub chat_every: Duration,
    /// How long new meetings keep starting.
    #[arg(long, env = "LOADTEST_DURATION", default_value = "20s", value_parser = parse_duration)]
    #[serde(with = "crate::cli::duration_text")]
    pub duration: Duration,
}

pub async fn run(args: &MeetingArgs, ctx: &RunContext) -> anyhow::Result<Results> {
    if args.size < 2 || args.meetings == 0 || args.length <= QUIET_BEFORE_END * 2 {
        bail!("meeting needs --size >= 2, --meetings >= 1 and --length over 2 s");
    }
    let metrics = Arc::new(Metrics::new("signal"));
    let slots: Vec<usize> = ctx.shard.rooms(args.meetings).collect();
    let measurement = Measurement::begin(ctx, &metrics, args.duration).await?;
    let start = measurement.start;
    let end = start + args.duration;
    let mut tasks = Vec::new();
    for slot in slots {
        let (args, metrics, urls, run_id) = (args.clone(), metrics.clone(), ctx.urls.clone(), ctx.run_id.clone());
        let (driver, timeout) = (ctx.driver.clone(), ctx.setup_timeout);
        tasks.push(tokio::spawn(async move {
            // Stagger slots so meetings do not all start and end together.
            let offset = args.length.mul_f64(slot as f64 / args.meetings as f64);
            tokio::time::sleep(offset.min(args.duration)).await;
            let mut generation = 0;
            while Instant::now() < end {
                let room = format!("lt-{run_id}-meeting-{slot}-{generation}");
                let meeting_end = Instant::now() + args.length;
                let mut people = Vec::new();
                for p in 0..args.size {
                    let url = url_for(&urls, slot, p).to_owned();
                    let who = Participant { room: room.clone(), index: (slot * args.size + p) as u32, meeting_end };
                    let (driver, metrics, args) = (driver.clone(), metrics.clone(), args.clone());
                    people.push(tokio::spawn(async move {
                        who.attend(driver.as_ref(), &url, &args, &metrics, timeout).await
                    }));
                    tokio::time::sleep(JOIN_GAP).await;
                }
                for person in people {
                    let _ = person.await;
                }
                generation += 1;
            }
        }));
    }
    for t in tasks {
        t.await.context("meeting slot")?;
    }
    let elapsed = start.elapsed();
    measurement.end().await;
    Ok(metrics.snapshot("meeting", elapsed, None))
}

struct Participant {
    room: String,
    index: u32,
    meeting_end: Instant,
}

impl Participant {
    async fn attend(
        &self,
        driver: &dyn crate::driver::Driver,
        url: &str,
        args: &MeetingArgs,
        metrics: &Metrics,
        timeout: Duration,
    ) {
        let t0 = Instant::now();
        let mut conn = match tokio::time::timeout(timeout, driver.connect(url)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                metrics.add(Counter::ConnectFailed, 1);
                metrics.error(e.label());
                return;
            }
            Err(_) => {
                metrics.add(Counter::ConnectFailed, 1);
                metrics.error("connect-timeout");
                return;
            }
        };
        metrics.record("connect", t0.elapsed());
        metrics.add(Counter::Connected, 1);
        let meta = r#"{"muted":false,"video":true}"#.to_owned();
        let name = format!("person-{}", self.index);
        let Some(present) = join(&mut conn, &self.room, &name, Some(meta), metrics, timeout).await else {
            conn.tx.close().await;
            return;
        };
        if let Err(e) = self.run_meeting(&mut conn, present, args, metrics).await {
            metrics.error(e.label());
        }
        conn.tx.close().await;
    }

    async fn run_meeting(
        &self,
        conn: &mut Connection,
        present: Vec<String>,
        args: &MeetingArgs,
        metrics: &Metrics,
    ) -> Result<(), crate::driver::DriverError> {
        let mut room_size = present.len() + 1;
        let mut seq = 0u64;
        // The newcomer offers to everyone present, then trickles its candidates.
        for peer in &present {
            self.negotiate(conn.tx.as_mut(), peer, "offer", &mut seq, metrics).await?;
        }
        let quiet_from = self.meeting_end - QUIET_BEFORE_END;
        let mut next_update = Instant::now() + jitter(args.update_every);
        let mut next_chat = Instant::now() + jitter(args.chat_every);
        let mut muted = false;
        loop {
            let now = Instant::now();
            if now >= self.meeting_end {
                break;
            }
            let active = now < quiet_from;
            let wake = if active { next_update.min(next_chat).min(quiet_from) } else { self.meeting_end };
            match tokio::time::timeout_at(wake.into(), conn.rx.next()).await {
                Ok(event) => match event? {
                    Event::Signal { from, kind, data, .. } => {
                        self.received(&data, "signal", metrics);
                        if kind == "offer" && active {
                            self.negotiate(conn.tx.as_mut(), &from, "answer", &mut seq, metrics).await?;
                        }
                    }
                    Event::Broadcast { data, .. } => self.received(&data, "chat", metrics),
                    Event::PeerJoined { .. } => room_size += 1,
                    Event::PeerLeft { .. } => room_size = room_size.saturating_sub(1),
                    Event::PeerUpdated { .. } => metrics.add(Counter::Delivered, 1),
                    Event::Error { code, .. } => metrics.error(&code),
                    _ => {}
                },
                Err(_) => {
                    let now = Instant::now();
                    if now >= quiet_from {
                        continue;
                    }
                    let others = room_size.saturating_sub(1) as u64;
                    if now >= next_update {
                        muted = !muted;
                        let meta = format!(r#"{{"muted":{muted},"video":true}}"#);
                        conn.tx.send(&Command::Update { room: self.room.clone(), meta }).await?;
                        metrics.add(Counter::Sent, 1);
                        metrics.add(Counter::Expected, others);
                        next_update = now + jitter(args.update_every);
                    }
                    if now >= next_chat {
                        let data = chat_data(Stamp { src: self.index, seq, t: metrics.stamp(now) });
                        seq += 1;
                        conn.tx.send(&Command::Broadcast { room: self.room.clone(), kind: "chat", data }).await?;
                        metrics.add(Counter::Sent, 1);
                        metrics.add(Counter::Expected, others);
                        next_chat = now + jitter(args.chat_every);
                    }
                }
            }
        }
        conn.tx.send(&Command::Leave { room: self.room.clone() }).await
    }

    /// Sends an offer or answer to `peer`, then its candidates.
    async fn negotiate(
        &self,
        tx: &mut dyn CommandSink,
        peer: &str,
        sdp_kind: &'static str,
        seq: &mut u64,
        metrics: &Metrics,
    ) -> Result<(), crate::driver::DriverError> {
        for i in 0..=CANDIDATES {
            let kind = if i == 0 { sdp_kind } else { "candidate" };
            let data = signal_data(kind, Stamp { src: self.index, seq: *seq, t: metrics.stamp(Instant::now()) });
            *seq += 1;
            tx.feed(&Command::Signal { room: self.room.clone(), to: peer.to_owned(), kind, data }).await?;
            metrics.add(Counter::Sent, 1);
            metrics.add(Counter::Expected, 1);
        }
        tx.flush().await
    }

    fn received(&self, data: &str, what: &'static str, metrics: &Metrics) {
        match read_stamp(data) {
            Some(stamp) => {
                metrics.add(Counter::Delivered, 1);
                metrics.record(what, Instant::now().saturating_duration_since(metrics.instant_of(stamp.t)));
            }
            None => metrics.error("unstamped-message"),
        }
    }
}

/// A gap drawn uniformly from half to one and a half times `mean`.
fn jitter(mean: Duration) -> Duration {
    mean.mul_f64(rand::rng().random_range(0.5..1.5))
}
