//! Identity and the room registry across two nodes with a private Redis: S4's flow
//! (anonymous sign-in, create-room, register with the room token), expired and unknown
//! rooms, AUTH_MODE=jwt in every dialect, and tokens verified against a JWKS
//! (RS256 shaped like Cognito ID tokens, ES256).

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use protocol::ServerMsg;
use serde_json::{json, Value};

use crate::helpers::socketio::{url, SioAgent};
use crate::helpers::{wait_until, Backend, Client, InProcessNode, TestCluster, TestRedis};
use crate::plain::PlainClient;

const ANON_SECRET: &str = "anonymous-token-secret-0123456789-abcdef";
const IDP_SECRET: &str = "identity-provider-secret-0123456789-abcdef";

async fn post(addr: std::net::SocketAddr, path: &str, bearer: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(format!("http://{addr}{path}")).json(&body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the node answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(addr: std::net::SocketAddr, path: &str, bearer: &str) -> (u16, Value) {
    let response = reqwest::Client::new().get(format!("http://{addr}{path}")).bearer_auth(bearer).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_s4_flow_works_across_nodes_and_refuses_wrong_tokens_and_unknown_rooms() {
    let redis = TestRedis::start().await;
    let settings = [("ANON_TOKEN_SECRET", ANON_SECRET), ("ROOMS_REQUIRE_CREATE", "true")];
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &settings).await;
    let (n1, n2) = (cluster.nodes[0].addr, cluster.nodes[1].addr);

    let (status, signin) = post(n1, "/anonymous-signin", None, json!({})).await;
    assert_eq!(status, 200, "{signin}");
    let id_token = signin["id_token"].as_str().unwrap().to_owned();
    assert!(signin["username"].as_str().unwrap().starts_with("Guest-"));
    let (status, refused) = post(n2, "/create-room", None, json!({})).await;
    assert_eq!(status, 401, "creating a room needs a token");
    assert!(refused["detail"].is_string(), "S4's error shape: {refused}");
    assert_eq!(post(n2, "/create-room", Some("not-a-jwt"), json!({})).await.0, 401);
    // S4's clients may send the token bare, without `Bearer `.
    let bare = reqwest::Client::new()
        .post(format!("http://{n2}/create-room"))
        .header("authorization", &id_token)
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status().as_u16(), 200);
    assert!(bare.json::<Value>().await.unwrap()["room_id"].is_string());
    // A token signed on node 1 is good on node 2: the nodes share the key.
    let (status, created) = post(n2, "/create-room", Some(&id_token), json!({})).await;
    assert_eq!(status, 200, "{created}");
    let (room, token) = (created["room_id"].as_str().unwrap(), created["token"].as_str().unwrap());

    let mut a = PlainClient::connect(n1).await;
    a.send(json!({"type":"register","peer_id":"Worker-1","room_id":room,"token":token,"id_token":id_token})).await;
    assert_eq!(a.recv().await, json!({"type":"registered_auth","room_id":room,"token":token,"peer_id":"Worker-1"}));
    let mut b = PlainClient::connect(n2).await;
    b.send(json!({"type":"register","peer_id":"Worker-2","room_id":room,"token":"wrong","id_token":id_token})).await;
    assert_eq!(b.recv_error().await, "Invalid token");
    b.send(json!({"type":"register","peer_id":"Worker-2","room_id":"nowhere","token":token})).await;
    assert_eq!(b.recv_error().await, "Room not found");
    b.send(json!({"type":"register","peer_id":"Worker-2","room_id":room,"token":token,"id_token":"forged.token.x"}))
        .await;
    assert_eq!(b.recv_error().await, "Invalid token", "a refused identity token stops the registration");
    b.send(json!({"type":"register","peer_id":"Worker-2","room_id":room,"token":token})).await;
    assert_eq!(b.recv().await["type"], "registered_auth");
    assert_eq!(a.recv().await, json!({"type":"peer_joined","room_id":room,"peer_id":"Worker-2"}));

    // A native client needs the same token; an implicit room does not exist here.
    let mut native = Client::connect(n1).await;
    native.send(json!({"type":"join","room":room})).await;
    assert_eq!(native.recv_error("unauthorized").await.code, protocol::ErrorCode::Unauthorized);
    native.send(json!({"type":"join","room":"made-up"})).await;
    native.recv_error("not-found").await;
    native.send(json!({"type":"join","room":room,"token":token})).await;
    assert!(matches!(native.recv().await, ServerMsg::Joined(j) if j.peers.len() == 2));

    // The room outlives its members until it expires: everyone leaves, the token still holds.
    drop((a, b, native));
    let (status, info) = get(n2, &format!("/api/rooms/{room}"), &id_token).await;
    assert_eq!((status, &info["expired"]), (200, &json!(false)), "{info}");
    assert!(info.get("token").is_none() && !info.to_string().contains(token), "the token is never shown again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_room_expires_and_is_refused_as_expired_in_each_dialect() {
    let redis = TestRedis::start().await;
    let settings = [("ANON_TOKEN_SECRET", ANON_SECRET), ("FRONTEND_URL", "https://meet.example.org/")];
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &settings).await;
    let (n1, n2) = (cluster.nodes[0].addr, cluster.nodes[1].addr);
    let id_token = post(n1, "/anonymous-signin", None, json!({"username": "Ada"})).await.1["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, created) =
        post(n1, "/api/rooms", Some(&id_token), json!({"room_id": "standup", "ttl_secs": 1, "capacity": 2})).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["url"], "https://meet.example.org/meeting/standup");
    let token = created["token"].as_str().unwrap().to_owned();
    assert_eq!(post(n2, "/api/rooms", Some(&id_token), json!({"room_id": "standup"})).await.0, 409);

    // Capacity 2, across nodes.
    let mut a = Client::connect(n1).await;
    a.send(json!({"type":"join","room":"standup","token":token})).await;
    assert!(matches!(a.recv().await, ServerMsg::Joined(_)));
    let mut b = Client::connect(n2).await;
    b.send(json!({"type":"join","room":"standup","token":token})).await;
    assert!(matches!(b.recv().await, ServerMsg::Joined(_)));
    let mut c = Client::connect(n2).await;
    c.send(json!({"type":"join","room":"standup","token":token})).await;
    c.recv_error("room-full").await;

    wait_until(Duration::from_secs(5), "the room to expire", || async {
        get(n2, "/api/rooms/standup", &id_token).await.1["expired"] == json!(true)
    })
    .await;
    c.send(json!({"type":"join","room":"standup","token":token})).await;
    c.recv_error("room-expired").await;
    let mut plain = PlainClient::connect(n2).await;
    plain.send(json!({"type":"register","peer_id":"Late","room_id":"standup","token":token})).await;
    assert_eq!(plain.recv_error().await, "Room expired");
    let mut sio = SioAgent::start().await;
    sio.connect("s", &url(n1), "/", &["websocket"]).await;
    let ack =
        sio.emit_ack("s", "join-room", json!({"roomId": "standup", "userName": "S", "userRole": "observer"})).await;
    assert_eq!(ack["code"], "room-expired", "{ack}");

    // The members inside when it expired are told and removed (ROOM_EXPIRY=close).
    for member in [&mut a, &mut b] {
        loop {
            match member.recv().await {
                ServerMsg::RoomClosed(c) => break assert_eq!(c.reason, protocol::CloseReason::Expired),
                ServerMsg::PeerJoined(_) | ServerMsg::PeerLeft(_) => continue,
                other => panic!("{other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_room_expiry_finish_members_inside_an_expired_room_stay() {
    let settings = [("ROOM_EXPIRY", "finish"), ("HEARTBEAT_INTERVAL_MS", "100"), ("NODE_TTL_MS", "1000")];
    let cluster = TestCluster::start_with(&Backend::Memory, 1, &settings).await;
    let node = cluster.nodes[0].addr;
    let id_token = post(node, "/anonymous-signin", None, json!({})).await.1["id_token"].as_str().unwrap().to_owned();
    let created = post(node, "/api/rooms", Some(&id_token), json!({"room_id": "overtime", "ttl_secs": 1})).await.1;
    let mut a = Client::connect(node).await;
    a.send(json!({"type":"join","room":"overtime","token":created["token"]})).await;
    assert!(matches!(a.recv().await, ServerMsg::Joined(_)));
    wait_until(Duration::from_secs(5), "the room to expire", || async {
        get(node, "/api/rooms/overtime", &id_token).await.1["expired"] == json!(true)
    })
    .await;
    // Several heartbeats later the member is still in: no room-closed, and it may act.
    a.expect_silence(Duration::from_millis(500)).await;
    a.send(json!({"type":"members","room":"overtime","id":"m"})).await;
    assert!(matches!(a.recv().await, ServerMsg::Members(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_jwt_mode_a_valid_token_is_required_in_every_dialect_and_its_claims_win() {
    let redis = TestRedis::start().await;
    let settings = [
        ("AUTH_MODE", "jwt"),
        ("JWT_HS256_SECRET", IDP_SECRET),
        ("JWT_ISSUER", "https://idp.example.org"),
        ("JWT_AUDIENCE", "meetings"),
        ("JWT_LEEWAY_SECS", "0"),
    ];
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &settings).await;
    let (n1, n2) = (cluster.nodes[0].addr, cluster.nodes[1].addr);
    let claims = |sub: &str, exp: u64| json!({"sub": sub, "name": "Alice Liddell", "role": "host", "iss": "https://idp.example.org", "aud": "meetings", "exp": exp});
    let good = hs256(&claims("alice", now() + 600), IDP_SECRET);

    // Refused at the upgrade: expired, wrong audience, wrong key, `none`, and an RS256
    // header over the shared secret (algorithm confusion).
    let mut wrong_aud = claims("alice", now() + 600);
    wrong_aud["aud"] = json!("someone-else");
    let header_none = base64_url(r#"{"alg":"none","typ":"JWT"}"#);
    let body = base64_url(&claims("alice", now() + 600).to_string());
    let confused = format!("{}.{}", base64_url(r#"{"alg":"RS256","typ":"JWT"}"#), good.split_once('.').unwrap().1);
    for bad in [
        hs256(&claims("alice", now() - 60), IDP_SECRET),
        hs256(&wrong_aud, IDP_SECRET),
        hs256(&claims("alice", now() + 600), "another-secret-0123456789-0123456789-xx"),
        format!("{header_none}.{body}."),
        confused,
    ] {
        assert_eq!(Client::try_connect(n1, "", Some(&bad)).await.err(), Some(401), "{bad}");
    }

    // Native: nothing works without a token; with one, the claims name the member.
    let mut anonymous = Client::connect(n1).await;
    anonymous.send(json!({"type":"join","room":"board"})).await;
    anonymous.recv_error("unauthorized").await;
    anonymous.send(json!({"type":"auth","token":good,"id":"a1"})).await;
    match anonymous.recv().await {
        ServerMsg::Authenticated(a) => {
            assert_eq!(
                (a.subject.as_deref(), a.name.as_deref(), a.role.as_deref()),
                (Some("alice"), Some("Alice Liddell"), Some("host"))
            )
        }
        other => panic!("{other:?}"),
    }
    let mut bob =
        Client::try_connect(n2, &format!("?access_token={}", hs256(&claims("bob", now() + 600), IDP_SECRET)), None)
            .await
            .unwrap();
    let joined = bob.join_with(json!({"type":"join","room":"board","name":"declared","role":"viewer"})).await;
    assert!(joined.peers.is_empty());
    let mut header = Client::try_connect(n1, "", Some(&good)).await.unwrap();
    let joined = header.join_with(json!({"type":"join","room":"board","name":"mallory"})).await;
    assert_eq!((joined.peers[0].name.as_str(), joined.peers[0].role.as_str()), ("Alice Liddell", "host"));

    // Socket.IO: the handshake's auth.token, or a CONNECT_ERROR.
    let mut sio = SioAgent::start().await;
    let refused = sio.connect_error("nobody", &url(n1), "/", None).await;
    assert!(refused.contains("token is required"), "{refused}");
    sio.connect_with_auth("alice", &url(n2), "/meetings", json!({"token": good})).await;
    sio.emit("alice", "join-meeting", json!({"meetingId": "board", "displayName": "declared"})).await;
    let me = sio.event("alice", "meeting-joined").await;
    assert_eq!(me["participant"]["displayName"], "Alice Liddell", "{me}");

    // Plain: id_token in register.
    let mut plain = PlainClient::connect(n1).await;
    plain.send(json!({"type":"register","peer_id":"W","room_id":"board"})).await;
    assert_eq!(plain.recv_error().await, "Invalid token");
    plain.send(json!({"type":"register","peer_id":"W","room_id":"board","id_token":good})).await;
    assert_eq!(plain.recv().await["type"], "registered_auth");
}

fn base64_url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_and_es256_tokens_verify_against_a_jwks_file_with_cognito_shaped_claims() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let pool = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_TeSt1234";
    let client_id = "3n4b5urk1ft4fl3mg5e62d9ado";
    let ec_pem = std::fs::read_to_string(fixtures.join("ec-test-key.pem")).unwrap();
    let ec = auth::TokenIssuer::es256_from_pem(&ec_pem, pool, client_id, Duration::from_secs(600)).unwrap();
    let n = std::fs::read_to_string(fixtures.join("rsa-test-key.n")).unwrap();
    let mut jwks = ec.jwks().unwrap();
    jwks["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig", "n": n.trim(), "e": "AQAB"}));
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();

    let redis = TestRedis::start().await;
    let settings = [
        ("AUTH_MODE", "jwt"),
        ("JWT_JWKS_FILE", jwks_file.to_str().unwrap()),
        ("JWT_ISSUER", pool),
        ("JWT_AUDIENCE", client_id),
    ];
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &settings).await;

    // An ID token as Cognito issues it.
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(fixtures.join("rsa-test-key.pem")).unwrap()).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let cognito = json!({
        "sub": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "cognito:username": "grace", "email": "grace@example.org",
        "token_use": "id", "auth_time": now(), "iss": pool, "aud": client_id, "iat": now(), "exp": now() + 600,
    });
    let id_token = jsonwebtoken::encode(&header, &cognito, &rsa).unwrap();
    let mut a = Client::try_connect(cluster.nodes[0].addr, "", Some(&id_token)).await.expect("RS256 accepted");
    let joined = a.join_with(json!({"type":"join","room":"r"})).await;
    assert!(joined.peers.is_empty());
    let (es256, _) = ec.issue("ec-user", "Edsger");
    let mut b = Client::try_connect(cluster.nodes[1].addr, "", Some(&es256)).await.expect("ES256 accepted");
    let joined = b.join_with(json!({"type":"join","room":"r"})).await;
    assert_eq!(joined.peers[0].name.as_str(), "grace", "cognito:username names the member");

    // The wrong audience (an access token's client), a key not in the set, an unknown kid.
    let mut other_client = cognito.clone();
    other_client["aud"] = json!("another-client");
    let wrong_aud = jsonwebtoken::encode(&header, &other_client, &rsa).unwrap();
    header.kid = Some("rsa-unknown".into());
    let unknown_kid = jsonwebtoken::encode(&header, &cognito, &rsa).unwrap();
    for bad in [wrong_aud, unknown_kid] {
        assert_eq!(Client::try_connect(cluster.nodes[0].addr, "", Some(&bad)).await.err(), Some(401));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_created_room_closes_it_for_every_member_on_every_node_in_their_dialects() {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &[("ANON_TOKEN_SECRET", ANON_SECRET)]).await;
    let (n1, n2) = (cluster.nodes[0].addr, cluster.nodes[1].addr);
    let signin = |addr| async move {
        post(addr, "/anonymous-signin", None, json!({})).await.1["id_token"].as_str().unwrap().to_owned()
    };
    let (creator, stranger) = (signin(n1).await, signin(n2).await);
    let created = post(n1, "/api/rooms", Some(&creator), json!({"room_id": "townhall"})).await.1;
    let token = created["token"].as_str().unwrap().to_owned();

    let mut native = Client::connect(n1).await;
    native.send(json!({"type":"join","room":"townhall","name":"Nat","token":token})).await;
    assert!(matches!(native.recv().await, ServerMsg::Joined(_)));
    let mut plain = PlainClient::connect(n2).await;
    plain.send(json!({"type":"register","peer_id":"Worker-1","room_id":"townhall","token":token})).await;
    assert_eq!(plain.recv().await["type"], "registered_auth");
    let mut sio = SioAgent::start().await;
    sio.connect("s1", &url(n1), "/", &["websocket"]).await;
    let joined = sio
        .emit_ack(
            "s1",
            "join-room",
            json!({"roomId": "townhall", "userName": "Sam", "userRole": "observer", "token": token}),
        )
        .await;
    assert_eq!(joined["ok"], true, "{joined}");
    sio.connect("m", &url(n2), "/meetings", &["websocket"]).await;
    let joined =
        sio.emit_ack("m", "join-meeting", json!({"meetingId": "townhall", "name": "Meg", "token": token})).await;
    assert_eq!(joined["ok"], true, "{joined}");

    assert_eq!(reqwest_delete(n2, "/api/rooms/townhall", &stranger).await, 403, "only its creator or hosts");
    assert_eq!(reqwest_delete(n2, "/api/rooms/townhall", &creator).await, 200);

    // Each member, on either node, is told in its own dialect and is out of the room.
    loop {
        match native.recv().await {
            ServerMsg::RoomClosed(c) => {
                assert_eq!((c.room.as_str(), c.reason), ("townhall", protocol::CloseReason::Ended));
                break;
            }
            ServerMsg::PeerJoined(_) | ServerMsg::PeerLeft(_) => continue,
            other => panic!("{other:?}"),
        }
    }
    loop {
        let msg = plain.recv().await;
        if msg["type"] == "error" {
            assert_eq!(msg["reason"], "Room closed");
            break;
        }
        assert!(msg["type"] == "peer_joined" || msg["type"] == "peer_left", "{msg}");
    }
    let error = sio.event("s1", "error").await;
    assert_eq!((&error["code"], &error["roomId"]), (&json!("room-closed"), &json!("townhall")));
    // S1 has no event for a room closing: its clients see everyone leave.
    let mut gone = std::collections::HashSet::new();
    while gone.len() < 3 {
        gone.insert(sio.event("s1", "user-left").await["userName"].as_str().unwrap().to_owned());
    }
    assert_eq!(gone, ["Nat", "Worker-1", "Meg"].map(String::from).into_iter().collect());
    let ended = sio.event("m", "meeting-ended").await;
    assert_eq!((&ended["meetingId"], &ended["reason"]), (&json!("townhall"), &json!("ended")));

    // (Departures already on their way when it left may still arrive.)
    native.send(json!({"type":"broadcast","room":"townhall","kind":"chat","data":{},"id":"b1"})).await;
    loop {
        match native.recv().await {
            ServerMsg::PeerLeft(left) => assert_eq!(left.reason, protocol::LeftReason::Closed),
            ServerMsg::Error(e) => break assert_eq!(e.code, protocol::ErrorCode::NotInRoom),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(get(n1, "/api/rooms/townhall", &creator).await.0, 404, "the registration is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_host_ends_a_meeting_across_nodes_and_others_may_not() {
    let redis = TestRedis::start().await;
    let settings = [("JWT_HS256_SECRET", IDP_SECRET)];
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &settings).await;
    let (n1, n2) = (cluster.nodes[0].addr, cluster.nodes[1].addr);
    let host = hs256(&json!({"sub": "h", "name": "Hana", "role": "host", "exp": now() + 600}), IDP_SECRET);
    let guest = hs256(&json!({"sub": "g", "name": "Gus", "exp": now() + 600}), IDP_SECRET);

    let mut sio = SioAgent::start().await;
    sio.connect_with_auth("host", &url(n1), "/meetings", json!({"token": host})).await;
    sio.connect_with_auth("guest", &url(n2), "/meetings", json!({"token": guest})).await;
    sio.emit("host", "join-meeting", json!({"meetingId": "weekly"})).await;
    sio.event("host", "meeting-joined").await;
    sio.emit("guest", "join-meeting", json!({"meetingId": "weekly"})).await;
    sio.event("guest", "meeting-joined").await;
    // A native member who declares itself host is not one: only a verified claim counts.
    let mut native = Client::connect(n2).await;
    native.join_with(json!({"type":"join","room":"weekly","name":"Nia","role":"host"})).await;
    native.send(json!({"type":"close","room":"weekly","id":"c1"})).await;
    assert_eq!(native.recv_error("forbidden").await.code, protocol::ErrorCode::Forbidden);

    let refused = sio.emit_ack("guest", "end-meeting", json!({"meetingId": "weekly"})).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    let done = sio.emit_ack("host", "end-meeting", json!({"meetingId": "weekly"})).await;
    assert_eq!(done["ok"], true, "{done}");
    for who in ["host", "guest"] {
        assert_eq!(sio.event(who, "meeting-ended").await["reason"], "ended");
    }
    loop {
        match native.recv().await {
            ServerMsg::RoomClosed(c) => break assert_eq!(c.room.as_str(), "weekly"),
            ServerMsg::PeerJoined(_) | ServerMsg::PeerLeft(_) => continue,
            other => panic!("{other:?}"),
        }
    }
}

async fn reqwest_delete(addr: std::net::SocketAddr, path: &str, bearer: &str) -> u16 {
    let response = reqwest::Client::new().delete(format!("http://{addr}{path}")).bearer_auth(bearer).send().await;
    response.expect("the node answers").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_api_counts_members_on_every_node_behind_its_token() {
    let redis = TestRedis::start().await;
    let settings = [("STATUS_TOKEN", "status-token-0123456789")];
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &settings).await;
    let (n1, n2) = (cluster.nodes[0].addr, cluster.nodes[1].addr);
    let mut native = Client::connect(n1).await;
    native.join_with(json!({"type":"join","room":"interview-1","name":"Nat","role":"interviewer"})).await;
    let mut sio = SioAgent::start().await;
    sio.connect("s", &url(n2), "/", &["websocket"]).await;
    sio.emit("s", "join-room", json!({"roomId": "interview-1", "userName": "Sam", "userRole": "candidate"})).await;
    sio.event("s", "existing-users").await;
    let mut plain = PlainClient::connect(n2).await;
    plain.register("Worker-1", "interview-2").await;

    let unauthenticated = reqwest::get(format!("http://{n1}/api/health")).await.unwrap();
    assert_eq!(unauthenticated.status().as_u16(), 401);
    let wrong = reqwest::get(format!("http://{n1}/api/health?token=nope")).await.unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert_eq!(wrong.json::<Value>().await.unwrap(), json!({"error": "Unauthorized"}), "S1's answer");
    let health: Value = reqwest::get(format!("http://{n1}/api/health?token=status-token-0123456789"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((&health["status"], &health["rooms"], &health["totalUsers"]), (&json!("healthy"), &json!(2), &json!(3)));
    let (status, listed) = get(n2, "/api/rooms", "status-token-0123456789").await;
    assert_eq!(status, 200);
    let room = listed["rooms"].as_array().unwrap().iter().find(|r| r["roomId"] == "interview-1").unwrap().clone();
    assert_eq!(room["userCount"], 2);
    let mut names: Vec<&str> = room["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["Nat", "Sam"]);
    assert_eq!(reqwest::get(format!("http://{n1}/health")).await.unwrap().text().await.unwrap(), "OK");
    assert_eq!(reqwest::get(format!("http://{n2}/ready")).await.unwrap().text().await.unwrap(), "READY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_status_token_health_counts_answer_anyone_and_room_names_stay_private() {
    let node = InProcessNode::start(&Backend::Memory, &[]).await;
    let addr = node.addr;
    let mut plain = PlainClient::connect(addr).await;
    plain.register("Worker-1", "private-room").await;
    let health = reqwest::get(format!("http://{addr}/api/health")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200, "S1 answered its health without a token");
    let health: Value = health.json().await.unwrap();
    assert_eq!((&health["rooms"], &health["totalUsers"]), (&json!(1), &json!(1)));
    let rooms = reqwest::get(format!("http://{addr}/api/rooms")).await.unwrap();
    assert_eq!(rooms.status().as_u16(), 503);
    assert!(!rooms.text().await.unwrap().contains("private-room"));
    let unknown = reqwest::get(format!("http://{addr}/api/no/such/thing")).await.unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    assert_eq!(unknown.json::<Value>().await.unwrap(), json!({"error": "API endpoint not found"}));
    let alive = reqwest::get(format!("http://{addr}/healthz")).await.unwrap();
    assert_eq!(alive.status().as_u16(), 200);
    assert_eq!(alive.json::<Value>().await.unwrap()["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_peers_and_room_closes_the_peers_room_and_a_token_admits_to_its_own_room_only() {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &[("ANON_TOKEN_SECRET", ANON_SECRET)]).await;
    let (n1, n2) = (cluster.nodes[0].addr, cluster.nodes[1].addr);
    let id_token = post(n1, "/anonymous-signin", None, json!({})).await.1["id_token"].as_str().unwrap().to_owned();
    let first = post(n1, "/create-room", Some(&id_token), json!({})).await.1;
    let second = post(n2, "/create-room", Some(&id_token), json!({})).await.1;
    let (room, token) = (first["room_id"].as_str().unwrap(), first["token"].as_str().unwrap());
    let other_room = second["room_id"].as_str().unwrap();

    let mut a = PlainClient::connect(n1).await;
    a.send(json!({"type":"register","peer_id":"Worker-1","room_id":room,"token":token})).await;
    assert_eq!(a.recv().await["type"], "registered_auth");
    let mut b = PlainClient::connect(n2).await;
    // The first room's token does not open the second, on either node.
    b.send(json!({"type":"register","peer_id":"Worker-2","room_id":other_room,"token":token})).await;
    assert_eq!(b.recv_error().await, "Invalid token");
    b.send(json!({"type":"register","peer_id":"Worker-2","room_id":room,"token":token})).await;
    assert_eq!(b.recv().await["type"], "registered_auth");

    let (status, unknown) = post(n2, "/delete-peers-and-room", Some(&id_token), json!({"peer_id": "Nobody"})).await;
    assert_eq!((status, unknown), (404, json!({"detail": "peer not found"})), "S4's answer");
    let (status, deleted) = post(n2, "/delete-peers-and-room", Some(&id_token), json!({"peer_id": "Worker-2"})).await;
    assert_eq!((status, deleted["room_id"].as_str()), (200, Some(room)), "{deleted}");
    assert_eq!(deleted["status"], "peer deleted successfully", "S4's answer");
    for client in [&mut a, &mut b] {
        loop {
            let msg = client.recv().await;
            if msg["type"] == "error" {
                break assert_eq!(msg["reason"], "Room closed");
            }
        }
    }
    // (Departures already on their way when it left may still arrive first.)
    a.send(json!({"type":"register","peer_id":"Worker-9","room_id":room,"token":token})).await;
    loop {
        let msg = a.recv().await;
        if msg["type"] == "error" {
            break assert_eq!(msg["reason"], "Already registered on this connection.");
        }
        assert_eq!((&msg["type"], &msg["reason"]), (&json!("peer_left"), &json!("closed")), "{msg}");
    }
    let mut c = PlainClient::connect(n1).await;
    c.send(json!({"type":"register","peer_id":"Worker-9","room_id":room,"token":token})).await;
    assert_eq!(c.recv().await["type"], "registered_auth", "a deleted room is an implicit one again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_rules_let_observers_receive_offers_but_not_send_them() {
    let redis = TestRedis::start().await;
    let settings = [("ROLE_DENY", "observer:offer,answer,candidate")];
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &settings).await;
    let mut sio = SioAgent::start().await;
    let (watcher, _) = sio.connect("watcher", &url(cluster.nodes[0].addr), "/", &["websocket"]).await;
    let (lead, _) = sio.connect("lead", &url(cluster.nodes[1].addr), "/", &["websocket"]).await;
    sio.emit("watcher", "join-room", json!({"roomId": "panel", "userName": "W", "userRole": "observer"})).await;
    sio.event("watcher", "existing-users").await;
    sio.emit("lead", "join-room", json!({"roomId": "panel", "userName": "L", "userRole": "interviewer"})).await;
    sio.event("lead", "existing-users").await;

    let refused =
        sio.emit_ack("watcher", "offer", json!({"targetUserId": lead, "offer": {"sdp": "x"}, "roomId": "panel"})).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("observer"), "{refused}");
    sio.no_event("lead", "offer", Duration::from_millis(200)).await;
    sio.emit("lead", "offer", json!({"targetUserId": watcher, "offer": {"sdp": "y"}, "roomId": "panel"})).await;
    assert_eq!(sio.event("watcher", "offer").await["offer"], json!({"sdp": "y"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_removes_a_member_on_another_node_and_locks_the_room() {
    let redis = TestRedis::start().await;
    let cluster = TestCluster::start_with(&Backend::Redis(redis.url()), 2, &[("JWT_HS256_SECRET", IDP_SECRET)]).await;
    let (n1, n2) = (cluster.nodes[0].addr, cluster.nodes[1].addr);
    let host_token = hs256(&json!({"sub": "h", "name": "Hana", "role": "host", "exp": now() + 600}), IDP_SECRET);
    let mut host = Client::try_connect(n1, "", Some(&host_token)).await.unwrap();
    host.join("studio").await;
    let mut guest = Client::connect(n2).await;
    guest.join("studio").await;
    assert!(matches!(host.recv().await, ServerMsg::PeerJoined(_)));

    // Not a host: refused.
    guest.send(json!({"type":"remove","room":"studio","peer":host.peer().as_str(),"id":1})).await;
    guest.recv_error("forbidden").await;
    guest.send(json!({"type":"lock","room":"studio","id":2})).await;
    guest.recv_error("forbidden").await;

    host.send(json!({"type":"remove","room":"studio","peer":guest.peer().as_str(),"id":3})).await;
    assert!(matches!(host.recv().await, ServerMsg::Done(_)));
    match guest.recv().await {
        ServerMsg::RoomClosed(c) => assert_eq!(c.reason, protocol::CloseReason::Removed),
        other => panic!("{other:?}"),
    }
    let left = host.recv_peer_left().await;
    assert_eq!((left.peer.as_str(), left.reason), (guest.peer().as_str(), protocol::LeftReason::Removed));

    host.send(json!({"type":"lock","room":"studio","id":4})).await;
    assert!(matches!(host.recv().await, ServerMsg::Done(_)));
    guest.send(json!({"type":"join","room":"studio"})).await;
    assert!(guest.recv_error("forbidden").await.message.contains("locked"));
    host.send(json!({"type":"lock","room":"studio","locked":false,"id":5})).await;
    assert!(matches!(host.recv().await, ServerMsg::Done(_)));
    guest.join("studio").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_and_per_connection_limits_answer_429_with_retry_after() {
    let settings = [
        ("IP_MAX_CONNECTIONS", "2"),
        ("JOINS_PER_MINUTE", "2"),
        ("API_RATE_LIMIT", "3"),
        ("ANON_TOKEN_SECRET", ANON_SECRET),
    ];
    let cluster = TestCluster::start_with(&Backend::Memory, 1, &settings).await;
    let node = cluster.nodes[0].addr;

    // Open connections per address: the third is refused while two are open, and
    // admitted again once one has closed.
    let mut a = Client::connect(node).await;
    let b = Client::connect(node).await;
    assert_eq!(Client::try_connect(node, "", None).await.err(), Some(429));
    b.close().await;
    wait_until(Duration::from_secs(5), "a place to come back", || async {
        Client::try_connect(node, "", None).await.is_ok()
    })
    .await;

    // Joins per connection per minute.
    a.join("one").await;
    a.join("two").await;
    a.send(json!({"type":"join","room":"three","id":"j3"})).await;
    assert!(a.recv_error("rate-limited").await.message.contains("joins"));

    // The HTTP API: 3 requests per window per address, then 429 with Retry-After.
    for _ in 0..3 {
        assert_eq!(post(node, "/anonymous-signin", None, json!({})).await.0, 200);
    }
    let response = reqwest::Client::new().post(format!("http://{node}/anonymous-signin")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "{retry}");

    // New connections per second per address, on a node that limits them.
    let rated =
        TestCluster::start_with(&Backend::Memory, 1, &[("IP_CONNECTS_PER_SEC", "1"), ("IP_CONNECTS_BURST", "2")]).await;
    let _first = Client::connect(rated.nodes[0].addr).await;
    let _second = Client::connect(rated.nodes[0].addr).await;
    assert_eq!(Client::try_connect(rated.nodes[0].addr, "", None).await.err(), Some(429));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_secrets_never_reach_logs_errors_or_metrics() {
    let redis = TestRedis::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("node.log");
    let settings = [
        ("ANON_TOKEN_SECRET", ANON_SECRET),
        ("JWT_HS256_SECRET", IDP_SECRET),
        ("STATUS_TOKEN", "status-token-0123456789"),
        ("RUST_LOG", "debug"),
    ];
    let node = crate::helpers::NodeProcess::start_with_log(&redis.url(), "n1", &settings, Some(&log)).await;
    let addr = node.addr;
    let id_token = post(addr, "/anonymous-signin", None, json!({})).await.1["id_token"].as_str().unwrap().to_owned();
    let idp = hs256(&json!({"sub": "s", "exp": now() + 600}), IDP_SECRET);
    let forged = format!("{}x", &idp[..idp.len() - 1]);
    let created = post(addr, "/create-room", Some(&id_token), json!({})).await.1;
    let (room, room_token) = (created["room_id"].as_str().unwrap(), created["token"].as_str().unwrap());

    // Every place a token is presented, valid and not.
    let mut errors = Vec::new();
    let mut native = Client::try_connect(addr, "", Some(&idp)).await.unwrap();
    native.send(json!({"type":"auth","token":forged})).await;
    errors.push(native.recv_error("unauthorized").await.message);
    native.send(json!({"type":"join","room":room,"token":"not-the-room-token"})).await;
    errors.push(native.recv_error("unauthorized").await.message);
    native.send(json!({"type":"join","room":room,"token":room_token})).await;
    assert!(matches!(native.recv().await, ServerMsg::Joined(_)));
    let refused = reqwest::Client::new().post(format!("http://{addr}/create-room")).bearer_auth(&forged).send().await;
    errors.push(refused.unwrap().text().await.unwrap());
    let mut plain = PlainClient::connect(addr).await;
    plain.send(json!({"type":"register","peer_id":"W","room_id":room,"token":room_token,"id_token":forged})).await;
    errors.push(plain.recv_error().await);
    let metrics = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    let health = reqwest::get(format!("http://{addr}/api/health?token=status-token-0123456789")).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    drop((native, plain));

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("room created"), "the log is being written at debug level");
    let secrets = [
        id_token.as_str(),
        idp.as_str(),
        forged.as_str(),
        room_token,
        ANON_SECRET,
        IDP_SECRET,
        "status-token-0123456789",
    ];
    for secret in secrets {
        // A token's signature is its secret part: look for it, and for the whole.
        let tail = secret.rsplit('.').next().unwrap();
        for (place, text) in [("log", &logged), ("metrics", &metrics)] {
            assert!(!text.contains(tail), "a secret reached the {place}");
        }
        for error in &errors {
            assert!(!error.contains(tail), "a secret reached an error: {error}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_anonymous_tokens_are_verified_elsewhere_with_the_published_jwks() {
    let key = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ec-test-key.pem");
    let issuing = TestCluster::start_with(&Backend::Memory, 1, &[("ANON_TOKEN_KEY_FILE", key.to_str().unwrap())]).await;
    let addr = issuing.nodes[0].addr;
    let signin = post(addr, "/anonymous-signin", None, json!({"username": "Ada"})).await.1;
    let token = signin["id_token"].as_str().unwrap().to_owned();
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    let jwks: Value = reqwest::get(format!("http://{addr}/.well-known/jwks.json")).await.unwrap().json().await.unwrap();
    assert_eq!(jwks["keys"][0]["kid"].as_str(), header.kid.as_deref());
    assert!(jwks["keys"][0].get("d").is_none(), "only the public key is published");

    // Another service (here: a node that does not issue) verifies them with that JWKS.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, jwks.to_string()).unwrap();
    let verifying = TestCluster::start_with(
        &Backend::Memory,
        1,
        &[
            ("AUTH_MODE", "jwt"),
            ("JWT_JWKS_FILE", file.to_str().unwrap()),
            ("JWT_ISSUER", "signal"),
            ("JWT_AUDIENCE", "signal"),
        ],
    )
    .await;
    let mut client = Client::try_connect(verifying.nodes[0].addr, "", Some(&token)).await.expect("accepted");
    let joined = client.join_with(json!({"type":"join","room":"r","name":"declared"})).await;
    assert!(joined.peers.is_empty());
    let mut other = Client::try_connect(verifying.nodes[0].addr, "", Some(&token)).await.unwrap();
    let joined = other.join_with(json!({"type":"join","room":"r"})).await;
    assert_eq!(joined.peers[0].name.as_str(), "Ada", "the token's name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_answers_cors_for_allowed_origins_only() {
    let settings = [("ALLOWED_ORIGINS", "https://meet.example.org"), ("ANON_TOKEN_SECRET", ANON_SECRET)];
    let cluster = TestCluster::start_with(&Backend::Memory, 1, &settings).await;
    let node = cluster.nodes[0].addr;
    let preflight = |origin: &'static str| async move {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, format!("http://{node}/api/rooms"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
            .await
            .unwrap()
    };
    let allowed = preflight("https://meet.example.org").await;
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://meet.example.org");
    let methods = allowed.headers()["access-control-allow-methods"].to_str().unwrap().to_owned();
    assert!(methods.contains("POST") && methods.contains("DELETE"), "{methods}");
    let refused = preflight("https://evil.example").await;
    assert!(refused.headers().get("access-control-allow-origin").is_none());
    let signin = reqwest::Client::new()
        .post(format!("http://{node}/anonymous-signin"))
        .header("origin", "https://meet.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(signin.headers()["access-control-allow-origin"], "https://meet.example.org");
}
