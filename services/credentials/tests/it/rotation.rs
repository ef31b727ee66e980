//! Secret rotation with overlap in coturn's Redis userdb, checked by a real coturn.

use std::time::Duration;

use credentials::keyring::{secret_meta_key, secret_set_key, RedisKeyring};
use credentials::source::unix_now_ms;
use credentials::turn;
use testkit::{wait_until, CoturnOptions, TestCoturn, TestRedis};

use crate::helpers::{pairs, rest_settings, Service, REALM};

const ADMIN: &str = "admin-token-0123456789";

async fn members(redis: &TestRedis) -> Vec<String> {
    let out = redis.cli(&["SMEMBERS", &secret_set_key(REALM)]).await;
    out.lines().map(str::to_owned).filter(|l| !l.is_empty()).collect()
}

/// The secret added last, from the service's bookkeeping hash.
async fn newest(redis: &TestRedis) -> String {
    let flat = redis.cli(&["HGETALL", &secret_meta_key(REALM)]).await;
    let lines: Vec<&str> = flat.lines().collect();
    let mut pairs: Vec<(u64, &str)> = lines.chunks_exact(2).map(|p| (p[1].parse().unwrap(), p[0])).collect();
    pairs.sort();
    pairs.last().expect("at least one secret").1.to_owned()
}

async fn credential(service: &Service) -> (String, String) {
    let (status, _, body) = service.get("/turn-credentials", &[]).await;
    assert_eq!(status, 200, "{body}");
    (body["username"].as_str().unwrap().to_owned(), body["credential"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn old_and_new_secrets_overlap_until_the_old_one_is_retired() {
    let redis = TestRedis::start().await;
    let coturn = TestCoturn::start(REALM, CoturnOptions { redis_port: Some(redis.port), ..Default::default() }).await;
    let mut settings = rest_settings(&coturn.port.to_string());
    settings.extend([
        ("REDIS_URL", redis.url()),
        ("TURN_STATS", "false".into()),
        ("ADMIN_TOKEN", ADMIN.into()),
        ("TURN_SECRET_REFRESH_SECS", "1".into()),
    ]);
    let service = Service::start(&pairs(&settings)).await;

    // A fresh deployment: the service seeded the set with a generated secret.
    let first = members(&redis).await;
    assert_eq!(first.len(), 1);
    let (old_user, old_pass) = credential(&service).await;
    assert_eq!(old_pass, turn::rest_password(first[0].as_bytes(), &old_user));
    assert!(coturn.allocate(&old_user, &old_pass, false).await.is_ok(), "{}", coturn.log());

    // Rotation needs the admin token.
    let (status, _, _) = service.post("/api/turn/secrets/rotate", &[]).await;
    assert_eq!(status, 401);
    let (status, _, report) =
        service.post("/api/turn/secrets/rotate", &[("authorization", &format!("Bearer {ADMIN}"))]).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["rotated"], true);
    assert_eq!(report["retired"], 0, "the old secret stays for the overlap");
    assert_eq!(report["secrets"].as_array().unwrap().len(), 2);
    let both = members(&redis).await;
    assert_eq!(both.len(), 2);
    for secret in &both {
        assert!(!report.to_string().contains(secret.as_str()), "a secret leaked into the admin response");
    }

    // The service mints with the newest at once; both logins work while both are in the set.
    let (new_user, new_pass) = credential(&service).await;
    assert_eq!(new_pass, turn::rest_password(newest(&redis).await.as_bytes(), &new_user));
    assert!(coturn.allocate(&new_user, &new_pass, false).await.is_ok());
    assert!(
        coturn.allocate(&old_user, &old_pass, false).await.is_ok(),
        "the old credential must live through the overlap"
    );

    // Not yet due: nothing is retired now.
    let clients = credentials::redis::connect(&redis.url(), false).await.unwrap();
    let overlap = Duration::from_secs(3600 + 300); // TURN_TTL_MAX + TURN_SECRET_RETIRE_GRACE_SECS defaults
    let ring = RedisKeyring::new(clients.client, REALM, overlap);
    assert_eq!(ring.retire_due(unix_now_ms()).await.unwrap().retired, 0);
    // Once the overlap has passed (clock moved forward), the old secret goes...
    let later = unix_now_ms() + overlap.as_millis() as u64 + 1_000;
    assert_eq!(ring.retire_due(later).await.unwrap().retired, 1);
    assert_eq!(members(&redis).await.len(), 1);
    // ...and coturn refuses the old login while the new one still works.
    assert!(coturn.allocate(&old_user, &old_pass, false).await.is_err(), "retired secret still accepted");
    assert!(coturn.allocate(&new_user, &new_pass, false).await.is_ok());
}

#[tokio::test]
async fn the_rotate_command_adds_a_secret_the_running_service_picks_up() {
    let redis = TestRedis::start().await;
    let mut settings = rest_settings("3478");
    settings.extend([
        ("REDIS_URL", redis.url()),
        ("TURN_STATS", "false".into()),
        ("TURN_SECRET_REFRESH_SECS", "1".into()),
        // This test polls for credentials.
        ("RATE_LIMIT_IP_BURST", "1000".into()),
    ]);
    let service = Service::start(&pairs(&settings)).await;
    assert_eq!(members(&redis).await.len(), 1);

    let run = |args: &'static [&'static str]| {
        let url = redis.url();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_credentials"))
                .args(args)
                .env("REDIS_URL", url)
                .env("TURN_REALM", REALM)
                .output()
                .await
                .unwrap()
        }
    };
    let out = run(&["rotate"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["secrets"].as_array().unwrap().len(), 2);
    for secret in members(&redis).await {
        assert!(!stdout.contains(&secret), "the command printed a secret");
    }

    // Replicas re-read the set: the running service now mints with the new secret.
    let newest = newest(&redis).await;
    wait_until(Duration::from_secs(10), "the service to mint with the rotated secret", || {
        let (service, newest) = (&service, &newest);
        async move {
            let (user, pass) = credential(service).await;
            pass == turn::rest_password(newest.as_bytes(), &user)
        }
    })
    .await;

    // Both secrets are young; the oldest is at least as old as the newest.
    let (_, metrics) = service.text("/metrics").await;
    let age = |which: &str| {
        testkit::metric_sum(&metrics, &format!("credentials_turn_secret_age_seconds{{secret=\"{which}\"}}"))
    };
    let (newest_age, oldest_age) = (age("newest").expect("newest age"), age("oldest").expect("oldest age"));
    assert!((0.0..60.0).contains(&newest_age) && oldest_age >= newest_age, "{metrics}");

    // A leaked secret: revoke every older one at once.
    let out = run(&["rotate", "--revoke-previous"]).await;
    assert!(out.status.success());
    assert_eq!(members(&redis).await.len(), 1);

    // Without REDIS_URL the command says what is missing and exits 64.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_credentials"))
        .arg("rotate")
        .env_remove("REDIS_URL")
        .env("TURN_REALM", REALM)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("REDIS_URL: required"));
}

#[tokio::test]
async fn automatic_rotation_happens_once_when_due_however_many_replicas_try() {
    let redis = TestRedis::start().await;
    let replica = || async {
        let clients = credentials::redis::connect(&redis.url(), false).await.unwrap();
        RedisKeyring::new(clients.client, REALM, Duration::from_secs(100))
    };
    let (a, b) = (replica().await, replica().await);
    let every = Duration::from_secs(10);
    let t0 = 1_900_000_000_000u64;
    assert_eq!(a.refresh(t0, None).await.unwrap().secrets.len(), 1, "an empty set is seeded");

    assert!(!a.rotate(t0 + 5_000, None, every).await.unwrap().rotated, "not due yet");
    let (ra, rb) = tokio::join!(a.rotate(t0 + 10_000, None, every), b.rotate(t0 + 10_000, None, every));
    let rotated = [ra.unwrap().rotated, rb.unwrap().rotated];
    assert_eq!(rotated.iter().filter(|r| **r).count(), 1, "exactly one replica rotates: {rotated:?}");
    assert_eq!(members(&redis).await.len(), 2);
    // Both replicas now mint with the same, newest secret.
    a.list(t0 + 10_000).await.unwrap();
    b.list(t0 + 10_000).await.unwrap();
    assert_eq!(a.current().unwrap().expose(), b.current().unwrap().expose());
    assert_eq!(a.current().unwrap().expose(), newest(&redis).await);

    // The superseded secret goes exactly when the overlap has passed.
    assert_eq!(a.retire_due(t0 + 10_000 + 99_999).await.unwrap().retired, 0);
    assert_eq!(a.retire_due(t0 + 10_000 + 100_000).await.unwrap().retired, 1);
    assert_eq!(members(&redis).await.len(), 1);

    // A secret an operator adds by hand counts as the newest from the moment it is seen;
    // one removed by hand is forgotten.
    redis.cli(&["SADD", &secret_set_key(REALM), "added-by-hand-0123456789"]).await;
    let report = a.list(t0 + 200_000).await.unwrap();
    assert_eq!(report.secrets.len(), 2);
    assert_eq!(a.current().unwrap().expose(), "added-by-hand-0123456789");
    redis.cli(&["SREM", &secret_set_key(REALM), "added-by-hand-0123456789"]).await;
    assert_eq!(a.list(t0 + 200_001).await.unwrap().secrets.len(), 1);
    assert_eq!(redis.cli(&["HLEN", &secret_meta_key(REALM)]).await, "1");
}

#[tokio::test]
async fn a_redis_that_lost_the_set_gets_the_current_secret_back() {
    let mut redis = TestRedis::start().await;
    let mut settings = rest_settings("3478");
    settings.extend([
        ("REDIS_URL", redis.url()),
        ("TURN_STATS", "false".into()),
        ("TURN_SECRET_REFRESH_SECS", "1".into()),
    ]);
    let service = Service::start(&pairs(&settings)).await;
    let before = members(&redis).await;
    assert_eq!(before.len(), 1);
    let (user, pass) = credential(&service).await;

    redis.restart().await; // empty, as after a restart without persistence
    wait_until(Duration::from_secs(15), "the secret set to be restored", || async { members(&redis).await == before })
        .await;
    // Credentials issued before the loss verify against the restored set.
    assert_eq!(pass, turn::rest_password(before[0].as_bytes(), &user));
    wait_until(Duration::from_secs(10), "/readyz to pass again", || async {
        testkit::http_get(service.addr(), "/readyz").await.is_some_and(|(s, _)| s == 200)
    })
    .await;
}
