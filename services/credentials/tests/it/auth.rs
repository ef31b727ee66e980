//! AUTH_MODE api-key and jwt (HS256, RS256 and ES256 through a JWKS file or URL),
//! issuer/audience/expiry checks, and per-subject rate limits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::helpers::{stub, Service, REALM, SECRET};

const HS_SECRET: &str = "an-hs256-shared-secret-of-32-bytes!!";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn base() -> Vec<(&'static str, &'static str)> {
    vec![("TURN_REALM", REALM), ("TURN_SECRET", SECRET), ("TURN_HOST", "turn.example.org")]
}

fn claims(sub: &str, iss: &str, aud: &str, exp_offset: i64) -> serde_json::Value {
    let now = credentials::source::unix_now() as i64;
    json!({ "sub": sub, "iss": iss, "aud": aud, "exp": now + exp_offset, "iat": now })
}

fn hs256(claims: &serde_json::Value) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(HS_SECRET.as_bytes())).unwrap()
}

fn signed(alg: Algorithm, kid: &str, claims: &serde_json::Value) -> String {
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&std::fs::read(format!("{FIXTURES}/rsa-private.pem")).unwrap()),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&std::fs::read(format!("{FIXTURES}/ec-private.pem")).unwrap()),
        _ => unreachable!(),
    }
    .unwrap();
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    encode(&header, claims, &key).unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn api_keys_are_required_and_name_the_caller() {
    let mut settings = base();
    settings.extend([("AUTH_MODE", "api-key"), ("API_KEYS", "web:key-for-the-web-app-01,key-for-bots-000000001")]);
    let service = Service::start(&settings).await;

    let (status, _, b) = service.get("/turn-credentials", &[]).await;
    assert_eq!((status, b["error"].as_str()), (401, Some("unauthorized")));
    let (status, _, b) = service.get("/turn-credentials", &[("x-api-key", "key-for-the-web-app-02")]).await;
    assert_eq!(status, 401);
    assert!(!b.to_string().contains("key-for-the-web-app"), "the key is not echoed: {b}");

    let (status, _, b) = service.get("/turn-credentials", &[("x-api-key", "key-for-the-web-app-01")]).await;
    assert_eq!(status, 200);
    assert!(b["username"].as_str().unwrap().ends_with(":web"), "{b}");
    let (_, _, b) = service.get("/turn-credentials", &[("x-api-key", "key-for-bots-000000001")]).await;
    assert!(b["username"].as_str().unwrap().ends_with(":api-key-2"), "{b}");

    let (_, metrics) = service.text("/metrics").await;
    assert!(metrics.contains("credentials_auth_failures_total{reason=\"missing\"} 1"), "{metrics}");
    assert!(metrics.contains("credentials_auth_failures_total{reason=\"invalid\"} 1"), "{metrics}");
}

#[tokio::test]
async fn hs256_tokens_are_checked_for_signature_expiry_issuer_and_audience() {
    let mut settings = base();
    settings.extend([
        ("AUTH_MODE", "jwt"),
        ("JWT_HS256_SECRET", HS_SECRET),
        ("JWT_ISSUER", "https://id.example.org"),
        ("JWT_AUDIENCE", "meetings"),
        ("ICE_CANDIDATE_POOL_SIZE", "4"),
    ]);
    let service = Service::start(&settings).await;
    let good = hs256(&claims("user/42", "https://id.example.org", "meetings", 300));

    let (status, _, b) = service.get("/turn-credentials", &[("authorization", &bearer(&good))]).await;
    assert_eq!(status, 200, "{b}");
    assert!(b["username"].as_str().unwrap().ends_with(":user_42"), "subject made safe for coturn: {b}");

    let (status, _, b) = service.get("/api/meetings/webrtc-config", &[("authorization", &bearer(&good))]).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["iceCandidatePoolSize"], 4);
    assert_eq!(b["iceServers"].as_array().unwrap().len(), 2);

    let cases = [
        ("no token", None, "credentials required"),
        ("expired", Some(hs256(&claims("u", "https://id.example.org", "meetings", -600))), "token expired"),
        ("wrong issuer", Some(hs256(&claims("u", "https://evil.example", "meetings", 300))), "wrong issuer"),
        ("wrong audience", Some(hs256(&claims("u", "https://id.example.org", "billing", 300))), "wrong audience"),
        ("garbage", Some("not.a.jwt".to_owned()), "malformed token"),
        (
            "wrong key",
            Some(
                encode(
                    &Header::new(Algorithm::HS256),
                    &claims("u", "https://id.example.org", "meetings", 300),
                    &EncodingKey::from_secret(b"another-secret-another-secret-0000"),
                )
                .unwrap(),
            ),
            "bad signature",
        ),
    ];
    for (what, token, message) in cases {
        let header = token.map(|t| bearer(&t));
        let headers: Vec<(&str, &str)> = header.iter().map(|h| ("authorization", h.as_str())).collect();
        let (status, _, b) = service.get("/api/turn/config", &headers).await;
        assert_eq!(status, 401, "{what}: {b}");
        assert!(b["message"].as_str().unwrap().contains(message), "{what}: {b}");
    }
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_against_a_jwks_file() {
    let mut settings = base();
    let file = format!("{FIXTURES}/jwks.json");
    settings.extend([("AUTH_MODE", "jwt"), ("JWT_ISSUER", "https://id.example.org"), ("JWT_AUDIENCE", "meetings")]);
    settings.push(("JWT_JWKS_FILE", Box::leak(file.into_boxed_str())));
    let service = Service::start(&settings).await;
    let c = claims("alice", "https://id.example.org", "meetings", 300);

    for (alg, kid) in [(Algorithm::RS256, "test-rsa"), (Algorithm::ES256, "test-ec")] {
        let (status, _, b) =
            service.get("/api/turn/config", &[("authorization", &bearer(&signed(alg, kid, &c)))]).await;
        assert_eq!(status, 200, "{alg:?}: {b}");
    }
    // A kid the set does not have, an RSA token labelled with the EC key, and an HS256
    // token (algorithm confusion) are all refused.
    for token in [signed(Algorithm::RS256, "rotated-away", &c), signed(Algorithm::RS256, "test-ec", &c), hs256(&c)] {
        let (status, _, b) = service.get("/api/turn/config", &[("authorization", &bearer(&token))]).await;
        assert_eq!(status, 401, "{b}");
    }
}

#[tokio::test]
async fn a_jwks_url_is_fetched_once_and_cached() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let jwks = std::fs::read_to_string(format!("{FIXTURES}/jwks.json")).unwrap();
    let addr = stub(axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let jwks = jwks.clone();
            async move { ([("content-type", "application/json")], jwks) }
        }),
    ))
    .await;
    let url = format!("http://{addr}/.well-known/jwks.json");
    let mut settings = base();
    settings.extend([("AUTH_MODE", "jwt"), ("JWT_AUDIENCE", "meetings"), ("RATE_LIMIT_SUBJECT_BURST", "100")]);
    settings.push(("JWT_JWKS_URL", Box::leak(url.into_boxed_str())));
    let service = Service::start(&settings).await;
    let token = signed(Algorithm::ES256, "test-ec", &claims("bob", "any", "meetings", 300));
    for _ in 0..5 {
        let (status, _, b) = service.get("/turn-credentials", &[("authorization", &bearer(&token))]).await;
        assert_eq!(status, 200, "{b}");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "one fetch at start-up serves every request");
}

#[tokio::test]
async fn one_subject_is_rate_limited_across_ips() {
    let mut settings = base();
    settings.extend([
        ("AUTH_MODE", "jwt"),
        ("JWT_HS256_SECRET", HS_SECRET),
        ("RATE_LIMIT_SUBJECT_PER_MIN", "2"),
        ("RATE_LIMIT_SUBJECT_BURST", "2"),
    ]);
    let service = Service::start(&settings).await;
    let carol = hs256(&claims("carol", "x", "y", 300));
    let dan = hs256(&claims("dan", "x", "y", 300));
    assert_eq!(service.get("/api/turn/config", &[("authorization", &bearer(&carol))]).await.0, 200);
    assert_eq!(service.get("/api/turn/config", &[("authorization", &bearer(&carol))]).await.0, 200);
    let (status, headers, _) = service.get("/api/turn/config", &[("authorization", &bearer(&carol))]).await;
    assert_eq!(status, 429);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert_eq!(service.get("/api/turn/config", &[("authorization", &bearer(&dan))]).await.0, 200, "others unaffected");
}

#[tokio::test]
async fn an_unreachable_jwks_url_does_not_stop_the_service_and_tokens_get_503() {
    let url = format!("http://127.0.0.1:{}/jwks.json", testkit::free_port());
    let mut settings = base();
    settings.extend([("AUTH_MODE", "jwt"), ("PROVIDER_TIMEOUT_MS", "500")]);
    settings.push(("JWT_JWKS_URL", Box::leak(url.into_boxed_str())));
    let service = Service::start(&settings).await;
    assert_eq!(service.text("/healthz").await.0, 200);
    let token = signed(Algorithm::RS256, "test-rsa", &claims("erin", "x", "y", 300));
    let (status, _, b) = service.get("/api/turn/config", &[("authorization", &bearer(&token))]).await;
    assert_eq!((status, b["error"].as_str()), (503, Some("unavailable")), "{b}");
}

#[tokio::test]
async fn a_failing_identity_provider_is_not_hammered() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let addr = stub(axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "down") }
        }),
    ))
    .await;
    let url = format!("http://{addr}/jwks.json");
    let mut settings = base();
    settings.extend([("AUTH_MODE", "jwt"), ("RATE_LIMIT_IP_BURST", "100")]);
    settings.push(("JWT_JWKS_URL", Box::leak(url.into_boxed_str())));
    let service = Service::start(&settings).await;
    let token = signed(Algorithm::RS256, "test-rsa", &claims("hal", "x", "y", 300));
    for _ in 0..10 {
        let (status, _, _) = service.get("/api/turn/config", &[("authorization", &bearer(&token))]).await;
        assert_eq!(status, 503);
    }
    // One fetch at start-up and at most one retry for the ten requests.
    assert!(fetches.load(Ordering::SeqCst) <= 2, "{} fetches", fetches.load(Ordering::SeqCst));
}
