"""The monitoring component (deploy/k8s/components/monitoring): what an overlay gets by adding it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.k8s.tests.overlays import build_with_component

K8S = Path(__file__).resolve().parents[1]
COMPONENT = K8S / "components" / "monitoring"
BACKUPS = K8S / "components" / "backups"
SERVICES = {"gateway", "jobs", "storage", "scanner", "compressor"}
WAL_RECEIVER = "wal-receiver"


def _pod_labels() -> dict[str, dict[str, str]]:
    """Each base Deployment's pod template labels, by its name."""
    labels = {}
    for path in (K8S / "base").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Deployment":
                labels[doc["metadata"]["name"]] = doc["spec"]["template"]["metadata"]["labels"]
    return labels


def _monitors() -> dict[str, Any]:
    docs = yaml.safe_load_all((COMPONENT / "podmonitors.yaml").read_text())
    return {doc["metadata"]["name"]: doc for doc in docs}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    matches = all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In"
        matches = matches and labels.get(expression["key"]) in expression["values"]
    return matches


def test_the_pod_monitors_select_every_service_and_envoy_and_nothing_else() -> None:
    pods = _pod_labels()
    monitors = _monitors()
    services = {
        name for name, labels in pods.items() if _selects(monitors["pdf-smaller-services"]["spec"]["selector"], labels)
    }
    envoy = {
        name for name, labels in pods.items() if _selects(monitors["pdf-smaller-envoy"]["spec"]["selector"], labels)
    }
    assert services == SERVICES
    assert envoy == {"envoy"}


def test_every_scraped_series_gets_the_service_label_the_rules_query() -> None:
    for monitor in _monitors().values():
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] == "metrics"  # the port the base's NetworkPolicy opens to `monitoring`
            assert any(r["targetLabel"] == "service" for r in endpoint["relabelings"])


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_an_overlay_with_the_component_builds(tmp_path: Path) -> None:
    docs = build_with_component(COMPONENT, tmp_path)
    kinds = {(doc["kind"], doc["metadata"]["name"].split("-")[0]) for doc in docs}
    assert ("PrometheusRule", "pdf") in kinds
    assert ("PodMonitor", "pdf") in kinds
    config_maps = [
        doc
        for doc in docs
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("pdf-smaller-prometheus-rules")
    ]
    assert len(config_maps) == 1
    assert set(config_maps[0]["data"]) == {"rules.yaml", "alerts.yaml", "scrape-configs.yaml"}


def _pod_templates() -> dict[str, dict[str, Any]]:
    templates = {}
    for path in (K8S / "base").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Deployment":
                templates[doc["metadata"]["name"]] = doc["spec"]["template"]
    return templates


def test_the_plain_prometheus_scrape_job_finds_every_service_and_envoy() -> None:
    """What the job's keep rules require (part-of label, prometheus.io/scrape, a port named `metrics`),
    the base's pods that serve metrics have, and its path annotation is where they serve them."""
    config = yaml.safe_load((COMPONENT / "scrape-configs.yaml").read_text())
    relabel = config["scrape_configs"][0]["relabel_configs"]
    keeps = {rule["source_labels"][0]: rule["regex"] for rule in relabel if rule.get("action") == "keep"}
    assert keeps == {
        "__meta_kubernetes_pod_label_app_kubernetes_io_part_of": "pdf-smaller",
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
        "__meta_kubernetes_pod_container_port_name": "metrics",
    }
    scraped = set()
    for name, template in _pod_templates().items():
        annotations = template["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") != "true":
            continue
        assert template["metadata"]["labels"]["app.kubernetes.io/part-of"] == "pdf-smaller"
        ports = {
            port["name"]: port["containerPort"]
            for container in template["spec"]["containers"]
            for port in container.get("ports", [])
        }
        assert ports.get("metrics") == int(annotations["prometheus.io/port"]), name
        scraped.add(template["metadata"]["labels"]["app.kubernetes.io/name"])
    assert scraped == SERVICES | {"envoy"}
    assert {
        "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
        "target_label": "service",
    } in relabel


def _backups_pod_templates() -> dict[str, dict[str, Any]]:
    """The backups component's pod templates (its CronJobs' and the wal-receiver StatefulSet's), by name."""
    templates = {}
    for path in BACKUPS.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CronJob":
                templates[doc["metadata"]["name"]] = doc["spec"]["jobTemplate"]["spec"]["template"]
            elif doc and doc.get("kind") == "StatefulSet":
                templates[doc["metadata"]["name"]] = doc["spec"]["template"]
    return templates


def _port_names(template: dict[str, Any]) -> set[str]:
    return {port["name"] for container in template["spec"]["containers"] for port in container.get("ports", [])}


def test_the_wal_receiver_is_scraped_by_its_own_pod_monitor_only() -> None:
    """Its series get service=backups, as the backup alerts and TargetDown expect; the CronJobs' pods (no
    metrics) and the base's are not selected, and no other monitor scrapes the receiver a second time."""
    monitors = _monitors()
    templates = {**_pod_templates(), **_backups_pod_templates()}
    assert WAL_RECEIVER in templates
    selected_by = {
        name: {m for m, monitor in monitors.items() if _selects(monitor["spec"]["selector"], t["metadata"]["labels"])}
        for name, t in templates.items()
    }
    assert selected_by[WAL_RECEIVER] == {"pdf-smaller-wal-receiver"}
    assert {name for name, found in selected_by.items() if "pdf-smaller-wal-receiver" in found} == {WAL_RECEIVER}
    receiver = templates[WAL_RECEIVER]
    for endpoint in monitors["pdf-smaller-wal-receiver"]["spec"]["podMetricsEndpoints"]:
        assert endpoint["port"] in _port_names(receiver)
        assert endpoint["relabelings"] == [
            {"sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_name"], "targetLabel": "service"}
        ]
    assert receiver["metadata"]["labels"]["app.kubernetes.io/name"] == "backups"


def test_the_plain_prometheus_scrape_job_finds_the_wal_receiver() -> None:
    """The same keep rules as above hold for the receiver's pod, and for none of the CronJobs' pods."""
    config = yaml.safe_load((COMPONENT / "scrape-configs.yaml").read_text())
    keeps = {
        rule["source_labels"][0]: rule["regex"]
        for rule in config["scrape_configs"][0]["relabel_configs"]
        if rule.get("action") == "keep"
    }
    annotation = "__meta_kubernetes_pod_annotation_prometheus_io_scrape"
    part_of = "__meta_kubernetes_pod_label_app_kubernetes_io_part_of"
    port_name = "__meta_kubernetes_pod_container_port_name"
    scraped = set()
    for name, template in _backups_pod_templates().items():
        metadata = template["metadata"]
        if (
            metadata.get("annotations", {}).get("prometheus.io/scrape") == keeps[annotation]
            and metadata["labels"].get("app.kubernetes.io/part-of") == keeps[part_of]
            and keeps[port_name] in _port_names(template)
        ):
            scraped.add(name)
            ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
            assert ports["metrics"] == int(metadata["annotations"]["prometheus.io/port"])
    assert scraped == {WAL_RECEIVER}


def _promtool_check(config: dict[str, Any], folder: Path) -> subprocess.CompletedProcess[str]:
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    return subprocess.run(
        ["promtool", "check", "config", str(folder / "prometheus.yml")], capture_output=True, text=True, check=False
    )


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is not installed")
def test_a_plain_prometheus_accepts_the_component_files(tmp_path: Path) -> None:
    """The ConfigMap's three files, put together as its kustomization comment says, are a valid config.
    Debian's Prometheus is built without Kubernetes discovery: there, the job is checked (its relabel
    rules included) with a static target in place of the discovery."""
    for name in ("rules.yaml", "alerts.yaml"):
        shutil.copy(COMPONENT / name, tmp_path / name)
    scrape = yaml.safe_load((COMPONENT / "scrape-configs.yaml").read_text())
    config = {"rule_files": ["rules.yaml", "alerts.yaml"], **scrape}
    result = _promtool_check(config, tmp_path)
    if "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        for job in scrape["scrape_configs"]:
            job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
            del job["kubernetes_sd_configs"]
        result = _promtool_check(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout + result.stderr
