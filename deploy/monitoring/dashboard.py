"""The Grafana dashboard, built with the Grafana Foundation SDK; the committed JSON is rendered from here.

    .venv/bin/python -m deploy.monitoring.dashboard            # rewrite deploy/monitoring/grafana/pdf-smaller.json
    .venv/bin/python -m deploy.monitoring.dashboard --check    # exit 1 when the committed file is stale

Import the JSON into Grafana (Dashboards > New > Import) and pick the Prometheus data source. Panels
query the recording rules of deploy/monitoring/rules.py where one exists, so the dashboard and the
alerts read the same numbers. Rows read top-down as on-call does: what users see, the services and
upload checks, the queue and workers, the engine's results, the database and its WAL archive, the
maintenance and backup runs, the resources; each panel's description says what it shows, what a bad
value looks like and which alert watches it. tests/test_prometheus_stack.py runs every panel's query
against the stack's real Prometheus and requires data, except where a query `needs` a series the
stack lacks (no cgroup limit, no WAL receiver, no maintenance run yet): there it requires none.
"""

from __future__ import annotations

import json
import string
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

from deploy.monitoring import generated

OUTPUT = Path(__file__).resolve().parent / "grafana" / "pdf-smaller.json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str
    # A series only some machines have (a cgroup limit): the query has data exactly where it exists.
    needs: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    queries: tuple[Query, ...]
    description: str
    # The y axis reaches at least this (1 for shares that cannot pass 100%); None: fit the data.
    soft_max: float | None = None


def _ratio(part: str, whole: str, by: str = "") -> str:
    """part / whole of per-second rates (by `by`), 0 rather than "no data" while `part` has no series yet."""
    grouping = f"sum by ({by}) " if by else "sum "
    total = f"{grouping}(rate({whole}[5m]))"
    share = f"{grouping}(rate({part}[5m]))"
    return f"({share} or {total} * 0) / {total}"


def _quantile(quantile: float, histogram: str, by: str = "", matchers: str = "") -> str:
    labels = f"{by}, le" if by else "le"
    selector = f"{histogram}_bucket{{{matchers}}}" if matchers else f"{histogram}_bucket"
    return f"histogram_quantile({quantile}, sum by ({labels}) (rate({selector}[5m])))"


def _per_request(counter: str) -> str:
    """Seconds of a pool counter per connection request: the average of it per request."""
    requests = "sum(rate(pdfsmaller_jobs_db_pool_requests_total[5m]))"
    return f"sum(rate({counter}[5m])) / {requests}"


# Methods that wait by design (a long poll for work, a stream of job events): not latency.
_WAITING_METHODS = 'grpc_method!~"LeaseJob|WatchJob"'

EDGE: tuple[Panel, ...] = (
    Panel(
        "Request rate",
        "reqps",
        (Query("pdfsmaller:edge_requests:rate5m", "all requests"),),
        "Requests per second at Envoy's public listener, every route and status. Bad: a drop to 0 while "
        "users are active (Envoy or the gateway unreachable), or a surge far above normal (see Security events).",
    ),
    Panel(
        "Requests by API method",
        "reqps",
        (Query("pdfsmaller:gateway_requests:rate5m", "{{grpc_method}}"),),
        "Requests per second the gateway answered, per method (one method per route). Bad: one method "
        "stopping while the others go on: its route or the service behind it is failing.",
    ),
    Panel(
        "95th-percentile response time",
        "s",
        (
            Query("pdfsmaller:edge_latency_seconds:p95_5m", "p95 API calls"),
            Query(
                "histogram_quantile(0.95, sum by (le) (rate(envoy_vhost_vcluster_upstream_rq_time_bucket"
                '{envoy_virtual_host="public",envoy_virtual_cluster="transfers"}[5m]))) / 1000',
                "p95 uploads and downloads",
            ),
        ),
        "Envoy's 95th-percentile response time over 5 minutes: of the API calls users wait on, and apart, of "
        "uploads and downloads (as long as their bytes take; watches are left out). Bad: calls above 2 s for "
        "5 minutes fires HighLatency; the gRPC handling time by service shows the slow hop.",
    ),
    Panel(
        "Server error ratio",
        "percentunit",
        (
            Query("pdfsmaller:edge_5xx:ratio_rate5m", "5xx, 5 min"),
            Query("pdfsmaller:edge_5xx:ratio_rate1h", "5xx, 1 hour"),
        ),
        "Share of responses with a 5xx status (refused input is 4xx and not counted). Bad: above 1% for "
        "5 minutes fires HighErrorRate, above 5% for 2 minutes ServiceUnavailable; the 1-hour line is the SLO's view.",
    ),
)

SERVICES: tuple[Panel, ...] = (
    Panel(
        "gRPC error ratio by service",
        "percentunit",
        (
            Query(
                _ratio('grpc_server_handled_total{grpc_code!="OK"}', "grpc_server_handled_total", "service"),
                "{{service}}",
            ),
        ),
        "Calls answered with any code but OK, per service. Refusals of bad input count, so a low steady "
        "level is normal. Bad: a jump; the service whose ratio jumps while its callers' stays put is the one failing.",
    ),
    Panel(
        "gRPC p95 handling time by service",
        "s",
        (Query(_quantile(0.95, "grpc_server_handling_seconds", "service", _WAITING_METHODS), "{{service}}"),),
        "95th-percentile time each service takes to answer a call (the jobs service's long poll for work "
        "and the job event streams left out: they wait by design). Bad: one service far above its usual line.",
    ),
    Panel(
        "Uploads by outcome",
        "reqps",
        (Query("sum by (outcome) (rate(gateway_uploads_total[5m]))", "{{outcome}}"),),
        "Uploads per second by what the gateway did with them (ACCEPTED, or the refusal). Bad: "
        "STORAGE_FAILED or SCAN_FAILED above 0 (a backend is failing), or ACCEPTED dropping while uploads go on.",
    ),
    Panel(
        "Scans by verdict",
        "ops",
        (Query("sum by (verdict) (rate(scanner_scans_total[5m]))", "{{verdict}}"),),
        "Malware and structure scans per second by verdict (clean, infected, refused, error). Bad: any "
        "error (clamd unreachable or failing: uploads are refused; ScannerErrors), or a burst of infected files.",
    ),
    Panel(
        "Scan time",
        "s",
        (
            Query(_quantile(0.5, "scanner_scan_seconds"), "median"),
            Query(_quantile(0.95, "scanner_scan_seconds"), "p95"),
        ),
        "Time to scan one upload (fetch from storage, clamd, structure check); every upload waits for it. "
        "Bad: p95 climbing toward the gateway's call timeout (clamd overloaded or reloading signatures).",
    ),
    Panel(
        "Security events",
        "ops",
        (Query("sum by (event) (rate(pdfsmaller_gateway_security_events_total[5m]))", "{{event}}"),),
        "Refused callers and files per second, by event (the same events are JSON lines on the security "
        "logger: docs/runbook.md shows the searches). Bad: authentication_failed bursts (key guessing or "
        "a client with a revoked key), malware_detected, a tenant stuck on rate_limit_exceeded.",
    ),
)

QUEUE: tuple[Panel, ...] = (
    Panel(
        "Queue depth",
        "short",
        (
            Query("pdfsmaller:jobs_queued:max", "QUEUED"),
            Query('max(jobs_queue_depth{state="RUNNING"})', "RUNNING"),
            Query("max(jobs_waiting_retry)", "waiting for a retry (part of QUEUED)"),
        ),
        "Jobs waiting and jobs being compressed (every jobs replica reports the same global count: the max, "
        "never the sum). Bad: QUEUED growing while RUNNING stays at the worker thread count (workers "
        "saturated) or at 0 (workers down: NoCompressorWorkers). QueueDepthCritical fires above 1000 queued.",
    ),
    Panel(
        "Queue depth by level",
        "short",
        (
            Query('max by (level) (pdfsmaller_jobs_level_queue_depth{state="QUEUED"})', "{{level}} queued"),
            Query('max by (level) (pdfsmaller_jobs_level_queue_depth{state="RUNNING"})', "{{level}} running"),
        ),
        "Queued and running jobs per compression level (from the database, like Queue depth: the max over "
        "jobs replicas). The heavy levels (high, maximum) take longest per job. Bad: one level's queue "
        "growing while the others drain (its jobs are slow or keep failing and retrying).",
    ),
    Panel(
        "Oldest queued job's wait",
        "s",
        (Query("pdfsmaller:jobs_oldest_queued_seconds:max", "oldest due job"),),
        "How long the job first in line has been due (0: nothing waits). Near 0 while workers keep up. "
        "Bad: a steady climb: nothing is leasing jobs (compressors down or not ready); QueueBacklog fires "
        "past 10 minutes.",
    ),
    Panel(
        "Jobs created and finished",
        "ops",
        (
            Query("sum(rate(jobs_created_total[5m]))", "created"),
            Query("sum by (state) (rate(jobs_finished_total[5m]))", "{{state}}"),
        ),
        "Jobs per second entering the queue and leaving it for good, by final state. Bad: created above "
        "SUCCEEDED + FAILED for long (the queue grows), or FAILED rising (see Engine results).",
    ),
    Panel(
        "Throughput, last 5 minutes",
        "opm",
        (
            Query(
                'max by (state) (pdfsmaller_jobs_finished_in_window{window_seconds="300"}) / 5', "{{state}} per minute"
            ),
        ),
        "Jobs per minute that finished SUCCEEDED or FAILED over the last 5 minutes, counted in the database "
        "by finish time (every replica's work, restarts included; the max over jobs replicas), as the "
        "queue statistics call reports it. Bad: SUCCEEDED falling to 0 while jobs queue (workers stopped), "
        "or FAILED above SUCCEEDED.",
    ),
    Panel(
        "Lease expirations and outage requeues",
        "ops",
        (
            Query("sum by (outcome) (rate(jobs_lease_expirations_total[5m]))", "lease expired: {{outcome}}"),
            Query("sum by (cause) (rate(jobs_outage_requeues_total[5m]))", "outage requeue: {{cause}}"),
        ),
        "Leases that ran out without renewal (a worker died or hung mid-job) and jobs put back because "
        "the system itself was out. Bad: any steady rate (LeasesExpiring): compressors crash or cannot reach the jobs "
        "service.",
    ),
    Panel(
        "Worker utilisation",
        "percentunit",
        (
            Query(
                "sum(rate(pdfsmaller_compressor_busy_seconds_total[5m])) / sum(pdfsmaller_compressor_worker_threads)",
                "all workers",
            ),
            Query(
                "sum by (instance) (rate(pdfsmaller_compressor_busy_seconds_total[5m])) "
                "/ sum by (instance) (pdfsmaller_compressor_worker_threads)",
                "{{instance}}",
            ),
        ),
        "Share of worker threads compressing, averaged over 5 minutes (jobs in hand count as they run). "
        "Bad: near 100% with the queue growing: add compressor replicas (or threads, if CPU allows).",
        soft_max=1,
    ),
    Panel(
        "Busy worker threads",
        "short",
        (
            Query("sum(compressor_busy_workers)", "busy now"),
            Query("sum(pdfsmaller_compressor_worker_threads)", "threads"),
        ),
        "Worker threads compressing now, and all worker threads of the running compressors. Bad: threads "
        "dropping (a compressor replica is gone) or busy pinned at threads while jobs queue.",
    ),
)

ENGINE: tuple[Panel, ...] = (
    Panel(
        "Processing time by level",
        "s",
        (
            Query(_quantile(0.5, "compressor_job_seconds", "level"), "median {{level}}"),
            Query(_quantile(0.95, "compressor_job_seconds", "level"), "p95 {{level}}"),
        ),
        "Time from lease to completion per compression level (download, engine, checks, upload of the "
        "result). Bad: p95 near the engine's CPU limit (jobs fail on it), or every level slower at once (CPU starved).",
    ),
    Panel(
        "Success rate",
        "percentunit",
        (
            Query(
                'sum(rate(jobs_finished_total{state="SUCCEEDED"}[5m])) '
                '/ sum(rate(jobs_finished_total{state=~"SUCCEEDED|FAILED"}[5m]))',
                "jobs, final outcome",
            ),
            Query(
                'sum by (level) (rate(compressor_jobs_total{outcome="SUCCEEDED"}[5m])) '
                '/ sum by (level) (rate(compressor_jobs_total{outcome!="LEASE_LOST"}[5m]))',
                "attempts {{level}}",
            ),
        ),
        "Jobs that succeeded among those that finished (cancelled ones left out), and attempts per level "
        "(a retried attempt counts as a failure here). Bad: a drop, most of all at one level: see Compressor "
        "jobs by outcome for the reason; JobsFailing fires when over 20% of the last 15 minutes' jobs (10 at "
        "least) failed. No line: no job finished in 5 minutes.",
        soft_max=1,
    ),
    Panel(
        "Compressor jobs by outcome",
        "ops",
        (Query("sum by (outcome) (rate(compressor_jobs_total[5m]))", "{{outcome}}"),),
        "Attempts per second by how they ended: SUCCEEDED, LEASE_LOST (another worker took the job over) "
        "or the engine's failure reason. Bad: a reason that was rare becoming common (a limit too low, a bad release); "
        "EngineLimitsHit fires on TIMEOUT, OUT_OF_MEMORY and ENGINE_CRASHED.",
    ),
    Panel(
        "Compression ratio",
        "percentunit",
        (
            Query(_quantile(0.5, "pdfsmaller_compressor_compression_ratio", "level"), "median {{level}}"),
            Query(
                "sum(rate(compressor_output_bytes_total[5m])) / sum(rate(compressor_input_bytes_total[5m]))",
                "all bytes",
            ),
        ),
        "Output size / input size of succeeded jobs (lower is better, 100%: the original kept): the median "
        "per level, and all output bytes over all input bytes. Bad: a level creeping toward 100% (the engine "
        "stopped shrinking files).",
        soft_max=1,
    ),
    Panel(
        "Kept originals",
        "percentunit",
        (
            Query(
                _ratio(
                    "pdfsmaller_compressor_kept_original_total",
                    'compressor_jobs_total{outcome="SUCCEEDED"}',
                    "level",
                ),
                "{{level}}",
            ),
        ),
        "Share of succeeded jobs whose result is the input itself (nothing smaller passed the checks). "
        "Bad: rising at one level (its output fails verification, or it no longer shrinks the usual files).",
        soft_max=1,
    ),
    Panel(
        "Bytes compressed",
        "Bps",
        (
            Query("sum(rate(compressor_input_bytes_total[5m]))", "input"),
            Query("sum(rate(compressor_output_bytes_total[5m]))", "output"),
        ),
        "Bytes per second of input compressed and of output stored. The gap is what users save. "
        "Bad: input at 0 while jobs queue (the workers are stuck).",
    ),
)

DATABASE: tuple[Panel, ...] = (
    Panel(
        "Connections by state",
        "short",
        (
            Query("sum by (state) (pdfsmaller_jobs_db_pool_connections)", "{{state}}"),
            Query("sum(pdfsmaller_jobs_db_pool_max_connections)", "pool maximum"),
        ),
        "PostgreSQL connections the jobs service's pools hold, lent out (in_use) or idle, against the pools' "
        "maximum (DATABASE_POOL_SIZE per replica). Bad: in_use at the maximum (requests wait for a connection).",
    ),
    Panel(
        "Requests waiting for a connection",
        "short",
        (Query("sum(pdfsmaller_jobs_db_pool_requests_waiting)", "waiting now"),),
        "Requests blocked on the pool now. Bad: above 0 for more than a moment: the pool is too small "
        "for the load, queries are slow (locks?), or PostgreSQL cannot be reached.",
    ),
    Panel(
        "Connection requests",
        "ops",
        (
            Query("sum(rate(pdfsmaller_jobs_db_pool_requests_total[5m]))", "requests"),
            Query("sum(rate(pdfsmaller_jobs_db_pool_requests_queued_total[5m]))", "had to wait"),
        ),
        "Connections asked of the pools per second, and those that had to wait for one. Bad: a rising "
        "share that had to wait.",
    ),
    Panel(
        "Average wait for a connection",
        "s",
        (Query(_per_request("pdfsmaller_jobs_db_pool_wait_seconds_total"), "wait per request"),),
        "Time a request waited for a pool connection, on average. Bad: above a few milliseconds: every "
        "jobs call is slowed by that much.",
    ),
    Panel(
        "Average time holding a connection",
        "s",
        (Query(_per_request("pdfsmaller_jobs_db_pool_usage_seconds_total"), "held per request"),),
        "Time a connection stays lent out per request: the queries and the work between them. Bad: a "
        "climb without more load: slow queries or lock waits (check pg_stat_activity).",
    ),
    Panel(
        "Database failures",
        "ops",
        (
            Query("pdfsmaller:jobs_db_failures:rate1m", "all failures, 1 min"),
            Query("sum(rate(pdfsmaller_jobs_db_pool_connect_failures_total[5m]))", "failed connects"),
            Query("sum(rate(pdfsmaller_jobs_db_pool_request_errors_total[5m]))", "no connection in time"),
            Query("sum(rate(pdfsmaller_jobs_db_pool_connections_lost_total[5m]))", "connections lost"),
        ),
        "Connections that could not be opened, requests that got no connection in time and broken "
        "connections discarded. Bad: anything above 0; DatabaseConnectionFailures fires when the 1-minute "
        "line stays above 0 for 1 minute.",
    ),
)

# wal-receiver (the backups component's `pdfsmaller-ops receive-wal`): only where one runs, hence `needs`.
_WAL = "pdfsmaller_wal_receiver"
WAL_ARCHIVE: tuple[Panel, ...] = (
    Panel(
        "WAL archive age",
        "s",
        (
            Query(
                "pdfsmaller:wal_archive_age_seconds:max",
                "since the last store",
                needs=f"{_WAL}_last_stored_timestamp_seconds",
            ),
        ),
        "Seconds since wal-receiver last stored WAL in the backup location; it does every 5 s, even with "
        "nothing new, so a few seconds is normal. No line: no receiver runs (make run, a managed database). "
        "Bad: above 5 minutes for 2 minutes fires WalArchiveStale (its stores fail, or it is stuck or gone). "
        "It stays low while pg_receivewal is down: see WAL streaming.",
    ),
    Panel(
        "WAL streaming",
        "short",
        (
            Query(f"max({_WAL}_streaming)", "pg_receivewal running (1)", needs=f"{_WAL}_streaming"),
            Query(f"sum(increase({_WAL}_restarts_total[5m]))", "restarts in 5 min", needs=f"{_WAL}_restarts_total"),
            Query(f"max({_WAL}_slot_lost)", "slot lost (1)", needs=f"{_WAL}_slot_lost"),
        ),
        "Whether pg_receivewal streams the WAL through the replication slot, its restarts, and whether the "
        "server invalidated the slot. Bad: running at 0, or restarts climbing (it connects and exits again): "
        "under half the time for 5 minutes fires WalReceiverNotStreaming; slot lost at 1 fires "
        "WalReceiverSlotLost (the archive has a gap: take a full backup).",
    ),
    Panel(
        "WAL stores",
        "ops",
        (
            Query(
                f"sum(rate({_WAL}_files_archived_total[5m]))",
                "segments and history files",
                needs=f"{_WAL}_files_archived_total",
            ),
            Query(
                f"sum(rate({_WAL}_partial_uploads_total[5m]))",
                "segment being written",
                needs=f"{_WAL}_partial_uploads_total",
            ),
            Query(f"sum(rate({_WAL}_store_failures_total[5m]))", "failed", needs=f"{_WAL}_store_failures_total"),
        ),
        "Stores per second in the backup location: completed WAL segments (16 MiB each) and the partial "
        "segment as it grows. Bad: failed above 0 for 10 minutes fires WalReceiverStoreFailures (S3 down or "
        "refusing); no partial stores while the database takes writes (not streaming).",
    ),
)

_RUNS = "pdfsmaller_maintenance"
# The pdfsmaller-ops runs recorded in maintenance_runs (ops/run_record.py): absent until a first run.
MAINTENANCE: tuple[Panel, ...] = (
    Panel(
        "Time since the last successful run",
        "s",
        (
            Query(
                "pdfsmaller:maintenance_success_age_seconds:max",
                "{{task}}",
                needs=f"{_RUNS}_last_success_timestamp_seconds",
            ),
        ),
        "How long ago each scheduled task (backup, backup-files, backup-logical, sweep-orphans, vacuum) last "
        "succeeded, from the runs pdfsmaller-ops records in the jobs database. Bad: backup above 7 h fires "
        "BackupOverdue (backup-logical and backup-files above 26 h), sweep-orphans above 50 h or vacuum above "
        "8 days MaintenanceOverdue.",
    ),
    Panel(
        "Last run of each task",
        "none",
        (Query(f"max by (task) ({_RUNS}_last_run_ok)", "{{task}} ok", needs=f"{_RUNS}_last_run_ok"),),
        "1 when the newest run of the task succeeded, 0 when it failed (its failed step is in maintenance_runs "
        "and the run's log). Bad: 0 for an hour fires MaintenanceFailing.",
        soft_max=1,
    ),
    Panel(
        "Run duration",
        "s",
        (
            Query(
                f"max by (task) ({_RUNS}_last_run_duration_seconds)",
                "{{task}}",
                needs=f"{_RUNS}_last_run_duration_seconds",
            ),
        ),
        "How long each task's newest run took. Bad: a backup or vacuum growing run after run (the database "
        "grows, or the backup location slows down) toward its scheduled job's deadline.",
    ),
)

RESOURCES: tuple[Panel, ...] = (
    Panel(
        "CPU by service",
        "percentunit",
        (Query("sum by (service) (rate(process_cpu_seconds_total[5m]))", "{{service}}"),),
        "CPU seconds per second of each service's processes (100% = one core). Bad: a service pinned at "
        "its CPU limit (it is throttled and slows everything behind it).",
    ),
    Panel(
        "Memory by service",
        "bytes",
        (Query("sum by (service) (process_resident_memory_bytes)", "{{service}}"),),
        "Resident memory of each service's processes. Bad: a steady climb (a leak) or a value near the "
        "container's limit (the kernel kills it).",
    ),
    Panel(
        "Container memory by service",
        "bytes",
        (Query("max by (service) (pdfsmaller_container_memory_working_set_bytes)", "{{service}}"),),
        "Working set of each service's cgroup (the pod's container), child processes included: the "
        "compressor's engines and the scanner's checks, which the resident memory above leaves out. Under "
        "make run all services share one cgroup and show the same line. Bad: near the container's limit.",
    ),
    Panel(
        "Memory and CPU against the limits",
        "percentunit",
        (
            Query(
                "pdfsmaller:container_memory_usage:ratio",
                "memory {{service}} {{instance}}",
                needs="pdfsmaller_container_memory_limit_bytes",
            ),
            Query(
                "pdfsmaller:container_cpu_usage:ratio_rate5m",
                "CPU {{service}} {{instance}}",
                needs="pdfsmaller_container_cpu_limit_cores",
            ),
        ),
        "Each container's memory working set and CPU use as a share of its limits (no line: no limit set). "
        "Bad: memory above 85% for 10 minutes fires MemoryUsageHigh, above 95% for a minute "
        "MemoryUsageCritical (the OOM kill is near); CPU above 80% for 10 minutes HighCPU (throttling).",
        soft_max=1,
    ),
    Panel(
        "Disk usage by volume",
        "percentunit",
        (Query("pdfsmaller:volume_usage:ratio", "{{volume}} ({{service}})"),),
        "Used share of the filesystem holding the stored objects and the compressors' work dir (df's "
        "Use%). Bad: above 80% fires DiskUsageHigh, above 90% DiskUsageCritical; uploads and jobs fail when full.",
        soft_max=1,
    ),
    Panel(
        "Free disk by volume",
        "bytes",
        (Query("min by (service, volume) (pdfsmaller_volume_available_bytes)", "{{volume}} ({{service}})"),),
        "Bytes the services can still write on each volume. Bad: less than a few of the largest uploads "
        "(plus their outputs) can hold.",
    ),
)

# Top-down as on-call reads it: what users see, then the pipeline behind it, then what it runs on.
ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    ("Edge: what users see", EDGE),
    ("Services and upload checks", SERVICES),
    ("Queue and workers", QUEUE),
    ("Engine results", ENGINE),
    ("Database (jobs service's PostgreSQL pool)", DATABASE),
    ("WAL archive (wal-receiver)", WAL_ARCHIVE),
    ("Maintenance and backups (pdfsmaller-ops runs)", MAINTENANCE),
    ("Resources", RESOURCES),
)


def panels() -> list[Panel]:
    return [panel for _, row in ROWS for panel in row]


def _timeseries(panel: Panel, panel_id: int) -> timeseries.Panel:
    built = (
        timeseries.Panel()
        .id(panel_id)
        .title(panel.title)
        .description(panel.description)
        .unit(panel.unit)
        .datasource(DATASOURCE)
        .axis_soft_min(0)
    )
    if panel.soft_max is not None:
        built = built.axis_soft_max(panel.soft_max)
    for ref, query in zip(string.ascii_uppercase, panel.queries, strict=False):
        built = built.with_target(prometheus.Dataquery().expr(query.expr).legend_format(query.legend).ref_id(ref))
    return built


def build() -> dict[str, Any]:
    board = (
        dashboard.Dashboard("pdf-smaller")
        .uid("pdf-smaller")
        .tags(["pdf-smaller"])
        .refresh("30s")
        .time("now-6h", "now")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    panel_id = 0
    for title, row in ROWS:
        panel_id += 1
        board = board.with_row(dashboard.Row(title).id(panel_id))
        for panel in row:
            panel_id += 1
            board = board.with_panel(_timeseries(panel, panel_id))
    encoded: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True, indent=2).encode(board.build()))
    return encoded


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    return generated.main("deploy.monitoring.dashboard", __doc__, lambda: {OUTPUT: render()}, argv)


if __name__ == "__main__":
    sys.exit(main())
