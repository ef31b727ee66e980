//! docker-compose.yml, checked statically (there is no Docker engine here): every
//! service has an image or a build whose Dockerfile and target exist, every mounted file
//! exists in the repository, no two services publish the same host port, health-based
//! dependencies point at services with a health check, and the environment of the
//! signal nodes and the credential service is accepted by their configuration with no
//! variable left unread (a secret file they read stands in for the one generated into
//! its volume).

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

use crate::paths::repo;

fn compose() -> Value {
    let text = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    let mut doc: Value = serde_yaml::from_str(&text).expect("docker-compose.yml is YAML");
    doc.apply_merge().expect("merge keys resolve");
    // Merge keys nest (a service merges x-signal, its environment merges x-signal-env).
    doc.apply_merge().unwrap();
    doc
}

fn services(doc: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (name, service) in doc["services"].as_mapping().expect("services") {
        let mut service = service.clone();
        service.apply_merge().unwrap();
        out.insert(name.as_str().unwrap().to_owned(), service);
    }
    out
}

/// `${NAME:-default}` and `${NAME}` as compose interpolates them with nothing set.
fn interpolate(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed ${") + start;
        let inner = &rest[start + 2..end];
        out.push_str(inner.split_once(":-").map_or("", |(_, default)| default));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

fn dockerfile_targets(path: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            (words.len() >= 4 && words[0].eq_ignore_ascii_case("FROM") && words[2].eq_ignore_ascii_case("AS"))
                .then(|| words[3].to_owned())
        })
        .collect()
}

#[test]
fn every_service_has_an_image_or_a_build_that_exists() {
    let doc = compose();
    for (name, service) in services(&doc) {
        let image = service["image"].as_str();
        let build = &service["build"];
        assert!(image.is_some() || !build.is_null(), "{name}: neither image nor build");
        if let Some(image) = image {
            let tagged = interpolate(image);
            assert!(tagged.contains(':') && !tagged.ends_with(":latest"), "{name}: pin the image tag ({tagged})");
        }
        if !build.is_null() {
            let context = repo().join(build["context"].as_str().unwrap());
            let dockerfile = context.join(build["dockerfile"].as_str().unwrap_or("Dockerfile"));
            assert!(dockerfile.is_file(), "{name}: {} missing", dockerfile.display());
            let target = build["target"].as_str().expect("a build target");
            assert!(dockerfile_targets(&dockerfile).contains(target), "{name}: no stage {target}");
        }
    }
}

#[test]
fn every_mounted_file_exists_in_the_repository() {
    let doc = compose();
    let named: BTreeSet<String> =
        doc["volumes"].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap().to_owned()).collect();
    let mut mounts = 0;
    for (name, service) in services(&doc) {
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with("./") {
                let path = repo().join(source);
                assert!(path.exists(), "{name}: {} is not in the repository", path.display());
                mounts += 1;
            } else {
                assert!(named.contains(source), "{name}: volume {source} is not declared");
            }
        }
    }
    assert!(mounts >= 8, "the configuration files are mounted ({mounts})");
}

/// The host ports a `ports:` entry publishes, with their protocol.
fn host_ports(entry: &str) -> Vec<(u16, String)> {
    let (ports, protocol) = entry.split_once('/').unwrap_or((entry, "tcp"));
    let host = ports.rsplit_once(':').map(|(host, _)| host).unwrap_or(ports);
    let host = host.rsplit_once(':').map(|(_, port)| port).unwrap_or(host);
    let (first, last) = host.split_once('-').unwrap_or((host, host));
    let (first, last): (u16, u16) = (first.parse().unwrap(), last.parse().unwrap());
    (first..=last).map(|p| (p, protocol.to_owned())).collect()
}

#[test]
fn no_two_services_publish_the_same_host_port() {
    let mut seen: BTreeMap<(u16, String), String> = BTreeMap::new();
    for (name, service) in services(&compose()) {
        for entry in service["ports"].as_sequence().into_iter().flatten() {
            for port in host_ports(entry.as_str().unwrap()) {
                if let Some(other) = seen.insert(port.clone(), name.clone()) {
                    panic!("{name} and {other} both publish {port:?}");
                }
            }
        }
    }
    assert!(seen.contains_key(&(8000, "tcp".into())), "the load balancer is published");
    assert!(seen.contains_key(&(3478, "udp".into())), "coturn is published");
}

#[test]
fn health_conditions_point_at_services_with_a_health_check() {
    let services = services(&compose());
    for (name, service) in &services {
        for (dependency, condition) in service["depends_on"].as_mapping().into_iter().flatten() {
            let dependency = dependency.as_str().unwrap();
            let target = services.get(dependency).unwrap_or_else(|| panic!("{name} depends on unknown {dependency}"));
            if condition["condition"] == "service_healthy" {
                assert!(
                    !target["healthcheck"].is_null(),
                    "{name} waits for {dependency} to be healthy: it has no check"
                );
            }
        }
    }
}

fn environment(service: &Value) -> Vec<(String, String)> {
    service["environment"]
        .as_mapping()
        .expect("environment as a mapping")
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => interpolate(s),
                other => serde_yaml::to_string(other).unwrap().trim().to_owned(),
            };
            (k.as_str().unwrap().to_owned(), value)
        })
        .collect()
}

/// Variables read by libraries rather than by our configuration.
fn standard(name: &str) -> bool {
    name.starts_with("OTEL_") || name == "RUST_LOG"
}

#[test]
fn service_environments_are_what_the_binaries_accept() {
    let services = services(&compose());
    let mut checked = 0;
    for (name, service) in &services {
        let image = service["image"].as_str().unwrap_or_default();
        let env = environment_if_ours(service, image);
        let Some(env) = env else { continue };
        let env = with_mounted_secrets(name, service, env);
        let pairs: Vec<(&str, &str)> =
            env.iter().filter(|(k, _)| !standard(k)).map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let unread = if image.contains("/signal:") {
            let (config, unread) = signal::SignalConfig::from_pairs_listing_unread(&pairs);
            config.unwrap_or_else(|e| panic!("{name}: {e}"));
            unread
        } else {
            let (config, unread) = credentials::CredentialsConfig::from_pairs_listing_unread(&pairs);
            config.unwrap_or_else(|e| panic!("{name}: {e}"));
            unread
        };
        assert!(unread.is_empty(), "{name}: variables the binary does not read: {unread:?}");
        checked += 1;
    }
    assert_eq!(checked, 4, "three signal nodes and the credential service");
}

/// A `*_FILE` variable names a secret file in a volume the service mounts: checked to
/// be in one, then stood in for by a file of this machine (the volume exists only in
/// Docker), so that the configuration reads it as the container would.
fn with_mounted_secrets(name: &str, service: &Value, env: Vec<(String, String)>) -> Vec<(String, String)> {
    let mounts: Vec<String> = service["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str()?.split(':').nth(1).map(str::to_owned))
        .collect();
    env.into_iter()
        .map(|(key, value)| {
            if !key.ends_with("_FILE") || value.is_empty() {
                return (key, value);
            }
            let dir = std::path::Path::new(&value).parent().and_then(|d| d.to_str()).unwrap_or_default();
            assert!(mounts.iter().any(|m| m == dir), "{name}: {key}={value} is in no volume it mounts ({mounts:?})");
            let stand_in = std::env::temp_dir().join(format!("compose-{name}-{key}-{}", std::process::id()));
            std::fs::write(&stand_in, "0123456789abcdef".repeat(4)).unwrap();
            (key, stand_in.to_string_lossy().into_owned())
        })
        .collect()
}

fn environment_if_ours(service: &Value, image: &str) -> Option<Vec<(String, String)>> {
    (image.contains("/signal:") || image.contains("/credentials:")).then(|| environment(service))
}

#[test]
fn each_signal_node_has_its_own_id_and_the_balancer_knows_them_all() {
    let services = services(&compose());
    let lb = environment(&services["lb"]);
    let mut ids = BTreeSet::new();
    for (name, service) in services.iter().filter(|(_, s)| s["image"].as_str().is_some_and(|i| i.contains("/signal:")))
    {
        let env: BTreeMap<String, String> = environment(service).into_iter().collect();
        assert!(ids.insert(env["NODE_ID"].clone()), "{name}: NODE_ID repeated");
        assert!(lb.iter().any(|(_, v)| v == &format!("{name}:8080")), "the load balancer does not route to {name}");
    }
    assert_eq!(ids.len(), 3);
}
