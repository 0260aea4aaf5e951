"""Every manifest of deploy/k8s against the Kubernetes API's own schemas, offline and strict.

kubernetes-validate (from PyPI) carries the API's JSON schemas; strict mode refuses a property a
schema does not have, so a misspelled field (`readOnlyRootFileSystem`, `resource:`) fails here
instead of being dropped by the API server or refused at `kubectl apply`. Checked against the
oldest Kubernetes release we support and the newest the package knows.

The resource files of the base and of each component are read straight from disk (no tool
needed); the base, each overlay and each component on the base are also rendered with `kubectl
kustomize` (skipped without kubectl), so what the patches and generators produce is checked too.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deploy.k8s.tests.overlays import build_with_component

K8S = Path(__file__).resolve().parents[1]
# The oldest release the manifests support (StatefulSet persistentVolumeClaimRetentionPolicy is GA
# in 1.32) and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.32", kubernetes_validate.latest_version())
# Custom resources of the Prometheus Operator (the monitoring component): no schema in the package.
CUSTOM_KINDS = frozenset({"PodMonitor", "PrometheusRule"})
Doc = dict[str, Any]


def _resource_files(k8s: Path) -> list[Path]:
    """The files the base and the components list under `resources:`."""
    files = []
    for kustomization in sorted([k8s / "base" / "kustomization.yaml", *k8s.glob("components/*/kustomization.yaml")]):
        listed = yaml.safe_load(kustomization.read_text()).get("resources", [])
        files += [kustomization.parent / name for name in listed if (kustomization.parent / name).is_file()]
    return files


def _documents(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def schema_errors(docs: list[Doc], version: str) -> list[str]:
    """One line per document that does not match its schema (or has none and is not a custom kind)."""
    errors = []
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            if doc.get("kind") not in CUSTOM_KINDS:
                errors.append(f"{name}: no schema for {doc.get('apiVersion')} {doc.get('kind')} in {version}")
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            errors.append(f"{name}: {path}: {error.message}")
    return errors


def _kustomize(directory: Path) -> list[Doc]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_resource_file_matches_the_schemas(version: str) -> None:
    files = _resource_files(K8S)
    assert {path.parent.name for path in files} >= {"base", "backups", "monitoring", "blue-green"}
    errors = [f"{path.relative_to(K8S)}: {e}" for path in files for e in schema_errors(_documents(path), version)]
    assert not errors, "\n".join(errors)


# The oldest release only: the patches and generators add fields, not kinds or API versions, and the
# newest release's removals are caught on the files above.
@pytest.mark.parametrize(
    "target", ["base", "overlays/dev", "overlays/production", "monitoring", "backups", "blue-green"]
)
def test_every_rendered_target_matches_the_schemas(target: str, tmp_path: Path) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    if target in {"monitoring", "backups", "blue-green"}:
        docs = build_with_component(K8S / "components" / target, tmp_path)
    else:
        docs = _kustomize(K8S / target)
    errors = schema_errors(docs, KUBERNETES_VERSIONS[0])
    assert not errors, "\n".join(errors)


def test_a_misspelled_field_in_a_copy_of_a_manifest_is_caught(tmp_path: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    compressor = copy / "base" / "compressor.yaml"
    compressor.write_text(compressor.read_text().replace("readOnlyRootFilesystem", "readOnlyRootFileSystem", 1))
    backups = copy / "components" / "backups" / "cronjobs.yaml"
    backups.write_text(backups.read_text().replace("concurrencyPolicy:", "concurrencyPolicyy:", 1))

    oldest = KUBERNETES_VERSIONS[0]
    errors = [error for path in _resource_files(copy) for error in schema_errors(_documents(path), oldest)]
    assert len(errors) == 2, errors
    assert "Deployment/compressor" in errors[0] or "Deployment/compressor" in errors[1]
    assert any("'readOnlyRootFileSystem' was unexpected" in error for error in errors)
    assert any("CronJob/db-backup-full" in error and "'concurrencyPolicyy' was unexpected" in error for error in errors)
