"""The backups component (deploy/k8s/components/backups): CronJobs an overlay gets by adding it."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest

from deploy.k8s.tests.overlays import build_with_component
from ops import cli

K8S = Path(__file__).resolve().parents[1]
COMPONENT = K8S / "components" / "backups"
# The guide: full daily, incremental every 6 hours (here the three 6-hourly slots the full one leaves).
SCHEDULES = {
    "db-backup-full": "15 2 * * *",
    "db-backup-incremental": "15 8,14,20 * * *",
    "db-backup-logical": "15 3 * * *",
    "files-backup": "45 2 * * *",
    "recovery-test": "30 4 1 * *",
}


def _built(tmp_path: Path) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    return build_with_component(COMPONENT, tmp_path)


def _cron_jobs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "CronJob"}


def test_the_guide_s_schedule_one_at_a_time(tmp_path: Path) -> None:
    jobs = _cron_jobs(_built(tmp_path))
    assert {name: job["spec"]["schedule"] for name, job in jobs.items()} == SCHEDULES
    for job in jobs.values():
        assert job["spec"]["concurrencyPolicy"] == "Forbid"
        assert job["spec"]["timeZone"] == "Etc/UTC"


def test_every_command_is_a_pdfsmaller_ops_call_that_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The container runs `python -m ops ...`: each argv, with its $(VAR) references filled in and the
    environment the pod gets from the component's settings, is accepted by the real command line parser
    and backs up to the S3 bucket those settings name, printing JSON for the Job's log."""
    docs = _built(tmp_path)
    settings = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("pdf-smaller-backup-settings")
    )["data"]
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    for name, job in _cron_jobs(docs).items():
        container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        command = container["command"]
        assert command[:3] == ["python", "-m", "ops"], name
        argv = [re.sub(r"\$\((\w+)\)", lambda m: settings[m.group(1)], arg) for arg in command[3:]]
        args = cli.parser(argv).parse_args(argv)
        assert args.json, f"{name}: {shlex.join(argv)}"
        assert (args.backup_s3_bucket, args.backup_s3_prefix) == ("pdf-smaller-backups", "pdf-smaller"), name
        config_maps = sorted(ref["configMapRef"]["name"].rsplit("-", 1)[0] for ref in container["envFrom"])
        assert config_maps == ["pdf-smaller-backup-settings", "pdf-smaller-settings"], name


def test_the_pods_are_locked_down_like_the_base_and_may_reach_only_postgres_and_s3(tmp_path: Path) -> None:
    docs = _built(tmp_path)
    for name, job in _cron_jobs(docs).items():
        pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        container = pod["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert container["resources"]["limits"]["memory"], name
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/work"}
        assert {"name": "TMPDIR", "value": "/work"} in container["env"]
        assert pod["automountServiceAccountToken"] is False
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "backups")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "backups"}
    ports = {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}
    assert ports == {5432, 443, 9000}
    assert "ingress" not in policy["spec"]
