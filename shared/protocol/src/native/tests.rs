use super::*;

fn decode(text: &str) -> Result<Request, DecodeError> {
    super::decode(text, &Limits::default())
}

fn peer() -> PeerId {
    PeerId::new_on(&NodeId::parse("n1").unwrap())
}

#[test]
fn a_signal_keeps_its_data_byte_for_byte() {
    let to = peer();
    let text = format!(
        r#"{{"type":"signal","id":7,"room":"r1","to":"{to}","kind":"offer","data":{{"sdp":"v=0\r\n","n":1.50}}}}"#
    );
    let req = decode(&text).unwrap();
    assert_eq!(req.id, Some(RequestId::Num(7.into())));
    match req.command {
        Command::Signal { room, to: got, kind, data } => {
            assert_eq!(room.as_str(), "r1");
            assert_eq!(got, to);
            assert_eq!(kind.as_str(), "offer");
            assert_eq!(data.get(), r#"{"sdp":"v=0\r\n","n":1.50}"#);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn join_fills_in_name_role_and_meta_defaults() {
    let req = decode(r#"{"type":"join","room":"r1","id":"a"}"#).unwrap();
    assert_eq!(req.id, Some(RequestId::Str("a".into())));
    match req.command {
        Command::Join { name, role, token, meta, .. } => {
            assert_eq!(name.as_str(), DEFAULT_NAME);
            assert_eq!(role.as_str(), DEFAULT_ROLE);
            assert_eq!(token, None);
            assert_eq!(meta.get(), "{}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_frames_get_bad_request_with_the_id_echoed_when_readable() {
    let cases = [
        (r#"not json"#, None),
        (r#"[1,2]"#, None),
        (r#"{"id":3}"#, Some(RequestId::Num(3.into()))),
        (r#"{"type":"warp","id":"x"}"#, Some(RequestId::Str("x".into()))),
        (r#"{"type":"join","id":4}"#, Some(RequestId::Num(4.into()))),
        (r#"{"type":"join","room":"","id":5}"#, Some(RequestId::Num(5.into()))),
        (
            r#"{"type":"signal","room":"r","to":"no body","kind":"offer","data":1,"id":6}"#,
            Some(RequestId::Num(6.into())),
        ),
        (r#"{"type":"update","room":"r","meta":[1]}"#, None),
        // A `type` that is not a string still leaves a readable id to echo.
        (r#"{"type":42,"id":"bad-4"}"#, Some(RequestId::Str("bad-4".into()))),
        (r#"{"type":["ping"],"id":"bad-5"}"#, Some(RequestId::Str("bad-5".into()))),
        (r#"{"type":{"x":1},"id":8.5}"#, Some(RequestId::Num(serde_json::Number::from_f64(8.5).unwrap()))),
        (r#"{"type":null,"id":9}"#, Some(RequestId::Num(9.into()))),
        // An id that is neither a string nor a number cannot be echoed.
        (r#"{"type":"ping","id":{"n":1}}"#, None),
        (r#"{"type":"join","room":"r","name":"a\u0000b"}"#, None),
    ];
    for (text, id) in cases {
        let err = decode(text).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadRequest, "{text}: {err}");
        assert_eq!(err.id, id, "{text}");
    }
}

#[test]
fn limits_on_room_name_meta_and_frame_are_enforced() {
    let long_room = "r".repeat(101);
    let err = decode(&format!(r#"{{"type":"join","room":"{long_room}"}}"#)).unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest);
    assert!(err.message.contains("100"), "{}", err.message);

    let long_name = "n".repeat(51);
    let err = decode(&format!(r#"{{"type":"join","room":"r","name":"{long_name}"}}"#)).unwrap_err();
    assert!(err.message.contains("50"), "{}", err.message);

    let big_meta = format!(r#"{{"type":"update","room":"r","meta":{{"x":"{}"}}}}"#, "m".repeat(5000));
    assert_eq!(decode(&big_meta).unwrap_err().code, ErrorCode::TooLarge);

    let frame = format!(r#"{{"type":"ping","pad":"{}","id":"big"}}"#, "p".repeat(64 * 1024));
    let err = decode(&frame).unwrap_err();
    assert_eq!((err.code, err.id), (ErrorCode::TooLarge, Some(RequestId::Str("big".into()))));
}

#[test]
fn server_messages_have_the_documented_wire_shape() {
    let p = peer();
    let msg = ServerMsg::Signal(Relayed {
        room: RoomId::parse("r1").unwrap(),
        from: p.clone(),
        kind: SignalKind::parse("candidate").unwrap(),
        data: Payload::from_json(r#"{"candidate":"a=1"}"#.into()).unwrap(),
    });
    let json = msg.to_json();
    assert_eq!(
        json,
        format!(r#"{{"type":"signal","room":"r1","from":"{p}","kind":"candidate","data":{{"candidate":"a=1"}}}}"#)
    );
    assert_eq!(ServerMsg::decode(&json).unwrap(), msg);

    let err = ServerMsg::error(ErrorCode::PeerUnavailable, "gone", Some(RequestId::Num(2.into())));
    assert_eq!(err.to_json(), r#"{"type":"error","code":"peer-unavailable","message":"gone","id":2}"#);
    let left = ServerMsg::PeerLeft(PeerLeft {
        room: RoomId::parse("r").unwrap(),
        peer: p.clone(),
        reason: LeftReason::NodeLost,
    });
    assert!(left.to_json().contains(r#""type":"peer-left""#));
    assert!(left.to_json().contains(r#""reason":"node-lost""#));
}

#[test]
fn every_error_code_has_its_kebab_case_name_once() {
    let names: std::collections::HashSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(names.len(), ErrorCode::ALL.len(), "each code listed once");
    for code in ErrorCode::ALL {
        assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{}\"", code.as_str()));
    }
}

#[test]
fn a_well_formed_traceparent_is_kept_and_anything_else_ignored() {
    use serde_json::json;
    let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let frame = |tp: serde_json::Value| json!({"type": "leave", "room": "r", "traceparent": tp}).to_string();
    let req = decode(&frame(json!(good))).unwrap();
    assert_eq!(req.traceparent.as_ref().map(|t| t.as_str()), Some(good));
    for bad in [
        json!("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        json!("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        json!("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
        json!("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        json!("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"),
        json!(42),
        json!({"nested": true}),
    ] {
        let req = decode(&frame(bad.clone())).unwrap_or_else(|e| panic!("{bad}: {e:?}"));
        assert_eq!(req.traceparent, None, "{bad}");
    }
    assert_eq!(decode(r#"{"type":"leave","room":"r"}"#).unwrap().traceparent, None);
}

#[test]
fn a_relayed_frame_from_borrowed_parts_is_the_messages_own_text() {
    let room = RoomId::parse("r-1").unwrap();
    let kind = SignalKind::parse("offer").unwrap();
    let data = Payload::from_json(r#"{ "sdp" : "v=0\r\n", "n": [1,2] }"#.into()).unwrap();
    let from = peer();
    let relayed = Relayed { room: room.clone(), from: from.clone(), kind: kind.clone(), data: data.clone() };
    assert_eq!(
        ServerMsg::relayed_json(false, &room, &from, &kind, &data),
        ServerMsg::Signal(relayed.clone()).to_json()
    );
    assert_eq!(ServerMsg::relayed_json(true, &room, &from, &kind, &data), ServerMsg::Broadcast(relayed).to_json());
}
