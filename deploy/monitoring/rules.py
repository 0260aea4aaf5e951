"""The Prometheus recording rules and alerts, defined once; the committed YAML is rendered from here.

    .venv/bin/python -m deploy.monitoring.rules            # rewrite the files below
    .venv/bin/python -m deploy.monitoring.rules --check    # exit 1 when a committed file is stale

It writes deploy/monitoring/prometheus/{rules,alerts}.yaml (plain Prometheus: `rule_files`; the `make
run` stack loads them) and, for Kubernetes, the kustomize component deploy/k8s/components/monitoring/:
the same groups as a PrometheusRule (Prometheus Operator) and as files of a ConfigMap.

Every alert has a severity (critical pages, warning opens a ticket, info informs), a summary, a
description and a runbook URL pointing at its section of docs/runbook.md. `render(for_scale=...)`
gives the same rules with shorter `for:` durations, for tests that watch an alert turn pending
against a live system without waiting minutes.

Edge traffic is measured at Envoy (`envoy_http_downstream_rq_*` of the `public` listener): it sees
every answer users get, the gateway's and Envoy's own (413, 429, 503 when the gateway is down).
Latency is that of the `calls` virtual cluster: transfers and watches take as long as they must.
Memory and CPU are the cgroup's (`pdfsmaller_container_*`, libs/cgroup.py: the container in
Kubernetes, children included), against its limits; with no limit there is no series to alert on.
The backups group watches wal-receiver (`pdfsmaller-ops receive-wal`): where none runs (`make run`, a
managed database) it has no series, and nothing fires.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deploy.monitoring import generated

OUTPUT_DIR = Path(__file__).resolve().parent / "prometheus"
COMPONENT_DIR = Path(__file__).resolve().parents[1] / "k8s" / "components" / "monitoring"
RUNBOOK = "docs/runbook.md"
# Availability objective of the public API: answers that are not 5xx, over 30 days.
AVAILABILITY_SLO = 0.999
ERROR_BUDGET = 1 - AVAILABILITY_SLO

_EDGE = 'envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="public"}'
_EDGE_5XX = 'envoy_http_downstream_rq_xx{envoy_http_conn_manager_prefix="public",envoy_response_code_class="5"}'
# Response time of the API calls users wait on: Envoy's `calls` virtual cluster (deploy/envoy/envoy.yaml),
# which leaves out uploads and downloads (as long as their bytes) and watches (as long as their job).
_EDGE_TIME = 'envoy_vhost_vcluster_upstream_rq_time_bucket{envoy_virtual_host="public",envoy_virtual_cluster="calls"}'
_GATEWAY = 'grpc_server_handled_total{service="gateway",grpc_service="pdfsmaller.gateway.v1.GatewayService"}'
# Windows of the 5xx ratio: the guide's alerts (1m, 5m) and the burn-rate pairs (SRE workbook, ch. 5).
ERROR_RATIO_WINDOWS = ("1m", "5m", "30m", "1h", "2h", "6h", "1d", "3d")


@dataclass(frozen=True)
class Record:
    name: str
    expr: str

    def rule(self) -> dict[str, Any]:
        return {"record": self.name, "expr": self.expr}


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def anchor(self) -> str:
        """The runbook section's anchor: its heading is the alert's name."""
        return self.name.lower()

    def rule(self, for_scale: float = 1.0) -> dict[str, Any]:
        rule: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        if self.for_ != "0s":
            rule["for"] = _scaled(self.for_, for_scale)
        rule["labels"] = {"severity": self.severity, **self.labels}
        rule["annotations"] = {
            "summary": self.summary,
            "description": self.description,
            "runbook_url": f"{RUNBOOK}#{self.anchor}",
        }
        return rule


def _scaled(duration: str, scale: float) -> str:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    seconds = int(duration[:-1]) * units[duration[-1]]
    return f"{max(1, round(seconds * scale))}s" if scale != 1.0 else duration


def edge_records() -> list[Record]:
    records = [Record(f"pdfsmaller:edge_requests:rate{w}", f"sum(rate({_EDGE}[{w}]))") for w in ("1m", "5m")]
    records += [
        Record(f"pdfsmaller:edge_5xx:ratio_rate{w}", f"sum(rate({_EDGE_5XX}[{w}])) / sum(rate({_EDGE}[{w}]))")
        for w in ERROR_RATIO_WINDOWS
    ]
    records.append(
        Record(
            "pdfsmaller:edge_latency_seconds:p95_5m",
            f"histogram_quantile(0.95, sum by (le) (rate({_EDGE_TIME}[5m]))) / 1000",
        )
    )
    records.append(Record("pdfsmaller:gateway_requests:rate5m", f"sum by (grpc_method) (rate({_GATEWAY}[5m]))"))
    return records


def system_records() -> list[Record]:
    return [
        # df's Use%: used / (used + available); one series per service and folder (objects, work).
        Record(
            "pdfsmaller:volume_usage:ratio",
            "max by (service, volume) (pdfsmaller_volume_used_bytes"
            " / (pdfsmaller_volume_used_bytes + pdfsmaller_volume_available_bytes))",
        ),
        # Every jobs replica reports the same global count: max, never sum.
        Record("pdfsmaller:jobs_queued:max", 'max(jobs_queue_depth{state="QUEUED"})'),
        Record("pdfsmaller:jobs_oldest_queued_seconds:max", "max(pdfsmaller_jobs_oldest_queued_seconds)"),
        Record(
            "pdfsmaller:jobs_db_failures:rate1m",
            "sum(rate(pdfsmaller_jobs_db_pool_connect_failures_total[1m]))"
            " + sum(rate(pdfsmaller_jobs_db_pool_request_errors_total[1m]))",
        ),
    ]


def system_alerts() -> list[Alert]:
    return [
        Alert(
            "DatabaseConnectionFailures",
            "pdfsmaller:jobs_db_failures:rate1m > 0",
            "1m",
            "critical",
            "The jobs service cannot reach PostgreSQL",
            "Connections to PostgreSQL have failed, or the pool gave up on requests, for a minute: "
            "jobs cannot be created, leased or finished.",
        ),
        Alert(
            "QueueDepthCritical",
            "pdfsmaller:jobs_queued:max > 1000",
            "0s",
            "critical",
            "More than 1000 jobs are queued",
            "{{ $value }} jobs wait for a worker: the compressors are down, stuck or far too few.",
        ),
        Alert(
            "DiskUsageCritical",
            "pdfsmaller:volume_usage:ratio > 0.9",
            "0s",
            "critical",
            "A data folder's disk is over 90% full",
            "{{ $labels.service }}'s {{ $labels.volume }} folder is on a filesystem "
            "{{ $value | humanizePercentage }} full: writes fail when it fills.",
        ),
        Alert(
            "DiskUsageHigh",
            "pdfsmaller:volume_usage:ratio > 0.8",
            "0s",
            "warning",
            "A data folder's disk is over 80% full",
            "{{ $labels.service }}'s {{ $labels.volume }} folder is on a filesystem "
            "{{ $value | humanizePercentage }} full.",
        ),
    ]


def _burn(long: str, short: str, factor: float) -> str:
    threshold = round(factor * ERROR_BUDGET, 6)
    return (
        f"(pdfsmaller:edge_5xx:ratio_rate{long} > {threshold} and pdfsmaller:edge_5xx:ratio_rate{short} > {threshold})"
    )


def edge_alerts() -> list[Alert]:
    return [
        Alert(
            "ServiceUnavailable",
            "pdfsmaller:edge_5xx:ratio_rate1m > 0.05",
            "2m",
            "critical",
            "More than 5% of API requests fail with a server error",
            "{{ $value | humanizePercentage }} of the requests at the edge answered 5xx for 2 minutes.",
        ),
        Alert(
            "HighErrorRate",
            "pdfsmaller:edge_5xx:ratio_rate5m > 0.01",
            "5m",
            "warning",
            "More than 1% of API requests fail with a server error",
            "{{ $value | humanizePercentage }} of the requests at the edge answered 5xx over 5 minutes.",
        ),
        Alert(
            "HighLatency",
            "pdfsmaller:edge_latency_seconds:p95_5m > 2",
            "5m",
            "warning",
            "95th-percentile API response time above 2 s",
            "p95 response time of API calls at the edge is {{ $value | humanizeDuration }} "
            "(uploads, downloads and watches not counted).",
        ),
        Alert(
            "ErrorBudgetBurnFast",
            f"{_burn('1h', '5m', 14.4)} or {_burn('6h', '30m', 6)}",
            "2m",
            "critical",
            f"The API burns its {AVAILABILITY_SLO:.1%} availability budget fast",
            "At this rate the 30-day error budget is gone within 2 to 5 days (SRE workbook: 2% of the budget "
            "in an hour, or 5% in six hours).",
        ),
        Alert(
            "ErrorBudgetBurnSlow",
            f"{_burn('1d', '2h', 3)} or {_burn('3d', '6h', 1)}",
            "1h",
            "warning",
            f"The API burns its {AVAILABILITY_SLO:.1%} availability budget steadily",
            "A slow leak of server errors: at this rate the 30-day error budget is gone before the month ends.",
        ),
    ]


def resource_records() -> list[Record]:
    # One series per scrape target: every pod is its own container. Under `make run` the services share
    # one cgroup, so each reports the same figures. No limit, no limit series: the ratio has no series.
    return [
        Record(
            "pdfsmaller:container_memory_usage:ratio",
            "max by (service, instance) (pdfsmaller_container_memory_working_set_bytes"
            " / pdfsmaller_container_memory_limit_bytes)",
        ),
        Record(
            "pdfsmaller:container_cpu_usage:ratio_rate5m",
            "max by (service, instance) (rate(pdfsmaller_container_cpu_usage_seconds_total[5m])"
            " / pdfsmaller_container_cpu_limit_cores)",
        ),
    ]


def resource_alerts() -> list[Alert]:
    return [
        # 1m: four scrapes, so one sample at a job's peak does not page; at 95% the OOM kill may be seconds
        # away, and then the alert clears with the restart: the page says the limit is too tight for the load.
        Alert(
            "MemoryUsageCritical",
            "pdfsmaller:container_memory_usage:ratio > 0.95",
            "1m",
            "critical",
            "A container is at its memory limit",
            "{{ $labels.service }} ({{ $labels.instance }}) has used {{ $value | humanizePercentage }} of its "
            "memory limit for a minute: the kernel OOM-kills it at 100%.",
        ),
        Alert(
            "MemoryUsageHigh",
            "pdfsmaller:container_memory_usage:ratio > 0.85",
            "10m",
            "warning",
            "A container uses over 85% of its memory limit",
            "{{ $labels.service }} ({{ $labels.instance }}) has used {{ $value | humanizePercentage }} of its "
            "memory limit for 10 minutes.",
        ),
        Alert(
            "HighCPU",
            "pdfsmaller:container_cpu_usage:ratio_rate5m > 0.8",
            "10m",
            "warning",
            "A container uses over 80% of its CPU limit",
            "{{ $labels.service }} ({{ $labels.instance }}) has used {{ $value | humanizePercentage }} of its "
            "CPU limit for 10 minutes: at 100% it is throttled and everything it does slows down.",
        ),
    ]


_ENGINE_LIMITS = 'compressor_jobs_total{outcome=~"TIMEOUT|OUT_OF_MEMORY|ENGINE_CRASHED"}'
_SERVER_ERRORS = 'grpc_server_handled_total{grpc_code=~"INTERNAL|UNKNOWN|DATA_LOSS"}'
# Jobs the workers processed to an end: cancelled and expired ones say nothing of the processing.
_PROCESSED = 'jobs_finished_total{state=~"SUCCEEDED|FAILED"}'


def product_records() -> list[Record]:
    return [
        Record("pdfsmaller:compressor_worker_threads:sum", "sum(pdfsmaller_compressor_worker_threads)"),
        Record(
            "pdfsmaller:jobs_failed:ratio_rate15m",
            f'sum(rate(jobs_finished_total{{state="FAILED"}}[15m])) / sum(rate({_PROCESSED}[15m]))',
        ),
        Record("pdfsmaller:jobs_processed:increase15m", f"sum(increase({_PROCESSED}[15m]))"),
    ]


def product_alerts() -> list[Alert]:
    return _job_alerts() + _dependency_alerts() + _fault_alerts()


def _job_alerts() -> list[Alert]:
    return [
        Alert(
            "NoCompressorWorkers",
            "(pdfsmaller:jobs_queued:max > 0) unless on () (pdfsmaller:compressor_worker_threads:sum > 0)",
            "5m",
            "critical",
            "Jobs are queued and no compressor is running",
            "For 5 minutes jobs have been queued ({{ $value }} now) and no compressor has reported worker "
            "threads: no file is being compressed.",
        ),
        Alert(
            "QueueBacklog",
            "pdfsmaller:jobs_oldest_queued_seconds:max > 600",
            "5m",
            "warning",
            "The workers do not keep up with the queue",
            "The oldest due job has waited {{ $value | humanizeDuration }} (over 10 minutes, for 5 minutes): "
            "the compressors are too few, stuck or not leasing.",
        ),
        Alert(
            "JobsFailing",
            "pdfsmaller:jobs_failed:ratio_rate15m > 0.2 and on () pdfsmaller:jobs_processed:increase15m >= 10",
            "0s",
            "warning",
            "More than 20% of jobs fail",
            "{{ $value | humanizePercentage }} of the jobs that ended in the last 15 minutes failed "
            "(counted from 10 ended jobs on): bad inputs, or engine limits too tight.",
        ),
        # A counter series is born at its first count, which increase() cannot see: the `unless ... offset`
        # term counts the series born within the window (a new pod's first TIMEOUT).
        Alert(
            "EngineLimitsHit",
            f"sum by (outcome) (increase({_ENGINE_LIMITS}[30m])) > 0"
            f" or sum by (outcome) ({_ENGINE_LIMITS} unless {_ENGINE_LIMITS} offset 30m) > 0",
            "0s",
            "warning",
            "Jobs hit the compression engine's limits",
            "Jobs ended with {{ $labels.outcome }} in the last 30 minutes: the engine ran out of CPU time "
            "(TIMEOUT) or memory (OUT_OF_MEMORY), or crashed (ENGINE_CRASHED).",
        ),
        Alert(
            "LeasesExpiring",
            'sum(increase(jobs_lease_expirations_total{outcome!="outage"}[15m])) > 0',
            "0s",
            "warning",
            "Workers stop renewing the leases of their jobs",
            "Leases ran out in the last 15 minutes (outages of the database not counted): workers died, "
            "were killed or hung mid-job; their jobs are retried, or failed when out of attempts.",
        ),
    ]


def _dependency_alerts() -> list[Alert]:
    return [
        Alert(
            "ScannerDependencyDown",
            "scanner_dependency_up == 0",
            "1m",
            "critical",
            "A scanner cannot reach clamd or storage",
            "The scanner at {{ $labels.instance }} has not reached {{ $labels.dependency }} for a minute: it is "
            "not ready, and uploads are refused (503) while no scanner is.",
        ),
        Alert(
            "RedisDown",
            "pdfsmaller_gateway_redis_up == 0 or sum(rate(jobs_event_publish_failures_total[1m])) > 0",
            "2m",
            "warning",
            "Redis does not answer",
            "{{ if $labels.feature }}The gateway at {{ $labels.instance }} has failed to reach Redis for "
            "{{ $labels.feature }} for 2 minutes: it lets those requests through unchecked."
            "{{ else }}The jobs service has failed to publish job events to Redis for 2 minutes: "
            "watchers fall back to re-reading, status updates are late.{{ end }}",
        ),
        # Failures in every 10-minute window for 20 minutes: deletions have kept failing for half an hour,
        # where one failed pass (storage restarting) is retried by the next sweep.
        Alert(
            "RetentionStuck",
            "sum(increase(jobs_object_delete_failures_total[10m])) > 0",
            "20m",
            "warning",
            "Files past their retention are not being deleted",
            "Deleting expired jobs' files has kept failing for 30 minutes (each sweep retries): they stay stored "
            "past their retention.",
        ),
    ]


def _fault_alerts() -> list[Alert]:
    # `rate(...[5m]) > 0 for 5m`: errors keep coming for 5 minutes; a single one never fires.
    return [
        Alert(
            "ScannerErrors",
            'sum(rate(scanner_scans_total{verdict="error"}[5m])) > 0',
            "5m",
            "warning",
            "Scans keep failing",
            "Scans have ended in error for 5 minutes: those uploads are refused (SCAN_FAILED); clamd or "
            "storage is in trouble.",
        ),
        Alert(
            "ServerErrors",
            f"sum by (service) (rate({_SERVER_ERRORS}[5m])) > 0",
            "5m",
            "warning",
            "A service answers with internal errors",
            "{{ $labels.service }} has answered calls with INTERNAL, UNKNOWN or DATA_LOSS for 5 minutes: a bug; "
            "the log line with the traceback holds the trace id.",
        ),
        Alert(
            "TargetDown",
            'up{service!=""} == 0',
            "2m",
            "warning",
            "Prometheus cannot scrape a service",
            "{{ $labels.service }} at {{ $labels.instance }} has not answered a scrape for 2 minutes: it is down "
            "or unreachable, and the alerts on its metrics see nothing.",
        ),
    ]


_WAL = "pdfsmaller_wal_receiver"
# Window in which a receiver that vanished (its pod deleted, or Pending: no target, so no TargetDown) still
# counts with its last value: the archive's age keeps growing, and WalArchiveStale keeps firing, for a day.
_VANISHED_RECEIVER_WINDOW = "1d"


def backup_records() -> list[Record]:
    # `max by (service)`: a new receiver pod is a new series (its instance) beside the old one's, still in the
    # window; the newest store of either is the archive's.
    return [
        Record(
            "pdfsmaller:wal_archive_age_seconds:max",
            f"time() - max by (service) (last_over_time({_WAL}_last_stored_timestamp_seconds"
            f"[{_VANISHED_RECEIVER_WINDOW}]))",
        ),
    ]


def backup_alerts() -> list[Alert]:
    """wal-receiver (`pdfsmaller-ops receive-wal`): no series, no alert, where none runs (make run)."""
    return [
        # The share of the last 5 minutes, not `== 0`: a pg_receivewal that connects and exits at once
        # (the slot in use, replication refused) runs for one pass of each backoff, a scrape now and then
        # sees 1, and `== 0 for 5m` would never fire. The max over the pods: an old pod's series must not
        # fire for a new pod that streams.
        Alert(
            "WalReceiverNotStreaming",
            f"max by (service) (avg_over_time({_WAL}_streaming[5m])) < 0.5",
            "5m",
            "critical",
            "WAL is not being streamed to the archive",
            "For 5 minutes pg_receivewal has run less than half the time ({{ $value | humanizePercentage }} of "
            "the last 5 minutes): new WAL does not reach the archive, the recovery point falls behind, and the "
            "replication slot keeps that WAL on the database server meanwhile.",
        ),
        # The receiver refreshes its timestamp on every pass that stored what was new or found nothing new
        # (even while pg_receivewal is down): a stale one means the stores fail or the receiver is stuck or gone.
        Alert(
            "WalArchiveStale",
            "pdfsmaller:wal_archive_age_seconds:max > 300",
            "2m",
            "critical",
            "The WAL archive has not been updated for over 5 minutes",
            "The receiver last stored WAL {{ $value | humanizeDuration }} ago (decades: never since it started): "
            "a restore now loses everything after that point.",
        ),
        Alert(
            "WalReceiverStoreFailures",
            f"sum by (service) (rate({_WAL}_store_failures_total[5m])) > 0",
            "10m",
            "warning",
            "The WAL receiver keeps failing to store WAL",
            "Stores of WAL in the backup location have kept failing for 10 minutes (each pass retries): the "
            "spool fills with the segments not stored yet.",
        ),
        Alert(
            "WalReceiverSlotLost",
            f"{_WAL}_slot_lost == 1",
            "0s",
            "critical",
            "The database server invalidated the WAL receiver's replication slot",
            "The server dropped WAL the receiver had not received (max_slot_wal_keep_size): the archive has a "
            "gap, no restore reaches past it, and the receiver cannot stream until a new full backup is taken "
            "and the slot recreated.",
        ),
    ]


_MAINTENANCE = "pdfsmaller_maintenance"
# The runs the CronJobs schedule (deploy/k8s/base/maintenance.yaml, components/backups/cronjobs.yaml), by the
# task ops/run_record.py records them as, and how old their last success may grow: one period and a margin,
# two for the orphan sweep (a missed day is harmless). Hand-run variants (sweep-orphans-dry-run) are not watched.
MAINTENANCE_DEADLINES = {"sweep-orphans": "50h", "vacuum": "8d"}
BACKUP_DEADLINES = {"backup": "7h", "backup-logical": "26h", "backup-files": "26h", "recovery-test": "32d"}
_SCHEDULED_TASKS = "|".join([*MAINTENANCE_DEADLINES, *BACKUP_DEADLINES])


def _seconds(duration: str) -> int:
    return int(duration[:-1]) * {"h": 3600, "d": 86400}[duration[-1]]


def _overdue(deadlines: dict[str, str]) -> str:
    return " or ".join(
        f'pdfsmaller:maintenance_success_age_seconds:max{{task="{task}"}} > {_seconds(deadline)}'
        for task, deadline in deadlines.items()
    )


def maintenance_records() -> list[Record]:
    # Every jobs replica reads the same table and reports the same figures: max, never sum. A task that never
    # succeeded has no success series, so no age: nothing fires where no run ever happened (make run).
    return [
        Record(
            "pdfsmaller:maintenance_success_age_seconds:max",
            f"time() - max by (task) ({_MAINTENANCE}_last_success_timestamp_seconds)",
        ),
    ]


def maintenance_alerts() -> list[Alert]:
    """The pdfsmaller-ops runs recorded in maintenance_runs (ops/run_record.py), as the jobs service exports them."""
    return [
        Alert(
            "MaintenanceOverdue",
            _overdue(MAINTENANCE_DEADLINES),
            "0s",
            "warning",
            "A scheduled maintenance task has not succeeded for too long",
            "The last successful {{ $labels.task }} run finished {{ $value | humanizeDuration }} ago (the orphan "
            "sweep runs daily, VACUUM weekly): its CronJob does not run, or its runs fail.",
        ),
        Alert(
            "BackupOverdue",
            _overdue(BACKUP_DEADLINES),
            "0s",
            "warning",
            "A scheduled backup has not succeeded for too long",
            "The last successful {{ $labels.task }} run finished {{ $value | humanizeDuration }} ago (physical "
            "backups run every 6 hours, logical and file backups daily, the recovery test monthly): a restore "
            "now starts from an older backup and replays more WAL, or nobody has proved lately that one works.",
        ),
        # 1h: a CronJob retries a failed run (backoffLimit), and a retry that succeeds ends the failure.
        Alert(
            "MaintenanceFailing",
            f'max by (task) ({_MAINTENANCE}_last_run_ok{{task=~"{_SCHEDULED_TASKS}"}}) == 0',
            "1h",
            "warning",
            "The last run of a scheduled maintenance or backup task failed",
            "The newest {{ $labels.task }} run failed, and no run has succeeded since, for an hour: "
            "maintenance_runs says at which step and why.",
        ),
    ]


def _sections() -> list[tuple[str, list[Record], list[Alert]]]:
    """(group name, its recording rules, its alerts): `<name>` in rules.yaml, `<name>-alerts` in alerts.yaml."""
    return [
        ("pdfsmaller-edge", edge_records(), edge_alerts()),
        ("pdfsmaller-system", system_records(), system_alerts()),
        ("pdfsmaller-resources", resource_records(), resource_alerts()),
        ("pdfsmaller-product", product_records(), product_alerts()),
        ("pdfsmaller-backups", backup_records(), backup_alerts()),
        ("pdfsmaller-maintenance", maintenance_records(), maintenance_alerts()),
    ]


def all_alerts() -> list[Alert]:
    return [alert for _, _, alerts in _sections() for alert in alerts]


def _groups(for_scale: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    sections = _sections()
    rules = [{"name": name, "rules": [r.rule() for r in records]} for name, records, _ in sections]
    alerts = [{"name": f"{name}-alerts", "rules": [a.rule(for_scale) for a in alerts]} for name, _, alerts in sections]
    return rules, alerts


def _yaml(document: dict[str, Any]) -> str:
    header = "# Generated by `python -m deploy.monitoring.rules` from deploy/monitoring/rules.py: edit that.\n"
    return header + yaml.safe_dump(document, sort_keys=False, width=1000)


def render(for_scale: float = 1.0) -> dict[str, str]:
    """File name -> YAML text of the rules (`for_scale` < 1: shorter `for:` for live tests)."""
    rules, alerts = _groups(for_scale)
    return {"rules.yaml": _yaml({"groups": rules}), "alerts.yaml": _yaml({"groups": alerts})}


def render_component() -> dict[str, str]:
    """The Kubernetes component's generated files: a PrometheusRule and the ConfigMap's two rule files."""
    rules, alerts = _groups(1.0)
    prometheus_rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "pdf-smaller",
            "labels": {"app.kubernetes.io/part-of": "pdf-smaller", "prometheus": "pdf-smaller"},
        },
        "spec": {"groups": rules + alerts},
    }
    return {"prometheusrule.yaml": _yaml(prometheus_rule), **render()}


def outputs() -> dict[Path, str]:
    """Every generated file, by path."""
    files = {OUTPUT_DIR / name: text for name, text in render().items()}
    files.update({COMPONENT_DIR / name: text for name, text in render_component().items()})
    return files


def main(argv: list[str] | None = None) -> int:
    return generated.main("deploy.monitoring.rules", __doc__, outputs, argv)


if __name__ == "__main__":
    sys.exit(main())
