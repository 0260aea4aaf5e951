"""The jobs service's queue and database metrics, on real PostgreSQL: the queue gauges come from the
partial indexes (checked on the plan with a few thousand finished jobs), the sweeper refreshes them,
the pool's figures follow the pool, and a running service's /metrics carries them."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg_pool import ConnectionPool, PoolTimeout

from libs.service import RunningService
from libs.tests.scrape import scrape
from services.jobs.app import JobsService
from services.jobs.app import build as build_jobs
from services.jobs.db import open_pool
from services.jobs.metrics import PoolStats
from services.jobs.queue_stats import QUEUE_STATS_QUERY, THROUGHPUT_WINDOWS_SECONDS
from services.jobs.repository import JobRepository
from services.jobs.settings import JobsSettings
from tests.plugins.services import StartService, loopback_env

pytestmark = pytest.mark.integration

FINISHED_JOBS = 4000


def insert_jobs(database_url: str, count: int, state: str, *, due_seconds_ago: float = 0.0) -> None:
    """`count` jobs in `state`, due (not_before) `due_seconds_ago` (negative: backing off until then)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO jobs (id, tenant, state, input_key, expire_at, not_before, lease_expires_at)
            SELECT gen_random_uuid(), 't', %(state)s, 'inputs/' || g, now() + interval '7 days',
                   now() - make_interval(secs => %(ago)s),
                   CASE WHEN %(state)s = 'RUNNING' THEN now() + interval '1 minute' END
            FROM generate_series(1, %(count)s) g
            """,
            {"state": state, "count": count, "ago": due_seconds_ago},
        )


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def test_the_queue_query_reads_the_partial_indexes_not_the_table(jobs_database_url: str, repo: JobRepository) -> None:
    insert_jobs(jobs_database_url, FINISHED_JOBS, "SUCCEEDED", due_seconds_ago=3600)
    insert_jobs(jobs_database_url, 5, "QUEUED", due_seconds_ago=90)
    insert_jobs(jobs_database_url, 2, "QUEUED", due_seconds_ago=-600)  # backing off
    insert_jobs(jobs_database_url, 3, "RUNNING")
    with psycopg.connect(jobs_database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE jobs")
        (plan,) = conn.execute(  # type: ignore[misc]
            b"EXPLAIN (FORMAT JSON) " + QUEUE_STATS_QUERY.encode(), {"windows": list(THROUGHPUT_WINDOWS_SECONDS)}
        ).fetchone()
    scans = {(node["Node Type"], node.get("Index Name")) for node in plan_nodes(plan[0]["Plan"])}
    assert ("Seq Scan", None) not in scans, scans
    # Only the queue's partial indexes (which of them serves each count is the planner's choice).
    assert {index for kind, index in scans if "Index" in kind} <= {
        "jobs_queue_not_before",
        "jobs_running_lease",
        "jobs_active_level",
        "jobs_finished",
    }
    queue = repo.queue_stats()
    assert (queue.queued, queue.running, queue.waiting_retry) == (7, 3, 2)
    assert 90 <= queue.oldest_queued_seconds < 120


def test_an_empty_queue_has_no_age(repo: JobRepository, jobs_database_url: str) -> None:
    insert_jobs(jobs_database_url, 1, "QUEUED", due_seconds_ago=-600)  # not due: not late either
    queue = repo.queue_stats()
    assert (queue.queued, queue.waiting_retry, queue.oldest_queued_seconds) == (1, 1, 0.0)


def pool_registry(pool: ConnectionPool) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(PoolStats(pool))
    return registry


def test_pool_figures_follow_the_pool(jobs_database_url: str) -> None:
    pool = open_pool(jobs_database_url, max_size=1)
    try:
        pool.wait(timeout=10)
        registry = pool_registry(pool)

        def value(name: str, **labels: str) -> float:
            return registry.get_sample_value(name, labels) or 0.0

        requests_before = value("pdfsmaller_jobs_db_pool_requests_total")
        assert value("pdfsmaller_jobs_db_pool_max_connections") == 1
        with pool.connection() as conn:
            conn.execute("SELECT pg_sleep(0.05)")
            assert value("pdfsmaller_jobs_db_pool_connections", state="in_use") == 1
            assert value("pdfsmaller_jobs_db_pool_connections", state="idle") == 0
            # A second request waits for the only connection, then times out.
            waiter = threading.Thread(target=_take_briefly, args=(pool,))
            waiter.start()
            _eventually(lambda: value("pdfsmaller_jobs_db_pool_requests_waiting") == 1)
            waiter.join()
        assert value("pdfsmaller_jobs_db_pool_requests_waiting") == 0
        assert value("pdfsmaller_jobs_db_pool_connections", state="idle") == 1
        assert value("pdfsmaller_jobs_db_pool_connections", state="in_use") == 0
        assert value("pdfsmaller_jobs_db_pool_requests_total") == requests_before + 2
        assert value("pdfsmaller_jobs_db_pool_requests_queued_total") >= 1
        assert value("pdfsmaller_jobs_db_pool_request_errors_total") == 1
        assert 0.25 <= value("pdfsmaller_jobs_db_pool_wait_seconds_total") < 5  # the 0.3 s the second request waited
        assert 0.05 <= value("pdfsmaller_jobs_db_pool_usage_seconds_total") < 30
        assert value("pdfsmaller_jobs_db_pool_connects_total") >= 1
        assert value("pdfsmaller_jobs_db_pool_connect_failures_total") == 0
    finally:
        pool.close()


def _take_briefly(pool: ConnectionPool) -> None:
    with pytest.raises(PoolTimeout), pool.connection(timeout=0.3):
        pass


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_failed_connects_are_counted(closed_database_url: str) -> None:
    pool = open_pool(closed_database_url, max_size=2)
    try:
        registry = pool_registry(pool)
        with pytest.raises(PoolTimeout):
            pool.getconn(timeout=1.0)
        _eventually(lambda: (registry.get_sample_value("pdfsmaller_jobs_db_pool_connect_failures_total") or 0) >= 1)
        assert (registry.get_sample_value("pdfsmaller_jobs_db_pool_request_errors_total") or 0) == 1
        assert registry.get_sample_value("pdfsmaller_jobs_db_pool_connections", {"state": "in_use"}) == 0
    finally:
        pool.close()


@pytest.fixture
def closed_database_url(jobs_database_url: str) -> str:
    """The test server's URL on a loopback port nothing listens on (port 1: privileged, never bound here)."""
    params = psycopg.conninfo.conninfo_to_dict(jobs_database_url)
    return psycopg.conninfo.make_conninfo(**{**params, "host": "127.0.0.1", "port": "1"})


def test_a_running_jobs_service_exposes_queue_age_and_process_figures(
    jobs_database_url: str, redis_url: str, storage_server: RunningService, service_starter: StartService
) -> None:
    running = _start_jobs(jobs_database_url, redis_url, storage_server, service_starter)
    insert_jobs(jobs_database_url, 4, "QUEUED", due_seconds_ago=300)
    insert_jobs(jobs_database_url, 1, "RUNNING")
    assert isinstance(running.service, JobsService)
    running.service.sweeper.sweep_once()
    samples = scrape(running.metrics_port)
    assert samples["jobs_queue_depth"] == {(("state", "QUEUED"),): 4, (("state", "RUNNING"),): 1}
    assert 300 <= samples["pdfsmaller_jobs_oldest_queued_seconds"][()] < 330
    assert samples["process_resident_memory_bytes"][()] > 0
    assert samples["process_cpu_seconds_total"][()] > 0
    assert "python_info" in samples


def test_a_running_jobs_service_exposes_the_pool_figures(
    jobs_database_url: str, redis_url: str, storage_server: RunningService, service_starter: StartService
) -> None:
    samples = scrape(_start_jobs(jobs_database_url, redis_url, storage_server, service_starter).metrics_port)
    assert samples["pdfsmaller_jobs_db_pool_requests_total"][()] > 0
    assert set(samples["pdfsmaller_jobs_db_pool_connections"]) == {(("state", "idle"),), (("state", "in_use"),)}


def _start_jobs(
    database_url: str, redis_url: str, storage_server: RunningService, service_starter: StartService
) -> RunningService:
    """The jobs service from its own build(), /metrics on; it sweeps only when the test asks."""
    env = {**loopback_env("jobs"), "DATABASE_URL": database_url, "REDIS_URL": redis_url}
    settings = JobsSettings.from_env({**env, "STORAGE_ADDR": storage_server.address, "SWEEP_INTERVAL_SECONDS": "3600"})
    return service_starter(build_jobs, settings, metrics=True, event_prefix=f"test-{uuid.uuid4().hex[:8]}")
