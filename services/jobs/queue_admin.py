"""The operator's queries and bulk changes over every tenant's jobs: list, requeue, purge, expire a lease.

Selections go newest first (created_at DESC, id DESC) through the indexes of migration 0007, at most
`limit` jobs per call. A bulk change picks its jobs and changes them in one transaction (the picked rows
locked), so `expected_count` is checked against exactly the rows changed.

Purging deletes a job's stored objects before its row, in batches: each batch's rows are locked (no
requeue or delete can slip in), their objects deleted, then the rows whose objects are gone deleted,
and committed. A storage failure stops there: the rows of the jobs not done stay (a purge run again
finishes them; a deleted object answers NOT_FOUND, which is fine), so no object is ever left behind
without a row naming it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql

from libs.errors import FailedPrecondition, NotFound, ServiceError, Unavailable
from services.jobs.job_filter import JobSelection
from services.jobs.metrics import JobsMetrics
from services.jobs.objects import ObjectDeleter
from services.jobs.repository import CANCELLED, EXPIRED, FAILED, RUNNING, JobRecord
from services.jobs.statements import Statements

log = logging.getLogger(__name__)

REQUEUEABLE = (FAILED, RUNNING)
PURGEABLE = (FAILED, CANCELLED, EXPIRED)
# Jobs whose objects are deleted under one transaction's row locks.
PURGE_BATCH = 100
_NEWEST_FIRST = sql.SQL("ORDER BY created_at DESC, id DESC")


@dataclass(frozen=True)
class ListedJob:
    job: JobRecord
    age_seconds: float


@dataclass(frozen=True)
class BulkResult:
    # Matched (dry run) or changed, newest first.
    job_ids: list[uuid.UUID]
    dry_run: bool
    # More matched than the limit.
    more: bool
    objects_deleted: int = 0


def _job(row: dict[str, Any]) -> JobRecord:
    return JobRecord(**row)


def _check_count(found: int, expected: int) -> None:
    if expected and found != expected:
        raise FailedPrecondition(
            "COUNT_CHANGED",
            f"{found} job(s) match now, not the {expected} expected; nothing was changed (run a dry run again)",
            metadata={"count": str(found), "expected_count": str(expected)},
        )


def list_statement(
    selection: JobSelection, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> tuple[sql.Composed, dict[str, Any]]:
    """The ListJobs query and its parameters (its tests read the plan)."""
    where, params = selection.where()
    if after is not None:
        where = sql.SQL("{} AND (created_at, id) < (%(after_created)s, %(after_id)s)").format(where)
        params.update(after_created=after[0], after_id=after[1])
    query = sql.SQL(
        "SELECT *, EXTRACT(EPOCH FROM now() - created_at)::float8 AS operator_age_seconds FROM jobs"
        " WHERE {where} {order} LIMIT %(limit)s"
    ).format(where=where, order=_NEWEST_FIRST)
    return query, {**params, "limit": limit}


def pick_statement(
    selection: JobSelection, allowed_states: tuple[str, ...], limit: int, *, inputs_kept: bool, lock: bool
) -> tuple[sql.Composed, dict[str, Any]]:
    """The ids a bulk change takes, newest first (`inputs_kept`: only jobs not past their expire_time;
    `lock`: locked until the transaction ends). Its tests read the plan."""
    where, params = selection.where()
    query = sql.SQL(
        "SELECT id FROM jobs WHERE {where} AND state = ANY(%(allowed)s) {kept} {order} LIMIT %(limit)s {lock}"
    ).format(
        where=where,
        kept=sql.SQL("AND expire_at > now()" if inputs_kept else ""),
        order=_NEWEST_FIRST,
        lock=sql.SQL("FOR UPDATE" if lock else ""),
    )
    return query, {**params, "allowed": list(allowed_states), "limit": limit}


class QueueAdmin:
    def __init__(self, statements: Statements, deleter: ObjectDeleter, metrics: JobsMetrics) -> None:
        self._db = statements
        self._deleter = deleter
        self._metrics = metrics

    def list_jobs(
        self, selection: JobSelection, page_size: int, after: tuple[datetime, uuid.UUID] | None
    ) -> tuple[list[ListedJob], bool]:
        """A page of the selected jobs newest first, after the keyset position; (jobs, more_follow)."""
        rows = self._db.fetch(*list_statement(selection, page_size + 1, after))
        listed = [ListedJob(age_seconds=row.pop("operator_age_seconds"), job=_job(row)) for row in rows]
        return listed[:page_size], len(listed) > page_size

    def requeue(self, selection: JobSelection, *, dry_run: bool, expected_count: int, limit: int) -> BulkResult:
        """Selected jobs (FAILED or RUNNING, input still kept) back to QUEUED, due now, attempts and
        outage retries reset, error and lease cleared: their old worker's lease is lost."""
        with self._db.transaction() as cur:
            cur.execute(*pick_statement(selection, REQUEUEABLE, limit + 1, inputs_kept=True, lock=not dry_run))
            ids = [row["id"] for row in cur.fetchall()]
            more, ids = len(ids) > limit, ids[:limit]
            _check_count(len(ids), expected_count)
            if dry_run or not ids:
                return BulkResult(ids, dry_run, more)
            cur.execute(
                b"""
                UPDATE jobs SET state = 'QUEUED', attempts = 0, outage_retries = 0,
                       error_reason = '', error_message = '', progress_percent = 0,
                       lease_token = NULL, lease_expires_at = NULL, not_before = now(), updated_at = now()
                WHERE id = ANY(%(ids)s)
                """,
                {"ids": ids},
            )
        self._metrics.operator_changes.labels("requeued").inc(len(ids))
        return BulkResult(ids, dry_run, more)

    def purge(self, selection: JobSelection, *, dry_run: bool, expected_count: int, limit: int) -> BulkResult:
        """Delete the selected jobs (FAILED, CANCELLED or EXPIRED) and their stored objects, objects first.

        Raises Unavailable when storage fails; the jobs purged before that stay purged (logged)."""
        rows = self._db.fetch(*pick_statement(selection, PURGEABLE, limit + 1, inputs_kept=False, lock=False))
        ids = [row["id"] for row in rows]
        where, params = selection.where()
        more, ids = len(ids) > limit, ids[:limit]
        _check_count(len(ids), expected_count)
        if dry_run:
            return BulkResult(ids, dry_run, more)
        purged: list[uuid.UUID] = []
        objects = 0
        for start in range(0, len(ids), PURGE_BATCH):
            done, deleted, failure = self._purge_batch(ids[start : start + PURGE_BATCH], where, params)
            purged += done
            objects += deleted
            if failure is not None:
                self._metrics.object_delete_failures.inc()
                self._metrics.operator_changes.labels("purged").inc(len(purged))
                log.warning(
                    "purge stopped after %d job(s): cannot delete stored objects (%s)", len(purged), failure.reason
                )
                raise Unavailable(
                    "STORAGE_UNAVAILABLE",
                    f"storage failed after {len(purged)} of {len(ids)} job(s) were purged;"
                    " the others are kept, purge again later",
                    metadata={"purged": str(len(purged))},
                ) from failure
        self._metrics.operator_changes.labels("purged").inc(len(purged))
        return BulkResult(purged, dry_run, more, objects_deleted=objects)

    def _purge_batch(
        self, batch: list[uuid.UUID], where: sql.Composable, params: dict[str, Any]
    ) -> tuple[list[uuid.UUID], int, ServiceError | None]:
        """Purge one batch under its row locks: (jobs gone, objects deleted, the storage failure that
        stopped it). The jobs done before a failure are committed, so they stay purged."""
        done: list[uuid.UUID] = []
        objects = 0
        failure: ServiceError | None = None
        with self._db.transaction() as cur:
            # Still selected (a job requeued or deleted meanwhile is left alone), locked until commit.
            cur.execute(
                sql.SQL(
                    "SELECT * FROM jobs WHERE id = ANY(%(batch)s) AND {where} AND state = ANY(%(allowed)s)"
                    " {order} FOR UPDATE"
                ).format(where=where, order=_NEWEST_FIRST),
                {**params, "batch": batch, "allowed": list(PURGEABLE)},
            )
            for job in [_job(row) for row in cur.fetchall()]:
                keys = [] if job.objects_deleted else job.object_keys
                try:
                    self._deleter.delete(keys)
                except ServiceError as error:
                    failure = error
                    break
                done.append(job.id)
                objects += len(keys)
            if done:
                cur.execute(b"DELETE FROM jobs WHERE id = ANY(%(ids)s)", {"ids": done})
        return done, objects, failure

    def expire_lease(self, job_id: uuid.UUID) -> JobRecord:
        """A RUNNING job back to QUEUED now, attempts kept; its worker's renew or completion fails LEASE_LOST."""
        rows = self._db.fetch(
            """
            UPDATE jobs SET state = 'QUEUED', lease_token = NULL, lease_expires_at = NULL, progress_percent = 0,
                   not_before = now(), updated_at = now()
            WHERE id = %s AND state = 'RUNNING'
            RETURNING *
            """,
            (job_id,),
        )
        if rows:
            self._metrics.operator_changes.labels("lease_expired").inc()
            return _job(rows[0])
        state = self._db.fetch("SELECT state FROM jobs WHERE id = %s", (job_id,))
        if not state:
            raise NotFound("JOB_NOT_FOUND", "no such job")
        raise FailedPrecondition("JOB_NOT_RUNNING", f"the job is {state[0]['state']}, not RUNNING: it holds no lease")
