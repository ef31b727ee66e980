//! Property tests: every message type survives its encode/decode round trip, for
//! generated values (ids at their limits, any JSON payload, any text).
//! - bus envelopes of every event variant, with and without a trace context, and the
//!   member records stored in Redis (MessagePack);
//! - Engine.IO packets and Socket.IO packets of every type, in any namespace;
//! - native client frames of every command (JSON), payloads byte for byte.

use proptest::prelude::*;
use protocol::socketio::{encode_sio, EioPacket, SioPacket, SioType};
use protocol::{
    BusEvent, CloseReason, Command, DisplayName, Envelope, Held, LeftReason, Limits, MemberInfo, NodeId, Payload,
    PeerId, Role, RoomId, SignalKind,
};

fn node() -> impl Strategy<Value = NodeId> {
    "[a-zA-Z0-9_-]{1,32}".prop_map(|s| NodeId::parse(&s).unwrap())
}

fn room() -> impl Strategy<Value = RoomId> {
    "[a-zA-Z0-9_.-]{1,100}".prop_filter_map("a valid room id", |s| RoomId::parse(&s).ok())
}

fn peer() -> impl Strategy<Value = PeerId> {
    node().prop_map(|n| PeerId::new_on(&n))
}

/// Any JSON value, as a payload.
fn payload() -> impl Strategy<Value = Payload> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z]{1,8}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    value.prop_map(|v| Payload::from_json(v.to_string()).unwrap())
}

fn kind() -> impl Strategy<Value = SignalKind> {
    "[a-z][a-z0-9_-]{0,31}".prop_filter_map("a valid kind", |s| SignalKind::parse(&s).ok())
}

fn member() -> impl Strategy<Value = MemberInfo> {
    (peer(), "[^\\x00-\\x1f]{1,50}", prop::option::of(node()), payload()).prop_filter_map(
        "a valid member",
        |(peer, name, node, meta)| {
            Some(MemberInfo {
                peer,
                name: DisplayName::parse(name.trim()).ok()?,
                role: Role::parse("participant").ok()?,
                meta,
                node,
            })
        },
    )
}

fn event() -> impl Strategy<Value = BusEvent> {
    prop_oneof![
        (room(), peer(), peer(), kind(), payload()).prop_map(|(room, from, to, kind, data)| BusEvent::Signal {
            room,
            from,
            to,
            kind,
            data
        }),
        (room(), peer(), peer()).prop_map(|(room, from, to)| BusEvent::Undeliverable { room, from, to }),
        (room(), peer(), kind(), payload()).prop_map(|(room, from, kind, data)| BusEvent::Broadcast {
            room,
            from,
            kind,
            data
        }),
        (room(), member(), any::<u64>()).prop_map(|(room, member, nonce)| BusEvent::Joined { room, member, nonce }),
        (room(), peer(), prop::sample::select(vec![LeftReason::Left, LeftReason::Disconnected, LeftReason::NodeLost]))
            .prop_map(|(room, peer, reason)| BusEvent::Left { room, peer, reason }),
        (room(), member()).prop_map(|(room, member)| BusEvent::Updated { room, member }),
        (room(), prop::sample::select(vec![CloseReason::Ended, CloseReason::Expired, CloseReason::Removed]))
            .prop_map(|(room, reason)| BusEvent::Closed { room, reason }),
        (room(), peer()).prop_map(|(room, peer)| BusEvent::Removed { room, peer }),
        (room(), any::<u64>()).prop_map(|(room, nonce)| BusEvent::Marker { room, nonce }),
        any::<u64>().prop_map(|nonce| BusEvent::Probe { nonce }),
        (room(), member(), node(), any::<u64>()).prop_map(|(room, member, from, nonce)| BusEvent::Moved {
            room,
            member,
            from,
            nonce
        }),
        (peer(), node()).prop_map(|(peer, to)| BusEvent::ResumeRequest { peer, to }),
        (room(), peer()).prop_map(|(room, peer)| BusEvent::Fence { room, peer }),
        (peer(), prop::collection::vec(held(), 0..6)).prop_map(|(peer, events)| BusEvent::Forward { peer, events }),
    ]
}

/// Every kind of event a node forwards for a resumed member.
fn held() -> impl Strategy<Value = Held> {
    prop_oneof![
        (room(), peer(), kind(), payload()).prop_map(|(room, from, kind, data)| Held::Signal {
            room,
            from,
            kind,
            data
        }),
        (room(), peer(), kind(), payload()).prop_map(|(room, from, kind, data)| Held::Broadcast {
            room,
            from,
            kind,
            data
        }),
        (room(), member()).prop_map(|(room, member)| Held::Joined { room, member }),
        (room(), peer(), prop::option::of(member())).prop_map(|(room, peer, member)| Held::Left {
            room,
            peer,
            reason: LeftReason::Disconnected,
            member
        }),
        (room(), member()).prop_map(|(room, member)| Held::Updated { room, member }),
        (room(), prop::collection::vec(member(), 0..3)).prop_map(|(room, members)| Held::Closed {
            room,
            reason: CloseReason::Ended,
            members
        }),
        (room(), peer()).prop_map(|(room, to)| Held::Undeliverable { room, to }),
        (room(), node()).prop_map(|(room, node)| Held::Fence { room, node }),
        room().prop_map(|room| Held::RoomHandedOver { room }),
        Just(Held::Unknown),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn bus_envelopes_round_trip(from in node(), event in event(), sent in any::<u64>(), traced in any::<bool>()) {
        let mut envelope = Envelope::new(from, event).sent_at(sent);
        if traced {
            envelope.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        }
        prop_assert_eq!(Envelope::decode(&envelope.encode()).unwrap(), envelope);
    }

    #[test]
    fn member_records_round_trip(member in member()) {
        prop_assert_eq!(MemberInfo::decode(&member.encode()).unwrap(), member);
    }

    #[test]
    fn engine_io_packets_round_trip(data in "[^\\x00]{0,60}", which in 0usize..7) {
        let packet = match which {
            0 => EioPacket::Open(&data),
            1 => EioPacket::Close,
            2 => EioPacket::Ping(&data),
            3 => EioPacket::Pong(&data),
            4 => EioPacket::Message(&data),
            5 => EioPacket::Upgrade,
            _ => EioPacket::Noop,
        };
        let text = packet.encode();
        prop_assert_eq!(EioPacket::decode(&text).unwrap(), packet);
    }

    #[test]
    fn socket_io_packets_round_trip(
        namespace in prop_oneof![Just("/".to_owned()), "/[a-z]{1,20}"],
        ack in prop::option::of(0u64..1_000_000_000),
        payload in payload(),
        which in 0usize..4,
    ) {
        let ty = [SioType::Connect, SioType::Disconnect, SioType::Event, SioType::Ack][which];
        // CONNECT carries an object or nothing, DISCONNECT nothing; EVENT and ACK an array.
        let body = match ty {
            SioType::Disconnect => None,
            SioType::Connect => Some(format!("{{\"auth\":{}}}", payload.get())),
            _ => Some(format!("[\"e\",{}]", payload.get())),
        };
        let ack = if matches!(ty, SioType::Event | SioType::Ack) { ack } else { None };
        let text = encode_sio(ty, &namespace, ack, body.as_deref());
        let decoded = SioPacket::decode(&text).unwrap();
        prop_assert_eq!(decoded.ty, ty);
        prop_assert_eq!(decoded.namespace, namespace.as_str());
        prop_assert_eq!(decoded.ack, ack);
        prop_assert_eq!(decoded.payload.map(|p| p.get().to_owned()), body);
    }

    #[test]
    fn native_signal_frames_keep_their_fields_and_payload_byte_for_byte(
        room in room(), to in peer(), kind in kind(), data in payload(), id in any::<u32>()
    ) {
        let frame = format!(
            r#"{{"type":"signal","id":{id},"room":"{}","to":"{}","kind":"{}","data":{}}}"#,
            room.as_str(), to, kind.as_str(), data.get()
        );
        let request = protocol::native::decode(&frame, &Limits::default()).unwrap();
        prop_assert_eq!(request.id, Some(protocol::RequestId::Num(id.into())));
        match request.command {
            Command::Signal { room: r, to: t, kind: k, data: d } => {
                prop_assert_eq!(r, room);
                prop_assert_eq!(t, to);
                prop_assert_eq!(k, kind);
                prop_assert_eq!(d.get(), data.get());
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn native_join_and_room_frames_keep_their_fields(room in room(), name in "[a-zA-Z][a-zA-Z0-9 ]{0,40}", meta in payload()) {
        let frame = serde_json::json!({"type": "join", "room": room.as_str(), "name": name.trim(), "meta": {"m": serde_json::from_str::<serde_json::Value>(meta.get()).unwrap()}}).to_string();
        match protocol::native::decode(&frame, &Limits::default()) {
            Ok(request) => match request.command {
                Command::Join { room: r, name: n, .. } => {
                    prop_assert_eq!(r, room.clone());
                    prop_assert_eq!(n.as_str(), name.trim());
                }
                other => prop_assert!(false, "{:?}", other),
            },
            // The only refusal allowed: metadata over its byte limit.
            Err(e) => prop_assert!(e.message.contains("meta"), "{:?}", e),
        }
        for ty in ["leave", "members"] {
            let frame = serde_json::json!({"type": ty, "room": room.as_str()}).to_string();
            let request = protocol::native::decode(&frame, &Limits::default()).unwrap();
            prop_assert_eq!(request.command.room(), Some(&room));
        }
    }
}
