"""Job rows and the work queue in PostgreSQL.

Every method is one short transaction from the pool; all times come from the
database clock (`now()`), so replicas never disagree about lease expiry. The
queue is the jobs table itself: LeaseJob takes the oldest QUEUED row with
`FOR UPDATE SKIP LOCKED`, so concurrent workers never get the same job and
never wait on each other.

`attempts` counts leases: it goes up when a worker leases the job. A job whose
lease expires (or that fails retryably) goes back to QUEUED while attempts <
max_attempts, else it fails with LEASE_EXPIRED_TOO_OFTEN / ATTEMPTS_EXHAUSTED.

Requeued jobs back off: `not_before` is set to now + a full-jitter exponential
delay (random between 0 and min(cap, base * 2^n)) and leases skip jobs not yet
due. A failure caused by the system's own outage (a dependency unavailable,
or a lease that lapsed while the database was away) gives the attempt back and
counts in `outage_retries` instead, bounded by max_outage_retries
(OUTAGE_RETRIES_EXHAUSTED).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from libs.errors import Unavailable
from services.jobs.db import database_errors, pending_migrations
from services.jobs.outages import DatabaseOutages, Outage
from services.jobs.queue_stats import QueueStats, read_queue_stats
from services.jobs.statements import Statements

QUEUED = "QUEUED"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
EXPIRED = "EXPIRED"
ACTIVE_STATES = frozenset({QUEUED, RUNNING})
TERMINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED, EXPIRED})

LEASE_EXPIRED_TOO_OFTEN = "LEASE_EXPIRED_TOO_OFTEN"
ATTEMPTS_EXHAUSTED = "ATTEMPTS_EXHAUSTED"
OUTAGE_RETRIES_EXHAUSTED = "OUTAGE_RETRIES_EXHAUSTED"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how soon a job is tried again."""

    # Leases (attempts) a job gets before it fails for good.
    max_attempts: int = 3
    # Requeues caused by outages (not attempts) before the job fails anyway.
    max_outage_retries: int = 100
    # Full-jitter exponential backoff: the n-th requeue waits random(0, min(cap, base * 2^n)).
    backoff_base_seconds: float = 2.0
    backoff_cap_seconds: float = 300.0
    # The random fraction of the delay; None: PostgreSQL's random() per row. Tests pin it.
    jitter: float | None = None


@dataclass(frozen=True)
class JobRecord:
    id: uuid.UUID
    tenant: str
    request_id: str
    state: str
    filename: str
    level: str  # the level's name, as libs/compression.py spells it ('medium'; migration 0005)
    image_quality: int
    input_key: str
    input_size_bytes: int
    input_sha256: str
    output_key: str
    output_size_bytes: int
    output_sha256: str
    error_reason: str
    error_message: str
    progress_percent: int
    attempts: int
    lease_token: uuid.UUID | None
    lease_expires_at: datetime | None
    worker_id: str
    report: dict[str, Any] | None
    traceparent: str
    created_at: datetime
    updated_at: datetime
    expire_at: datetime
    objects_deleted: bool
    # Options besides level and image_quality (proto3 JSON of CompressionOptions).
    options: dict[str, Any]
    # Not leased before this time (retry backoff).
    not_before: datetime
    # Requeues caused by outages; these did not use an attempt.
    outage_retries: int
    # When the current (or last) lease began (migration 0007).
    leased_at: datetime | None = None

    @property
    def object_keys(self) -> list[str]:
        """The stored objects this job owns (the output may be the input itself)."""
        return list(dict.fromkeys(key for key in (self.input_key, self.output_key) if key))


@dataclass(frozen=True)
class NewJob:
    id: uuid.UUID
    tenant: str
    request_id: str
    filename: str
    level: str
    image_quality: int
    input_key: str
    input_size_bytes: int
    input_sha256: str
    traceparent: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Lease:
    job: JobRecord
    token: uuid.UUID
    expires_at: datetime


class JobIdConflict(Exception):
    """The caller-chosen job id is taken by another job."""


class RequestIdReused(Exception):
    """The (tenant, request_id) names an earlier job with another input or other options."""


def _same_request(job: JobRecord, new: NewJob) -> bool:
    """Whether a repeated create asks for what the first one did: same input bytes and options."""
    return (job.input_sha256, job.level, job.image_quality, job.options) == (
        new.input_sha256,
        new.level,
        new.image_quality,
        new.options,
    )


def _record(row: dict[str, Any]) -> JobRecord:
    return JobRecord(**row)


def _records(rows: Iterable[dict[str, Any]]) -> list[JobRecord]:
    return [_record(row) for row in rows]


class JobRepository:
    def __init__(
        self,
        pool: ConnectionPool,
        *,
        retention_hours: int,
        max_attempts: int = 3,
        retry: RetryPolicy | None = None,
        outages: DatabaseOutages | None = None,
    ) -> None:
        """`retry` overrides `max_attempts`; `outages` learns of every query that could not reach the database."""
        self._pool = pool
        self.retention_hours = retention_hours
        self.retry = retry if retry is not None else RetryPolicy(max_attempts=max_attempts)
        self.max_attempts = self.retry.max_attempts
        self.outages = outages if outages is not None else DatabaseOutages()
        # Every query's connection, error mapping and outage accounting; shared with the operator modules.
        self.statements = Statements(pool, self.outages)

    def _fetch(self, query: str, params: dict[str, Any] | tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return self.statements.fetch(query, params)

    def _retry_params(self) -> dict[str, Any]:
        policy = self.retry
        return {
            "max": policy.max_attempts,
            "max_outage": policy.max_outage_retries,
            "base": policy.backoff_base_seconds,
            "cap": policy.backoff_cap_seconds,
            "jitter": policy.jitter,
        }

    # --- readiness -------------------------------------------------------

    def ready(self) -> bool:
        """The database answers and every migration is applied."""
        try:
            with database_errors(), self._pool.connection(timeout=2.0) as conn:
                pending = pending_migrations(conn)
        except Unavailable:
            self.outages.failed()
            raise
        self.outages.succeeded()
        return not pending

    # --- client side -----------------------------------------------------

    def create(self, new: NewJob) -> tuple[JobRecord, bool]:
        """Insert a QUEUED job; an existing job with the same (tenant, request_id) or id is returned instead.

        Returns (job, created). Raises JobIdConflict when the id belongs to a different job, and
        RequestIdReused when the request id names a job with another input (sha256) or other options.
        """
        rows = self._fetch(
            """
            INSERT INTO jobs (id, tenant, request_id, state, filename, level, image_quality,
                              input_key, input_size_bytes, input_sha256, traceparent, options, expire_at)
            VALUES (%(id)s, %(tenant)s, %(request_id)s, 'QUEUED', %(filename)s, %(level)s, %(image_quality)s,
                    %(input_key)s, %(input_size_bytes)s, %(input_sha256)s, %(traceparent)s, %(options)s,
                    now() + make_interval(hours => %(retention_hours)s))
            ON CONFLICT DO NOTHING
            RETURNING *
            """,
            {**new.__dict__, "options": Jsonb(new.options), "retention_hours": self.retention_hours},
        )
        if rows:
            return _record(rows[0]), True
        if new.request_id:
            existing = self.find_by_request_id(new.tenant, new.request_id)
            if existing is not None:
                if not _same_request(existing, new):
                    raise RequestIdReused(new.request_id)
                return existing, False
        rows = self._fetch("SELECT * FROM jobs WHERE id = %s", (new.id,))
        if rows and rows[0]["tenant"] == new.tenant and rows[0]["request_id"] == new.request_id:
            return _record(rows[0]), False
        raise JobIdConflict(str(new.id))

    def find_by_request_id(self, tenant: str, request_id: str) -> JobRecord | None:
        """The tenant's job created with this (non-empty) request id."""
        rows = self._fetch("SELECT * FROM jobs WHERE tenant = %s AND request_id = %s", (tenant, request_id))
        return _record(rows[0]) if rows else None

    def get(self, job_id: uuid.UUID, tenant: str) -> JobRecord | None:
        rows = self._fetch("SELECT * FROM jobs WHERE id = %s AND tenant = %s", (job_id, tenant))
        return _record(rows[0]) if rows else None

    def list_jobs(
        self, tenant: str, page_size: int, after: tuple[datetime, uuid.UUID] | None
    ) -> tuple[list[JobRecord], bool]:
        """A page of the tenant's jobs, newest first, after the keyset position; (jobs, more_follow)."""
        if after is None:
            rows = self._fetch(
                "SELECT * FROM jobs WHERE tenant = %s ORDER BY created_at DESC, id DESC LIMIT %s",
                (tenant, page_size + 1),
            )
        else:
            rows = self._fetch(
                "SELECT * FROM jobs WHERE tenant = %s AND (created_at, id) < (%s, %s)"
                " ORDER BY created_at DESC, id DESC LIMIT %s",
                (tenant, after[0], after[1], page_size + 1),
            )
        return _records(rows[:page_size]), len(rows) > page_size

    def cancel(self, job_id: uuid.UUID, tenant: str) -> tuple[JobRecord | None, bool]:
        """Cancel a QUEUED or RUNNING job; (job, changed). A running worker loses its lease."""
        rows = self._fetch(
            "UPDATE jobs SET state = 'CANCELLED', progress_percent = 0,"
            " lease_token = NULL, lease_expires_at = NULL, updated_at = now()"
            " WHERE id = %s AND tenant = %s AND state IN ('QUEUED', 'RUNNING') RETURNING *",
            (job_id, tenant),
        )
        if rows:
            return _record(rows[0]), True
        return self.get(job_id, tenant), False

    def delete(self, job_id: uuid.UUID, tenant: str) -> bool:
        rows = self._fetch("DELETE FROM jobs WHERE id = %s AND tenant = %s RETURNING id", (job_id, tenant))
        return bool(rows)

    # --- worker side -----------------------------------------------------

    def lease(self, worker_id: str, lease_seconds: int) -> Lease | None:
        """Lease the oldest QUEUED job that is due, or None when there is none, when the queue is paused
        or when this worker is draining (OperatorService; read in this statement, so a pause is immediate)."""
        token = uuid.uuid4()
        rows = self._fetch(
            """
            WITH next AS (
                SELECT id FROM jobs
                WHERE state = 'QUEUED' AND not_before <= now() AND expire_at > now()
                  AND NOT EXISTS (SELECT FROM queue_control WHERE paused)
                  AND NOT EXISTS (SELECT FROM workers WHERE id = %(worker_id)s AND draining)
                ORDER BY created_at, id
                FOR UPDATE SKIP LOCKED
                LIMIT 1
            )
            UPDATE jobs SET state = 'RUNNING', lease_token = %(token)s,
                   lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
                   attempts = jobs.attempts + 1, worker_id = %(worker_id)s, progress_percent = 0,
                   error_reason = '', error_message = '', updated_at = now(), leased_at = now()
            FROM next WHERE jobs.id = next.id
            RETURNING jobs.*
            """,
            {"token": token, "lease_seconds": lease_seconds, "worker_id": worker_id},
        )
        if not rows:
            return None
        job = _record(rows[0])
        assert job.lease_expires_at is not None
        return Lease(job=job, token=token, expires_at=job.lease_expires_at)

    def seconds_until_next_due(self) -> float | None:
        """Time until the earliest queued job waiting to retry comes due; None when none waits."""
        rows = self._fetch(
            "SELECT EXTRACT(EPOCH FROM min(not_before) - now())::float8 AS due"
            " FROM jobs WHERE state = 'QUEUED' AND not_before > now()"
        )
        due = rows[0]["due"] if rows else None
        return None if due is None else max(float(due), 0.0)

    def renew(
        self, job_id: uuid.UUID, token: uuid.UUID, lease_seconds: int, progress: int
    ) -> tuple[JobRecord, bool] | None:
        """Extend the lease and record progress; (job, progress_moved), or None when the lease is lost.

        update_time moves only with progress, so watchers see real changes, not heartbeats.
        """
        rows = self._fetch(
            """
            WITH current AS (
                SELECT id, progress_percent FROM jobs
                WHERE id = %(id)s AND lease_token = %(token)s AND state = 'RUNNING'
                FOR UPDATE
            )
            UPDATE jobs SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s),
                   progress_percent = GREATEST(current.progress_percent, %(progress)s),
                   updated_at = CASE WHEN %(progress)s > current.progress_percent THEN now() ELSE jobs.updated_at END
            FROM current WHERE jobs.id = current.id
            RETURNING jobs.*, current.progress_percent AS previous_progress
            """,
            {"id": job_id, "token": token, "lease_seconds": lease_seconds, "progress": progress},
        )
        if not rows:
            return None
        previous = rows[0].pop("previous_progress")
        job = _record(rows[0])
        return job, job.progress_percent != previous

    def complete(
        self,
        job_id: uuid.UUID,
        token: uuid.UUID,
        *,
        output_key: str,
        output_size_bytes: int,
        output_sha256: str,
        report: dict[str, Any] | None,
    ) -> JobRecord | None:
        rows = self._fetch(
            """
            UPDATE jobs SET state = 'SUCCEEDED', output_key = %(output_key)s,
                   output_size_bytes = %(output_size_bytes)s, output_sha256 = %(output_sha256)s,
                   report = %(report)s, progress_percent = 100,
                   lease_token = NULL, lease_expires_at = NULL, updated_at = now()
            WHERE id = %(id)s AND lease_token = %(token)s AND state = 'RUNNING'
            RETURNING *
            """,
            {
                "id": job_id,
                "token": token,
                "output_key": output_key,
                "output_size_bytes": output_size_bytes,
                "output_sha256": output_sha256,
                "report": Jsonb(report) if report is not None else None,
            },
        )
        return _record(rows[0]) if rows else None

    def fail(
        self, job_id: uuid.UUID, token: uuid.UUID, *, reason: str, message: str, retryable: bool, outage: bool = False
    ) -> JobRecord | None:
        """FAILED, or back to QUEUED (after a backoff) when retryable and attempts are left; None when the
        lease is lost. An outage gives the attempt back and counts as an outage retry instead."""
        rows = self._fetch(
            """
            WITH current AS (
                SELECT id, CASE
                    WHEN %(outage)s AND outage_retries < %(max_outage)s THEN 'outage'
                    WHEN %(outage)s THEN 'outages_exhausted'
                    WHEN %(retryable)s AND attempts < %(max)s THEN 'retry'
                    WHEN %(retryable)s THEN 'exhausted'
                    ELSE 'final' END AS outcome
                FROM jobs WHERE id = %(id)s AND lease_token = %(token)s AND state = 'RUNNING'
                FOR UPDATE
            )
            UPDATE jobs SET
                state = CASE WHEN outcome IN ('outage', 'retry') THEN 'QUEUED' ELSE 'FAILED' END,
                attempts = CASE WHEN outcome = 'outage' THEN GREATEST(attempts - 1, 0) ELSE attempts END,
                outage_retries = outage_retries + CASE WHEN outcome = 'outage' THEN 1 ELSE 0 END,
                not_before = CASE outcome
                    WHEN 'outage' THEN now() + jobs_retry_delay(outage_retries, %(base)s, %(cap)s, %(jitter)s)
                    WHEN 'retry' THEN now() + jobs_retry_delay(attempts - 1, %(base)s, %(cap)s, %(jitter)s)
                    ELSE not_before END,
                error_reason = CASE outcome WHEN 'final' THEN %(reason)s
                                            WHEN 'exhausted' THEN %(exhausted)s
                                            WHEN 'outages_exhausted' THEN %(outages_exhausted)s
                                            ELSE '' END,
                error_message = CASE outcome
                    WHEN 'final' THEN %(message)s
                    WHEN 'exhausted' THEN 'gave up after ' || attempts || ' attempts: ' || %(message)s
                    WHEN 'outages_exhausted' THEN 'gave up after ' || outage_retries || ' outages: ' || %(message)s
                    ELSE '' END,
                progress_percent = 0, lease_token = NULL, lease_expires_at = NULL, updated_at = now()
            FROM current WHERE jobs.id = current.id
            RETURNING jobs.*
            """,
            {
                **self._retry_params(),
                "id": job_id,
                "token": token,
                "retryable": retryable,
                "outage": outage,
                "reason": reason,
                "message": message,
                "exhausted": ATTEMPTS_EXHAUSTED,
                "outages_exhausted": OUTAGE_RETRIES_EXHAUSTED,
            },
        )
        return _record(rows[0]) if rows else None

    # --- sweeper ---------------------------------------------------------

    def requeue_expired_leases(self, limit: int = 500, outage: Outage | None = None) -> list[tuple[JobRecord, str]]:
        """RUNNING jobs whose lease ran out: back to QUEUED (after a backoff), or FAILED once attempts are
        used up. A lease that ran out during `outage` (or up to `outage.ended`) gives its attempt back.

        Returns (job, outcome): outcome `retry`, `exhausted` (FAILED) or `outage` (no attempt used).
        """
        rows = self._fetch(
            """
            WITH lapsed AS (
                SELECT id, CASE
                    WHEN %(outage_from)s::timestamptz IS NOT NULL
                         AND lease_expires_at BETWEEN %(outage_from)s::timestamptz AND %(outage_until)s::timestamptz
                         AND outage_retries < %(max_outage)s THEN 'outage'
                    WHEN attempts >= %(max)s THEN 'exhausted'
                    ELSE 'retry' END AS outcome
                FROM jobs
                WHERE state = 'RUNNING' AND lease_expires_at < now()
                FOR UPDATE SKIP LOCKED
                LIMIT %(limit)s
            )
            UPDATE jobs SET
                state = CASE WHEN outcome = 'exhausted' THEN 'FAILED' ELSE 'QUEUED' END,
                attempts = CASE WHEN outcome = 'outage' THEN GREATEST(attempts - 1, 0) ELSE attempts END,
                outage_retries = outage_retries + CASE WHEN outcome = 'outage' THEN 1 ELSE 0 END,
                not_before = CASE outcome
                    WHEN 'outage' THEN now() + jobs_retry_delay(outage_retries, %(base)s, %(cap)s, %(jitter)s)
                    WHEN 'retry' THEN now() + jobs_retry_delay(attempts - 1, %(base)s, %(cap)s, %(jitter)s)
                    ELSE not_before END,
                error_reason = CASE WHEN outcome = 'exhausted' THEN %(reason)s ELSE '' END,
                error_message = CASE WHEN outcome = 'exhausted'
                    THEN 'the worker stopped renewing its lease ' || attempts || ' times' ELSE '' END,
                progress_percent = 0, worker_id = '', lease_token = NULL, lease_expires_at = NULL, updated_at = now()
            FROM lapsed WHERE jobs.id = lapsed.id
            RETURNING jobs.*, lapsed.outcome
            """,
            {
                **self._retry_params(),
                "limit": limit,
                "reason": LEASE_EXPIRED_TOO_OFTEN,
                "outage_from": outage.started if outage else None,
                "outage_until": outage.ended if outage else None,
            },
        )
        return [(_record(row), outcome) for row in rows for outcome in [row.pop("outcome")]]

    def expire_due(self, limit: int = 500) -> list[tuple[JobRecord, str]]:
        """Jobs past their retention become EXPIRED; returns (job, previous state)."""
        rows = self._fetch(
            """
            WITH due AS (
                SELECT id, state AS previous_state FROM jobs
                WHERE state <> 'EXPIRED' AND expire_at <= now()
                ORDER BY expire_at
                FOR UPDATE SKIP LOCKED
                LIMIT %(limit)s
            )
            UPDATE jobs SET state = 'EXPIRED', objects_deleted = false, progress_percent = 0,
                   lease_token = NULL, lease_expires_at = NULL, updated_at = now()
            FROM due WHERE jobs.id = due.id
            RETURNING jobs.*, due.previous_state
            """,
            {"limit": limit},
        )
        result = []
        for row in rows:
            previous = row.pop("previous_state")
            result.append((_record(row), previous))
        return result

    def objects_to_delete(self, limit: int = 100) -> list[JobRecord]:
        """EXPIRED jobs whose objects are not deleted yet."""
        return _records(
            self._fetch(
                "SELECT * FROM jobs WHERE state = 'EXPIRED' AND NOT objects_deleted ORDER BY expire_at LIMIT %s",
                (limit,),
            )
        )

    def mark_objects_deleted(self, job_id: uuid.UUID) -> None:
        self._fetch("UPDATE jobs SET objects_deleted = true WHERE id = %s", (job_id,))

    def purge_expired(self, keep_days: int, limit: int = 1000) -> int:
        """Delete EXPIRED jobs whose objects are gone and that expired over `keep_days` ago.

        Until then GetJob still answers EXPIRED rather than NOT_FOUND.
        """
        rows = self._fetch(
            """
            DELETE FROM jobs WHERE id IN (
                SELECT id FROM jobs
                WHERE state = 'EXPIRED' AND objects_deleted
                  AND expire_at < now() - make_interval(days => %(keep_days)s)
                LIMIT %(limit)s)
            RETURNING id
            """,
            {"keep_days": keep_days, "limit": limit},
        )
        return len(rows)

    def queue_stats(self) -> QueueStats:
        """The queue's depth (by level), age and recent throughput, from the partial indexes alone."""
        return read_queue_stats(self._fetch)
