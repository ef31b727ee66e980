//! k8s/ (plain manifests for kustomize) is generated from the Helm chart by
//! k8s/generate.py: it must be up to date, every object in it must pass the Kubernetes
//! 1.30 schemas in strict mode, and every file a kustomization names must exist. (There
//! is no kustomize binary here: the overlays' patches are whole objects, validated as such.)

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::paths::repo;
use crate::tools::{assert_success, run};

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

#[test]
fn k8s_is_generated_from_the_chart_and_up_to_date() {
    let out = run(Command::new("python3").arg(repo().join("k8s/generate.py")).arg("--check"));
    assert_success(&out, "k8s/generate.py --check");
}

#[test]
fn every_object_in_k8s_passes_the_schemas_and_every_named_file_exists() {
    let mut files = Vec::new();
    for folder in ["k8s/base", "k8s/overlays"] {
        yaml_files(&repo().join(folder), &mut files);
    }
    files.sort();
    let (kustomizations, objects): (Vec<PathBuf>, Vec<PathBuf>) =
        files.into_iter().partition(|p| p.file_name().is_some_and(|n| n == "kustomization.yaml"));
    assert_eq!(kustomizations.len(), 3, "base, dev and production");
    for kustomization in &kustomizations {
        let doc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(kustomization).unwrap()).unwrap();
        let dir = kustomization.parent().unwrap();
        let named = doc["resources"]
            .as_sequence()
            .into_iter()
            .flatten()
            .chain(doc["patches"].as_sequence().into_iter().flatten().filter_map(|p| p.get("path")));
        for name in named {
            let path = dir.join(name.as_str().unwrap());
            assert!(path.exists(), "{} names {}, which does not exist", kustomization.display(), path.display());
        }
    }
    let out =
        run(Command::new("kubernetes-validate").args(["--strict", "--kubernetes-version", "1.30.0"]).args(&objects));
    assert_success(&out, "kubernetes-validate of k8s/");
    assert!(objects.len() >= 10, "{objects:?}");
}
