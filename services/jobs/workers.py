"""The worker registry: who leases jobs, from where, since when, with what result; draining; lost workers.

A worker is known by its id from its calls: every LeaseJob upserts its row (host, process start) and every
RenewLease marks it seen, so `last_seen` is at most a long poll (LEASE_WAIT_SECONDS) or a renew period
(a third of LEASE_SECONDS) old while it lives. One silent for longer than `lost_after_seconds` is LOST;
a day after that its row is forgotten (the sweeper's `upkeep`). Counters count since the process start:
a new `worker_start_time` under the same id (a restarted pod with a fixed WORKER_ID) starts them again,
and keeps `draining` (an operator's drain outlives the restart).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg import sql

from services.jobs.metrics import JobsMetrics
from services.jobs.statements import Statements

log = logging.getLogger(__name__)

ACTIVE = "ACTIVE"
DRAINING = "DRAINING"
DRAINED = "DRAINED"
LOST = "LOST"
WORKER_STATES = (ACTIVE, DRAINING, DRAINED, LOST)
# The compressor's defaults: LEASE_WAIT_SECONDS 20 between lease calls, a renewal every LEASE_SECONDS / 3
# (20 s) while busy; three of the longer gap (plus its call) missed.
DEFAULT_LOST_AFTER_SECONDS = 120.0
# ListWorkers leaves out workers lost for longer than this unless asked (include_gone).
GONE_AFTER = timedelta(hours=1)
# Lost workers' rows are deleted this long after they were lost.
FORGET_AFTER = timedelta(days=1)
# Bounds ListWorkers; a fleet is far smaller.
MAX_LISTED = 10000

_WORKER_COLUMNS = sql.SQL("""
    w.id, w.host, w.start_time, w.last_seen, w.jobs_succeeded, w.jobs_failed, w.busy_seconds, w.draining,
    w.last_seen < now() - make_interval(secs => %(lost_after)s) AS lost,
    ARRAY(SELECT j.id::text FROM jobs j WHERE j.state = 'RUNNING' AND j.worker_id = w.id ORDER BY j.id)
        AS job_ids
""")


@dataclass(frozen=True)
class WorkerRecord:
    id: str
    host: str
    start_time: datetime
    last_seen: datetime
    jobs_succeeded: int
    jobs_failed: int
    busy_seconds: float
    draining: bool
    lost: bool
    # Jobs it holds a lease on now.
    job_ids: list[str]

    @property
    def state(self) -> str:
        if self.lost:
            return LOST
        if self.draining:
            return DRAINING if self.job_ids else DRAINED
        return ACTIVE


class WorkerRegistry:
    def __init__(
        self,
        statements: Statements,
        metrics: JobsMetrics,
        *,
        lost_after_seconds: float = DEFAULT_LOST_AFTER_SECONDS,
    ) -> None:
        self._db = statements
        self._metrics = metrics
        self.lost_after_seconds = lost_after_seconds

    # --- fed by the worker calls -------------------------------------------

    def lease_call(self, worker_id: str, host: str, start_time: datetime | None) -> None:
        """A LeaseJob call: the worker is alive; a new start time starts its counters again."""
        if not worker_id:
            return
        self._db.fetch(
            """
            INSERT INTO workers (id, host, start_time, last_seen)
            VALUES (%(id)s, %(host)s, COALESCE(%(start)s::timestamptz, now()), now())
            ON CONFLICT (id) DO UPDATE SET
                host = CASE WHEN EXCLUDED.host <> '' THEN EXCLUDED.host ELSE workers.host END,
                last_seen = now(),
                start_time = COALESCE(%(start)s::timestamptz, workers.start_time),
                jobs_succeeded = CASE WHEN %(start)s::timestamptz <> workers.start_time THEN 0
                                      ELSE workers.jobs_succeeded END,
                jobs_failed = CASE WHEN %(start)s::timestamptz <> workers.start_time THEN 0
                                   ELSE workers.jobs_failed END,
                busy_seconds = CASE WHEN %(start)s::timestamptz <> workers.start_time THEN 0
                                    ELSE workers.busy_seconds END
            """,
            {"id": worker_id, "host": host, "start": start_time},
        )

    def seen(self, worker_id: str) -> None:
        """A renewal by the worker: alive (a row is made for a lease older than this registry)."""
        if not worker_id:
            return
        self._db.fetch(
            "INSERT INTO workers (id) VALUES (%s) ON CONFLICT (id) DO UPDATE SET last_seen = now()",
            (worker_id,),
        )

    def finished(self, worker_id: str, *, succeeded: bool, busy_seconds: float) -> None:
        """The worker completed (or failed) a job it held for `busy_seconds`."""
        if not worker_id:
            return
        self._db.fetch(
            """
            INSERT INTO workers (id, jobs_succeeded, jobs_failed, busy_seconds)
            VALUES (%(id)s, %(ok)s::int, 1 - %(ok)s::int, %(busy)s)
            ON CONFLICT (id) DO UPDATE SET last_seen = now(),
                jobs_succeeded = workers.jobs_succeeded + EXCLUDED.jobs_succeeded,
                jobs_failed = workers.jobs_failed + EXCLUDED.jobs_failed,
                busy_seconds = workers.busy_seconds + EXCLUDED.busy_seconds
            """,
            {"id": worker_id, "ok": succeeded, "busy": max(busy_seconds, 0.0)},
        )

    # --- the operator's view and controls ----------------------------------

    def known(self, *, include_gone: bool = False) -> list[WorkerRecord]:
        """Known workers by id; without `include_gone`, not those lost for longer than GONE_AFTER."""
        rows = self._db.fetch(
            sql.SQL("""
            SELECT {columns} FROM workers w
            WHERE %(include_gone)s
               OR w.last_seen >= now() - make_interval(secs => %(lost_after)s) - %(gone_after)s
            ORDER BY w.id
            LIMIT %(limit)s
            """).format(columns=_WORKER_COLUMNS),
            {
                "lost_after": self.lost_after_seconds,
                "include_gone": include_gone,
                "gone_after": GONE_AFTER,
                "limit": MAX_LISTED,
            },
        )
        return [WorkerRecord(**row) for row in rows]

    def get(self, worker_id: str) -> WorkerRecord | None:
        rows = self._db.fetch(
            sql.SQL("SELECT {columns} FROM workers w WHERE w.id = %(id)s").format(columns=_WORKER_COLUMNS),
            {"id": worker_id, "lost_after": self.lost_after_seconds},
        )
        return WorkerRecord(**rows[0]) if rows else None

    def set_draining(self, worker_id: str, draining: bool) -> WorkerRecord | None:
        """Drain (or take back) a known worker; None when no such worker made a lease call."""
        rows = self._db.fetch("UPDATE workers SET draining = %s WHERE id = %s RETURNING id", (draining, worker_id))
        return self.get(worker_id) if rows else None

    # --- upkeep (the sweeper) ------------------------------------------------

    def upkeep(self) -> int:
        """Forget workers lost for longer than FORGET_AFTER and refresh the workers gauge; returns forgotten."""
        forgotten = self._db.fetch(
            "DELETE FROM workers WHERE last_seen < now() - make_interval(secs => %s) - %s RETURNING id",
            (self.lost_after_seconds, FORGET_AFTER),
        )
        if forgotten:
            log.info("forgot %d worker(s) lost for over a day", len(forgotten))
        counts = dict.fromkeys(WORKER_STATES, 0)
        for worker in self.known():
            counts[worker.state] += 1
        for state, count in counts.items():
            self._metrics.workers.labels(state).set(count)
        return len(forgotten)
