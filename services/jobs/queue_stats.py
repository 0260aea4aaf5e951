"""What the queue holds and how fast it drains, for GetQueueStats, the sweeper's gauges and the dashboard.

One statement, so every figure comes from the same snapshot, and every part of it reads a partial index
(migrations 0004 and 0008), so its cost follows the queue and the last minutes' work, not the jobs kept:
a single scan with `state IN (...)` and no index of that predicate is planned as a sequential scan of
the whole table (PostgreSQL 18; services/jobs/tests/test_queue_stats.py checks every plan).

A finished job's `updated_at` is its finish time: nothing updates a SUCCEEDED or FAILED row, and expiry
makes it EXPIRED, which is not counted. So a job counts in a throughput window once, by its last finish.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from libs.compression import LEVEL_NAMES

# The throughput windows GetQueueStats reports (QueueStats.throughput), shortest first.
THROUGHPUT_WINDOWS_SECONDS: tuple[int, ...] = (60, 300, 900)

# Runs one statement and returns its rows as dicts (JobRepository's, which maps database errors).
Fetch = Callable[[str, dict[str, Any]], list[dict[str, Any]]]

# Each subquery has a partial index of its own predicate: the queued/running ones (jobs_queue_not_before,
# jobs_running_lease, or jobs_active_level: the planner picks) for the totals and the oldest due job,
# jobs_active_level for the levels, jobs_finished for each window (a range scan of the jobs that finished
# in it). `windows` is the int[] of window lengths in seconds.
QUEUE_STATS_QUERY = """
    SELECT (SELECT count(*) FROM jobs WHERE state = 'QUEUED') AS queued,
           (SELECT count(*) FROM jobs WHERE state = 'RUNNING') AS running,
           (SELECT count(*) FROM jobs WHERE state = 'QUEUED' AND not_before > now()) AS waiting_retry,
           -- How long the longest-waiting due job has been due (0: none); a job backing off is not late.
           COALESCE(EXTRACT(EPOCH FROM now() - (
               SELECT min(not_before) FROM jobs WHERE state = 'QUEUED' AND not_before <= now())), 0)::float8
               AS oldest_queued_seconds,
           (SELECT COALESCE(json_agg(levels), '[]'::json) FROM (
               SELECT level,
                      count(*) FILTER (WHERE state = 'QUEUED') AS queued,
                      count(*) FILTER (WHERE state = 'RUNNING') AS running,
                      count(*) FILTER (WHERE state = 'QUEUED' AND not_before > now()) AS waiting_retry
               FROM jobs WHERE state IN ('QUEUED', 'RUNNING')
               GROUP BY level) AS levels) AS by_level,
           (SELECT json_agg(windows ORDER BY window_seconds) FROM (
               SELECT window_length.seconds AS window_seconds, finished.succeeded, finished.failed
               FROM unnest(%(windows)s::int[]) AS window_length(seconds)
               CROSS JOIN LATERAL (
                   SELECT count(*) FILTER (WHERE state = 'SUCCEEDED') AS succeeded,
                          count(*) FILTER (WHERE state = 'FAILED') AS failed
                   FROM jobs
                   WHERE state IN ('SUCCEEDED', 'FAILED')
                     AND updated_at > now() - make_interval(secs => window_length.seconds)) AS finished
               ) AS windows) AS throughput
"""


@dataclass(frozen=True)
class LevelDepth:
    """One level's share of the queue; `waiting_retry` jobs are part of `queued`."""

    level: str
    queued: int
    running: int
    waiting_retry: int


@dataclass(frozen=True)
class Throughput:
    """Jobs that finished SUCCEEDED or FAILED in the last `window_seconds`."""

    window_seconds: int
    succeeded: int
    failed: int

    @property
    def jobs_per_minute(self) -> float:
        return (self.succeeded + self.failed) * 60.0 / self.window_seconds


@dataclass(frozen=True)
class QueueStats:
    """The queue now (`waiting_retry` jobs, backing off, are part of `queued`) and its recent throughput.

    `by_level` has every defined level, in libs.compression's order (zeros included, so a gauge of a
    level that emptied goes to 0); `throughput` one entry per window, shortest first.
    """

    queued: int
    running: int
    waiting_retry: int
    oldest_queued_seconds: float
    by_level: tuple[LevelDepth, ...]
    throughput: tuple[Throughput, ...]

    @property
    def longest_window(self) -> Throughput:
        return self.throughput[-1]


def read_queue_stats(fetch: Fetch, windows: Sequence[int] = THROUGHPUT_WINDOWS_SECONDS) -> QueueStats:
    """The queue's figures from one statement; `windows` (seconds, shortest first) are the throughput windows."""
    if not windows or list(windows) != sorted(set(windows)) or windows[0] <= 0:
        raise ValueError(f"throughput windows must be positive and increasing: {windows!r}")
    row = fetch(QUEUE_STATS_QUERY, {"windows": list(windows)})[0]
    # The jobs_level_name constraint (migration 0005) keeps every row's level one of LEVEL_NAMES.
    counted = {level["level"]: level for level in row["by_level"]}
    empty = {"queued": 0, "running": 0, "waiting_retry": 0}
    return QueueStats(
        queued=row["queued"],
        running=row["running"],
        waiting_retry=row["waiting_retry"],
        oldest_queued_seconds=row["oldest_queued_seconds"],
        by_level=tuple(
            LevelDepth(
                level=name,
                queued=counted.get(name, empty)["queued"],
                running=counted.get(name, empty)["running"],
                waiting_retry=counted.get(name, empty)["waiting_retry"],
            )
            for name in LEVEL_NAMES
        ),
        throughput=tuple(Throughput(**window) for window in row["throughput"]),
    )
