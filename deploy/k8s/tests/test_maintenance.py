"""The base's maintenance CronJobs (deploy/k8s/base/maintenance.yaml), read straight from the files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from ops import cli

BASE = Path(__file__).resolve().parents[1] / "base"
SCHEDULES = {"sweep-orphans": "45 3 * * *", "vacuum": "15 5 * * 0"}


def _docs(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((BASE / name).read_text()) if doc]


def _settings() -> dict[str, str]:
    lines = (BASE / "settings.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_the_base_runs_the_maintenance_jobs_daily_and_weekly() -> None:
    assert "maintenance.yaml" in yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]
    jobs = {doc["metadata"]["name"]: doc for doc in _docs("maintenance.yaml")}
    assert {name: job["spec"]["schedule"] for name, job in jobs.items()} == SCHEDULES
    for job in jobs.values():
        assert job["spec"]["concurrencyPolicy"] == "Forbid"
        assert job["spec"]["timeZone"] == "Etc/UTC"


def test_each_command_parses_and_reaches_the_database_and_the_object_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the pod's environment (the settings ConfigMap), the real parser accepts each argv, and the
    sweep opens the object store the storage service uses."""
    for name, value in _settings().items():
        monkeypatch.setenv(name, value)
    for job in _docs("maintenance.yaml"):
        container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        assert container["command"][:4] == ["python", "-m", "ops", "--json"]
        argv = container["command"][3:]
        args = cli.parser(argv).parse_args(argv)
        assert args.command == job["metadata"]["name"]
        secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"] if "valueFrom" in e}
        assert secrets["DATABASE_URL"] == "DATABASE_URL"
        if args.command == "sweep-orphans":
            assert args.storage_backend == _settings()["STORAGE_BACKEND"] == "s3"
            assert {"S3_ACCESS_KEY", "S3_SECRET_KEY"} <= set(secrets)


def test_the_maintenance_pods_may_reach_postgres_and_s3_only() -> None:
    policies = {doc["metadata"]["name"]: doc for doc in _docs("networkpolicies.yaml")}
    policy = policies["maintenance"]["spec"]
    assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "maintenance"}}
    assert "ingress" not in policy
    assert {port["port"] for rule in policy["egress"] for port in rule["ports"]} == {5432, 443, 9000}
    for job in _docs("maintenance.yaml"):
        labels = job["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "maintenance"
