//! Credentials minted by the running service, checked by a real coturn.

use credentials::turn;
use testkit::{CoturnOptions, TestCoturn};

use crate::helpers::{pairs, rest_settings, Service, REALM, SECRET};

fn login(body: &serde_json::Value) -> (String, String) {
    (body["username"].as_str().unwrap().to_owned(), body["credential"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn minted_credentials_allocate_a_relay_over_udp_and_tcp() {
    let coturn =
        TestCoturn::start(REALM, CoturnOptions { static_secret: Some(SECRET.into()), ..Default::default() }).await;
    let mut settings = rest_settings(&coturn.port.to_string());
    settings.push(("TURN_SECRET", SECRET.into()));
    let service = Service::start(&pairs(&settings)).await;

    let (status, _, body) = service.get("/turn-credentials", &[]).await;
    assert_eq!(status, 200, "{body}");
    let urls = body["iceServers"][1]["urls"].as_array().unwrap();
    assert!(urls.contains(&format!("turn:127.0.0.1:{}?transport=udp", coturn.port).into()), "{body}");
    let (user, pass) = login(&body);

    let udp = coturn.allocate(&user, &pass, false).await;
    assert!(udp.is_ok(), "UDP allocation refused:\n{}\n{}", udp.unwrap_err(), coturn.log());
    let tcp = coturn.allocate(&user, &pass, true).await;
    assert!(tcp.is_ok(), "TCP allocation refused:\n{}", tcp.unwrap_err());
}

#[tokio::test]
async fn a_wrong_secret_and_an_expired_credential_are_refused() {
    let coturn =
        TestCoturn::start(REALM, CoturnOptions { static_secret: Some(SECRET.into()), ..Default::default() }).await;
    // A service configured with a secret coturn does not know.
    let mut settings = rest_settings(&coturn.port.to_string());
    settings.push(("TURN_SECRET", "not-the-secret-coturn-has".into()));
    let service = Service::start(&pairs(&settings)).await;
    let (_, _, body) = service.get("/turn-credentials", &[]).await;
    let (user, pass) = login(&body);
    assert!(coturn.allocate(&user, &pass, false).await.is_err(), "coturn accepted a credential from the wrong secret");

    // The right secret, but the expiry is in the past.
    let now = credentials::source::unix_now();
    let expired = turn::mint(SECRET.as_bytes(), "alice", now - 7200, 3600);
    assert!(expired.expires_at < now);
    assert!(coturn.allocate(&expired.username, &expired.password, false).await.is_err(), "expired credential accepted");

    // Control: the same minting with a live expiry works, so the refusals above are about
    // the secret and the expiry, not the set-up.
    let live = turn::mint(SECRET.as_bytes(), "alice", now, 600);
    let ok = coturn.allocate(&live.username, &live.password, false).await;
    assert!(ok.is_ok(), "{}", ok.unwrap_err());
}
