//! The Helm chart (helm/signaling), with Helm's own engine (helm-python-sdk, run by
//! deploy/tests/helm_check.py) and kubernetes-validate: it lints strictly and renders
//! with its defaults and with every file under helm/signaling/ci/; every rendered object
//! passes the Kubernetes 1.30 schemas in strict mode (custom resources, for which the
//! package has no schema, are listed and skipped); values.schema.json refuses wrong
//! types; the grace period always covers the drain, and a setting that does not is
//! refused at render time.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use crate::paths::repo;
use crate::tools::{assert_success, run};

fn chart() -> PathBuf {
    repo().join("helm/signaling")
}

fn helm_check(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new("python3")
        .arg(repo().join("deploy/tests/helm_check.py"))
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "helm_check.py {args:?} failed (the README test command installs helm-python-sdk):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ci_values() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Renders every values set into `dir`; the report by set name.
fn render_all(dir: &Path) -> serde_json::Map<String, Value> {
    let chart = chart();
    let mut args: Vec<&std::ffi::OsStr> = vec!["render".as_ref(), chart.as_os_str(), dir.as_os_str()];
    let files = ci_values();
    let report_defaults = helm_check(&args);
    for file in &files {
        args.push(file.as_os_str());
    }
    let report_ci = helm_check(&args);
    let mut all: serde_json::Map<String, Value> = serde_json::from_str(&report_defaults).unwrap();
    all.extend(serde_json::from_str::<serde_json::Map<String, Value>>(&report_ci).unwrap());
    all
}

fn kubernetes_validate(file: &Path) {
    let out = run(Command::new("kubernetes-validate").args(["--strict", "--kubernetes-version", "1.30.0"]).arg(file));
    assert_success(&out, &format!("kubernetes-validate of {}", file.display()));
}

#[test]
fn the_chart_lints_renders_and_validates_with_every_values_set() {
    let dir = tempfile::tempdir().unwrap();
    let report = render_all(dir.path());
    let mut names: Vec<&String> = report.keys().collect();
    names.sort();
    for required in
        ["default", "minimal-values", "production-values", "gateway-api-values", "external-redis-cluster-values"]
    {
        assert!(report.contains_key(required), "values set {required} rendered: {names:?}");
    }
    for (name, set) in &report {
        assert_eq!(set["lint_errors"], Value::Array(vec![]), "{name}: lint errors");
        assert_eq!(set["lint_messages"], Value::Array(vec![]), "{name}: lint warnings (strict)");
        kubernetes_validate(&dir.path().join(format!("{name}.yaml")));
        let skipped = set["custom_resources"].as_array().unwrap();
        if !skipped.is_empty() {
            eprintln!("{name}: custom resources without a schema in kubernetes-validate, not validated: {skipped:?}");
        }
        assert_eq!(set["tests"].as_array().unwrap().len(), 1, "{name}: the helm test hook");
        let notes = set["notes"].as_str().unwrap();
        assert!(notes.contains("helm test"), "{name}: NOTES tell how to check the release");
    }

    let objects = |name: &str| -> Vec<String> {
        report[name]["objects"].as_array().unwrap().iter().map(|o| o.as_str().unwrap().to_owned()).collect()
    };
    let has = |name: &str, kind: &str| objects(name).iter().any(|o| o.starts_with(&format!("{kind}/")));
    let crds = |name: &str| report[name]["custom_resources"].to_string();
    assert!(has("default", "StatefulSet") && has("default", "PodDisruptionBudget") && !has("default", "Ingress"));
    assert!(has("production-values", "HorizontalPodAutoscaler") && has("production-values", "Ingress"));
    assert!(!has("production-values", "StatefulSet"), "external Redis: no Redis in the release");
    assert!(has("production-values", "ConfigMap"), "dashboards and coturn configuration");
    assert!(
        crds("production-values").contains("ServiceMonitor") && crds("production-values").contains("PrometheusRule")
    );
    assert!(crds("gateway-api-values").contains("HTTPRoute") && !has("gateway-api-values", "Ingress"));
    assert!(has("minimal-values", "Deployment") && !has("minimal-values", "PodDisruptionBudget"));
    assert!(!has("default", "NetworkPolicy"), "off by default");
    let policies: Vec<String> =
        objects("production-values").into_iter().filter(|o| o.starts_with("NetworkPolicy/")).collect();
    assert!(
        policies.iter().any(|p| p.ends_with("-signal")) && policies.iter().any(|p| p.ends_with("-credentials")),
        "signal and credentials are fenced in production: {policies:?}"
    );
    for component in ["signal", "credentials", "redis", "coturn"] {
        assert!(
            has("gateway-api-values", "NetworkPolicy")
                && objects("gateway-api-values").contains(&format!("NetworkPolicy/sig-signaling-{component}")),
            "{component}: {:?}",
            objects("gateway-api-values")
        );
    }
}

#[test]
fn secrets_are_never_printed_by_the_notes() {
    let dir = tempfile::tempdir().unwrap();
    let report = render_all(dir.path());
    let notes = report["external-redis-cluster-values"]["notes"].as_str().unwrap();
    assert!(!notes.contains("change-me"), "{notes}");
    let rendered = std::fs::read_to_string(dir.path().join("external-redis-cluster-values.yaml")).unwrap();
    assert!(!rendered.contains("change-me-0123456789abcdef"), "the secret is base64 in a Secret only");
}

/// The `anon-token-secret` of the chart's own Secret in a rendered values set.
fn rendered_anon_secret(dir: &Path, set: &str) -> String {
    use base64::Engine;
    let text = std::fs::read_to_string(dir.join(format!("{set}.yaml"))).unwrap();
    let secret = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| serde_yaml::Value::deserialize(doc).unwrap())
        .find(|o| o["kind"] == "Secret" && o["metadata"]["name"].as_str().is_some_and(|n| n.ends_with("-secrets")))
        .unwrap_or_else(|| panic!("{set}: the chart's Secret"));
    let encoded = secret["data"]["anon-token-secret"].as_str().unwrap_or_else(|| panic!("{set}: no anon-token-secret"));
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded).unwrap()).unwrap()
}

#[test]
fn anonymous_sign_in_works_out_of_the_box_with_a_generated_secret_or_the_given_one() {
    let dir = tempfile::tempdir().unwrap();
    render_all(dir.path());
    let generated = rendered_anon_secret(dir.path(), "default");
    assert!(generated.len() >= 32 && generated.chars().all(|c| c.is_ascii_alphanumeric()), "{generated}");
    assert_eq!(
        rendered_anon_secret(dir.path(), "external-redis-cluster-values"),
        "change-me-anon-token-secret-0123456789abcdef"
    );
}

#[test]
fn the_schema_refuses_wrong_types() {
    let chart = chart();
    let refused: serde_json::Map<String, Value> =
        serde_json::from_str(&helm_check(&["schema".as_ref(), chart.as_os_str()])).unwrap();
    assert!(refused.len() >= 7);
    for (key, error) in &refused {
        assert!(error.is_string(), "values.schema.json accepts a wrong {key}");
    }
}

/// Every serving Deployment waits out its removal from the Service's endpoints before
/// it stops (a rolling update must not send requests to endpoints already gone), and
/// `helm test` checks /readyz and a TURN credential besides the relay.
#[test]
fn every_serving_workload_has_a_pre_stop_and_helm_test_checks_readiness_and_a_credential() {
    let dir = tempfile::tempdir().unwrap();
    render_all(dir.path());
    let mut deployments = BTreeSet::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let doc = serde_yaml::Value::deserialize(doc).unwrap();
            if doc["kind"] == "Deployment" {
                let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
                for container in doc["spec"]["template"]["spec"]["containers"].as_sequence().unwrap() {
                    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64();
                    assert!(pre_stop.is_some_and(|s| s > 0), "{}: {name} has no preStop", path.display());
                }
                deployments.insert(name.rsplit('-').next().unwrap().to_owned());
            }
            let hook = &doc["metadata"]["annotations"]["helm.sh/hook"];
            if doc["kind"] == "Pod" && hook == "test" {
                let args: Vec<String> = doc["spec"]["containers"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|c| serde_yaml::to_string(&c["args"]).unwrap())
                    .collect();
                assert!(args.iter().any(|a| a.contains("probe") && a.contains("/readyz")), "{args:?}");
                assert!(args.iter().any(|a| a.contains("relay")), "{args:?}");
                if path.file_name().unwrap() == "default.yaml" {
                    assert!(
                        args.iter().any(|a| a.contains("/api/turn/config") && a.contains("iceServers")),
                        "{args:?}"
                    );
                }
            }
        }
    }
    for workload in ["signal", "credentials", "coturn"] {
        assert!(deployments.contains(workload), "{workload} rendered in some values set: {deployments:?}");
    }
}

/// The rendered grace period of every Deployment exceeds its drain plus preStop.
#[test]
fn the_grace_period_covers_the_drain_and_a_shorter_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    render_all(dir.path());
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let doc: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
            if doc["kind"] != "Deployment" {
                continue;
            }
            let pod = &doc["spec"]["template"]["spec"];
            let grace = pod["terminationGracePeriodSeconds"].as_u64();
            for container in pod["containers"].as_sequence().unwrap() {
                let env = container["env"].as_sequence().cloned().unwrap_or_default();
                let drain_ms = env
                    .iter()
                    .find(|e| e["name"] == "DRAIN_TIMEOUT_MS")
                    .and_then(|e| e["value"].as_str()?.parse::<u64>().ok());
                let Some(drain_ms) = drain_ms else { continue };
                let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().unwrap_or(0);
                let grace = grace.expect("a grace period where there is a drain");
                assert!(
                    grace * 1000 > drain_ms + pre_stop * 1000,
                    "{}: {}: grace {grace} s, drain {drain_ms} ms, preStop {pre_stop} s",
                    path.display(),
                    doc["metadata"]["name"].as_str().unwrap()
                );
            }
        }
    }
    let chart = chart();
    let out = helm_check(&[
        "fails".as_ref(),
        chart.as_os_str(),
        "signal.drainTimeoutMs=30000".as_ref(),
        "signal.terminationGracePeriodSeconds=20".as_ref(),
    ]);
    assert!(out.contains("must exceed"), "a grace period shorter than the drain is refused: {out}");
}
