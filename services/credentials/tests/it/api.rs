//! Response shapes, request validation, CORS, rate limits, health, metrics and
//! start-up errors.

use credentials::turn;
use serde_json::Value;

use crate::helpers::{Service, REALM, SECRET};

const BASE: &[(&str, &str)] =
    &[("TURN_REALM", REALM), ("TURN_SECRET", SECRET), ("TURN_HOSTS", "eu=turn-eu.example.org,us=turn-us.example.org")];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut all = BASE.to_vec();
    all.extend_from_slice(extra);
    all
}

/// Checks a REST login against the secret: coturn's own rule, recomputed.
fn assert_valid_login(username: &str, credential: &str, ttl: u64) {
    let (expiry, user) = username.split_once(':').expect("expiry:user");
    let expiry: u64 = expiry.parse().unwrap();
    let now = credentials::source::unix_now();
    assert!(expiry >= now + ttl - 5 && expiry <= now + ttl + 5, "expiry {expiry} vs now {now} + {ttl}");
    assert!(!user.is_empty());
    assert_eq!(credential, turn::rest_password(SECRET.as_bytes(), username));
}

fn ice_ready(servers: &Value) {
    let list = servers.as_array().expect("iceServers is a list");
    assert!(list[0]["urls"][0].as_str().unwrap().starts_with("stun:"));
    assert!(list[0].get("username").is_none(), "STUN entries carry no login");
    let turn = &list[1];
    let urls: Vec<&str> = turn["urls"].as_array().unwrap().iter().map(|u| u.as_str().unwrap()).collect();
    assert!(urls.contains(&"turn:turn-eu.example.org:3478?transport=udp"), "{urls:?}");
    assert!(urls.contains(&"turn:turn-us.example.org:3478?transport=tcp"), "{urls:?}");
    assert!(urls.contains(&"turns:turn-eu.example.org:5349?transport=tcp"), "{urls:?}");
    assert_valid_login(turn["username"].as_str().unwrap(), turn["credential"].as_str().unwrap(), 3600);
}

#[tokio::test]
async fn every_response_shape_carries_a_valid_login() {
    let service = Service::start(&with(&[])).await;

    let (status, headers, b) = service.get("/turn-credentials", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!((b["ttl"].as_u64(), b["realm"].as_str()), (Some(3600), Some(REALM)));
    assert_valid_login(b["username"].as_str().unwrap(), b["credential"].as_str().unwrap(), 3600);
    ice_ready(&b["iceServers"]);

    let (status, _, b) = service.get("/api/turn-credentials", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(b.as_object().unwrap().len(), 2, "{b}");
    assert_eq!(b["ttl"], 3600);
    ice_ready(&b["iceServers"]);

    let (status, _, b) = service.get("/api/turn/config", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(b.as_object().unwrap().keys().collect::<Vec<_>>(), ["iceServers"]);
    ice_ready(&b["iceServers"]);

    let (status, _, b) = service.get("/api/v1/turn?service=turn&username=mbzrxpgjys", &[]).await;
    assert_eq!(status, 200);
    assert!(b["username"].as_str().unwrap().ends_with(":mbzrxpgjys"));
    assert_valid_login(b["username"].as_str().unwrap(), b["password"].as_str().unwrap(), 3600);
    let uris = b["uris"].as_array().unwrap();
    assert_eq!(uris.len(), 6, "two hosts x udp, tcp, tls: {b}");
    assert!(uris.iter().all(|u| u.as_str().unwrap().starts_with("turn")));
    assert_eq!(service.get("/api/v1/turn?service=stun", &[]).await.0, 400);

    // Without a JWT configuration this endpoint refuses everyone.
    let (status, headers, b) = service.get("/api/meetings/webrtc-config", &[]).await;
    assert_eq!((status, b["error"].as_str()), (401, Some("unauthorized")));
    assert_eq!(headers["www-authenticate"], "Bearer");
}

#[tokio::test]
async fn ttl_and_region_are_honoured_and_bounded() {
    let service = Service::start(&with(&[("TURN_TTL_MAX", "7200")])).await;
    let (_, _, b) = service.get("/turn-credentials?ttl=600&region=us", &[]).await;
    assert_eq!(b["ttl"], 600);
    assert_valid_login(b["username"].as_str().unwrap(), b["credential"].as_str().unwrap(), 600);
    let urls = b["iceServers"][1]["urls"].as_array().unwrap();
    assert!(urls.iter().all(|u| u.as_str().unwrap().contains("turn-us")), "{urls:?}");

    for bad in [
        "/turn-credentials?ttl=7201",
        "/turn-credentials?ttl=5",
        "/turn-credentials?ttl=soon",
        "/turn-credentials?region=../x",
    ] {
        let (status, _, b) = service.get(bad, &[]).await;
        assert_eq!((status, b["error"].as_str()), (400, Some("bad-request")), "{bad}: {b}");
    }
}

#[tokio::test]
async fn cors_allows_configured_origins_only() {
    let service = Service::start(&with(&[("ALLOWED_ORIGINS", "https://app.example.com")])).await;
    let (_, headers, _) = service.get("/api/turn/config", &[("origin", "https://app.example.com")]).await;
    assert_eq!(headers["access-control-allow-origin"], "https://app.example.com");
    let (_, headers, _) = service.get("/api/turn/config", &[("origin", "https://evil.example.net")]).await;
    assert!(headers.get("access-control-allow-origin").is_none());

    // Preflight for a request with an API key header.
    let response = service
        .http
        .request(reqwest::Method::OPTIONS, service.url("/api/turn/config"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "x-api-key")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let allowed = response.headers()["access-control-allow-headers"].to_str().unwrap().to_owned();
    assert!(allowed.contains("x-api-key"), "{allowed}");

    // Without ALLOWED_ORIGINS, no CORS headers at all.
    let closed = Service::start(&with(&[])).await;
    let (_, headers, _) = closed.get("/api/turn/config", &[("origin", "https://app.example.com")]).await;
    assert!(headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn anonymous_callers_are_rate_limited_per_ip_with_retry_after() {
    let service = Service::start(&with(&[("RATE_LIMIT_IP_PER_MIN", "6"), ("RATE_LIMIT_IP_BURST", "3")])).await;
    for i in 0..3 {
        assert_eq!(service.get("/api/turn/config", &[]).await.0, 200, "request {i} is within the burst");
    }
    let (status, headers, b) = service.get("/api/turn/config", &[]).await;
    assert_eq!((status, b["error"].as_str()), (429, Some("rate-limited")));
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    // Health checks are never limited.
    assert_eq!(service.text("/healthz").await.0, 200);

    let (_, metrics) = service.text("/metrics").await;
    let requests = |outcome: &str| {
        format!("credentials_requests_total{{endpoint=\"/api/turn/config\",outcome=\"{outcome}\",source=\"rest\"}}")
    };
    assert!(metrics.contains(&format!("{} 3", requests("issued"))), "{metrics}");
    assert!(metrics.contains(&format!("{} 1", requests("rate_limited"))), "{metrics}");
    assert!(metrics.contains("credentials_rate_limited_total{scope=\"ip\"} 1"), "{metrics}");
    assert!(metrics.contains("credentials_issue_seconds_count{source=\"rest\"} 4"), "{metrics}");
    assert!(!metrics.contains(SECRET));
}

#[tokio::test]
async fn health_readiness_and_unknown_paths() {
    let service = Service::start(&with(&[])).await;
    assert_eq!(service.text("/healthz").await, (200, "ok".into()));
    assert_eq!(service.text("/readyz").await, (200, "ready".into()));
    let (status, _, b) = service.get("/nope", &[]).await;
    assert_eq!((status, b["error"].as_str()), (404, Some("not-found")));
    // Counts answer anyone without STATUS_TOKEN (as S1's health did; monitoring is off
    // here, which is what they say); addresses and administration are off until their
    // tokens are set.
    let (status, _, b) = service.get("/api/turn/stats", &[]).await;
    assert_eq!(status, 503, "past the token, to the monitor: {b}");
    assert!(b["message"].as_str().unwrap().contains("monitoring is off"), "{b}");
    assert_eq!(service.get("/api/turn/sessions", &[]).await.0, 403);
    assert_eq!(service.post("/api/turn/secrets/rotate", &[]).await.0, 403);
    let guarded = Service::start(&with(&[("STATUS_TOKEN", "status-token-0123456789")])).await;
    assert_eq!(guarded.get("/api/turn/stats", &[]).await.0, 401, "with a token, only the token");

    // With a static TURN_SECRET there is nothing to rotate: the answer says so.
    let admin = Service::start(&with(&[("ADMIN_TOKEN", "admin-token-0123456789")])).await;
    let (status, _, b) =
        admin.post("/api/turn/secrets/rotate", &[("authorization", "Bearer admin-token-0123456789")]).await;
    assert_eq!(status, 400, "{b}");
    assert!(b["message"].as_str().unwrap().contains("REDIS_URL"), "{b}");
}

#[tokio::test]
async fn bad_configuration_stops_the_binary_with_every_problem_listed() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_credentials"))
        .env_clear()
        .env("TURN_SECRET", "a-secret-long-enough-0123")
        .env("TURN_HOST", "turn.example.org")
        .env("AUTH_MODE", "api-key")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TURN_REALM: required"), "{stderr}");
    assert!(stderr.contains("use-auth-secret needs a realm"), "{stderr}");
    assert!(stderr.contains("API_KEYS"), "{stderr}");
    assert!(!stderr.contains("a-secret-long-enough-0123"), "a secret was echoed: {stderr}");
}

#[tokio::test]
async fn the_binary_drains_on_sigterm() {
    let port = testkit::free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_credentials"))
        .env_clear()
        .envs([("TURN_REALM", REALM), ("TURN_SECRET", SECRET), ("TURN_HOST", "127.0.0.1"), ("HOST", "127.0.0.1")])
        .env("PORT", port.to_string())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    testkit::wait_until(std::time::Duration::from_secs(10), "the binary to serve", || async move {
        testkit::http_get(addr, "/readyz").await.is_some_and(|(s, _)| s == 200)
    })
    .await;
    let pid = child.id().unwrap().to_string();
    tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await.unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn extra_stun_servers_come_first_in_every_shape() {
    let service = Service::start(&with(&[("STUN_URLS", "stun:stun.l.google.com:19302")])).await;
    for path in ["/api/turn/config", "/turn-credentials", "/api/turn-credentials"] {
        let (status, _, b) = service.get(path, &[]).await;
        assert_eq!(status, 200, "{path}: {b}");
        let servers = b["iceServers"].as_array().unwrap();
        assert_eq!(servers[0]["urls"], serde_json::json!(["stun:stun.l.google.com:19302"]), "{path}");
        assert!(servers[0].get("username").is_none());
        ice_ready(&Value::Array(servers[1..].to_vec()));
    }
}
