//! The configuration files compose mounts, checked by their own tools from Debian
//! (installed by the test command): `haproxy -c`, `nginx -t`, `promtool check config`.

use std::path::Path;
use std::process::Command;

use crate::paths::repo;
use crate::tools::{assert_success, run};

#[test]
fn haproxy_accepts_the_load_balancer_configuration() {
    let out = run(Command::new("haproxy")
        .args(["-c", "-f"])
        .arg(repo().join("deploy/compose/haproxy.cfg"))
        .env("LB_BIND", "127.0.0.1:18000")
        .env("SIGNAL_1", "127.0.0.1:1")
        .env("SIGNAL_2", "127.0.0.1:2")
        .env("SIGNAL_3", "127.0.0.1:3")
        .env("CREDENTIALS", "127.0.0.1:4"));
    assert_success(&out, "haproxy -c");
}

/// The TLS profile's nginx, with a throwaway certificate where compose mounts the real
/// one: the file is checked beside a `tls/` folder, as it sits in /etc/nginx there (its
/// certificate paths are relative to the configuration's folder).
#[test]
fn nginx_accepts_the_tls_configuration() {
    let prefix = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("deploy/compose/nginx.conf"), prefix.path().join("nginx.conf")).unwrap();
    let tls = prefix.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    let out = run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(tls.join("tls.key"))
        .arg("-out")
        .arg(tls.join("tls.crt")));
    assert_success(&out, "openssl req");
    let out = run(Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(format!("{}/", prefix.path().display()))
        .arg("-c")
        .arg(prefix.path().join("nginx.conf")));
    assert_success(&out, "nginx -t");
}

/// The same layout compose mounts under /etc/prometheus: the configuration, its target
/// files and the alert rules beside it.
pub fn prometheus_layout(dir: &Path) {
    let compose = repo().join("deploy/compose");
    std::fs::create_dir_all(dir.join("targets")).unwrap();
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::copy(compose.join("prometheus.yml"), dir.join("prometheus.yml")).unwrap();
    for file in ["signal.json", "credentials.json", "coturn.json"] {
        std::fs::copy(compose.join("targets").join(file), dir.join("targets").join(file)).unwrap();
    }
    std::fs::copy(repo().join("deploy/prometheus/rules.yml"), dir.join("rules/rules.yml")).unwrap();
}

#[test]
fn promtool_accepts_the_prometheus_configuration_with_its_rules() {
    let dir = tempfile::tempdir().unwrap();
    prometheus_layout(dir.path());
    let out = run(Command::new("promtool").arg("check").arg("config").arg(dir.path().join("prometheus.yml")));
    assert_success(&out, "promtool check config");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rules/rules.yml") && text.contains("rules found"), "the alert rules are loaded: {text}");
}
