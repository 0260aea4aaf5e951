"""The scheduled maintenance and backup runs as gauges, read from the table `maintenance_runs` at scrape.

`pdfsmaller-ops vacuum`, `sweep-orphans`, `backup` and `backup-files` write one row per run as they
end (ops/run_record.py); this exports the newest run of each task and its newest success, so an alert
can say "the orphan sweep has not succeeded for two days" without a Pushgateway or kube-state-metrics:

    pdfsmaller_maintenance_last_run_timestamp_seconds{task}      when the newest run finished
    pdfsmaller_maintenance_last_success_timestamp_seconds{task}  when the newest successful run finished
    pdfsmaller_maintenance_last_run_ok{task}                     1 when the newest run succeeded, else 0
    pdfsmaller_maintenance_last_run_duration_seconds{task}       how long the newest run took
    pdfsmaller_maintenance_last_run_items{task, item}            its figures (orphans_deleted, stored_bytes, ...)

A task that never ran has no series, and one that never succeeded no success series: the alerts on
them stay silent (`make run` before any run). Read from the database, the figures are global: every
jobs replica reports the same ones (alerts and dashboards take the max, never the sum). One query per
CACHE_SECONDS at most, on the bounded table (a few dozen rows per task); when it fails the last
reading is served (what it says stays true) and one warning is logged until a read works again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

CACHE_SECONDS = 10.0
# A scrape does not wait long for a connection: the pool's requests come first.
_CONNECTION_TIMEOUT_SECONDS = 2.0
# Bounds of the label sets, whatever the table holds.
MAX_TASKS = 50
MAX_ITEMS = 32

# The newest run of each task (DISTINCT ON over the (task, finished_at DESC) index), and its newest success.
LATEST_RUNS_QUERY = """
    SELECT latest.task, latest.started_at, latest.finished_at, latest.ok, latest.items, success.finished_at
    FROM (
        SELECT DISTINCT ON (task) task, started_at, finished_at, ok, items
        FROM maintenance_runs
        ORDER BY task, finished_at DESC, id DESC
    ) AS latest
    LEFT JOIN LATERAL (
        SELECT finished_at FROM maintenance_runs
        WHERE task = latest.task AND ok
        ORDER BY finished_at DESC, id DESC
        LIMIT 1
    ) AS success ON true
    ORDER BY latest.task
    LIMIT %(max_tasks)s
"""


@dataclass(frozen=True)
class LatestRun:
    task: str
    started_at: datetime
    finished_at: datetime
    ok: bool
    items: dict[str, float]
    last_success_at: datetime | None


def _items(raw: Any) -> dict[str, float]:
    """The numeric figures of a row's `items` (anything else in it is ignored), at most MAX_ITEMS."""
    if not isinstance(raw, Mapping):
        return {}
    numbers = {
        str(name): float(value)
        for name, value in raw.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }
    return dict(list(numbers.items())[:MAX_ITEMS])


def read_latest_runs(pool: ConnectionPool) -> list[LatestRun]:
    with pool.connection(timeout=_CONNECTION_TIMEOUT_SECONDS) as conn:
        rows = conn.execute(LATEST_RUNS_QUERY, {"max_tasks": MAX_TASKS}).fetchall()
    return [
        LatestRun(task, started_at, finished_at, bool(ok), _items(items), success)
        for task, started_at, finished_at, ok, items, success in rows
    ]


class MaintenanceRuns(Collector):
    """The gauges above, from a reading at most `cache_seconds` old."""

    def __init__(
        self,
        read: Callable[[], list[LatestRun]],
        *,
        cache_seconds: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._runs: list[LatestRun] = []
        self._read_at: float | None = None
        self._failing = False

    @classmethod
    def from_pool(cls, pool: ConnectionPool) -> MaintenanceRuns:
        return cls(lambda: read_latest_runs(pool))

    def _latest(self) -> list[LatestRun]:
        # One reader at a time; concurrent scrapes share its reading.
        with self._lock:
            now = self._clock()
            if self._read_at is not None and now - self._read_at < self._cache_seconds:
                return self._runs
            self._read_at = now  # a failed read is not retried before the cache expires either
            try:
                self._runs = self._read()
            except Exception as error:  # noqa: BLE001 - the database down, not migrated yet: keep the last reading
                if not self._failing:
                    log.warning("cannot read maintenance_runs: %s: %s", type(error).__name__, error)
                self._failing = True
            else:
                self._failing = False
            return self._runs

    def collect(self) -> Iterable[Metric]:
        runs = self._latest()
        finished = GaugeMetricFamily(
            "pdfsmaller_maintenance_last_run_timestamp_seconds",
            "When the newest run of a maintenance or backup task (pdfsmaller-ops) finished, from maintenance_runs.",
            labels=["task"],
        )
        succeeded = GaugeMetricFamily(
            "pdfsmaller_maintenance_last_success_timestamp_seconds",
            "When the newest successful run of the task finished (no series: it never succeeded).",
            labels=["task"],
        )
        ok = GaugeMetricFamily(
            "pdfsmaller_maintenance_last_run_ok",
            "1 when the newest run of the task succeeded, 0 when it failed.",
            labels=["task"],
        )
        duration = GaugeMetricFamily(
            "pdfsmaller_maintenance_last_run_duration_seconds",
            "How long the newest run of the task took.",
            labels=["task"],
        )
        items = GaugeMetricFamily(
            "pdfsmaller_maintenance_last_run_items",
            "The figures the newest run of the task reported (orphans_deleted, stored_bytes, tables, ...).",
            labels=["task", "item"],
        )
        for run in runs:
            finished.add_metric([run.task], run.finished_at.timestamp())
            if run.last_success_at is not None:
                succeeded.add_metric([run.task], run.last_success_at.timestamp())
            ok.add_metric([run.task], 1.0 if run.ok else 0.0)
            duration.add_metric([run.task], max((run.finished_at - run.started_at).total_seconds(), 0.0))
            for name, value in run.items.items():
                items.add_metric([run.task, name], value)
        yield from (finished, succeeded, ok, duration, items)
