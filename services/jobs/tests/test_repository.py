"""The repository and queue against a real PostgreSQL (fresh database per test)."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from datetime import timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from libs import compression
from services.jobs.db import apply_migrations, load_migrations, pending_migrations
from services.jobs.outages import Outage
from services.jobs.repository import (
    ATTEMPTS_EXHAUSTED,
    LEASE_EXPIRED_TOO_OFTEN,
    OUTAGE_RETRIES_EXHAUSTED,
    JobIdConflict,
    JobRepository,
    NewJob,
    RequestIdReused,
    RetryPolicy,
)

pytestmark = pytest.mark.integration


def new_job(tenant: str = "t1", request_id: str = "", job_id: uuid.UUID | None = None) -> NewJob:
    job_id = job_id or uuid.uuid4()
    return NewJob(
        id=job_id,
        tenant=tenant,
        request_id=request_id,
        filename="a.pdf",
        level="medium",
        image_quality=70,
        input_key=f"jobs/{job_id}/input.pdf",
        input_size_bytes=1234,
        input_sha256="ab" * 32,
        traceparent="",
        options={"grayscale": True},
    )


def expire_leases(pool: ConnectionPool) -> None:
    """Make every running lease lapse, as if its worker had stopped renewing."""
    with pool.connection() as conn:
        conn.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE state = 'RUNNING'")


def make_due(pool: ConnectionPool) -> None:
    """End every queued job's retry backoff, as if its delay had passed."""
    with pool.connection() as conn:
        conn.execute("UPDATE jobs SET not_before = now() WHERE state = 'QUEUED'")


def pinned(pool: ConnectionPool, **policy: object) -> JobRepository:
    """A repository whose backoff takes its full delay (jitter 1.0), so delays can be asserted."""
    return JobRepository(pool, retention_hours=168, retry=RetryPolicy(jitter=1.0, **policy))  # type: ignore[arg-type]


def seconds_until_due(pool: ConnectionPool, job_id: uuid.UUID) -> float:
    with pool.connection() as conn:
        row = conn.execute("SELECT EXTRACT(EPOCH FROM not_before - now())::float8 FROM jobs WHERE id = %s", (job_id,))
        value = row.fetchone()
    assert value is not None
    return float(value[0])


def test_migrations_apply_once_and_are_recorded(fresh_database_url: str) -> None:
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        assert pending_migrations(conn) == [m.name for m in load_migrations()]
        assert apply_migrations(conn) == [m.name for m in load_migrations()]
        assert apply_migrations(conn) == []
        assert pending_migrations(conn) == []
        recorded = conn.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall()
        # Every file of migrations/, in order, numbered as named.
        assert recorded == [(m.version, m.name) for m in load_migrations()]
        assert recorded[:5] == [
            (1, "0001_init.sql"),
            (2, "0002_job_options.sql"),
            (3, "0003_purge_index.sql"),
            (4, "0004_retry_backoff.sql"),
            (5, "0005_level_names.sql"),
        ]
        assert [version for version, _ in recorded] == list(range(1, len(recorded) + 1))


def test_concurrent_migrations_do_not_race(fresh_database_url: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(fresh_database_url, autocommit=True) as conn:
                results.append(apply_migrations(conn))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == [[], [], [], [m.name for m in load_migrations()]]


def test_create_is_idempotent_on_tenant_and_request_id(repo: JobRepository) -> None:
    first, created = repo.create(new_job(request_id="req-1"))
    assert created
    assert first.state == "QUEUED"
    assert first.attempts == 0
    assert first.expire_at - first.created_at == timedelta(hours=168)
    again, created_again = repo.create(new_job(request_id="req-1"))
    assert not created_again
    assert again.id == first.id
    # The same request id in another tenant is another job.
    other, other_created = repo.create(new_job(tenant="t2", request_id="req-1"))
    assert other_created
    assert other.id != first.id
    # Jobs without a request id are never merged.
    assert repo.create(new_job())[1]
    assert repo.create(new_job())[1]


def test_a_reused_request_id_with_another_input_or_options_is_refused(repo: JobRepository) -> None:
    first, _ = repo.create(new_job(request_id="req-1"))
    changes = {
        "input": {"input_sha256": "cd" * 32},
        "level": {"level": "high"},
        "quality": {"image_quality": 20},
        "options": {"options": {"grayscale": False}},
    }
    for name, change in changes.items():
        with pytest.raises(RequestIdReused):
            repo.create(replace(new_job(request_id="req-1"), **change))
        assert repo.find_by_request_id("t1", "req-1") == first, name
    # The file name is not part of the request's identity; input and options are.
    again, created = repo.create(replace(new_job(request_id="req-1"), filename="renamed.pdf"))
    assert (again.id, created) == (first.id, False)


def test_find_by_request_id(repo: JobRepository) -> None:
    job, _ = repo.create(new_job(request_id="req-9"))
    assert repo.find_by_request_id("t1", "req-9") == job
    assert repo.find_by_request_id("t2", "req-9") is None
    assert repo.find_by_request_id("t1", "req-10") is None


def test_create_with_an_existing_id(repo: JobRepository) -> None:
    job_id = uuid.uuid4()
    first, _ = repo.create(new_job(job_id=job_id))
    # A retry of the same create (same id, same tenant, same request id) gets the job back.
    again, created = repo.create(new_job(job_id=job_id))
    assert (again.id, created) == (first.id, False)
    with pytest.raises(JobIdConflict):
        repo.create(new_job(tenant="intruder", job_id=job_id))
    with pytest.raises(JobIdConflict):
        repo.create(new_job(job_id=job_id, request_id="different"))


def test_tenants_are_isolated(repo: JobRepository) -> None:
    job, _ = repo.create(new_job(tenant="alice"))
    assert repo.get(job.id, "alice") is not None
    assert repo.get(job.id, "mallory") is None
    assert repo.cancel(job.id, "mallory") == (None, False)
    assert not repo.delete(job.id, "mallory")
    assert repo.list_jobs("mallory", 10, None) == ([], False)
    assert repo.get(job.id, "alice") is not None


def test_list_pages_newest_first_without_gaps(repo: JobRepository) -> None:
    created = [repo.create(new_job(tenant="p"))[0].id for _ in range(7)]
    repo.create(new_job(tenant="other"))
    seen: list[uuid.UUID] = []
    after = None
    pages = 0
    while True:
        jobs, more = repo.list_jobs("p", 3, after)
        pages += 1
        seen += [job.id for job in jobs]
        if not more:
            break
        after = (jobs[-1].created_at, jobs[-1].id)
    assert pages == 3
    assert seen == list(reversed(created))


def test_lease_takes_oldest_and_counts_attempts(repo: JobRepository) -> None:
    first, _ = repo.create(new_job())
    repo.create(new_job())
    lease = repo.lease("w1", 30)
    assert lease is not None
    assert lease.job.id == first.id
    assert lease.job.state == "RUNNING"
    assert lease.job.attempts == 1
    assert lease.job.worker_id == "w1"
    assert lease.job.lease_token == lease.token
    assert timedelta(seconds=29) < lease.expires_at - lease.job.updated_at <= timedelta(seconds=30)


def test_concurrent_leasers_never_share_a_job(repo: JobRepository) -> None:
    count = 40
    for _ in range(count):
        repo.create(new_job())
    leased: list[uuid.UUID] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            while (lease := repo.lease(name, 30)) is not None:
                with lock:
                    leased.append(lease.job.id)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(leased) == count
    assert len(set(leased)) == count


def test_lease_expiry_retries_then_fails(repo: JobRepository, pool: ConnectionPool) -> None:
    job, _ = repo.create(new_job())
    for attempt in (1, 2):
        lease = repo.lease("w", 30)
        assert lease is not None
        assert lease.job.attempts == attempt
        assert repo.requeue_expired_leases() == []  # not expired yet
        expire_leases(pool)
        requeued = repo.requeue_expired_leases()
        assert [(j.id, j.state, outcome) for j, outcome in requeued] == [(job.id, "QUEUED", "retry")]
        make_due(pool)
        # The worker that lost the lease can no longer renew or complete.
        assert repo.renew(job.id, lease.token, 30, 50) is None
        assert (
            repo.complete(job.id, lease.token, output_key="o", output_size_bytes=1, output_sha256="", report=None)
            is None
        )
    lease = repo.lease("w", 30)
    assert lease is not None
    assert lease.job.attempts == 3
    expire_leases(pool)
    failed = repo.requeue_expired_leases()
    assert [(j.state, j.error_reason) for j, _ in failed] == [("FAILED", LEASE_EXPIRED_TOO_OFTEN)]
    assert repo.lease("w", 30) is None


def test_retryable_failure_requeues_until_attempts_are_exhausted(repo: JobRepository, pool: ConnectionPool) -> None:
    job, _ = repo.create(new_job())
    states = []
    for _ in range(3):
        lease = repo.lease("w", 30)
        assert lease is not None
        failed = repo.fail(job.id, lease.token, reason="WORKER_CRASHED", message="boom", retryable=True)
        assert failed is not None
        states.append(failed.state)
        make_due(pool)
    assert states == ["QUEUED", "QUEUED", "FAILED"]
    final = repo.get(job.id, "t1")
    assert final is not None
    assert final.error_reason == ATTEMPTS_EXHAUSTED
    assert "boom" in final.error_message


def test_permanent_failure_keeps_the_workers_reason(repo: JobRepository) -> None:
    job, _ = repo.create(new_job())
    lease = repo.lease("w", 30)
    assert lease is not None
    failed = repo.fail(job.id, lease.token, reason="ENCRYPTED_PDF", message="password protected", retryable=False)
    assert failed is not None
    assert (failed.state, failed.error_reason, failed.error_message) == (
        "FAILED",
        "ENCRYPTED_PDF",
        "password protected",
    )
    assert failed.lease_token is None
    # Its lease is gone: a second report is refused.
    assert repo.fail(job.id, lease.token, reason="X", message="", retryable=False) is None


def test_renew_and_complete(repo: JobRepository) -> None:
    job, _ = repo.create(new_job())
    lease = repo.lease("w", 30)
    assert lease is not None
    assert repo.renew(job.id, uuid.uuid4(), 30, 10) is None  # wrong token
    renewed = repo.renew(job.id, lease.token, 60, 40)
    assert renewed is not None
    assert renewed[0].progress_percent == 40
    assert renewed[1]
    same = repo.renew(job.id, lease.token, 60, 40)
    assert same is not None
    assert not same[1]
    assert same[0].updated_at == renewed[0].updated_at
    done = repo.complete(
        job.id, lease.token, output_key="k/out.pdf", output_size_bytes=10, output_sha256="cd", report={"pages": 2}
    )
    assert done is not None
    assert (done.state, done.progress_percent, done.report, done.output_key) == (
        "SUCCEEDED",
        100,
        {"pages": 2},
        "k/out.pdf",
    )
    assert repo.renew(job.id, lease.token, 30, 100) is None


def test_cancel_running_job_loses_the_lease(repo: JobRepository) -> None:
    job, _ = repo.create(new_job())
    lease = repo.lease("w", 30)
    assert lease is not None
    cancelled, changed = repo.cancel(job.id, "t1")
    assert changed
    assert cancelled is not None
    assert cancelled.state == "CANCELLED"
    assert repo.renew(job.id, lease.token, 30, 50) is None
    assert repo.cancel(job.id, "t1")[1] is False


def test_expire_due_and_object_bookkeeping(repo: JobRepository, pool: ConnectionPool) -> None:
    old, _ = repo.create(new_job())
    young, _ = repo.create(new_job())
    with pool.connection() as conn:
        conn.execute("UPDATE jobs SET expire_at = now() - interval '1 minute' WHERE id = %s", (old.id,))
    expired = repo.expire_due()
    assert [(job.id, job.state, previous) for job, previous in expired] == [(old.id, "EXPIRED", "QUEUED")]
    assert repo.expire_due() == []
    assert [job.id for job in repo.objects_to_delete()] == [old.id]
    repo.mark_objects_deleted(old.id)
    assert repo.objects_to_delete() == []
    assert repo.lease("w", 30) is not None  # the young one
    assert repo.get(young.id, "t1") is not None


def test_expired_records_are_purged_after_keep_days(repo: JobRepository, pool: ConnectionPool) -> None:
    jobs = [repo.create(new_job())[0] for _ in range(3)]
    with pool.connection() as conn:
        conn.execute(
            "UPDATE jobs SET expire_at = now() - interval '40 days' WHERE id = ANY(%s)", ([j.id for j in jobs],)
        )
        conn.execute("UPDATE jobs SET expire_at = now() - interval '2 days' WHERE id = %s", (jobs[2].id,))
    repo.expire_due()
    repo.mark_objects_deleted(jobs[0].id)  # jobs[1]'s objects are not deleted yet: its record stays
    repo.mark_objects_deleted(jobs[2].id)  # jobs[2] expired too recently
    assert repo.purge_expired(keep_days=30) == 1
    assert repo.get(jobs[0].id, "t1") is None
    assert [job.state for job in (repo.get(jobs[1].id, "t1"), repo.get(jobs[2].id, "t1"))] == ["EXPIRED"] * 2  # type: ignore[union-attr]
    assert repo.purge_expired(keep_days=30) == 0


def test_queue_counts(repo: JobRepository) -> None:
    for _ in range(3):
        repo.create(new_job())
    assert repo.lease("w", 30) is not None
    counts = repo.queue_stats()
    finished = counts.longest_window
    assert (counts.queued, counts.running, finished.succeeded, finished.failed) == (2, 1, 0, 0)
    assert counts.oldest_queued_seconds >= 0
    assert counts.waiting_retry == 0


def test_a_retryable_failure_backs_off_before_the_next_lease(pool: ConnectionPool) -> None:
    # The defect: the job went straight back and the same worker used up every attempt in a blink.
    repo = pinned(pool, backoff_base_seconds=2.0, backoff_cap_seconds=5.0)
    job, _ = repo.create(new_job())
    delays = []
    for _ in range(3):
        lease = repo.lease("w", 30)
        assert lease is not None
        failed = repo.fail(job.id, lease.token, reason="ENGINE_CRASHED", message="boom", retryable=True)
        assert failed is not None
        if failed.state == "FAILED":
            break
        assert repo.lease("w", 30) is None  # not due yet
        delays.append(seconds_until_due(pool, job.id))
        assert 0 < (repo.seconds_until_next_due() or 0) <= delays[-1]
        counts = repo.queue_stats()
        assert (counts.queued, counts.waiting_retry, counts.oldest_queued_seconds) == (1, 1, 0.0)
        make_due(pool)
    # 2 s, then 4 s (doubling), each within the test's own slack; the third attempt was the last.
    assert [round(delay) for delay in delays] == [2, 4]
    assert (failed.state, failed.error_reason, failed.attempts) == ("FAILED", ATTEMPTS_EXHAUSTED, 3)


def test_backoff_is_capped_and_jittered(pool: ConnectionPool) -> None:
    capped = pinned(pool, backoff_base_seconds=2.0, backoff_cap_seconds=3.0, max_attempts=10)
    job, _ = capped.create(new_job())
    for _ in range(4):
        lease = capped.lease("w", 30)
        assert lease is not None
        capped.fail(job.id, lease.token, reason="ENGINE_CRASHED", message="", retryable=True)
        assert seconds_until_due(pool, job.id) <= 3.0
        make_due(pool)
    capped.cancel(job.id, "t1")
    # Unpinned, the delay is a random fraction of the bound: not all the same.
    jittered = JobRepository(pool, retention_hours=168, retry=RetryPolicy(backoff_base_seconds=100.0))
    delays = set()
    for _ in range(5):
        jittered.create(new_job())
        lease = jittered.lease("w", 30)
        assert lease is not None
        jittered.fail(lease.job.id, lease.token, reason="ENGINE_CRASHED", message="", retryable=True)
        delays.add(round(seconds_until_due(pool, lease.job.id), 3))
    assert len(delays) > 1
    assert all(0 <= delay <= 100 for delay in delays)


def test_an_outage_gives_the_attempt_back_within_its_own_bound(pool: ConnectionPool) -> None:
    repo = pinned(pool, max_attempts=2, max_outage_retries=3)
    job, _ = repo.create(new_job())
    for outage in range(1, 4):
        lease = repo.lease("w", 30)
        assert lease is not None
        assert lease.job.attempts == 1  # never more than one: outages do not use attempts
        failed = repo.fail(job.id, lease.token, reason="STORAGE_UNAVAILABLE", message="", retryable=True, outage=True)
        assert failed is not None
        assert (failed.state, failed.attempts, failed.outage_retries) == ("QUEUED", 0, outage)
        assert seconds_until_due(pool, job.id) > 0
        make_due(pool)
    lease = repo.lease("w", 30)
    assert lease is not None
    final = repo.fail(job.id, lease.token, reason="STORAGE_UNAVAILABLE", message="down", retryable=True, outage=True)
    assert final is not None
    assert (final.state, final.error_reason) == ("FAILED", OUTAGE_RETRIES_EXHAUSTED)
    assert final.error_message == "gave up after 3 outages: down"


def test_a_lease_lapsed_in_a_database_outage_is_not_an_attempt(pool: ConnectionPool) -> None:
    repo = pinned(pool, max_attempts=1)
    lapsed, _ = repo.create(new_job())
    assert repo.lease("w", 30) is not None
    expire_leases(pool)
    with pool.connection() as conn:
        row = conn.execute("SELECT now() - interval '1 minute', now() FROM jobs LIMIT 1").fetchone()
    assert row is not None
    requeued = repo.requeue_expired_leases(outage=Outage(started=row[0], ended=row[1]))
    assert [(j.id, j.state, j.attempts, j.outage_retries, why) for j, why in requeued] == [
        (lapsed.id, "QUEUED", 0, 1, "outage")
    ]
    # The same lapse outside any outage uses the job's only attempt.
    make_due(pool)
    assert repo.lease("w", 30) is not None
    expire_leases(pool)
    assert [(j.state, j.error_reason) for j, _ in repo.requeue_expired_leases()] == [
        ("FAILED", LEASE_EXPIRED_TOO_OFTEN)
    ]


def test_lease_query_uses_the_queue_index(pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute(
            "EXPLAIN SELECT id FROM jobs WHERE state = 'QUEUED' AND not_before <= now() AND expire_at > now()"
            " ORDER BY created_at, id FOR UPDATE SKIP LOCKED LIMIT 1"
        ).fetchall()
    assert "jobs_queue" in " ".join(line[0] for line in plan)


def _insert_old_style(conn: psycopg.Connection, request_id: str, level: str | None) -> uuid.UUID:
    """A row as the jobs service wrote it before migration 0005 (None: the column's default level)."""
    job = new_job(request_id=request_id)
    conn.execute(
        "INSERT INTO jobs (id, tenant, request_id, state, image_quality, input_key, input_sha256, options, expire_at)"
        " VALUES (%s, %s, %s, 'QUEUED', %s, %s, %s, %s, now() + interval '1 day')",
        (job.id, job.tenant, job.request_id, job.image_quality, job.input_key, job.input_sha256, Jsonb(job.options)),
    )
    if level is not None:
        conn.execute("UPDATE jobs SET level = %s WHERE id = %s", (level, job.id))
    return job.id


def test_migration_0005_renames_old_levels_and_keeps_request_ids(fresh_database_url: str) -> None:
    with psycopg.connect(fresh_database_url, autocommit=True) as conn:
        apply_migrations(conn, load_migrations()[:4])
        old = {
            "MEDIUM": _insert_old_style(conn, "r-medium", "MEDIUM"),
            "HIGH": _insert_old_style(conn, "r-high", "HIGH"),
            "UNSPECIFIED": _insert_old_style(conn, "r-unspecified", "UNSPECIFIED"),
            "column default": _insert_old_style(conn, "r-default", None),
        }
        assert apply_migrations(conn, load_migrations()[:5]) == ["0005_level_names.sql"]
        old["default after 0005"] = _insert_old_style(conn, "r-after", None)
        apply_migrations(conn)  # the later ones, as the service applies them at start
    with ConnectionPool(fresh_database_url, min_size=1, max_size=2) as pool:
        repo = JobRepository(pool, retention_hours=168)
        levels = {spelling: repo.get(job_id, "t1") for spelling, job_id in old.items()}
        assert {spelling: job.level for spelling, job in levels.items() if job} == {
            "MEDIUM": "medium",
            "HIGH": "high",
            "UNSPECIFIED": "medium",
            "column default": "medium",
            "default after 0005": "medium",
        }
        # A retry naming the level as the service now spells it is the same request as the old row's.
        for request_id, level in [("r-medium", "medium"), ("r-high", "high"), ("r-unspecified", "medium")]:
            again, created = repo.create(replace(new_job(request_id=request_id), level=level))
            assert (again.request_id, created) == (request_id, False)
        with pytest.raises(RequestIdReused):
            repo.create(replace(new_job(request_id="r-high"), level="medium"))


def test_only_the_defined_level_names_are_stored(repo: JobRepository) -> None:
    assert [repo.create(replace(new_job(), level=name))[0].level for name in compression.LEVEL_NAMES] == list(
        compression.LEVEL_NAMES
    )
    for spelling in ("MEDIUM", "UNSPECIFIED", "ultra"):
        with pytest.raises(psycopg.errors.CheckViolation):
            repo.create(replace(new_job(), level=spelling))
