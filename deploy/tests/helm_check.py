#!/usr/bin/env python3
"""Renders and lints the Helm chart with Helm's own engine (the PyPI package
helm-python-sdk: Helm's Go SDK, no helm binary), for deploy/tests/tests/helm.rs.

    helm_check.py render CHART OUT_DIR [VALUES_FILE ...]
        Lints and renders the chart with its defaults (no file) or each values file;
        writes OUT_DIR/<name>.yaml (objects with schemas in kubernetes-validate) and
        OUT_DIR/<name>.crds.yaml (custom resources), and prints a JSON report.
    helm_check.py schema CHART
        Checks values.schema.json refuses wrong types; prints a JSON report.
    helm_check.py fails CHART KEY=JSON ...
        Renders with these values set and prints the error (or "rendered").
"""
import json
import os
import sys

import helm_python
import yaml

# Groups whose kinds kubernetes-validate has no schema for (custom resources).
CRD_GROUPS = ("monitoring.coreos.com/", "gateway.networking.k8s.io/")


def load_values(path):
    if path is None:
        return None
    with open(path) as f:
        return yaml.safe_load(f) or {}


def set_path(values, dotted, value):
    keys = dotted.split(".")
    node = values
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def render(chart_dir, out_dir, files):
    chart = helm_python.Chart.load(chart_dir)
    report = {}
    for path in files or [None]:
        name = "default" if path is None else os.path.basename(path).removesuffix(".yaml")
        values = load_values(path)
        lint = helm_python.lint(chart_dir, values, strict=True, kube_version="v1.30.0")
        chart.validate_schema(values)
        manifests = chart.render(values, name="sig", namespace="meet", is_install=True)
        objects, crds, tests = [], [], []
        for template, text in sorted(manifests.items()):
            if template.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if not doc:
                    continue
                doc.setdefault("metadata", {}).setdefault("namespace", "meet")
                hooks = doc["metadata"].get("annotations", {}).get("helm.sh/hook", "")
                if "test" in hooks:
                    tests.append(doc)
                if doc["apiVersion"].startswith(CRD_GROUPS):
                    crds.append(doc)
                else:
                    objects.append(doc)
        with open(os.path.join(out_dir, f"{name}.yaml"), "w") as f:
            yaml.safe_dump_all(objects, f, sort_keys=False)
        with open(os.path.join(out_dir, f"{name}.crds.yaml"), "w") as f:
            yaml.safe_dump_all(crds, f, sort_keys=False)
        notes = next((t for p, t in manifests.items() if p.endswith("NOTES.txt")), "")
        report[name] = {
            "lint_errors": lint.get("errors", []),
            "lint_messages": [m for m in lint.get("messages", []) if m.get("severity", 0) >= 2],
            "objects": [f'{d["kind"]}/{d["metadata"]["name"]}' for d in objects],
            "custom_resources": [f'{d["apiVersion"]} {d["kind"]}/{d["metadata"]["name"]}' for d in crds],
            "tests": [d["metadata"]["name"] for d in tests],
            "notes": notes,
        }
    print(json.dumps(report))


def schema(chart_dir):
    chart = helm_python.Chart.load(chart_dir)
    wrong = {
        "signal.replicas": "three",
        "signal.authMode": "maybe",
        "signal.drainTimeoutMs": -1,
        "ingress.enabled": "yes",
        "coturn.relayPorts.min": 80,
        "credentials.turn.transports": "udp",
        "signal.unknownSetting": 1,
    }
    refused = {}
    for key, value in wrong.items():
        values = {}
        set_path(values, key, value)
        try:
            chart.validate_schema(values)
            refused[key] = None
        except Exception as e:  # HelmValuesError names the key and the constraint
            refused[key] = str(e)
    print(json.dumps(refused))


def fails(chart_dir, settings):
    chart = helm_python.Chart.load(chart_dir)
    values = {}
    for setting in settings:
        key, raw = setting.split("=", 1)
        set_path(values, key, json.loads(raw))
    try:
        chart.render(values, name="sig", namespace="meet", is_install=True)
        print("rendered")
    except Exception as e:
        print(str(e))


if __name__ == "__main__":
    command, chart_dir, *rest = sys.argv[1:]
    if command == "render":
        render(chart_dir, rest[0], rest[1:])
    elif command == "schema":
        schema(chart_dir)
    elif command == "fails":
        fails(chart_dir, rest)
    else:
        sys.exit(f"unknown command {command}")
