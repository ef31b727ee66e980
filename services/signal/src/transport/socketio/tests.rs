//! The Socket.IO codec on its own: frames in, commands and frames out.

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use protocol::{MemberInfo, NodeId};
use serde_json::{json, Value};

use super::*;

/// The codec as the connection drives it: each decoded request's context is kept
/// until its replies are rendered, in order.
struct Driven {
    sio: SocketIo,
    contexts: VecDeque<Option<Box<InFlight>>>,
}

impl Deref for Driven {
    type Target = SocketIo;
    fn deref(&self) -> &SocketIo {
        &self.sio
    }
}

impl DerefMut for Driven {
    fn deref_mut(&mut self) -> &mut SocketIo {
        &mut self.sio
    }
}

impl From<SocketIo> for Driven {
    fn from(sio: SocketIo) -> Self {
        Driven { sio, contexts: VecDeque::new() }
    }
}

fn greeted() -> Driven {
    let mut sio = SocketIo::over_websocket();
    let node = NodeId::parse("n1").unwrap();
    let peer = PeerId::parse("n1.me").unwrap();
    let open =
        sio.welcome(&Greeting { peer: &peer, node: &node, heartbeat: Duration::from_secs(25), resume: None }).unwrap();
    let handshake: Value = serde_json::from_str(open.as_str().strip_prefix('0').unwrap()).unwrap();
    assert_eq!(
        handshake,
        json!({"sid": "n1.me", "upgrades": [], "pingInterval": 25000, "pingTimeout": 60000, "maxPayload": 1000000})
    );
    sio.into()
}

/// Decodes a frame; its requests' contexts (or a refusal's) wait for [`rendered`].
fn decode(driven: &mut Driven, text: &str) -> Result<Decoded<()>, DecodeError> {
    driven.contexts.clear();
    let contexts = &mut driven.contexts;
    match driven.sio.decode(text, &Limits::default()) {
        Ok(Decoded::Request(req, context)) => {
            contexts.push_back(Some(context));
            Ok(Decoded::Request(req, ()))
        }
        Ok(Decoded::Requests(reqs)) => Ok(Decoded::Requests(
            reqs.into_iter()
                .map(|(req, context)| {
                    contexts.push_back(Some(context));
                    (req, ())
                })
                .collect(),
        )),
        Ok(Decoded::Answer(frame)) => Ok(Decoded::Answer(frame)),
        Ok(Decoded::Nothing) => Ok(Decoded::Nothing),
        Ok(Decoded::Goodbye) => Ok(Decoded::Goodbye),
        Err(Refused { error, context }) => {
            contexts.push_back(context);
            Err(error)
        }
    }
}

fn answer(decoded: Result<Decoded<()>, DecodeError>) -> String {
    match decoded {
        Ok(Decoded::Answer(frame)) => frame.to_string(),
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn command(decoded: Result<Decoded<()>, DecodeError>) -> Command {
    match decoded {
        Ok(Decoded::Request(req, ())) => req.command,
        other => panic!("expected a request, got {other:?}"),
    }
}

/// Connects `ns` as the session would let it: the CONNECT asks the session, and its
/// answer (anonymous is allowed) becomes the CONNECT reply with the socket id.
fn connect(sio: &mut Driven, ns: &str) {
    let packet = if ns == "/" { "40".to_owned() } else { format!("40{ns},") };
    assert_eq!(command(decode(sio, &packet)), Command::Authenticate { token: None });
    let prefix = if ns == "/" { String::new() } else { format!("{ns},") };
    let frames = rendered(sio, vec![Reply::Authenticated { identity: None, id: None }]);
    assert_eq!(frames, [format!(r#"40{prefix}{{"sid":"n1.me"}}"#)]);
}

fn connected(ns: &str) -> Driven {
    let mut sio = greeted();
    connect(&mut sio, ns);
    sio
}

fn member(peer: &str, name: &str, meta: &str) -> Arc<MemberInfo> {
    Arc::new(MemberInfo {
        peer: PeerId::parse(peer).unwrap(),
        name: protocol::DisplayName::parse(name).unwrap(),
        role: protocol::Role::parse("candidate").unwrap(),
        meta: protocol::Payload::from_json(meta.into()).unwrap(),
        node: None,
    })
}

/// Renders the replies of the next request decoded (with its context); returns the
/// frames.
fn rendered(driven: &mut Driven, replies: Vec<Reply>) -> Vec<String> {
    let mut out = Vec::new();
    let context = driven.contexts.pop_front().flatten();
    driven.sio.render_replies(context, replies, &mut out);
    out.iter().map(|f| f.to_string()).collect()
}

#[test]
fn engine_io_keepalives_and_namespaces_are_answered_by_the_codec() {
    let mut sio = greeted();
    assert_eq!(answer(decode(&mut sio, "2probe")), "3probe");
    assert!(matches!(decode(&mut sio, "3"), Ok(Decoded::Nothing)));
    assert!(matches!(decode(&mut sio, "1"), Ok(Decoded::Goodbye)));
    assert_eq!(answer(decode(&mut sio, "40/admin,")), r#"44/admin,{"message":"Invalid namespace"}"#);
    // Events before the namespace is connected are refused.
    assert!(decode(&mut sio, r#"42["join-room",{}]"#).is_err());
    let keepalive = sio.keepalive(Duration::from_secs(1));
    assert_eq!(keepalive.idle_after, PING_INTERVAL + PING_TIMEOUT);
    assert!(matches!(keepalive.ping, Some((PING_INTERVAL, Ping::Frame(ref f))) if f.as_str() == "2"));
}

#[test]
fn a_join_is_answered_with_existing_users_then_the_ack() {
    let mut sio = connected("/");
    let join =
        command(decode(&mut sio, r#"4212["join-room",{"roomId":"r","userName":"Ann","userRole":"interviewer"}]"#));
    let Command::Join { room, name, role, meta, member: None, .. } = join else { panic!("{join:?}") };
    assert_eq!((room.as_str(), name.as_str(), role.as_str()), ("r", "Ann", "interviewer"));
    assert!(meta.get().contains("joinedAt"));
    let bob = member("n2.bob", "Bob", r#"{"joinedAt":"2026-01-01T00:00:00.000Z"}"#);
    let frames =
        rendered(&mut sio, vec![Reply::Joined { room: room.clone(), others: vec![bob], name: name.clone(), id: None }]);
    assert_eq!(
        frames,
        [
            r#"42["existing-users",[{"id":"n2.bob","name":"Bob","role":"candidate","socketId":"n2.bob","joinedAt":"2026-01-01T00:00:00.000Z"}]]"#,
            r#"4312[{"ok":true,"id":"n1.me"}]"#,
        ]
    );
    // Events of the room are now shown in this namespace; user-left names the leaver.
    let left = Event::PeerLeft {
        room,
        peer: PeerId::parse("n2.bob").unwrap(),
        reason: protocol::LeftReason::Disconnected,
        member: Some(member("n2.bob", "Bob", "{}")),
        frames: crate::core::Frames::default(),
    };
    assert_eq!(sio.render_event(&left).unwrap().as_str(), r#"42["user-left",{"userId":"n2.bob","userName":"Bob"}]"#);
}

#[test]
fn a_refused_event_gets_an_error_event_and_an_error_ack() {
    let mut sio = connected("/");
    let err = decode(&mut sio, r#"427["join-room",{"roomId":"","userName":"A","userRole":"candidate"}]"#).unwrap_err();
    let frames = rendered(&mut sio, vec![Reply::Error { code: err.code, message: err.message, id: None }]);
    assert_eq!(
        frames,
        [
            r#"42["error",{"message":"Invalid room ID","code":"bad-request"}]"#,
            r#"437[{"error":"Invalid room ID","code":"bad-request"}]"#,
        ]
    );
}

#[test]
fn a_meeting_participant_keeps_its_state_and_chat_is_echoed_to_its_sender() {
    let mut sio = connected("/meetings");
    let join = command(decode(
        &mut sio,
        r#"42/meetings,["join-meeting",{"meetingId":"m","displayName":"Xena","media":{"video":false}}]"#,
    ));
    let Command::Join { room, .. } = join else { panic!() };
    let frames = rendered(
        &mut sio,
        vec![Reply::Joined {
            room: room.clone(),
            others: Vec::new(),
            name: protocol::DisplayName::parse("Xena").unwrap(),
            id: None,
        }],
    );
    assert!(frames[0].starts_with(r#"42/meetings,["meeting-joined""#), "{frames:?}");
    assert!(frames[1].starts_with(r#"42/meetings,["meeting-started""#), "{frames:?}");

    let update = command(decode(&mut sio, r#"42/meetings,["toggle-media",{"meetingId":"m","audio":false}]"#));
    let Command::Update { meta, .. } = update else { panic!() };
    let meta: Value = serde_json::from_str(meta.get()).unwrap();
    assert_eq!(
        (&meta["media"], &meta["change"]),
        (&json!({"audio": false, "video": false, "screen": false}), &json!("media"))
    );
    rendered(&mut sio, vec![Reply::Updated { room: room.clone(), id: None }]);
    // The next update starts from the confirmed state (merged, not replaced).
    let ready = command(decode(&mut sio, r#"42/meetings,["participant-ready",{"meetingId":"m"}]"#));
    let Command::Update { meta, .. } = ready else { panic!() };
    let meta: Value = serde_json::from_str(meta.get()).unwrap();
    assert_eq!(
        (&meta["media"]["audio"], &meta["ready"], &meta["change"]),
        (&json!(false), &json!(true), &json!("ready"))
    );
    rendered(&mut sio, vec![Reply::Updated { room, id: None }]);

    let chat = command(decode(&mut sio, r#"42/meetings,["chat-message",{"meetingId":"m","message":"hi"}]"#));
    let Command::Broadcast { kind, data, .. } = chat else { panic!() };
    assert_eq!(kind.as_str(), "chat");
    let frames = rendered(&mut sio, Vec::new());
    assert_eq!(frames, [format!(r#"42/meetings,["chat-message",{}]"#, data.get())]);
    let sent: Value = serde_json::from_str(data.get()).unwrap();
    assert_eq!(
        (&sent["senderId"], &sent["senderName"], &sent["text"]),
        (&json!("n1.me"), &json!("Xena"), &json!("hi"))
    );
}

#[test]
fn leaving_a_namespace_leaves_its_rooms_only() {
    let mut sio = connected("/");
    connect(&mut sio, "/meetings");
    sio.rooms.push((RoomId::parse("r").unwrap(), Ns::Rooms));
    sio.rooms.push((RoomId::parse("m").unwrap(), Ns::Meetings));
    match decode(&mut sio, "41/meetings,") {
        Ok(Decoded::Requests(reqs)) => {
            assert_eq!(reqs.len(), 1);
            assert!(matches!(&reqs[0].0.command, Command::Leave { room } if room.as_str() == "m"));
        }
        other => panic!("{other:?}"),
    }
    assert!(decode(&mut sio, r#"42/meetings,["chat-message",{"meetingId":"m","text":"x"}]"#).is_err());
}

#[test]
fn a_handshake_token_is_handed_to_the_session_and_a_refusal_is_a_connect_error() {
    let mut sio = greeted();
    let with_token = command(decode(&mut sio, r#"40/meetings,{"token":"eyJ.x.y"}"#));
    assert_eq!(with_token, Command::Authenticate { token: Some("eyJ.x.y".into()) });
    let refused =
        Reply::Error { code: ErrorCode::Unauthorized, message: "token refused: bad signature".into(), id: None };
    assert_eq!(rendered(&mut sio, vec![refused]), [r#"44/meetings,{"message":"token refused: bad signature"}"#]);
    // Still not connected: its events are refused.
    assert!(decode(&mut sio, r#"42/meetings,["join-meeting",{"meetingId":"m"}]"#).is_err());
    assert!(decode(&mut sio, r#"40{"token":42}"#).is_err());
}

fn greeted_resumable(peer: &str, token: &str) -> Driven {
    let mut sio = SocketIo::over_websocket();
    let node = NodeId::parse("n2").unwrap();
    let peer = PeerId::parse(peer).unwrap();
    let greeting = Greeting { peer: &peer, node: &node, heartbeat: Duration::from_secs(25), resume: Some(token) };
    sio.welcome(&greeting).unwrap();
    sio.into()
}

#[test]
fn a_connect_with_another_pid_recovers_that_session_with_its_rooms_in_their_namespaces() {
    let mut sio = greeted_resumable("n2.fresh", "n2.fresh.own-token");
    let asked = command(decode(&mut sio, r#"40{"pid":"n1.old.its-token","offset":"x","token":"jwt"}"#));
    let resume = Command::Resume { token: "n1.old.its-token".into(), keep_token: true };
    assert_eq!(asked, Command::AuthenticateThen { token: Some("jwt".into()), then: Box::new(resume) });
    let s1_room = crate::core::ResumedRoom {
        room: RoomId::parse("interview").unwrap(),
        me: member("n1.old", "Ann", r#"{"joinedAt":"2026-01-01T00:00:00.000Z"}"#),
        others: vec![member("n1.b", "Bob", "{}")],
    };
    let meeting = crate::core::ResumedRoom {
        room: RoomId::parse("m").unwrap(),
        me: member("n1.old", "Ann", r#"{"media":{"audio":false,"video":true,"screen":false},"ready":true}"#),
        others: vec![],
    };
    let resumed = Reply::Resumed {
        peer: PeerId::parse("n1.old").unwrap(),
        rooms: vec![s1_room, meeting],
        token: "n1.old.its-token".into(),
        id: None,
    };
    // One answer, once the resume that follows the authentication is done.
    let frames = rendered(&mut sio, vec![Reply::Authenticated { identity: None, id: None }, resumed]);
    assert_eq!(frames, [r#"40{"sid":"n1.old","pid":"n1.old.its-token"}"#]);
    assert_eq!(sio.namespace_of(&RoomId::parse("interview").unwrap()), Some(Ns::Rooms));
    assert_eq!(sio.namespace_of(&RoomId::parse("m").unwrap()), Some(Ns::Meetings));

    // The second namespace of the same session reconnects with the same pid: no resume.
    assert_eq!(
        command(decode(&mut sio, r#"40/meetings,{"pid":"n1.old.its-token"}"#)),
        Command::Authenticate { token: None }
    );
    let frames = rendered(&mut sio, vec![Reply::Authenticated { identity: None, id: None }]);
    assert_eq!(frames, [r#"40/meetings,{"sid":"n1.old","pid":"n1.old.its-token"}"#]);

    // The participant's state came back from its record: a toggle keeps the rest.
    let Command::Update { meta, .. } =
        command(decode(&mut sio, r#"42/meetings,["toggle-media",{"meetingId":"m","video":false}]"#))
    else {
        panic!()
    };
    let meta: Value = serde_json::from_str(meta.get()).unwrap();
    assert_eq!(meta["media"], json!({"audio": false, "video": false, "screen": false}));
    assert_eq!(meta["ready"], json!(true));
}

#[test]
fn a_pid_that_recovers_nothing_gets_a_fresh_session_not_an_error() {
    let mut sio = greeted_resumable("n2.fresh", "n2.fresh.own-token");
    assert!(matches!(
        command(decode(&mut sio, r#"40{"pid":"n1.gone.token"}"#)),
        Command::AuthenticateThen { token: None, then } if matches!(*then, Command::Resume { .. })
    ));
    let authenticated = Reply::Authenticated { identity: None, id: None };
    let refused = Reply::Error { code: ErrorCode::ResumeFailed, message: "unknown token".into(), id: None };
    assert_eq!(
        rendered(&mut sio, vec![authenticated, refused]),
        [r#"40{"sid":"n2.fresh","pid":"n2.fresh.own-token"}"#]
    );
    // A pid that is not a string, or the connection's own, asks for nothing.
    assert_eq!(command(decode(&mut sio, r#"40{"pid":42}"#)), Command::Authenticate { token: None });
    assert_eq!(command(decode(&mut sio, r#"40{"pid":"n2.fresh.own-token"}"#)), Command::Authenticate { token: None });
}

#[test]
fn joining_again_a_room_the_socket_is_in_answers_as_a_join_without_a_second_membership() {
    let mut sio = connected("/");
    let join = r#"420["join-room",{"roomId":"r","userName":"Ann","userRole":"candidate"}]"#;
    assert!(matches!(command(decode(&mut sio, join)), Command::Join { .. }));
    let joined = Reply::Joined {
        room: RoomId::parse("r").unwrap(),
        others: vec![],
        name: protocol::DisplayName::parse("Ann").unwrap(),
        id: None,
    };
    rendered(&mut sio, vec![joined]);
    let again = r#"421["join-room",{"roomId":"r","userName":"Ann","userRole":"candidate"}]"#;
    assert_eq!(command(decode(&mut sio, again)), Command::Members { room: RoomId::parse("r").unwrap() });
    let members = Reply::Members {
        room: RoomId::parse("r").unwrap(),
        members: vec![member("n1.b", "Bob", r#"{"joinedAt":"t"}"#)],
        id: None,
    };
    let frames = rendered(&mut sio, vec![members]);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert!(frames[0].starts_with(r#"42["existing-users",[{"id":"n1.b""#), "{frames:?}");
    assert_eq!(frames[1], r#"431[{"ok":true,"id":"n1.me"}]"#);
}
