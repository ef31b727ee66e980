//! The node-to-node envelope on the Redis bus, encoded as MessagePack with named
//! fields (`rmp_serde::to_vec_named`), so two versions of the node can share the bus
//! during a rolling upgrade: unknown fields are ignored, and `v` changes only when the
//! meaning of an existing field does.

use serde::{Deserialize, Serialize};

use crate::command::LeftReason;
use crate::ids::{DisplayName, NodeId, PeerId, Role, RoomId, SignalKind};
use crate::payload::Payload;

/// The bus format version this build writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u8,
    pub from_node: NodeId,
    /// W3C `traceparent` of the span that sent it, so one trace follows a signal
    /// across nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// When the sending node published it, in microseconds since the Unix epoch (0 from
    /// nodes that do not stamp): the target's node measures cross-node latency with it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sent_us: u64,
    pub event: BusEvent,
    /// The sending node reads batches ([`crate::batch`]): other nodes may publish
    /// several envelopes to it as one message. Absent from nodes older than batches,
    /// which are then sent one envelope a message. Last, so that reading an envelope's
    /// class never has to skip it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reads_batches: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// A member of a room as the cluster stores it (in Redis and on the bus) and as clients
/// see it in `joined`, `peer-joined` and `peer-updated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub peer: PeerId,
    pub name: DisplayName,
    pub role: Role,
    pub meta: Payload,
    /// The node that serves the member: every node routes signals to a member by this,
    /// read from its mirror of the room, so public ids need not name their node. Absent
    /// when the peer id names it (native ids, and records older than this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
}

/// Why a room was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloseReason {
    /// A host ended it (or its creator, through the API).
    Ended,
    /// Its time ran out.
    Expired,
    /// Not the room: one member was removed from it by a host.
    Removed,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Ended => "ended",
            CloseReason::Expired => "expired",
            CloseReason::Removed => "removed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusEvent {
    /// To one peer, on the inbox channel of the node that serves it.
    Signal { room: RoomId, from: PeerId, to: PeerId, kind: SignalKind, data: Payload },
    /// On the room channel: `member` joined. `nonce` lets the joining node find its own
    /// announcement in the channel (everything after it is news to the new member);
    /// 0 for a membership written back after Redis lost it.
    Joined { room: RoomId, member: MemberInfo, nonce: u64 },
    /// On the room channel: `peer` is no longer a member.
    Left { room: RoomId, peer: PeerId, reason: LeftReason },
    /// On the room channel: `member` changed its metadata.
    Updated { room: RoomId, member: MemberInfo },
    /// On the room channel: to every member but the sender.
    Broadcast { room: RoomId, from: PeerId, kind: SignalKind, data: Payload },
    /// On the room channel: the point at which a node read the member list for a
    /// resynchronisation; events after it are newer than that list.
    Marker { room: RoomId, nonce: u64 },
    /// On a node's own inbox: proves its subscription still delivers.
    Probe { nonce: u64 },
    /// On the room channel: the room is closed (by a host, through the API, or because
    /// it expired). Every node makes its members in the room leave, with reason
    /// `closed`. An older node that does not know this event drops it.
    Closed { room: RoomId, reason: CloseReason },
    /// On the room channel: a host removed `peer`; the node that serves it makes it
    /// leave (reason `removed`).
    Removed { room: RoomId, peer: PeerId },
    /// On the inbox of the sender's node: a signal from `from` could not be delivered
    /// because `to` was no longer served where it was sent. An older node that does not
    /// know this event drops it (counted as an unreadable envelope).
    Undeliverable { room: RoomId, from: PeerId, to: PeerId },
    /// On the room channel: `member` resumed and is now served by the node its record
    /// names, having been served by `from`. Every node routes to it there from this
    /// point of the room's order; clients see nothing. `nonce` lets the new node find
    /// it, as with `joined`.
    Moved { room: RoomId, member: MemberInfo, from: NodeId, nonce: u64 },
    /// On the inbox of the node a member was served by: its client resumed on `to`;
    /// forward what is held for it there.
    ResumeRequest { peer: PeerId, to: NodeId },
    /// On the inbox of a moved member's old node (or of its new node when the old one is
    /// gone): the sending node routes nothing more for `peer` in `room` through the old
    /// node. The old node forwards it in order with what it holds.
    Fence { room: RoomId, peer: PeerId },
    /// On the inbox of a resumed member's new node: what its old node held for it, in
    /// order.
    Forward { peer: PeerId, events: Vec<Held> },
}

/// What a node held for a member whose connection dropped, forwarded in order to the
/// node it resumed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Held {
    Signal {
        room: RoomId,
        from: PeerId,
        kind: SignalKind,
        data: Payload,
    },
    Broadcast {
        room: RoomId,
        from: PeerId,
        kind: SignalKind,
        data: Payload,
    },
    Joined {
        room: RoomId,
        member: MemberInfo,
    },
    Left {
        room: RoomId,
        peer: PeerId,
        reason: LeftReason,
        member: Option<MemberInfo>,
    },
    Updated {
        room: RoomId,
        member: MemberInfo,
    },
    Closed {
        room: RoomId,
        reason: CloseReason,
        members: Vec<MemberInfo>,
    },
    Undeliverable {
        room: RoomId,
        to: PeerId,
    },
    /// `node` routes nothing more for the member in `room` through the old node.
    Fence {
        room: RoomId,
        node: NodeId,
    },
    /// The old node saw the member's `moved` in `room`: every room event before it has
    /// been forwarded.
    RoomHandedOver {
        room: RoomId,
    },
    /// The old node does not hold the member (its grace ran out there, or it restarted).
    Unknown,
}

/// What an envelope carries, in the classes that losses and metrics are counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventClass {
    /// A signal to one peer (and its bounce).
    Signal,
    Broadcast,
    /// Joined, left, updated, and resync markers.
    RoomEvent,
    Probe,
    /// Not readable by this version.
    Unknown,
}

impl EventClass {
    pub const ALL: [EventClass; 5] =
        [EventClass::Signal, EventClass::Broadcast, EventClass::RoomEvent, EventClass::Probe, EventClass::Unknown];

    /// Position in [`EventClass::ALL`], for per-class counters.
    pub fn index(self) -> usize {
        match self {
            EventClass::Signal => 0,
            EventClass::Broadcast => 1,
            EventClass::RoomEvent => 2,
            EventClass::Probe => 3,
            EventClass::Unknown => 4,
        }
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            EventClass::Signal => "signal",
            EventClass::Broadcast => "broadcast",
            EventClass::RoomEvent => "room_event",
            EventClass::Probe => "probe",
            EventClass::Unknown => "unknown",
        }
    }

    /// Classifies a bus message by its first envelope (a batch carries only signals).
    pub fn of_message(message: &[u8]) -> EventClass {
        crate::batch::first(message).map_or(EventClass::Unknown, EventClass::of_envelope)
    }

    /// Classifies encoded envelope bytes by reading only the map keys up to `event` and
    /// the event's variant name. It runs for every message a falling-behind node drops,
    /// so it must be much cheaper than decoding (a node that cannot keep up must not
    /// spend longer on what it drops than on what it delivers), and it never fails.
    pub fn of_envelope(bytes: &[u8]) -> EventClass {
        match peek_event_tag(bytes) {
            Some("signal" | "undeliverable" | "resume_request" | "fence" | "forward") => EventClass::Signal,
            Some("broadcast") => EventClass::Broadcast,
            Some("joined" | "left" | "updated" | "marker" | "closed" | "removed" | "moved") => EventClass::RoomEvent,
            Some("probe") => EventClass::Probe,
            _ => EventClass::Unknown,
        }
    }
}

/// The variant name of an envelope's `event`, read from the named-field MessagePack
/// that [`Envelope::encode`] writes: a map whose other values are integers, strings or
/// nil, and whose `event` is a one-entry map keyed by the variant name.
fn peek_event_tag(mut rd: &[u8]) -> Option<&str> {
    let fields = rmp::decode::read_map_len(&mut rd).ok()?;
    for _ in 0..fields {
        let key = read_str(&mut rd)?;
        if key == "event" {
            return (rmp::decode::read_map_len(&mut rd).ok()? == 1).then(|| read_str(&mut rd)).flatten();
        }
        skip_scalar(&mut rd)?;
    }
    None
}

fn read_str<'a>(rd: &mut &'a [u8]) -> Option<&'a str> {
    let len = rmp::decode::read_str_len(rd).ok()? as usize;
    let (text, rest) = (rd.get(..len)?, rd.get(len..)?);
    *rd = rest;
    std::str::from_utf8(text).ok()
}

/// Skips an integer, string or nil; anything else is not an envelope field we know.
fn skip_scalar(rd: &mut &[u8]) -> Option<()> {
    use rmp::Marker;
    let skip = match rmp::decode::read_marker(rd).ok()? {
        Marker::Null | Marker::True | Marker::False | Marker::FixPos(_) | Marker::FixNeg(_) => 0,
        Marker::U8 | Marker::I8 => 1,
        Marker::U16 | Marker::I16 => 2,
        Marker::U32 | Marker::I32 => 4,
        Marker::U64 | Marker::I64 => 8,
        Marker::FixStr(len) => usize::from(len),
        Marker::Str8 => usize::from(*rd.first()?) + 1,
        Marker::Str16 => usize::from(u16::from_be_bytes([*rd.first()?, *rd.get(1)?])) + 2,
        _ => return None,
    };
    *rd = rd.get(skip..)?;
    Some(())
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope is not valid MessagePack for this version: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("envelope version {0} is newer than this node understands ({ENVELOPE_VERSION})")]
    Version(u8),
    #[error("malformed batch: {0}")]
    Batch(&'static str),
}

impl Envelope {
    pub fn new(from_node: NodeId, event: BusEvent) -> Self {
        Self { v: ENVELOPE_VERSION, from_node, traceparent: None, sent_us: 0, event, reads_batches: true }
    }

    /// Marks when it is sent (microseconds since the Unix epoch).
    pub fn sent_at(mut self, sent_us: u64) -> Self {
        self.sent_us = sent_us;
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data with string keys cannot fail.
        rmp_serde::to_vec_named(self).expect("envelope serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let env: Envelope = rmp_serde::from_slice(bytes)?;
        if env.v > ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(env.v));
        }
        Ok(env)
    }
}

impl MemberInfo {
    /// The node that serves this member.
    pub fn serving_node(&self) -> NodeId {
        self.node.clone().unwrap_or_else(|| self.peer.node())
    }

    /// Whether `node` serves this member, without allocating.
    pub fn is_served_by(&self, node: &NodeId) -> bool {
        match &self.node {
            Some(serving) => serving == node,
            None => self.peer.is_on(node),
        }
    }

    /// Storage form in Redis: the same MessagePack as on the bus.
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("member serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        Ok(rmp_serde::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member() -> MemberInfo {
        let node = NodeId::parse("n1").unwrap();
        MemberInfo {
            peer: PeerId::new_on(&node),
            name: DisplayName::parse("Ada").unwrap(),
            role: Role::parse("host").unwrap(),
            meta: Payload::from_json(r#"{"video":true}"#.into()).unwrap(),
            node: Some(node),
        }
    }

    /// One event of every variant, with the class it is counted under.
    fn every_event() -> Vec<(BusEvent, EventClass)> {
        let m = member();
        let room = RoomId::parse("r1").unwrap();
        let data = Payload::from_json(r#"{"sdp":"v=0"}"#.into()).unwrap();
        let kind = SignalKind::parse("offer").unwrap();
        let (from, to) = (m.peer.clone(), m.peer.clone());
        let m_peer = m.peer.clone();
        vec![
            (
                BusEvent::Signal {
                    room: room.clone(),
                    from: from.clone(),
                    to: to.clone(),
                    kind: kind.clone(),
                    data: data.clone(),
                },
                EventClass::Signal,
            ),
            (BusEvent::Undeliverable { room: room.clone(), from: from.clone(), to }, EventClass::Signal),
            (BusEvent::Broadcast { room: room.clone(), from, kind, data }, EventClass::Broadcast),
            (BusEvent::Joined { room: room.clone(), member: m.clone(), nonce: 7 }, EventClass::RoomEvent),
            (
                BusEvent::Left { room: room.clone(), peer: m.peer.clone(), reason: LeftReason::NodeLost },
                EventClass::RoomEvent,
            ),
            (BusEvent::Updated { room: room.clone(), member: m }, EventClass::RoomEvent),
            (BusEvent::Closed { room: room.clone(), reason: CloseReason::Ended }, EventClass::RoomEvent),
            (BusEvent::Removed { room: room.clone(), peer: m_peer }, EventClass::RoomEvent),
            (BusEvent::Marker { room, nonce: 9 }, EventClass::RoomEvent),
            (BusEvent::Probe { nonce: 1 }, EventClass::Probe),
            (
                BusEvent::Moved {
                    room: RoomId::parse("r1").unwrap(),
                    member: member(),
                    from: NodeId::parse("n1").unwrap(),
                    nonce: 5,
                },
                EventClass::RoomEvent,
            ),
            (BusEvent::ResumeRequest { peer: member().peer, to: NodeId::parse("n2").unwrap() }, EventClass::Signal),
            (BusEvent::Fence { room: RoomId::parse("r1").unwrap(), peer: member().peer }, EventClass::Signal),
            (
                BusEvent::Forward {
                    peer: member().peer,
                    events: vec![
                        Held::RoomHandedOver { room: RoomId::parse("r1").unwrap() },
                        Held::Fence { room: RoomId::parse("r1").unwrap(), node: NodeId::parse("n3").unwrap() },
                    ],
                },
                EventClass::Signal,
            ),
        ]
    }

    const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    /// The fuzz targets' seed corpora for the bus envelope and member records: one seed
    /// per event variant, with and without a trace context. `WRITE_FUZZ_SEEDS=1`
    /// rewrites them; otherwise every committed seed must decode (a seed that stops
    /// decoding means the wire format changed).
    #[test]
    fn the_fuzz_seed_corpora_decode() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        let (envelopes, members) = (corpus.join("bus_envelope"), corpus.join("member_record"));
        if std::env::var_os("WRITE_FUZZ_SEEDS").is_some() {
            std::fs::create_dir_all(&envelopes).unwrap();
            std::fs::create_dir_all(&members).unwrap();
            for (i, (event, _)) in every_event().into_iter().enumerate() {
                let mut env = Envelope::new(NodeId::parse("n1").unwrap(), event).sent_at(1_700_000_000_000_000);
                std::fs::write(envelopes.join(format!("event-{i}")), env.encode()).unwrap();
                env.traceparent = Some(TRACEPARENT.into());
                std::fs::write(envelopes.join(format!("event-{i}-traced")), env.encode()).unwrap();
            }
            std::fs::write(members.join("member"), member().encode()).unwrap();
        }
        let mut seen = 0;
        for entry in std::fs::read_dir(&envelopes).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            Envelope::decode(&bytes).expect("a seed envelope decodes");
            seen += 1;
        }
        for entry in std::fs::read_dir(&members).unwrap() {
            MemberInfo::decode(&std::fs::read(entry.unwrap().path()).unwrap()).expect("a seed member decodes");
        }
        assert!(seen >= every_event().len() * 2, "{seen} seeds");
    }

    #[test]
    fn every_event_round_trips_through_messagepack() {
        for (event, _) in every_event() {
            let mut env = Envelope::new(NodeId::parse("n1").unwrap(), event);
            env.traceparent = Some(TRACEPARENT.into());
            assert_eq!(Envelope::decode(&env.encode()).unwrap(), env);
        }
    }

    #[test]
    fn envelopes_are_classified_without_decoding_their_fields() {
        for (event, class) in every_event() {
            let mut env = Envelope::new(NodeId::parse("n1").unwrap(), event);
            assert_eq!(EventClass::of_envelope(&env.encode()), class);
            env.traceparent = Some(TRACEPARENT.into());
            assert_eq!(EventClass::of_envelope(&env.encode()), class, "with a traceparent");
        }
        assert_eq!(EventClass::of_envelope(b"\xc1 garbage"), EventClass::Unknown);
        assert_eq!(EventClass::of_envelope(b""), EventClass::Unknown);
        for (i, class) in EventClass::ALL.iter().enumerate() {
            assert_eq!(class.index(), i, "{class:?}");
        }
    }

    #[test]
    fn unknown_fields_from_a_newer_node_are_ignored() {
        #[derive(Serialize)]
        struct Newer<'a> {
            v: u8,
            from_node: &'a str,
            shiny_new_field: u32,
            event: BusEvent,
        }
        let bytes = rmp_serde::to_vec_named(&Newer {
            v: 1,
            from_node: "n2",
            shiny_new_field: 5,
            event: BusEvent::Probe { nonce: 3 },
        })
        .unwrap();
        let env = Envelope::decode(&bytes).unwrap();
        assert_eq!(env.event, BusEvent::Probe { nonce: 3 });
        assert!(!env.reads_batches, "a node that does not say so is not sent batches");
    }

    #[test]
    fn this_build_says_it_reads_batches() {
        let env = Envelope::new(NodeId::parse("n1").unwrap(), BusEvent::Probe { nonce: 1 });
        assert!(Envelope::decode(&env.encode()).unwrap().reads_batches);
    }

    #[test]
    fn a_newer_envelope_version_is_refused_not_misread() {
        let mut env = Envelope::new(NodeId::parse("n1").unwrap(), BusEvent::Probe { nonce: 1 });
        env.v = ENVELOPE_VERSION + 1;
        assert!(matches!(Envelope::decode(&env.encode()), Err(EnvelopeError::Version(_))));
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(Envelope::decode(b"\xc1\xff not msgpack").is_err());
    }
}
