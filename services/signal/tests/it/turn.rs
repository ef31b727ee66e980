//! TURN credentials on the node's own origin (TURN_SECRET set), minted by the credential
//! service's own code and checked by a real coturn, as the single-process servers this
//! replaces served them; without a TURN setting, those paths are not the node's.

use testkit::{http_get, CoturnOptions, TestCoturn};

use crate::helpers::{Backend, InProcessNode};

const REALM: &str = "signal.test";
const SECRET: &str = "node-turn-secret-0123456789";

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_turn_secret_answers_credentials_that_coturn_accepts() {
    let coturn =
        TestCoturn::start(REALM, CoturnOptions { static_secret: Some(SECRET.into()), ..Default::default() }).await;
    let port = coturn.port.to_string();
    let settings = [
        ("TURN_SECRET", SECRET),
        ("TURN_REALM", REALM),
        ("TURN_HOST", "127.0.0.1"),
        ("TURN_PORT", port.as_str()),
        ("TURN_TRANSPORTS", "udp,tcp"),
        ("STUN_URLS", "stun:stun.l.google.com:19302"),
    ];
    // The embedded default: one node, no Redis.
    let node = InProcessNode::start(&Backend::Memory, &settings).await;

    let (status, body) = http_get(node.addr, "/turn-credentials").await.expect("answer");
    assert_eq!(status, 200, "{body}");
    let s1 = json(&body);
    assert_eq!(s1["realm"], REALM);
    let servers = s1["iceServers"].as_array().unwrap();
    assert_eq!(servers[0]["urls"][0], "stun:stun.l.google.com:19302", "extra STUN first");
    let turn_urls = servers.last().unwrap()["urls"].to_string();
    assert!(turn_urls.contains(&format!("turn:127.0.0.1:{port}?transport=udp")), "{s1}");
    let (user, pass) = (s1["username"].as_str().unwrap(), s1["credential"].as_str().unwrap());
    let udp = coturn.allocate(user, pass, false).await;
    assert!(udp.is_ok(), "coturn refused the node's credential:\n{}\n{}", udp.unwrap_err(), coturn.log());

    let (status, body) = http_get(node.addr, "/api/turn-credentials").await.expect("answer");
    assert_eq!(status, 200, "{body}");
    let api = json(&body);
    assert_eq!(api["ttl"], 3600);
    let login = api["iceServers"].as_array().unwrap().last().unwrap().clone();
    let tcp = coturn.allocate(login["username"].as_str().unwrap(), login["credential"].as_str().unwrap(), true).await;
    assert!(tcp.is_ok(), "{}", tcp.unwrap_err());
    // The web client's default ICE source, now on the node itself.
    assert_eq!(http_get(node.addr, "/api/turn/config").await.map(|a| a.0), Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_turn_setting_the_credential_paths_are_not_the_nodes() {
    let node = InProcessNode::start(&Backend::Memory, &[]).await;
    for path in ["/turn-credentials", "/api/turn-credentials"] {
        assert_eq!(http_get(node.addr, path).await.map(|a| a.0), Some(404), "{path}");
    }
    // A TURN setting that cannot work stops the node at start, with the reason.
    let err = signal::SignalConfig::from_pairs(&[("TURN_SECRET", SECRET)]).unwrap_err().to_string();
    assert!(err.contains("TURN_REALM") && err.contains("TURN credentials on the node"), "{err}");
}
