//! The TURN dashboard shows a number in every panel on a fresh stack, before any error
//! happens: a real Prometheus scrapes two credential services (one minting for a real
//! coturn whose redis-statsdb events it follows, one asking a local stand-in for
//! Cloudflare) under a light load with real TURN allocations and no refusal, no
//! failure and no wrong key, and every query of every panel returns data (the error
//! panels their zeros).

use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde_json::json;
use testkit::prometheus::{panel_queries, TURN_DASHBOARDS};
use testkit::{CoturnOptions, TestCoturn, TestPrometheus, TestRedis};

use crate::helpers::{pairs, rest_settings, stub, Service, REALM};

/// A Cloudflare stand-in answering in its documented shape.
async fn cloudflare() -> String {
    let app = Router::new().route(
        "/v1/turn/keys/{key}/credentials/generate-ice-servers",
        post(|| async {
            (
                StatusCode::CREATED,
                axum::Json(json!({"iceServers": [
                    {"urls": ["turn:turn.cloudflare.com:3478?transport=udp"], "username": "u", "credential": "c"}
                ]})),
            )
        }),
    );
    format!("http://{}", stub(app).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_turn_dashboard_panel_shows_data_from_a_real_prometheus() {
    let redis = TestRedis::start().await;
    let coturn = TestCoturn::start(REALM, CoturnOptions { redis_port: Some(redis.port), ..Default::default() }).await;
    let mut settings = rest_settings(&coturn.port.to_string());
    // Limits well above the load: nothing is refused.
    settings.extend([
        ("REDIS_URL", redis.url()),
        ("RATE_LIMIT_IP_PER_MIN", "100000".into()),
        ("RATE_LIMIT_IP_BURST", "1000".into()),
    ]);
    let rest = Service::start(&pairs(&settings)).await;
    let cloudflare_url = cloudflare().await;
    let provider = Service::start(&[
        ("TURN_SOURCE", "cloudflare"),
        ("CLOUDFLARE_TURN_KEY_ID", "key-1"),
        ("CLOUDFLARE_TURN_API_TOKEN", "cf-api-token"),
        ("CLOUDFLARE_BASE_URL", cloudflare_url.as_str()),
        ("AUTH_MODE", "api-key"),
        ("API_KEYS", "web:dashboard-test-key-0001"),
        ("RATE_LIMIT_IP_PER_MIN", "100000"),
        ("RATE_LIMIT_IP_BURST", "1000"),
        ("RATE_LIMIT_SUBJECT_PER_MIN", "100000"),
        ("RATE_LIMIT_SUBJECT_BURST", "1000"),
    ])
    .await;
    let prometheus =
        TestPrometheus::start(&[("credentials", vec![rest.addr().to_string(), provider.addr().to_string()])]).await;

    // A real allocation with relayed traffic, made with minted credentials.
    let (_, _, body) = rest.get("/turn-credentials?username=dash", &[]).await;
    let (user, pass) = (body["username"].as_str().unwrap().to_owned(), body["credential"].as_str().unwrap().to_owned());
    let port = coturn.port.to_string();
    let allocation = tokio::spawn(async move {
        let mut cmd = tokio::process::Command::new("turnutils_uclient");
        cmd.args(["-u", &user, "-w", &pass, "-p", &port])
            .args(["-n", "200", "-m", "1", "-l", "170", "-y", "127.0.0.1"])
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(60), cmd.output()).await
    });
    let load = tokio::spawn(async move {
        for i in 0..600u32 {
            let (status, _, _) = rest.get("/api/turn/config", &[]).await;
            assert_eq!(status, 200, "request {i}: nothing is refused here");
            let (status, _, _) = provider.get("/turn-credentials", &[("x-api-key", "dashboard-test-key-0001")]).await;
            assert_eq!(status, 200, "request {i}: nothing is refused here");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (rest, provider)
    });

    let queries = TURN_DASHBOARDS.iter().flat_map(|file| panel_queries(file)).collect();
    prometheus.expect_data(queries, Duration::from_secs(45)).await;
    load.abort();
    allocation.abort();
}
