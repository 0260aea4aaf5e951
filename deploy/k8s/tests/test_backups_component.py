"""The backups component (deploy/k8s/components/backups): CronJobs and the WAL receiver an overlay gets by adding it."""

from __future__ import annotations

import argparse
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
MONITORING_NAMESPACE = {"kubernetes.io/metadata.name": "monitoring"}
# The guide: full daily, incremental every 6 hours (here the three 6-hourly slots the full one leaves).
SCHEDULES = {
    "db-backup-full": "15 2 * * *",
    "db-backup-incremental": "15 8,14,20 * * *",
    "db-backup-logical": "15 3 * * *",
    "files-backup": "45 2 * * *",
    "recovery-test": "30 4 1 * *",
}
WAL_RECEIVER = "wal-receiver"
# receive-wal stops pg_receivewal for up to this long on SIGTERM, then stores the spool once more.
RECEIVER_STOP_SECONDS = 10


def _built(tmp_path: Path) -> list[dict[str, Any]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    return build_with_component(COMPONENT, tmp_path)


def _cron_jobs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The component's CronJobs (the base has maintenance ones of its own)."""
    return {
        doc["metadata"]["name"]: doc
        for doc in docs
        if doc["kind"] == "CronJob" and doc["metadata"]["labels"].get("app.kubernetes.io/name") == "backups"
    }


def _wal_receiver(docs: list[dict[str, Any]]) -> dict[str, Any]:
    sets = [doc for doc in docs if doc["kind"] == "StatefulSet" and doc["metadata"]["name"] == WAL_RECEIVER]
    assert len(sets) == 1, [doc["metadata"]["name"] for doc in docs if doc["kind"] == "StatefulSet"]
    return sets[0]


def _pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod template of the component, by its workload's name."""
    pods = {name: job["spec"]["jobTemplate"]["spec"]["template"] for name, job in _cron_jobs(docs).items()}
    pods[WAL_RECEIVER] = _wal_receiver(docs)["spec"]["template"]
    return pods


def _backup_settings(docs: list[dict[str, Any]]) -> dict[str, str]:
    return next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("pdf-smaller-backup-settings")
    )["data"]


def _parsed_command(container: dict[str, Any], settings: dict[str, str]) -> argparse.Namespace:
    """The container's `python -m ops ...` argv, its $(VAR) references filled in, through the real parser."""
    command = container["command"]
    assert command[:3] == ["python", "-m", "ops"], command
    argv = [re.sub(r"\$\((\w+)\)", lambda m: settings[m.group(1)], arg) for arg in command[3:]]
    return cli.parser(argv).parse_args(argv)


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # the policies here use matchLabels only
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def _ingress_allows_monitoring(policy: dict[str, Any], pod: dict[str, Any], port: int) -> bool:
    """Whether one of the policy's ingress rules lets pods of the `monitoring` namespace reach `port`
    of `pod` (a numbered port, or the name of the container port that is `port`)."""
    ports = [p for container in pod["spec"]["containers"] for p in container.get("ports", [])]
    port_names = {p["name"] for p in ports if p["containerPort"] == port}
    for rule in policy["spec"].get("ingress", []):
        ports_ok = "ports" not in rule or any(
            p.get("protocol", "TCP") == "TCP" and (p["port"] == port or p["port"] in port_names) for p in rule["ports"]
        )
        # A peer of the monitoring namespace, any pod of it (their labels are the monitoring stack's).
        peers_ok = "from" not in rule or any(
            "namespaceSelector" in peer
            and _selects(peer["namespaceSelector"], MONITORING_NAMESPACE)
            and not peer.get("podSelector")
            for peer in rule["from"]
        )
        if ports_ok and peers_ok:
            return True
    return False


def test_the_guide_s_schedule_one_at_a_time(tmp_path: Path) -> None:
    jobs = _cron_jobs(_built(tmp_path))
    assert {name: job["spec"]["schedule"] for name, job in jobs.items()} == SCHEDULES
    for job in jobs.values():
        assert job["spec"]["concurrencyPolicy"] == "Forbid"
        assert job["spec"]["timeZone"] == "Etc/UTC"


def test_every_command_is_a_pdfsmaller_ops_call_that_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each container runs `python -m ops ...`: each argv, with its $(VAR) references filled in and the
    environment the pod gets from the component's settings, is accepted by the real command line parser
    and backs up to the S3 bucket those settings name; the CronJobs print JSON for the Job's log."""
    docs = _built(tmp_path)
    settings = _backup_settings(docs)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    for name, pod in _pods(docs).items():
        container = pod["spec"]["containers"][0]
        args = _parsed_command(container, settings)
        assert (args.backup_s3_bucket, args.backup_s3_prefix) == ("pdf-smaller-backups", "pdf-smaller"), name
        assert args.json or name == WAL_RECEIVER, f"{name}: {shlex.join(container['command'])}"
        config_maps = sorted(ref["configMapRef"]["name"].rsplit("-", 1)[0] for ref in container["envFrom"])
        assert config_maps == ["pdf-smaller-backup-settings", "pdf-smaller-settings"], name
    pods = _pods(docs)
    receiver = pods[WAL_RECEIVER]["spec"]["containers"][0]
    assert _parsed_command(receiver, settings).command == "receive-wal"
    # The database and S3 credentials from the Secret keys the full backup reads.
    full_backup_env = pods["db-backup-full"]["spec"]["containers"][0]["env"]
    assert [e for e in receiver["env"] if "valueFrom" in e] == [e for e in full_backup_env if "valueFrom" in e]


def test_the_wal_receiver_is_one_pod_with_a_persistent_spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One receiver per replication slot, its spool (--spool) on a claim of its own that outlives the pod
    (the server may recycle what pg_receivewal wrote there), and time to store it once more on SIGTERM."""
    docs = _built(tmp_path)
    settings = _backup_settings(docs)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    stateful_set = _wal_receiver(docs)
    spec = stateful_set["spec"]
    assert spec["replicas"] == 1
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    spool = _parsed_command(container, settings).spool
    claims = {claim["metadata"]["name"]: claim for claim in spec["volumeClaimTemplates"]}
    mounted = next((mount["name"] for mount in container["volumeMounts"] if mount["mountPath"] == spool), None)
    assert mounted in claims, f"{spool} is on {mounted}, not on a claim"
    assert mounted not in {volume["name"] for volume in pod.get("volumes", [])}
    assert claims[mounted]["spec"]["resources"]["requests"]["storage"]
    assert spec.get("persistentVolumeClaimRetentionPolicy", {}).get("whenDeleted", "Retain") == "Retain"
    assert pod["terminationGracePeriodSeconds"] > RECEIVER_STOP_SECONDS
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == spec["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert _selects({"matchLabels": service["spec"]["selector"]}, spec["template"]["metadata"]["labels"])


def test_prometheus_may_scrape_the_wal_receiver_s_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The port receive-wal serves its metrics on is the container's port named `metrics`, annotated as
    the base's pods are (the plain-Prometheus scrape job keeps those), probed, and open to the
    `monitoring` namespace by a NetworkPolicy of the rendered overlay."""
    docs = _built(tmp_path)
    settings = _backup_settings(docs)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    template = _wal_receiver(docs)["spec"]["template"]
    container = template["spec"]["containers"][0]
    args = _parsed_command(container, settings)
    assert args.metrics_host == "0.0.0.0"
    assert {"name": "metrics", "containerPort": args.metrics_port} in container["ports"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(args.metrics_port)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] in ("metrics", args.metrics_port), probe
    policies = [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy" and _selects(d["spec"]["podSelector"], template["metadata"]["labels"])
    ]
    assert any(_ingress_allows_monitoring(policy, template, args.metrics_port) for policy in policies)


def test_the_pods_are_locked_down_like_the_base_and_may_reach_only_postgres_and_s3(tmp_path: Path) -> None:
    docs = _built(tmp_path)
    pods = _pods(docs)
    for name, template in pods.items():
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["fsGroup"]) == (10001, 10001), name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        container = pod["containers"][0]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}, name
        assert container["resources"]["limits"]["memory"], name
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert mounts == ({"/work", "/spool"} if name == WAL_RECEIVER else {"/work"}), name
        assert {"name": "TMPDIR", "value": "/work"} in container["env"]
        assert pod["automountServiceAccountToken"] is False
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "backups")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "backups"}
    assert all(_selects(policy["spec"]["podSelector"], pod["metadata"]["labels"]) for pod in pods.values())
    ports = {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}
    assert ports == {5432, 443, 9000}
    assert "ingress" not in policy["spec"]
