//! The Socket.IO dialect with the official client (socket.io-client 4.x on Node.js)
//! against real nodes sharing a private Redis: the S1 interview-room events over each
//! transport (websocket, polling, polling upgraded to websocket), node death, 40
//! simultaneous joiners, every bad payload shape, the /meetings gateway, S2's call
//! events, and a room shared by native, Socket.IO and plain-JSON members.

use std::collections::HashSet;
use std::time::Duration;

use protocol::{LeftReason, PeerId, ServerMsg};
use serde_json::{json, Value};

use crate::helpers::socketio::{url, SioAgent};
use crate::helpers::{Backend, NodeProcess, TestCluster, TestRedis};
use crate::plain::PlainClient;

async fn two_nodes() -> (TestRedis, TestCluster) {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start(&Backend::Redis(redis.url()), 2).await;
    (redis, cluster)
}

fn join(room: &str, name: &str, role: &str) -> Value {
    json!({"roomId": room, "userName": name, "userRole": role})
}

/// An SDP with the characters that break naive relays (CRLF, quotes, unicode).
fn offer_sdp() -> Value {
    json!({"type": "offer", "sdp": "v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\na=x:\"q\" é\r\n", "n": 1.5})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_events_work_across_nodes_over_every_transport() {
    let (_redis, cluster) = two_nodes().await;
    let mut sio = SioAgent::start().await;
    let (n1, n2) = (url(cluster.nodes[0].addr), url(cluster.nodes[1].addr));
    for (i, transports) in [&["websocket"][..], &["polling"], &["polling", "websocket"]].into_iter().enumerate() {
        let room = format!("interview-{i}");
        let (a, b) = (format!("a{i}"), format!("b{i}"));
        let (a_id, a_transport) = sio.connect(&a, &n1, "/", transports).await;
        let (b_id, _) = sio.connect(&b, &n2, "/", transports).await;
        if transports == ["polling", "websocket"] {
            // The upgrade may finish before or after the connect.
            if a_transport == "polling" {
                assert_eq!(sio.upgraded(&a).await, "websocket");
            }
        } else {
            assert_eq!(a_transport, transports[0]);
        }

        assert_eq!(sio.emit_ack(&a, "join-room", join(&room, "Ann", "interviewer")).await["ok"], true);
        assert_eq!(sio.event(&a, "existing-users").await, json!([]));
        sio.emit(&b, "join-room", join(&room, "Bob", "candidate")).await;
        let existing = sio.event(&b, "existing-users").await;
        assert_eq!(existing.as_array().unwrap().len(), 1, "{existing}");
        let ann = &existing[0];
        assert_eq!(
            (&ann["id"], &ann["socketId"], &ann["name"], &ann["role"]),
            (&json!(a_id), &json!(a_id), &json!("Ann"), &json!("interviewer"))
        );
        assert!(ann["joinedAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{ann}");
        let joined = sio.event(&a, "user-joined").await;
        // socket.id is exactly the id the others see and address.
        assert_eq!(
            (&joined["userId"], &joined["userName"], &joined["userRole"]),
            (&json!(b_id), &json!("Bob"), &json!("candidate"))
        );

        // The three relays, both ways, payloads intact.
        let candidate = json!({"candidate": "candidate:1 1 udp 2122260223 10.0.0.1 54321 typ host", "sdpMid": "0", "sdpMLineIndex": 0});
        sio.emit(&a, "offer", json!({"targetUserId": b_id, "offer": offer_sdp(), "roomId": room})).await;
        assert_eq!(sio.event(&b, "offer").await, json!({"fromUserId": a_id, "offer": offer_sdp(), "roomId": room}));
        sio.emit(
            &b,
            "answer",
            json!({"targetUserId": a_id, "answer": {"type": "answer", "sdp": "v=0\r\n"}, "roomId": room}),
        )
        .await;
        assert_eq!(
            sio.event(&a, "answer").await,
            json!({"fromUserId": b_id, "answer": {"type": "answer", "sdp": "v=0\r\n"}, "roomId": room})
        );
        sio.emit(&a, "ice-candidate", json!({"targetUserId": b_id, "candidate": candidate, "roomId": room})).await;
        assert_eq!(
            sio.event(&b, "ice-candidate").await,
            json!({"fromUserId": a_id, "candidate": candidate, "roomId": room})
        );
        sio.emit(&b, "ice-candidate", json!({"targetUserId": a_id, "candidate": candidate, "roomId": room})).await;
        assert_eq!(sio.event(&a, "ice-candidate").await["fromUserId"], json!(b_id));

        sio.disconnect(&b).await;
        assert_eq!(sio.event(&a, "user-left").await, json!({"userId": b_id, "userName": "Bob"}));
        sio.no_event(&a, "user-left", Duration::from_millis(500)).await;
        sio.disconnect(&a).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_left_is_told_exactly_once_when_the_node_of_a_user_dies() {
    let redis = TestRedis::start().await;
    let timings = [("HEARTBEAT_INTERVAL_MS", "1000"), ("NODE_TTL_MS", "3000")];
    let n1 = NodeProcess::start(&redis.url(), "n1", &timings).await;
    let mut n2 = NodeProcess::start(&redis.url(), "n2", &timings).await;
    let mut sio = SioAgent::start().await;
    let (a_id, _) = sio.connect("a", &url(n1.addr), "/", &["websocket"]).await;
    let (b_id, _) = sio.connect("b", &url(n2.addr), "/", &["websocket"]).await;
    sio.emit("a", "join-room", join("r", "Ann", "interviewer")).await;
    sio.event("a", "existing-users").await;
    sio.emit("b", "join-room", join("r", "Bob", "candidate")).await;
    assert_eq!(sio.event("b", "existing-users").await[0]["id"], json!(a_id));
    sio.event("a", "user-joined").await;

    n2.kill9().await;
    assert_eq!(sio.event("a", "user-left").await, json!({"userId": b_id, "userName": "Bob"}));
    // The ghost sweep, the reaper and the bus must not tell it twice.
    sio.no_event("a", "user-left", Duration::from_secs(4)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_clients_joining_one_room_at_once_across_nodes_all_learn_each_other() {
    let (_redis, cluster) = two_nodes().await;
    let mut sio = SioAgent::start().await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let node = url(cluster.nodes[i % 2].addr);
        ids.push(sio.connect(&format!("c{i}"), &node, "/", &["websocket"]).await.0);
    }
    for i in 0..40 {
        sio.emit(&format!("c{i}"), "join-room", join("crowd", &format!("user {i}"), "observer")).await;
    }
    for (i, id) in ids.iter().enumerate() {
        let client = format!("c{i}");
        let existing = sio.event(&client, "existing-users").await;
        let mut known: Vec<String> =
            existing.as_array().unwrap().iter().map(|u| u["id"].as_str().unwrap().to_owned()).collect();
        while known.len() < 39 {
            known.push(sio.event(&client, "user-joined").await["userId"].as_str().unwrap().to_owned());
        }
        let unique: HashSet<&String> = known.iter().collect();
        assert_eq!(unique.len(), 39, "{client} heard someone twice: {known:?}");
        assert!(!unique.contains(id), "{client} was told of itself");
        assert!(ids.iter().filter(|other| *other != id).all(|other| unique.contains(other)));
    }
    sio.no_event("c0", "user-joined", Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_payload_is_refused_with_an_error_and_the_ack_and_joins_nothing() {
    let (_redis, cluster) = two_nodes().await;
    let mut sio = SioAgent::start().await;
    let (n1, n2) = (url(cluster.nodes[0].addr), url(cluster.nodes[1].addr));
    let (watcher, _) = sio.connect("watcher", &n2, "/", &["websocket"]).await;
    sio.emit("watcher", "join-room", join("r", "Wes", "observer")).await;
    sio.event("watcher", "existing-users").await;
    sio.connect("bad", &n1, "/", &["websocket"]).await;

    let long_room = "r".repeat(101);
    let long_name = "n".repeat(51);
    let cases = [
        (json!([null]), "Invalid payload"),
        (json!([]), "Invalid payload"),
        (json!(["r"]), "Invalid payload"),
        (json!([42]), "Invalid payload"),
        (json!([[1, 2]]), "Invalid payload"),
        (json!({}), "Invalid room ID"),
        (json!({"roomId": "", "userName": "A", "userRole": "candidate"}), "Invalid room ID"),
        (json!({"roomId": 7, "userName": "A", "userRole": "candidate"}), "Invalid room ID"),
        (json!({"roomId": long_room, "userName": "A", "userRole": "candidate"}), "Invalid room ID"),
        (json!({"roomId": "r", "userRole": "candidate"}), "Invalid user name"),
        (json!({"roomId": "r", "userName": long_name, "userRole": "candidate"}), "Invalid user name"),
        (json!({"roomId": "r", "userName": "A", "userRole": "admin"}), "Invalid user role"),
        (json!({"roomId": "r", "userName": "A", "userRole": null}), "Invalid user role"),
    ];
    for (args, expected) in cases {
        let ack = sio.emit_ack("bad", "join-room", args.clone()).await;
        assert!(ack["error"].as_str().is_some_and(|e| e.starts_with(expected)), "{args} -> ack {ack}");
        let error = sio.event("bad", "error").await;
        assert!(error["message"].as_str().is_some_and(|e| e.starts_with(expected)), "{args} -> {error}");
    }
    // Signals are checked too, and only members of a shared room may signal.
    let refused = [
        json!([null]),
        json!({"offer": offer_sdp(), "roomId": "r"}),
        json!({"targetUserId": watcher, "roomId": "r"}),
        json!({"targetUserId": watcher, "offer": offer_sdp(), "roomId": "r"}),
    ];
    for args in refused {
        let ack = sio.emit_ack("bad", "offer", args.clone()).await;
        assert!(ack["error"].is_string(), "{args} -> {ack}");
        sio.event("bad", "error").await;
    }
    let unknown = sio.emit_ack("bad", "teleport", json!({})).await;
    assert!(unknown["error"].as_str().unwrap().starts_with("Unknown event"), "{unknown}");
    sio.event("bad", "error").await;

    // Nothing was joined, nothing reached the room, and the socket still works.
    sio.no_event("watcher", "user-joined", Duration::from_millis(300)).await;
    sio.no_event("watcher", "offer", Duration::from_millis(1)).await;
    assert_eq!(sio.emit_ack("bad", "join-room", join("r", "Finally", "candidate")).await["ok"], true);
    assert_eq!(sio.event("watcher", "user-joined").await["userName"], "Finally");
    for node in &cluster.nodes {
        assert!(crate::helpers::nodes::ready(node.addr).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_meetings_gateway_works_end_to_end_across_nodes() {
    let (_redis, cluster) = two_nodes().await;
    let mut sio = SioAgent::start().await;
    let (n1, n2) = (url(cluster.nodes[0].addr), url(cluster.nodes[1].addr));
    let (x, _) = sio.connect("x", &n1, "/meetings", &["websocket"]).await;
    let (y, _) = sio.connect("y", &n2, "/meetings", &["polling", "websocket"]).await;

    let ack = sio
        .emit_ack(
            "x",
            "join-meeting",
            json!({"meetingId": "m1", "displayName": "Xena", "media": {"audio": true, "video": false}}),
        )
        .await;
    assert_eq!(ack, json!({"ok": true, "id": x}));
    let joined = sio.event("x", "meeting-joined").await;
    assert_eq!(
        (&joined["meetingId"], &joined["participantId"], &joined["participants"]),
        (&json!("m1"), &json!(x), &json!([]))
    );
    assert_eq!(sio.event("x", "meeting-started").await["meetingId"], "m1");

    sio.emit("y", "join-meeting", json!({"roomId": "m1", "name": "Yann"})).await;
    let joined = sio.event("y", "meeting-joined").await;
    let others = joined["participants"].as_array().unwrap();
    assert_eq!(others.len(), 1);
    assert_eq!((&others[0]["participantId"], &others[0]["displayName"]), (&json!(x), &json!("Xena")));
    assert_eq!(others[0]["media"], json!({"audio": true, "video": false, "screen": false}));
    sio.no_event("y", "meeting-started", Duration::from_millis(200)).await;
    let arrived = sio.event("x", "participant-joined").await;
    assert_eq!(
        (&arrived["participant"]["participantId"], &arrived["participant"]["displayName"]),
        (&json!(y), &json!("Yann"))
    );

    // Media and readiness are merged into the member and shown to the others.
    sio.emit("x", "toggle-media", json!({"meetingId": "m1", "type": "audio", "enabled": false})).await;
    let changed = sio.event("y", "participant-media-changed").await;
    assert_eq!(
        changed,
        json!({"meetingId": "m1", "participantId": x, "media": {"audio": false, "video": false, "screen": false}})
    );
    sio.emit("y", "participant-ready", json!({"meetingId": "m1"})).await;
    assert_eq!(
        sio.event("x", "participant-ready").await,
        json!({"meetingId": "m1", "participantId": y, "ready": true})
    );

    // Chat reaches everyone, its sender included, with an id and a timestamp.
    sio.emit("x", "chat-message", json!({"meetingId": "m1", "text": "hello"})).await;
    for who in ["x", "y"] {
        let chat = sio.event(who, "chat-message").await;
        assert_eq!(
            (&chat["senderId"], &chat["senderName"], &chat["text"]),
            (&json!(x), &json!("Xena"), &json!("hello"))
        );
        assert!(chat["id"].is_string() && chat["timestamp"].is_string(), "{chat}");
    }

    // Signalling, with the simple-peer signal passed through untouched.
    let signal = json!({"type": "offer", "sdp": "v=0\r\n"});
    sio.emit("x", "webrtc-signal", json!({"meetingId": "m1", "targetParticipantId": y, "signal": signal})).await;
    let got = sio.event("y", "webrtc-signal").await;
    assert_eq!((&got["fromParticipantId"], &got["signal"]), (&json!(x), &signal));
    for (event, field, value) in [
        ("webrtc-offer", "offer", json!({"type": "offer", "sdp": "o"})),
        ("webrtc-answer", "answer", json!({"type": "answer", "sdp": "a"})),
        ("webrtc-ice-candidate", "candidate", json!({"candidate": "c", "sdpMid": "0"})),
    ] {
        sio.emit("y", event, json!({"meetingId": "m1", "to": x, field: value})).await;
        let got = sio.event("x", event).await;
        assert_eq!((&got["fromParticipantId"], &got[field]), (&json!(y), &value), "{event}");
    }

    // A late joiner sees everybody's state.
    let (z, _) = sio.connect("z", &n1, "/meetings", &["websocket"]).await;
    sio.emit("z", "join-meeting", json!({"meetingId": "m1", "displayName": "Zed"})).await;
    let joined = sio.event("z", "meeting-joined").await;
    let by_id = |id: &str| {
        joined["participants"].as_array().unwrap().iter().find(|p| p["participantId"] == id).cloned().unwrap()
    };
    assert_eq!(by_id(&x)["media"], json!({"audio": false, "video": false, "screen": false}));
    assert_eq!(by_id(&y)["ready"], true);
    assert_ne!(z, x);

    sio.emit("y", "leave-meeting", json!({"meetingId": "m1"})).await;
    let left = sio.event("x", "participant-left").await;
    assert_eq!(
        (&left["participantId"], &left["displayName"], &left["reason"]),
        (&json!(y), &json!("Yann"), &json!("left"))
    );
    sio.emit("x", "webrtc-offer", json!({"meetingId": "m1", "targetParticipantId": y, "offer": {}})).await;
    let error = sio.event("x", "webrtc-error").await;
    assert_eq!(error["targetParticipantId"], json!(y), "{error}");
    let refused = sio.emit_ack("x", "toggle-media", json!({"meetingId": "m1"})).await;
    assert!(refused["error"].is_string(), "{refused}");
    sio.event("x", "exception").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_of_native_socketio_and_plain_members_signals_across_nodes() {
    let (_redis, cluster) = two_nodes().await;
    let mut native = cluster.client(0).await;
    let mut sio = SioAgent::start().await;
    let mut plain = PlainClient::connect(cluster.nodes[0].addr).await;

    native.join("mix").await;
    let (s1, _) = sio.connect("s1", &url(cluster.nodes[1].addr), "/", &["websocket"]).await;
    sio.emit("s1", "join-room", join("mix", "Sam", "candidate")).await;
    let existing = sio.event("s1", "existing-users").await;
    assert_eq!(existing[0]["id"], json!(native.peer().as_str()));
    match native.recv().await {
        ServerMsg::PeerJoined(j) => assert_eq!((j.peer.peer.as_str(), j.peer.name.as_str()), (s1.as_str(), "Sam")),
        other => panic!("{other:?}"),
    }
    plain.register("Worker-1", "mix").await;
    assert_eq!(sio.event("s1", "user-joined").await["userId"], "Worker-1");
    match native.recv().await {
        ServerMsg::PeerJoined(j) => assert_eq!(j.peer.peer.as_str(), "Worker-1"),
        other => panic!("{other:?}"),
    }

    // native -> Socket.IO: a signal of kind offer arrives as `offer`.
    let s1_peer = PeerId::parse(&s1).unwrap();
    native.signal("mix", &s1_peer, "offer", offer_sdp()).await;
    assert_eq!(
        sio.event("s1", "offer").await,
        json!({"fromUserId": native.peer().as_str(), "offer": offer_sdp(), "roomId": "mix"})
    );
    // Socket.IO -> native.
    sio.emit("s1", "answer", json!({"targetUserId": native.peer().as_str(), "answer": {"sdp": "a"}, "roomId": "mix"}))
        .await;
    let relayed = native.recv_signal().await;
    assert_eq!((relayed.from.as_str(), relayed.kind.as_str()), (s1.as_str(), "answer"));
    assert_eq!(serde_json::from_str::<Value>(relayed.data.get()).unwrap(), json!({"sdp": "a"}));
    // Socket.IO -> plain: wrapped with the plain addressing fields.
    sio.emit("s1", "ice-candidate", json!({"targetUserId": "Worker-1", "candidate": {"c": 1}, "roomId": "mix"})).await;
    assert_eq!(plain.recv().await, json!({"type": "candidate", "sender": s1, "target": "Worker-1", "data": {"c": 1}}));
    // plain -> Socket.IO: the whole plain message is the payload.
    let whole = json!({"type": "offer", "sender": "Worker-1", "target": s1, "sdp": "v=0"});
    plain.send(whole.clone()).await;
    assert_eq!(sio.event("s1", "offer").await, json!({"fromUserId": "Worker-1", "offer": whole, "roomId": "mix"}));

    // Leaving is seen by each in its own dialect. socket.disconnect() is a deliberate
    // goodbye (a namespace DISCONNECT packet): reason `left`.
    sio.disconnect("s1").await;
    let left = native.recv_peer_left().await;
    assert_eq!((left.peer.as_str(), left.reason), (s1.as_str(), LeftReason::Left));
    let msg = plain.recv().await;
    assert_eq!((&msg["type"], &msg["peer_id"]), (&json!("peer_left"), &json!(s1)));
}

/// One HTTP/1.0 request; the status, the headers (lower-cased names) and the body.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: test\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(40), stream.read_to_end(&mut buf)).await.expect("an answer").unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_io_http_refuses_bad_requests_in_its_own_error_shape_and_checks_origins() {
    let allowed = [("ALLOWED_ORIGINS", "https://meet.example.org")];
    let node = crate::helpers::nodes::InProcessNode::start(&Backend::Memory, &allowed).await;
    let addr = node.addr;
    let code = |body: &str| serde_json::from_str::<Value>(body).unwrap()["code"].clone();

    let (status, _, body) = http(addr, "GET", "/socket.io/?EIO=3&transport=polling", &[], "").await;
    assert_eq!((status, code(&body)), (400, json!(5)), "{body}");
    let (status, _, body) = http(addr, "GET", "/socket.io/?EIO=4&transport=pigeon", &[], "").await;
    assert_eq!((status, code(&body)), (400, json!(0)), "{body}");
    let (status, _, body) = http(addr, "GET", "/socket.io/?EIO=4&transport=polling&sid=nope", &[], "").await;
    assert_eq!((status, code(&body)), (400, json!(1)), "{body}");
    let evil = [("Origin", "https://evil.example")];
    let (status, _, body) = http(addr, "GET", "/socket.io/?EIO=4&transport=polling", &evil, "").await;
    assert_eq!((status, code(&body)), (403, json!(4)), "{body}");

    // A polling session from an allowed origin, by hand.
    let good = [("Origin", "https://meet.example.org")];
    let (status, headers, body) = http(addr, "GET", "/socket.io/?EIO=4&transport=polling", &good, "").await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.contains(&("access-control-allow-origin".into(), "https://meet.example.org".into())));
    let open: Value = serde_json::from_str(body.strip_prefix('0').expect("an open packet")).unwrap();
    assert_eq!((&open["upgrades"], &open["pingInterval"]), (&json!(["websocket"]), &json!(25000)));
    let session = format!("/socket.io/?EIO=4&transport=polling&sid={}", open["sid"].as_str().unwrap());

    let oversized = "4".repeat(1_000_001);
    assert_eq!(http(addr, "POST", &session, &good, &oversized).await.0, 413);
    // Several packets in one body, separated by \x1e, are read in order.
    let (status, _, body) = http(addr, "POST", &session, &good, "40\u{1e}9\u{1e}42[\"teleport\",{}]").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let mut frames = Vec::new();
    while frames.len() < 3 {
        let (status, _, body) = http(addr, "GET", &session, &good, "").await;
        assert_eq!(status, 200);
        frames.extend(body.split('\u{1e}').map(str::to_owned));
    }
    assert!(frames[0].starts_with(r#"40{"sid":"#), "{frames:?}");
    assert!(frames[1].starts_with(r#"42["error",{"message":"not an Engine.IO packet""#), "{frames:?}");
    assert!(frames[2].starts_with(r#"42["error",{"message":"Unknown event: teleport""#), "{frames:?}");
    assert!(crate::helpers::nodes::ready(addr).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_call_events_reach_their_target_across_nodes_and_a_bare_candidate_goes_to_the_call_partner() {
    let (_redis, cluster) = two_nodes().await;
    let mut sio = SioAgent::start().await;
    let (caller, _) = sio.connect("caller", &url(cluster.nodes[0].addr), "/", &["websocket"]).await;
    let (callee, _) = sio.connect("callee", &url(cluster.nodes[1].addr), "/", &["websocket"]).await;
    sio.emit("caller", "join-room", join("chat", "Cy", "observer")).await;
    sio.event("caller", "existing-users").await;
    sio.emit("callee", "join-room", join("chat", "Dee", "observer")).await;
    sio.event("callee", "existing-users").await;
    sio.event("caller", "user-joined").await;

    sio.emit("caller", "call-offer", json!({"target": callee, "offer": offer_sdp()})).await;
    let offer = sio.event("callee", "call-offer").await;
    assert_eq!((&offer["from"], &offer["offer"]), (&json!(caller), &offer_sdp()));
    // The callee's bare candidate goes to whoever offered the call it is in.
    let candidate =
        json!({"candidate": "candidate:1 1 udp 2122 10.0.0.2 5000 typ host", "sdpMid": "0", "sdpMLineIndex": 0});
    sio.emit("callee", "ice-candidate", candidate.clone()).await;
    let got = sio.event("caller", "ice-candidate").await;
    assert_eq!((&got["from"], &got["candidate"]), (&json!(callee), &candidate));
    sio.emit("callee", "call-answer", json!({"target": caller, "answer": {"type": "answer", "sdp": "v=0"}})).await;
    let answer = sio.event("caller", "call-answer").await;
    assert_eq!((&answer["from"], &answer["answer"]["type"]), (&json!(callee), &json!("answer")));
    sio.emit("caller", "ice-candidate", candidate.clone()).await;
    assert_eq!(sio.event("callee", "ice-candidate").await["from"], json!(caller));
    sio.emit("caller", "call-end", json!({"target": callee})).await;
    assert_eq!(sio.event("callee", "call-end").await["from"], json!(caller));
    // Call ended: a bare candidate has no one to go to, and says so.
    sio.emit("callee", "ice-candidate", candidate).await;
    let error = sio.event("callee", "error").await;
    assert!(error["message"].as_str().unwrap().contains("No call in progress"), "{error}");
}
