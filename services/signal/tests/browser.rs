//! A real WebRTC call through our TURN: headless chromium (Debian's, fake camera and
//! microphone) driven by Playwright (tests/browser/call.mjs) opens the web client on
//! two nodes sharing a private Redis; the pages get their ICE servers from the
//! credential service, which mints coturn credentials for a private coturn, and use
//! relay-only ICE, so every media packet crosses that coturn. One page's connection
//! drops and resumes mid-call. Then two pages of the Socket.IO flow (socket.io-client,
//! the interview-room events) call each other the same way. Screenshots are kept under
//! `target/tmp/browser/`.
//!
//! A second run (tests/browser/leave.mjs) measures goodbyes and reloads on the node's
//! own pages with default settings: a closed tab is heard leaving within a second in
//! both the meeting page and the Socket.IO page, a reloaded meeting page comes back as
//! the same peer with nobody hearing it leave or join, and a reloaded Socket.IO page's
//! old socket id leaves within a second.
//!
//! Its own test binary: chromium encoding and decoding video for four pages takes both
//! cores of a small machine, and cargo runs test binaries one after another, so the
//! timing-bound tests of `it` never share the machine with it.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use testkit::coturn::{CoturnOptions, TestCoturn};
use testkit::TestRedis;

use signal::{App, RunningApp, SignalConfig};

const REALM: &str = "browser.test";
const SECRET: &str = "browser-test-secret-0123456789";

/// One chromium at a time: the two tests here would otherwise share two cores.
static CHROMIUM: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A signal node on `redis` with `extra` settings, ready.
async fn signal_node(redis: &TestRedis, extra: &[(&str, &str)]) -> RunningApp {
    let url = redis.url();
    let mut pairs = vec![("HOST", "127.0.0.1"), ("PORT", "0"), ("REDIS_URL", url.as_str())];
    pairs.extend_from_slice(extra);
    let node = App::build(SignalConfig::from_pairs(&pairs).expect("node config")).await.expect("node starts").spawn();
    let addr = node.local_addr();
    testkit::wait_until(Duration::from_secs(15), "the node to be ready", || async move {
        matches!(testkit::http_get(addr, "/readyz").await, Some((200, _)))
    })
    .await;
    node
}

async fn credential_service(coturn: &TestCoturn) -> credentials::RunningApp {
    let port = coturn.port.to_string();
    let pairs = [
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("TURN_REALM", REALM),
        ("TURN_HOST", "127.0.0.1"),
        ("TURN_PORT", port.as_str()),
        ("TURN_SECRET", SECRET),
        // The pages are served by the signal nodes: another origin.
        ("ALLOWED_ORIGINS", "*"),
    ];
    let config = credentials::CredentialsConfig::from_pairs(&pairs).expect("credential service config");
    credentials::App::build(config).await.expect("credential service starts").spawn()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_on_two_nodes_call_through_our_turn_mute_chat_and_leave() {
    let _one_at_a_time = CHROMIUM.lock().await;
    let redis = TestRedis::start().await;
    let coturn =
        TestCoturn::start(REALM, CoturnOptions { static_secret: Some(SECRET.into()), ..Default::default() }).await;
    let creds = credential_service(&coturn).await;
    let ice_url = format!("http://{}/api/turn/config", creds.local_addr());
    let web = [("WEB_ICE_URL", ice_url.as_str()), ("WEB_ICE_POLICY", "relay"), ("RESUME_GRACE_MS", "15000")];
    // Dropping a node stops it: both live until the end of the test.
    let (node_a, node_b) = (signal_node(&redis, &web).await, signal_node(&redis, &web).await);
    let (a, b) = (node_a.local_addr(), node_b.local_addr());

    let page = |addr, name| format!("http://{addr}/meeting/browser-call?name={name}&autojoin=1");
    let sio_page =
        |addr, name| format!("http://{addr}/app/socketio.html?room=sio-call&name={name}&autojoin=1&ice=relay");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/call.mjs");
    let args = [page(a, "Ann"), page(b, "Bob"), out.display().to_string(), sio_page(a, "Cy"), sio_page(b, "Di")];
    let coturn_log = || format!("coturn log:\n{}", coturn.log());
    let report = run_script(script, &args, Duration::from_secs(180), &coturn_log).await;
    eprintln!("screenshots in {}", out.display());
    eprintln!("after both sides restarted ICE at once: {}", report["glare"]);

    // Both sides: the selected pair is relay to relay, and audio and video kept arriving.
    for side in ["mediaA", "mediaB"] {
        let (first, second) = (&report[side]["first"], &report[side]["second"]);
        for snapshot in [first, second] {
            assert_eq!(snapshot["pair"]["local"], "relay", "{side}: {report:#}");
            assert_eq!(snapshot["pair"]["remote"], "relay", "{side}: {report:#}");
        }
        let grew = |path: [&str; 2]| second[path[0]][path[1]].as_u64() > first[path[0]][path[1]].as_u64();
        assert!(grew(["audio", "bytes"]) && grew(["audio", "packets"]), "{side} audio stalled: {report:#}");
        assert!(grew(["video", "bytes"]) && grew(["video", "frames"]), "{side} video stalled: {report:#}");
    }
    // A's connection dropped and resumed: the same peer, B's video from A kept coming,
    // and B never heard A leave.
    assert_eq!(report["resumedAs"], report["peerA"], "{report:#}");
    let (before, after) = (&report["afterResume"]["first"], &report["afterResume"]["second"]);
    assert!(after["video"]["frames"].as_u64() > before["video"]["frames"].as_u64(), "{report:#}");
    assert_eq!(report["leftDuringResume"], serde_json::json!([]), "{report:#}");
    assert!(report["mutedText"].as_str().unwrap().contains("muted"), "{report:#}");
    // The Socket.IO flow's pages called each other through the same TURN.
    for side in report["socketio"].as_array().expect("the Socket.IO pages ran") {
        assert_eq!((&side["pair"]["local"], &side["pair"]["remote"]), (&"relay".into(), &"relay".into()), "{report:#}");
        assert!(side["frames"].as_u64() > Some(0), "{report:#}");
    }
    // The credentials the pages used came from our service.
    let issued = testkit::metric(creds.local_addr(), "credentials_requests_total").await;
    assert!(issued >= 2.0, "each page asked the credential service: {issued}");
    for shot in ["page-a.png", "page-b.png", "page-b-a-muted.png", "page-b-after-a-left.png", "socketio-b.png"] {
        assert!(out.join(shot).metadata().is_ok_and(|m| m.len() > 1000), "screenshot {shot}");
    }
}

/// Runs a browser script with node and returns its report (its last JSON line), which
/// must say `ok`; a failure shows the script's output and `more()`.
async fn run_script(script: &str, args: &[String], limit: Duration, more: &dyn Fn() -> String) -> Value {
    let run = tokio::process::Command::new("node").arg(script).args(args).kill_on_drop(true).output();
    let output = tokio::time::timeout(limit, run)
        .await
        .expect("the browser script finishes in time")
        .expect("node runs (the README test command installs Node.js packages and chromium)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = stdout.lines().rev().find_map(|l| serde_json::from_str(l).ok()).unwrap_or_else(|| {
        panic!("no report from {script}:\n{stdout}\n{}\n{}", String::from_utf8_lossy(&output.stderr), more())
    });
    assert!(output.status.success() && report["ok"] == true, "{script} failed: {report:#}\n{}", more());
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_tab_leaves_at_once_and_a_reloaded_page_comes_back_as_the_same_member() {
    let _one_at_a_time = CHROMIUM.lock().await;
    // The embedded node with its defaults (RESUME_GRACE_MS 15 s, RELOAD_GRACE_MS 700 ms).
    let config = SignalConfig::from_pairs(&[("HOST", "127.0.0.1"), ("PORT", "0")]).expect("node config");
    let node = App::build(config).await.expect("node starts").spawn();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/leave.mjs");
    let args = [format!("http://{}", node.local_addr()), out.display().to_string()];
    let report = run_script(script, &args, Duration::from_secs(120), &String::new).await;
    eprintln!("goodbyes and reloads: {report}");

    let ms = |v: &Value| v.as_i64().unwrap_or_else(|| panic!("a latency: {report:#}"));
    // Meeting page: a reload is the same member, and nobody heard it go or come.
    assert_eq!(report["reloadedAs"], report["peerA"], "{report:#}");
    assert_eq!(report["heardDuringReload"], serde_json::json!([]), "{report:#}");
    // A closed tab is gone within a second, in both pages.
    assert!(ms(&report["nativeCloseMs"]) < 1000, "meeting page: {report:#}");
    assert!(ms(&report["socketio"]["closeMs"]) < 1000, "Socket.IO page: {report:#}");
    // A reloaded Socket.IO page is a new socket; the old one left within a second.
    assert_ne!(report["socketio"]["firstIdC"], report["socketio"]["secondIdC"], "{report:#}");
    assert!(ms(&report["socketio"]["reloadMs"]) < 1000, "Socket.IO reload: {report:#}");
}
