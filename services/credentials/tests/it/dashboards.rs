//! The TURN dashboard shows data: a real Prometheus scrapes two credential services (one
//! minting for a real coturn whose redis-statsdb events it follows, one asking a local
//! stand-in for Cloudflare that fails every other call) under a light load with real
//! TURN allocations, and every query of every panel returns data.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use serde_json::json;
use testkit::prometheus::{panel_queries, TURN_DASHBOARDS};
use testkit::{CoturnOptions, TestCoturn, TestPrometheus, TestRedis};

use crate::helpers::{pairs, rest_settings, stub, Service, REALM};

/// A Cloudflare stand-in answering in its documented shape, failing every other call.
async fn flaky_cloudflare() -> String {
    let calls = Arc::new(AtomicU64::new(0));
    let app = Router::new().route(
        "/v1/turn/keys/{key}/credentials/generate-ice-servers",
        post(move || {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            async move {
                if n % 2 == 1 {
                    return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"errors": ["down"]})));
                }
                (
                    StatusCode::CREATED,
                    axum::Json(json!({"iceServers": [
                        {"urls": ["turn:turn.cloudflare.com:3478?transport=udp"], "username": "u", "credential": "c"}
                    ]})),
                )
            }
        }),
    );
    format!("http://{}", stub(app).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_turn_dashboard_panel_shows_data_from_a_real_prometheus() {
    let redis = TestRedis::start().await;
    let coturn = TestCoturn::start(REALM, CoturnOptions { redis_port: Some(redis.port), ..Default::default() }).await;
    let mut settings = rest_settings(&coturn.port.to_string());
    // Bursts beyond 5 are refused, so the refusal panels have data too.
    settings.extend([
        ("REDIS_URL", redis.url()),
        ("RATE_LIMIT_IP_PER_MIN", "120".into()),
        ("RATE_LIMIT_IP_BURST", "5".into()),
    ]);
    let rest = Service::start(&pairs(&settings)).await;
    let cloudflare_url = flaky_cloudflare().await;
    let provider = Service::start(&[
        ("TURN_SOURCE", "cloudflare"),
        ("CLOUDFLARE_TURN_KEY_ID", "key-1"),
        ("CLOUDFLARE_TURN_API_TOKEN", "cf-api-token"),
        ("CLOUDFLARE_BASE_URL", cloudflare_url.as_str()),
        ("AUTH_MODE", "api-key"),
        ("API_KEYS", "web:dashboard-test-key-0001"),
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
            rest.get("/api/turn/config", &[]).await;
            let key = if i % 3 == 0 { "wrong-key" } else { "dashboard-test-key-0001" };
            provider.get("/turn-credentials", &[("x-api-key", key)]).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (rest, provider)
    });

    let queries = TURN_DASHBOARDS.iter().flat_map(|file| panel_queries(file)).collect();
    prometheus.expect_data(queries, Duration::from_secs(45)).await;
    load.abort();
    allocation.abort();
}
