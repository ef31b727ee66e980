//! The store's contract: every [`Backend`] must behave the same to the core. Each case
//! runs against the in-process backend and against a real, private redis-server; a
//! difference between them is a bug in one of them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::{
    Backend, Inbound, JoinOutcome, JoinPolicy, MemberWrite, MemoryBackend, MoveOutcome, Operation, RedisBackend,
    RedisOptions, RoomRecord, StoreObserver,
};
use bytes::Bytes;
use protocol::{BusEvent, DisplayName, Envelope, LeftReason, MemberInfo, NodeId, Payload, PeerId, Role, RoomId};
use testkit::TestRedis;
use tokio::sync::mpsc::Receiver;

const NODE: &str = "n1";

fn node() -> NodeId {
    NodeId::parse(NODE).unwrap()
}

fn room(name: &str) -> RoomId {
    RoomId::parse(name).unwrap()
}

fn member(peer: &PeerId, name: &str) -> MemberInfo {
    MemberInfo {
        peer: peer.clone(),
        name: DisplayName::parse(name).unwrap(),
        role: Role::parse("participant").unwrap(),
        meta: Payload::empty_object(),
        node: None,
    }
}

fn announce(event: BusEvent) -> Bytes {
    Bytes::from(Envelope::new(node(), event).encode())
}

fn open_policy() -> JoinPolicy<'static> {
    JoinPolicy { capacity: 10, token_hash: None, require_registered: false, now_ms: 1_000, with_others: true }
}

/// Joins `peer` to `room` under `policy`; its outcome and the record written.
async fn join(backend: &dyn Backend, room: &RoomId, peer: &PeerId, policy: JoinPolicy<'_>) -> (JoinOutcome, Bytes) {
    let info = member(peer, "ada");
    let record = Bytes::from(info.encode());
    let announcement = announce(BusEvent::Joined { room: room.clone(), member: info, nonce: 1 });
    let write = MemberWrite { room, peer, record: record.clone(), announcement };
    (backend.join(write, policy).await.expect("the store answers"), record)
}

fn left(room: &RoomId, peer: &PeerId) -> Bytes {
    announce(BusEvent::Left { room: room.clone(), peer: peer.clone(), reason: LeftReason::Left })
}

/// The next message on the inbox within a bounded wait.
async fn next_message(inbox: &mut Receiver<Inbound>) -> Bytes {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), inbox.recv()).await.expect("a message in time") {
            Some(Inbound::Message(bytes)) => return bytes,
            Some(_) => continue,
            None => panic!("the inbox closed"),
        }
    }
}

async fn membership_and_its_announcements(backend: &dyn Backend, inbox: &mut Receiver<Inbound>) {
    let r = room("contract-members");
    backend.subscribe_room(&r).await.unwrap();
    let (a, b) = (PeerId::new_on(&node()), PeerId::new_on(&node()));
    let (outcome, a_record) = join(backend, &r, &a, open_policy()).await;
    let JoinOutcome::Joined { others, token_hash, expires_ms } = outcome else { panic!("{outcome:?}") };
    assert!(others.is_empty() && token_hash.is_none() && expires_ms.is_none());
    assert!(matches!(next_message(inbox).await, m if Envelope::decode(&m).is_ok()), "the join is announced");
    let (outcome, b_record) = join(backend, &r, &b, open_policy()).await;
    let JoinOutcome::Joined { others, .. } = outcome else { panic!("{outcome:?}") };
    assert_eq!(others, vec![a_record.clone()], "the joiner learns the others' records");
    next_message(inbox).await;
    let (again, _) = join(backend, &r, &a, open_policy()).await;
    assert!(matches!(again, JoinOutcome::Taken), "an id already in the room: {again:?}");

    let mut members = backend.members(&r).await.unwrap();
    members.sort();
    let mut expected = vec![a_record.clone(), b_record];
    expected.sort();
    assert_eq!(members, expected);
    assert_eq!(backend.member_record(&r, &a).await.unwrap(), Some(a_record));

    // An update changes the stored record and is announced; not for a stranger.
    let updated = Bytes::from(member(&a, "ada lovelace").encode());
    let note = announce(BusEvent::Updated { room: r.clone(), member: member(&a, "ada lovelace") });
    let write = MemberWrite { room: &r, peer: &a, record: updated.clone(), announcement: note.clone() };
    assert!(backend.update(write).await.unwrap());
    assert_eq!(next_message(inbox).await, note);
    assert_eq!(backend.member_record(&r, &a).await.unwrap(), Some(updated));
    let stranger = PeerId::new_on(&node());
    let write = MemberWrite { room: &r, peer: &stranger, record: Bytes::from_static(b"x"), announcement: note };
    assert!(!backend.update(write).await.unwrap(), "an update of a non-member changes nothing");

    // A leave removes once, and is announced once.
    assert!(backend.leave(&r, &a, left(&r, &a)).await.unwrap());
    assert_eq!(next_message(inbox).await, left(&r, &a));
    assert!(!backend.leave(&r, &a, left(&r, &a)).await.unwrap(), "a second leave removes nothing");
    assert!(backend.leave(&r, &b, left(&r, &b)).await.unwrap());
    next_message(inbox).await;
    assert!(backend.members(&r).await.unwrap().is_empty());
    backend.unsubscribe_room(&r).await.unwrap();
}

async fn capacity_and_snapshot(backend: &dyn Backend, inbox: &mut Receiver<Inbound>) {
    let r = room("contract-capacity");
    let small = JoinPolicy { capacity: 2, ..open_policy() };
    let (first, first_record) = join(backend, &r, &PeerId::new_on(&node()), small).await;
    assert!(matches!(first, JoinOutcome::Joined { ref others, .. } if others.is_empty()), "{first:?}");
    // The others are listed only when asked for (a node mirroring the room does without).
    let unlisted = JoinPolicy { with_others: false, ..small };
    let (second, _) = join(backend, &r, &PeerId::new_on(&node()), unlisted).await;
    assert!(matches!(second, JoinOutcome::Joined { ref others, .. } if others.is_empty()), "{second:?}");
    let (full, _) = join(backend, &r, &PeerId::new_on(&node()), small).await;
    assert!(matches!(full, JoinOutcome::Full), "{full:?}");
    let roomier = JoinPolicy { capacity: 3, ..small };
    let (third, _) = join(backend, &r, &PeerId::new_on(&node()), roomier).await;
    match third {
        JoinOutcome::Joined { others, .. } => {
            assert_eq!(others.len(), 2, "listed when asked for");
            assert!(others.contains(&first_record));
        }
        other => panic!("{other:?}"),
    }

    // A snapshot returns every record and publishes its marker after them.
    backend.subscribe_room(&r).await.unwrap();
    let marker = announce(BusEvent::Probe { nonce: 7 });
    assert_eq!(backend.snapshot(&r, marker.clone()).await.unwrap().len(), 3);
    assert_eq!(next_message(inbox).await, marker);
    backend.unsubscribe_room(&r).await.unwrap();
}

async fn rooms_created_ahead(backend: &dyn Backend) {
    let r = room("contract-created");
    // Real times: Redis expires a created room's record a day after the room expires.
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let expires_ms = now_ms + 3_600_000;
    let record = RoomRecord {
        token_hash: "abc".into(),
        creator: "alice".into(),
        created_ms: now_ms,
        expires_ms,
        capacity: Some(5),
        hosts: vec!["bob".into()],
    };
    assert!(backend.create_room(&r, &record).await.unwrap());
    assert!(!backend.create_room(&r, &record).await.unwrap(), "created once");
    assert_eq!(backend.room_record(&r).await.unwrap(), Some(record));

    let registered = JoinPolicy { require_registered: true, now_ms, ..open_policy() };
    let (wrong, _) = join(backend, &r, &PeerId::new_on(&node()), registered).await;
    assert!(matches!(wrong, JoinOutcome::BadToken), "{wrong:?}");
    let with_token = JoinPolicy { token_hash: Some("abc"), ..registered };
    let (ok, _) = join(backend, &r, &PeerId::new_on(&node()), with_token).await;
    assert!(matches!(ok, JoinOutcome::Joined { expires_ms: Some(at), .. } if at == expires_ms), "{ok:?}");
    let late = JoinPolicy { now_ms: expires_ms + 1, ..with_token };
    let (expired, _) = join(backend, &r, &PeerId::new_on(&node()), late).await;
    assert!(matches!(expired, JoinOutcome::Expired), "{expired:?}");
    backend.set_room_locked(&r, true).await.unwrap();
    let (locked, _) = join(backend, &r, &PeerId::new_on(&node()), with_token).await;
    assert!(matches!(locked, JoinOutcome::Locked), "{locked:?}");

    let never = room("contract-never-created");
    let (missing, _) = join(backend, &never, &PeerId::new_on(&node()), registered).await;
    assert!(matches!(missing, JoinOutcome::NotFound), "{missing:?}");

    backend.unregister_room(&r).await.unwrap();
    assert_eq!(backend.room_record(&r).await.unwrap(), None);
}

async fn moves_and_conditional_leaves(backend: &dyn Backend) {
    let r = room("contract-move");
    let peer = PeerId::new_on(&node());
    let (_, old) = join(backend, &r, &peer, open_policy()).await;
    let elsewhere = NodeId::parse("n2").unwrap();
    let moved_info = MemberInfo { node: Some(elsewhere.clone()), ..member(&peer, "ada") };
    let moved = Bytes::from(moved_info.encode());
    let event = BusEvent::Moved { room: r.clone(), member: moved_info, from: node(), nonce: 2 };
    let write = || MemberWrite { room: &r, peer: &peer, record: moved.clone(), announcement: announce(event.clone()) };
    let outcome = backend.move_member(write(), Bytes::from_static(b"not the record")).await.unwrap();
    assert!(matches!(outcome, MoveOutcome::Changed), "{outcome:?}");
    let outcome = backend.move_member(write(), old.clone()).await.unwrap();
    assert!(matches!(outcome, MoveOutcome::Moved { .. }), "{outcome:?}");

    // A removal conditional on a record that is no longer the member's removes nothing.
    assert!(!backend.leave_if_unchanged(&r, &peer, old, left(&r, &peer)).await.unwrap());
    assert!(backend.leave_if_unchanged(&r, &peer, moved.clone(), left(&r, &peer)).await.unwrap());
    let outcome = backend.move_member(write(), moved).await.unwrap();
    assert!(matches!(outcome, MoveOutcome::Gone), "{outcome:?}");
}

async fn resumable_records_are_claimed_once(backend: &dyn Backend) {
    let peer = PeerId::new_on(&node());
    let (r1, r2) = (room("contract-resume-1"), room("contract-resume-2"));
    backend.note_resumable(&peer, "hash-1", &node(), &r1).await.unwrap();
    backend.note_resumable(&peer, "hash-1", &node(), &r2).await.unwrap();
    backend.forget_resumable_room(&peer, &r2).await.unwrap();
    let other = NodeId::parse("n3").unwrap();
    assert!(backend.claim_resumable(&peer, "wrong", "hash-2", &other).await.unwrap().is_none());
    let claimed = backend.claim_resumable(&peer, "hash-1", "hash-2", &other).await.unwrap().expect("claimed");
    assert_eq!((claimed.node, claimed.rooms), (node(), vec![r1]), "the node that held it, and its rooms");
    assert!(backend.claim_resumable(&peer, "hash-1", "hash-3", &other).await.unwrap().is_none(), "once");
    assert!(!backend.end_resumable(&peer, &node()).await.unwrap(), "it names the claimer now");
    assert!(backend.end_resumable(&peer, &other).await.unwrap());
    assert!(backend.claim_resumable(&peer, "hash-2", "hash-4", &other).await.unwrap().is_none(), "ended");
}

async fn node_inboxes(backend: &dyn Backend, inbox: &mut Receiver<Inbound>) {
    let nobody = NodeId::parse("gone").unwrap();
    assert_eq!(backend.publish_node(&nobody, Bytes::from_static(b"x")).await.unwrap(), 0, "no subscriber");
    backend.subscribe_node(&node()).await.unwrap();
    let probe = announce(BusEvent::Probe { nonce: 9 });
    assert!(backend.publish_node(&node(), probe.clone()).await.unwrap() >= 1);
    assert_eq!(next_message(inbox).await, probe);
    backend.ping().await.unwrap();
}

async fn run_contract(backend: &dyn Backend) {
    let mut inbox = backend.take_inbox().expect("the inbox, once");
    assert!(backend.take_inbox().is_none(), "the inbox is taken once");
    membership_and_its_announcements(backend, &mut inbox).await;
    capacity_and_snapshot(backend, &mut inbox).await;
    rooms_created_ahead(backend).await;
    moves_and_conditional_leaves(backend).await;
    resumable_records_are_claimed_once(backend).await;
    node_inboxes(backend, &mut inbox).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_backend_keeps_the_contract() {
    run_contract(&MemoryBackend::new()).await;
}

/// Records the operations the backend reports.
#[derive(Default)]
struct Recorder(Mutex<Vec<(Operation, bool)>>);

impl StoreObserver for Recorder {
    fn span(&self, _: Operation) -> Option<tracing::Span> {
        None
    }

    fn observed(&self, operation: Operation, _: Duration, ok: bool) {
        self.0.lock().unwrap().push((operation, ok));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_the_contract_and_reports_each_operation_under_its_own_name() {
    let redis = TestRedis::start().await;
    let recorder = Arc::new(Recorder::default());
    let options = RedisOptions { observer: Some(recorder.clone()), ..RedisOptions::default() };
    let backend = RedisBackend::connect(&redis.url(), options).await.expect("connects");
    run_contract(&backend).await;

    let seen = recorder.0.lock().unwrap().clone();
    let ops: Vec<Operation> = seen.iter().map(|(op, _)| *op).collect();
    for expected in [
        Operation::Join,
        Operation::Leave,
        Operation::LeaveIfUnchanged,
        Operation::MoveMember,
        Operation::Update,
        Operation::Snapshot,
        Operation::PublishNode,
        Operation::SubscribeRoom,
        Operation::SubscribeNode,
        Operation::ClaimResumable,
        Operation::CreateRoom,
    ] {
        assert!(ops.contains(&expected), "{expected:?} was not reported: {ops:?}");
    }
    assert!(seen.iter().all(|(_, ok)| *ok), "every call succeeded: {seen:?}");
    // One report per call: the contract made exactly this many joins.
    assert_eq!(ops.iter().filter(|op| **op == Operation::Join).count(), 13, "{ops:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_silence_is_measured_by_redis_from_its_last_heartbeat() {
    let redis = TestRedis::start().await;
    let backend = RedisBackend::connect(&redis.url(), RedisOptions::default()).await.expect("connects");
    let registry = backend.registry().expect("a cluster store has a registry");
    let (me, dying) = (node(), NodeId::parse("n2").unwrap());
    registry.heartbeat(&dying, 200).await.unwrap();
    let beat = std::time::Instant::now();
    assert!(registry.dead_nodes(&me).await.unwrap().is_empty(), "alive within its TTL");
    testkit::wait_until(Duration::from_secs(5), "the liveness key to expire", || async {
        !registry.dead_nodes(&me).await.unwrap().is_empty()
    })
    .await;
    let dead = registry.dead_nodes(&me).await.unwrap();
    let silent = dead[0].silent_for.expect("its last heartbeat is on record");
    assert_eq!(dead[0].node, dying);
    // Redis counts in whole milliseconds, from a moment just before `beat`.
    let since_beat = beat.elapsed() + Duration::from_millis(5);
    assert!(silent >= Duration::from_millis(200) && silent <= since_beat, "{silent:?} vs {since_beat:?}");
    registry.forget_node(&dying).await.unwrap();
    assert!(registry.dead_nodes(&me).await.unwrap().is_empty(), "forgotten with its record");
}
