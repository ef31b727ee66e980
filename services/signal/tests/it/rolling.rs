//! Rolling restarts under load, and a node killed with kill -9, with real node processes
//! and a private Redis: clients resume on other nodes and nothing is lost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::{LeftReason, PeerId, ServerMsg};
use serde_json::json;
use testkit::TestRedis;

use crate::helpers::{Client, NodeProcess};

/// Signals one member sends to each other member of its room every tick.
const TICK: Duration = Duration::from_millis(25);

const SETTINGS: &[(&str, &str)] = &[
    ("RESUME_GRACE_MS", "15000"),
    ("DRAIN_SPREAD_MS", "1000"),
    ("DRAIN_TIMEOUT_MS", "15000"),
    ("HEARTBEAT_INTERVAL_MS", "300"),
    ("NODE_TTL_MS", "1200"),
];

/// What one member saw, for the final checks.
#[derive(Default, Debug)]
struct Tally {
    /// Signals sent, by target.
    sent: HashMap<PeerId, u64>,
    /// The next sequence number expected from each sender.
    next: HashMap<PeerId, u64>,
    received: u64,
    out_of_order: Vec<String>,
    membership_changes: Vec<String>,
    errors: Vec<String>,
    resumes: Vec<Duration>,
    failed_resumes: Vec<String>,
}

impl Tally {
    fn count(&mut self, s: &protocol::native::Relayed) {
        let got = serde_json::from_str::<serde_json::Value>(s.data.get()).unwrap()["seq"].as_u64().unwrap();
        let next = self.next.entry(s.from.clone()).or_default();
        if got != *next {
            self.out_of_order.push(format!("from {}: got {got}, expected {next}", s.from));
        }
        *next = got + 1;
        self.received += 1;
    }
}

/// Signals sent and received over all members, and whether they keep sending.
#[derive(Default)]
struct Flow {
    sending: AtomicBool,
    /// Members that saw `sending` off at a tick and will send nothing more.
    done_sending: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

/// One member: signals every other member of its room each tick; on `reconnect`, stops,
/// closes its connection (so everything it sent is handled) and resumes on another node.
async fn run_member(
    mut client: Client,
    mut here: SocketAddr,
    room: String,
    others: Vec<PeerId>,
    live: Arc<Mutex<Vec<SocketAddr>>>,
    flow: Arc<Flow>,
    stop: tokio_util::sync::CancellationToken,
) -> Tally {
    let mut tally = Tally::default();
    let mut seq: HashMap<PeerId, u64> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    let mut done_sending = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick(), if !done_sending => {
                if !flow.sending.load(Ordering::Relaxed) {
                    // Counted once, between ticks: nothing of this member is half sent.
                    done_sending = true;
                    flow.done_sending.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                for to in &others {
                    let n = seq.entry(to.clone()).or_default();
                    client.signal(&room, to, "candidate", json!({ "seq": *n })).await;
                    *n += 1;
                    *tally.sent.entry(to.clone()).or_default() += 1;
                    flow.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            msg = client.next_msg() => match msg {
                Some(ServerMsg::Signal(s)) => {
                    tally.count(&s);
                    flow.received.fetch_add(1, Ordering::Relaxed);
                }
                Some(ServerMsg::Reconnect(_)) => {
                    let told = Instant::now();
                    let token = client.resume_token();
                    for last in client.close_with(4000).await {
                        match last {
                            ServerMsg::Signal(s) => {
                                tally.count(&s);
                                flow.received.fetch_add(1, Ordering::Relaxed);
                            }
                            other => tally.errors.push(format!("while closing: {other:?}")),
                        }
                    }
                    let to = {
                        let live = live.lock().unwrap();
                        let choices: Vec<_> = live.iter().filter(|a| **a != here).copied().collect();
                        choices[rand_index(choices.len())]
                    };
                    match Client::resume(to, &token).await {
                        Ok((resumed, _)) => {
                            tally.resumes.push(told.elapsed());
                            client = resumed;
                            here = to;
                        }
                        Err(e) => {
                            tally.failed_resumes.push(format!("{e:?}"));
                            break;
                        }
                    }
                }
                Some(msg @ (ServerMsg::PeerLeft(_) | ServerMsg::PeerJoined(_))) => {
                    tally.membership_changes.push(format!("{msg:?}"));
                }
                Some(ServerMsg::Error(e)) => tally.errors.push(format!("{e:?}")),
                Some(_) => {}
                None => {
                    tally.errors.push("the connection ended without a reconnect".into());
                    break;
                }
            }
        }
    }
    tally
}

fn rand_index(len: usize) -> usize {
    assert!(len > 0, "no live node to resume on");
    rand::random::<u64>() as usize % len
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_of_every_node_under_load_loses_nothing() {
    let redis = TestRedis::start().await;
    let mut nodes = Vec::new();
    for n in 0..3 {
        nodes.push(NodeProcess::start(&redis.url(), &format!("n{n}"), SETTINGS).await);
    }
    let live = Arc::new(Mutex::new(nodes.iter().map(|n| n.addr).collect::<Vec<_>>()));

    // 4 rooms of 3, each room's members on three different nodes.
    let (rooms, per_room) = (4, 3);
    let mut members = Vec::new();
    for r in 0..rooms {
        let room = format!("rolling-{r}");
        let mut clients = Vec::new();
        for m in 0..per_room {
            let addr = nodes[(r + m) % 3].addr;
            let mut c = Client::connect(addr).await;
            c.join(&room).await;
            clients.push((c, addr));
        }
        // Every join heard before the load starts.
        for (i, (c, _)) in clients.iter_mut().enumerate() {
            for _ in i + 1..per_room {
                assert!(matches!(c.recv().await, ServerMsg::PeerJoined(_)));
            }
        }
        let peers: Vec<PeerId> = clients.iter().map(|(c, _)| c.peer().clone()).collect();
        for (c, addr) in clients {
            let others = peers.iter().filter(|p| *p != c.peer()).cloned().collect();
            members.push((c, addr, room.clone(), others));
        }
    }
    let flow = Arc::new(Flow { sending: AtomicBool::new(true), ..Flow::default() });
    let stop = tokio_util::sync::CancellationToken::new();
    let tasks: Vec<_> = members
        .into_iter()
        .map(|(c, addr, room, others)| {
            tokio::spawn(run_member(c, addr, room, others, live.clone(), flow.clone(), stop.clone()))
        })
        .collect();

    // Restart every node in turn, under load.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (n, node) in nodes.iter_mut().enumerate() {
        let status = node.terminate().await;
        assert!(status.success(), "node n{n} drained and exited cleanly: {status:?}");
        let gone = node.addr;
        live.lock().unwrap().retain(|a| *a != gone);
        *node = NodeProcess::start(&redis.url(), &format!("n{n}-restarted"), SETTINGS).await;
        live.lock().unwrap().push(node.addr);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Stop sending; once every member has stopped, wait (bounded) for what is in flight
    // to land, then count: anything still missing then is lost, and the checks below
    // say where.
    flow.sending.store(false, Ordering::Relaxed);
    let landed = tokio::time::timeout(Duration::from_secs(10), async {
        while flow.done_sending.load(Ordering::Relaxed) < tasks.len() as u64
            || flow.received.load(Ordering::Relaxed) < flow.sent.load(Ordering::Relaxed)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if landed.is_err() {
        eprintln!("signals still missing 10 s after the last send");
    }
    stop.cancel();
    let mut tallies = Vec::new();
    for task in tasks {
        tallies.push(task.await.unwrap());
    }
    let mut sent: HashMap<(usize, PeerId), u64> = HashMap::new();
    for (i, t) in tallies.iter().enumerate() {
        for (to, n) in &t.sent {
            sent.insert((i, to.clone()), *n);
        }
    }
    let total_sent: u64 = tallies.iter().flat_map(|t| t.sent.values()).sum();
    let total_received: u64 = tallies.iter().map(|t| t.received).sum();
    let mut resumes: Vec<Duration> = tallies.iter().flat_map(|t| t.resumes.iter().copied()).collect();
    resumes.sort();
    eprintln!(
        "rolling restart: {total_sent} signals sent, {total_received} received; {} resumes, latency p50 {:?} p99 {:?} max {:?}",
        resumes.len(),
        percentile(&resumes, 0.5),
        percentile(&resumes, 0.99),
        resumes.last().unwrap()
    );
    for t in &tallies {
        assert!(t.failed_resumes.is_empty(), "failed resumes: {:?}", t.failed_resumes);
        assert!(t.errors.is_empty(), "errors: {:?}", t.errors);
        assert!(t.out_of_order.is_empty(), "lost, duplicated or reordered: {:?}", t.out_of_order);
        assert!(t.membership_changes.is_empty(), "a flap: {:?}", t.membership_changes);
    }
    // Every node restarted, so every client resumed at least once (again whenever the
    // node it had moved to restarted later).
    assert!(tallies.iter().all(|t| !t.resumes.is_empty()), "a client never resumed");
    assert_eq!(total_received, total_sent, "zero lost, zero duplicated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_a_node_killed_with_kill_9_resume_elsewhere_within_the_grace() {
    let redis = TestRedis::start().await;
    let settings = &[("RESUME_GRACE_MS", "4000"), ("HEARTBEAT_INTERVAL_MS", "300"), ("NODE_TTL_MS", "1200")];
    let n1 = NodeProcess::start(&redis.url(), "n1", settings).await;
    let mut n2 = NodeProcess::start(&redis.url(), "n2", settings).await;
    let mut a = Client::connect(n1.addr).await;
    let mut b = Client::connect(n2.addr).await;
    a.join_pair(&mut b, "killed").await;
    let mut c = Client::connect(n2.addr).await;
    c.join("killed").await;
    assert!(matches!(a.recv().await, ServerMsg::PeerJoined(j) if &j.peer.peer == c.peer()));
    let (b_peer, c_peer, token) = (b.peer().clone(), c.peer().clone(), b.resume_token());

    let killed = Instant::now();
    n2.kill9().await;
    drop((b, c));
    // A signal to b while its node is dead and b has not resumed yet is refused at once:
    // the sender learns it was not delivered (docs/architecture.md counts these).
    a.signal("killed", &b_peer, "offer", json!({ "seq": 0 })).await;
    a.recv_error("peer-unavailable").await;

    let (mut b, resumed) = Client::resume(n1.addr, &token).await.expect("resumed after kill -9");
    assert_eq!(resumed.peer, b_peer);
    let others: Vec<_> = resumed.rooms[0].peers.iter().map(|p| p.peer.clone()).collect();
    assert!(others.contains(a.peer()), "{resumed:?}");
    a.signal("killed", &b_peer, "offer", json!({ "seq": 1 })).await;
    assert_eq!(b.recv_signal().await.data.get(), r#"{"seq":1}"#);

    // c never came back: after the grace its node's remaining member is reaped, and
    // only c is announced lost.
    let left = a.recv_peer_left().await;
    assert_eq!((&left.peer, left.reason), (&c_peer, LeftReason::NodeLost));
    assert!(killed.elapsed() >= Duration::from_secs(4), "reaped before the grace: {:?}", killed.elapsed());
    a.expect_silence(Duration::from_secs(2)).await;
    b.signal("killed", a.peer(), "answer", json!({ "seq": 2 })).await;
    assert_eq!(a.recv_signal().await.from, b_peer);
}
