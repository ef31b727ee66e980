//! TURN_SOURCE static, twilio, xirsys and cloudflare. The hosted providers are played by
//! local HTTP servers that check the request the way the provider documents it and
//! answer in its documented shape; they are stand-ins, not the real services.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::{post, put};
use axum::Router;
use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::{stub, Service};

fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

/// Requests a stub saw: (path, authorization, body).
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// Remembers what a stub was asked: the path parameter, the Authorization header, the body.
fn record(log: &Seen, param: String, headers: &HeaderMap, body: String) {
    let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    log.lock().unwrap().push((param, auth, body));
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[tokio::test]
async fn a_static_login_is_served_in_every_shape() {
    let service = Service::start(&[
        ("TURN_SOURCE", "static"),
        ("TURN_USERNAME", "meet"),
        ("TURN_PASSWORD", "static-password"),
        ("TURN_HOST", "turn.example.org"),
        ("TURN_TRANSPORTS", "udp,tcp"),
    ])
    .await;
    let (_, _, b) = service.get("/turn-credentials", &[]).await;
    assert_eq!((b["username"].as_str(), b["credential"].as_str()), (Some("meet"), Some("static-password")));
    assert_eq!(b["iceServers"][1]["urls"].as_array().unwrap().len(), 2, "no TLS URL: {b}");
    let (_, _, b) = service.get("/api/v1/turn?service=turn", &[]).await;
    assert_eq!(b["password"], "static-password");
}

#[tokio::test]
async fn twilio_tokens_are_normalised() {
    let seen: Seen = Default::default();
    let log = seen.clone();
    let app = Router::new().route(
        "/2010-04-01/Accounts/{sid}/Tokens.json",
        post(move |axum::extract::Path(sid): axum::extract::Path<String>, headers: HeaderMap, body: String| {
            record(&log, sid, &headers, body);
            async {
                (StatusCode::CREATED, axum::Json(json!({
                    "account_sid": "AC0001", "date_created": "Fri, 01 May 2026 00:00:00 +0000",
                    "username": "tw-user", "password": "tw-pass", "ttl": "600",
                    "ice_servers": [
                        {"url": "stun:global.stun.twilio.com:3478", "urls": "stun:global.stun.twilio.com:3478"},
                        {"url": "turn:global.turn.twilio.com:3478?transport=udp", "urls": "turn:global.turn.twilio.com:3478?transport=udp", "username": "tw-user", "credential": "tw-pass"},
                        {"url": "turn:global.turn.twilio.com:443?transport=tcp", "urls": "turn:global.turn.twilio.com:443?transport=tcp", "username": "tw-user", "credential": "tw-pass"}
                    ]
                })))
            }
        }),
    );
    let addr = stub(app).await;
    let service = Service::start(&[
        ("TURN_SOURCE", "twilio"),
        ("TWILIO_ACCOUNT_SID", "AC0001"),
        ("TWILIO_AUTH_TOKEN", "twilio-auth-token"),
        ("TWILIO_BASE_URL", leak(format!("http://{addr}"))),
        ("TURN_TTL", "600"),
    ])
    .await;
    let (status, _, b) = service.get("/turn-credentials", &[]).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(
        (b["username"].as_str(), b["credential"].as_str(), b["ttl"].as_u64()),
        (Some("tw-user"), Some("tw-pass"), Some(600))
    );
    assert_eq!(b["iceServers"].as_array().unwrap().len(), 3);
    assert_eq!(b["iceServers"][1]["urls"], json!(["turn:global.turn.twilio.com:3478?transport=udp"]));
    assert!(b["iceServers"][1].get("url").is_none(), "the deprecated url field is dropped");
    let (_, _, draft) = service.get("/api/v1/turn?service=turn", &[]).await;
    assert_eq!(draft["uris"].as_array().unwrap().len(), 2, "{draft}");

    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0, "AC0001");
    assert_eq!(seen[0].1, basic("AC0001", "twilio-auth-token"));
    assert_eq!(seen[0].2, "Ttl=600");
}

#[tokio::test]
async fn xirsys_answers_are_normalised() {
    let seen: Seen = Default::default();
    let log = seen.clone();
    let app = Router::new().route(
        "/_turn/{channel}",
        put(move |axum::extract::Path(channel): axum::extract::Path<String>, headers: HeaderMap, body: String| {
            record(&log, channel, &headers, body);
            async {
                axum::Json(json!({"v": {"iceServers": {
                    "username": "xs-user", "credential": "xs-pass",
                    "urls": ["stun:fr-turn1.xirsys.com", "turn:fr-turn1.xirsys.com:80?transport=udp", "turns:fr-turn1.xirsys.com:443?transport=tcp"]
                }}, "s": "ok"}))
            }
        }),
    );
    let addr = stub(app).await;
    let service = Service::start(&[
        ("TURN_SOURCE", "xirsys"),
        ("XIRSYS_IDENT", "acme"),
        ("XIRSYS_SECRET", "xirsys-secret"),
        ("XIRSYS_CHANNEL", "meetings"),
        ("XIRSYS_BASE_URL", leak(format!("http://{addr}"))),
    ])
    .await;
    let (status, _, b) = service.get("/api/turn-credentials", &[]).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["iceServers"][0]["username"], "xs-user");
    assert_eq!(b["iceServers"][0]["urls"].as_array().unwrap().len(), 3);
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0, "meetings");
    assert_eq!(seen[0].1, basic("acme", "xirsys-secret"));
    assert_eq!(serde_json::from_str::<Value>(&seen[0].2).unwrap(), json!({"format": "urls"}));
}

#[tokio::test]
async fn cloudflare_answers_are_normalised_and_provider_failures_are_502() {
    let seen: Seen = Default::default();
    let log = seen.clone();
    let app = Router::new()
        .route(
            "/v1/turn/keys/{key}/credentials/generate-ice-servers",
            post(move |axum::extract::Path(key): axum::extract::Path<String>, headers: HeaderMap, body: String| {
                record(&log, key, &headers, body);
                async {
                    (StatusCode::CREATED, axum::Json(json!({"iceServers": [
                        {"urls": ["stun:stun.cloudflare.com:3478", "stun:stun.cloudflare.com:53"]},
                        {"urls": ["turn:turn.cloudflare.com:3478?transport=udp", "turns:turn.cloudflare.com:5349?transport=tcp"],
                         "username": "cf-user", "credential": "cf-pass"}
                    ]})))
                }
            }),
        );
    let addr = stub(app).await;
    let service = Service::start(&[
        ("TURN_SOURCE", "cloudflare"),
        ("CLOUDFLARE_TURN_KEY_ID", "key-1"),
        ("CLOUDFLARE_TURN_API_TOKEN", "cf-api-token"),
        ("CLOUDFLARE_BASE_URL", leak(format!("http://{addr}"))),
        ("TURN_TTL", "900"),
    ])
    .await;
    let (status, _, b) = service.get("/turn-credentials", &[]).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!((b["username"].as_str(), b["credential"].as_str()), (Some("cf-user"), Some("cf-pass")));
    {
        let seen = seen.lock().unwrap();
        assert_eq!((seen[0].0.as_str(), seen[0].1.as_str()), ("key-1", "Bearer cf-api-token"));
        assert_eq!(serde_json::from_str::<Value>(&seen[0].2).unwrap(), json!({"ttl": 900}));
    }

    // The provider refuses (a revoked token): 502, without the provider's body or our token.
    let refusing = stub(Router::new().route(
        "/v1/turn/keys/{key}/credentials/generate-ice-servers",
        post(|| async { (StatusCode::UNAUTHORIZED, "{\"errors\":[\"token cf-api-token revoked\"]}") }),
    ))
    .await;
    let broken = Service::start(&[
        ("TURN_SOURCE", "cloudflare"),
        ("CLOUDFLARE_TURN_KEY_ID", "key-1"),
        ("CLOUDFLARE_TURN_API_TOKEN", "cf-api-token"),
        ("CLOUDFLARE_BASE_URL", leak(format!("http://{refusing}"))),
    ])
    .await;
    let (status, _, b) = broken.get("/turn-credentials", &[]).await;
    assert_eq!((status, b["error"].as_str()), (502, Some("bad-gateway")));
    assert!(b["message"].as_str().unwrap().contains("HTTP 401"), "{b}");
    assert!(!b.to_string().contains("cf-api-token"));
    let (_, metrics) = broken.text("/metrics").await;
    assert!(
        metrics.contains(
            "credentials_requests_total{endpoint=\"/turn-credentials\",outcome=\"unavailable\",source=\"cloudflare\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("credentials_provider_failures_total{provider=\"cloudflare\",reason=\"status\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("credentials_provider_request_seconds_count{provider=\"cloudflare\"} 1"), "{metrics}");
}
