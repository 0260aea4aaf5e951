"""Prometheus metrics of the jobs service (registered on the server's registry).

The queue gauges are set by the sweeper (every SWEEP_INTERVAL_SECONDS) and by GetQueueStats
(`observe_queue`), never by a scrape; being read from the database they are global: every replica
reports the same figures (dashboards take the max, never the sum). The pool's figures are read from
psycopg_pool at each scrape (in memory, no query).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool

from libs.compression import LEVEL_NAMES
from services.jobs.queue_stats import THROUGHPUT_WINDOWS_SECONDS, QueueStats


class JobsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.created = Counter("jobs_created_total", "Jobs created (idempotent repeats excluded).", registry=registry)
        self.finished = Counter(
            "jobs_finished_total",
            "Jobs that left QUEUED/RUNNING for good, by final state.",
            ["state"],
            registry=registry,
        )
        self.expired = Counter(
            "jobs_expired_total",
            "Jobs past their retention whose files were scheduled for deletion.",
            registry=registry,
        )
        self.queue_depth = Gauge(
            "jobs_queue_depth",
            "Jobs waiting (QUEUED) or being worked on (RUNNING), refreshed by the sweeper.",
            ["state"],
            registry=registry,
        )
        self.oldest_queued = Gauge(
            "pdfsmaller_jobs_oldest_queued_seconds",
            "How long the longest-waiting due QUEUED job has been due (0: none), refreshed by the sweeper.",
            registry=registry,
        )
        self.waiting_retry = Gauge(
            "jobs_waiting_retry",
            "Queued jobs waiting for their retry backoff to pass (included in jobs_queue_depth{state=QUEUED}).",
            registry=registry,
        )
        self.level_queue_depth = Gauge(
            "pdfsmaller_jobs_level_queue_depth",
            "Jobs QUEUED or RUNNING, by compression level, refreshed by the sweeper.",
            ["level", "state"],
            registry=registry,
        )
        self.finished_in_window = Gauge(
            "pdfsmaller_jobs_finished_in_window",
            "Jobs that finished SUCCEEDED or FAILED within the last window_seconds (from the database: "
            "all replicas' work), refreshed by the sweeper.",
            ["window_seconds", "state"],
            registry=registry,
        )
        self.outage_requeues = Counter(
            "jobs_outage_requeues_total",
            "Jobs requeued because of the system's own outage (no attempt used), by cause.",
            ["cause"],
            registry=registry,
        )
        self.lease_expirations = Counter(
            "jobs_lease_expirations_total",
            "Leases that ran out without renewal, by outcome (requeued or failed).",
            ["outcome"],
            registry=registry,
        )
        # Every label value from the start, so dashboards see zeros rather than gaps.
        for state in ("SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"):
            self.finished.labels(state)
        for state in ("QUEUED", "RUNNING"):
            self.queue_depth.labels(state)
            for level in LEVEL_NAMES:
                self.level_queue_depth.labels(level, state)
        for window in THROUGHPUT_WINDOWS_SECONDS:
            for state in ("SUCCEEDED", "FAILED"):
                self.finished_in_window.labels(str(window), state)
        for outcome in ("requeued", "failed", "outage"):
            self.lease_expirations.labels(outcome)
        for cause in ("dependency", "lease"):
            self.outage_requeues.labels(cause)
        self.event_publish_failures = Counter(
            "jobs_event_publish_failures_total",
            "Job events not published because Redis was unavailable (watchers fall back to re-reading).",
            registry=registry,
        )
        self.object_delete_failures = Counter(
            "jobs_object_delete_failures_total",
            "Failed deletions of stored objects through the storage service (retried by the sweeper).",
            registry=registry,
        )
        # OperatorService (services/jobs/workers.py, queue_control.py, queue_admin.py).
        self.workers = Gauge(
            "pdfsmaller_jobs_workers",
            "Known workers by state (ACTIVE, DRAINING, DRAINED, LOST), refreshed by the sweeper.",
            ["state"],
            registry=registry,
        )
        for state in ("ACTIVE", "DRAINING", "DRAINED", "LOST"):
            self.workers.labels(state)
        self.queue_paused = Gauge(
            "pdfsmaller_jobs_queue_paused",
            "1 while OperatorService.PauseQueue is in force (workers lease nothing), else 0.",
            registry=registry,
        )
        self.operator_changes = Counter(
            "pdfsmaller_jobs_operator_changed_total",
            "Jobs changed by operators, by action (requeued, purged, lease_expired).",
            ["action"],
            registry=registry,
        )
        for action in ("requeued", "purged", "lease_expired"):
            self.operator_changes.labels(action)

    def observe_queue(self, stats: QueueStats) -> None:
        """Set the queue gauges to a fresh reading (the sweeper's and GetQueueStats')."""
        self.queue_depth.labels("QUEUED").set(stats.queued)
        self.queue_depth.labels("RUNNING").set(stats.running)
        self.waiting_retry.set(stats.waiting_retry)
        self.oldest_queued.set(stats.oldest_queued_seconds)
        for level in stats.by_level:
            self.level_queue_depth.labels(level.level, "QUEUED").set(level.queued)
            self.level_queue_depth.labels(level.level, "RUNNING").set(level.running)
        for window in stats.throughput:
            self.finished_in_window.labels(str(window.window_seconds), "SUCCEEDED").set(window.succeeded)
            self.finished_in_window.labels(str(window.window_seconds), "FAILED").set(window.failed)


# The pool's counters: (name without _total, help, get_stats() key, factor to base units).
_POOL_COUNTERS: tuple[tuple[str, str, str, float], ...] = (
    ("pdfsmaller_jobs_db_pool_requests", "Connections asked of the pool.", "requests_num", 1),
    ("pdfsmaller_jobs_db_pool_requests_queued", "Requests that had to wait for a connection.", "requests_queued", 1),
    ("pdfsmaller_jobs_db_pool_wait_seconds", "Time requests spent waiting for a connection.", "requests_wait_ms", 1e-3),
    (
        "pdfsmaller_jobs_db_pool_request_errors",
        "Requests that got no connection in time (the database is down, or the pool too small).",
        "requests_errors",
        1,
    ),
    (
        "pdfsmaller_jobs_db_pool_usage_seconds",
        "Time connections were lent out (queries and the work between).",
        "usage_ms",
        1e-3,
    ),
    ("pdfsmaller_jobs_db_pool_connects", "Connections the pool tried to open.", "connections_num", 1),
    (
        "pdfsmaller_jobs_db_pool_connect_seconds",
        "Time spent opening the connections that opened.",
        "connections_ms",
        1e-3,
    ),
    ("pdfsmaller_jobs_db_pool_connect_failures", "Connections that could not be opened.", "connections_errors", 1),
    ("pdfsmaller_jobs_db_pool_connections_lost", "Connections found broken and discarded.", "connections_lost", 1),
    ("pdfsmaller_jobs_db_pool_bad_returns", "Connections given back to the pool in a bad state.", "returns_bad", 1),
)


class PoolStats(Collector):
    """The PostgreSQL connection pool's own statistics (psycopg_pool `get_stats()`), read at each scrape.

    psycopg_pool counts from the pool's start and only `pop_stats()` resets, which nothing calls, so its
    counters are Prometheus counters as they are. A key the pool has not counted yet reads 0.
    """

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    def collect(self) -> Iterable[Metric]:
        stats = self._pool.get_stats()
        size, available = stats.get("pool_size", 0), stats.get("pool_available", 0)
        connections = GaugeMetricFamily(
            "pdfsmaller_jobs_db_pool_connections",
            "Connections the pool holds, by state: in_use (lent out, or being opened) or idle.",
            labels=["state"],
        )
        connections.add_metric(["in_use"], max(size - available, 0))
        connections.add_metric(["idle"], available)
        yield connections
        yield GaugeMetricFamily(
            "pdfsmaller_jobs_db_pool_max_connections",
            "DATABASE_POOL_SIZE: connections the pool may open.",
            stats.get("pool_max", 0),
        )
        yield GaugeMetricFamily(
            "pdfsmaller_jobs_db_pool_requests_waiting",
            "Requests waiting for a connection now (all are in use, or none can be opened).",
            stats.get("requests_waiting", 0),
        )
        for name, documentation, key, scale in _POOL_COUNTERS:
            yield CounterMetricFamily(name, documentation, stats.get(key, 0) * scale)
