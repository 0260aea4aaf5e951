"""The monitoring component (deploy/k8s/components/monitoring): what an overlay gets by adding it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

K8S = Path(__file__).resolve().parents[1]
COMPONENT = K8S / "components" / "monitoring"
SERVICES = {"gateway", "jobs", "storage", "scanner", "compressor"}


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
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize takes relative paths only.
                "resources": [os.path.relpath(K8S / "base", overlay)],
                "components": [os.path.relpath(COMPONENT, overlay)],
            }
        )
    )
    result = subprocess.run(
        ["kubectl", "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    kinds = {(doc["kind"], doc["metadata"]["name"].split("-")[0]) for doc in yaml.safe_load_all(result.stdout) if doc}
    assert ("PrometheusRule", "pdf") in kinds
    assert ("PodMonitor", "pdf") in kinds
    config_maps = [
        doc
        for doc in yaml.safe_load_all(result.stdout)
        if doc and doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("pdf-smaller-prometheus-rules")
    ]
    assert len(config_maps) == 1
    assert set(config_maps[0]["data"]) == {"rules.yaml", "alerts.yaml"}
