"""Queue statistics on real PostgreSQL: depth by level and state, throughput windows by finish time,
every part read from an index (the plan, with a few thousand jobs kept), and what GetQueueStats and
/metrics of a running jobs service show."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import psycopg
import pytest
from pdfsmaller.jobs.v1 import jobs_service_pb2 as pb
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as pb_grpc

from libs.compression import LEVEL_NAMES
from libs.service import RunningService
from libs.tests.scrape import scrape
from services.jobs.app import build as build_jobs
from services.jobs.queue_stats import (
    QUEUE_STATS_QUERY,
    THROUGHPUT_WINDOWS_SECONDS,
    LevelDepth,
    Throughput,
    read_queue_stats,
)
from services.jobs.repository import JobRepository, NewJob
from services.jobs.settings import JobsSettings
from tests.plugins.services import StartService, loopback_env

pytestmark = pytest.mark.integration

KEPT_JOBS = 4000


def insert_jobs(
    database_url: str,
    count: int,
    state: str,
    *,
    level: str = "medium",
    due_seconds_ago: float = 0.0,
    finished_seconds_ago: float = 0.0,
) -> None:
    """`count` jobs in `state` at `level`, due `due_seconds_ago` (negative: backing off until then), last
    updated (for a finished job: finished) `finished_seconds_ago`."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO jobs (id, tenant, state, level, input_key, expire_at, not_before, updated_at, lease_expires_at)
            SELECT gen_random_uuid(), 't', %(state)s, %(level)s, 'inputs/' || g, now() + interval '7 days',
                   now() - make_interval(secs => %(due)s), now() - make_interval(secs => %(finished)s),
                   CASE WHEN %(state)s = 'RUNNING' THEN now() + interval '1 minute' END
            FROM generate_series(1, %(count)s) g
            """,
            {"state": state, "level": level, "count": count, "due": due_seconds_ago, "finished": finished_seconds_ago},
        )


def fill_the_queue(database_url: str) -> None:
    """medium: 3 queued (1 backing off), 2 running; high: 2 queued; lossless: 1 running (8 active jobs)."""
    insert_jobs(database_url, 2, "QUEUED", level="medium", due_seconds_ago=30)
    insert_jobs(database_url, 1, "QUEUED", level="medium", due_seconds_ago=-600)
    insert_jobs(database_url, 2, "RUNNING", level="medium")
    insert_jobs(database_url, 2, "QUEUED", level="high", due_seconds_ago=90)
    insert_jobs(database_url, 1, "RUNNING", level="lossless")


def finish_recently(database_url: str) -> None:
    """SUCCEEDED 30 s, 2 min, 10 min and 20 min ago (2, 3, 1, 4); FAILED 2 min ago (1); and terminal jobs
    that did not finish: EXPIRED and CANCELLED 10 s ago."""
    for count, seconds_ago in ((2, 30), (3, 120), (1, 600), (4, 1200)):
        insert_jobs(database_url, count, "SUCCEEDED", finished_seconds_ago=seconds_ago)
    insert_jobs(database_url, 1, "FAILED", level="high", finished_seconds_ago=120)
    insert_jobs(database_url, 5, "EXPIRED", finished_seconds_ago=10)
    insert_jobs(database_url, 5, "CANCELLED", finished_seconds_ago=10)


EXPECTED_LEVELS = {
    "medium": LevelDepth("medium", queued=3, running=2, waiting_retry=1),
    "high": LevelDepth("high", queued=2, running=0, waiting_retry=0),
    "lossless": LevelDepth("lossless", queued=0, running=1, waiting_retry=0),
}
EXPECTED_THROUGHPUT = (
    Throughput(60, succeeded=2, failed=0),
    Throughput(300, succeeded=5, failed=1),
    Throughput(900, succeeded=6, failed=1),
)


def test_depth_by_level_and_state(jobs_database_url: str, repo: JobRepository) -> None:
    fill_the_queue(jobs_database_url)
    insert_jobs(jobs_database_url, 3, "SUCCEEDED", level="high")  # finished: not in the queue
    stats = repo.queue_stats()
    assert stats.by_level == tuple(EXPECTED_LEVELS.get(name, LevelDepth(name, 0, 0, 0)) for name in LEVEL_NAMES)
    assert (stats.queued, stats.running, stats.waiting_retry) == (5, 3, 1)
    # The totals and the levels come from one snapshot: they add up.
    assert sum(level.queued for level in stats.by_level) == stats.queued
    assert sum(level.running for level in stats.by_level) == stats.running
    assert 90 <= stats.oldest_queued_seconds < 120  # the high jobs; the one backing off is not late


def test_throughput_counts_jobs_by_the_window_they_finished_in(jobs_database_url: str, repo: JobRepository) -> None:
    finish_recently(jobs_database_url)
    stats = repo.queue_stats()
    assert stats.throughput == EXPECTED_THROUGHPUT
    assert [window.jobs_per_minute for window in stats.throughput] == [2.0, 6 / 5, 7 / 15]
    assert stats.longest_window.window_seconds == max(THROUGHPUT_WINDOWS_SECONDS)


def test_a_completed_job_counts_until_it_expires(repo: JobRepository, jobs_database_url: str) -> None:
    """Through the repository's own transitions: completing is a finish, expiring (which also sets
    updated_at) is not."""
    new = NewJob(
        id=uuid.uuid4(),
        tenant="t1",
        request_id="",
        filename="a.pdf",
        level="high",
        image_quality=0,
        input_key="inputs/a",
        input_size_bytes=10,
        input_sha256="0" * 64,
        traceparent="",
        options={},
    )
    job, _ = repo.create(new)
    lease = repo.lease("w", 30)
    assert lease is not None
    assert lease.job.id == job.id
    assert repo.complete(job.id, lease.token, output_key="", output_size_bytes=5, output_sha256="", report=None)
    assert [(w.succeeded, w.failed) for w in repo.queue_stats().throughput] == [(1, 0)] * 3
    with psycopg.connect(jobs_database_url, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET expire_at = now() - interval '1 second' WHERE id = %s", (job.id,))
    assert [(previous, expired.state) for expired, previous in repo.expire_due()] == [("SUCCEEDED", "EXPIRED")]
    assert [(w.succeeded, w.failed) for w in repo.queue_stats().throughput] == [(0, 0)] * 3


def test_windows_must_increase() -> None:
    for windows in ((), (300, 60), (0, 60), (60, 60)):
        with pytest.raises(ValueError, match="increasing"):
            read_queue_stats(lambda query, params: [], windows)


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def test_every_part_reads_an_index_not_the_table(jobs_database_url: str, repo: JobRepository) -> None:
    """A few thousand jobs kept (finished long ago) and a small queue: after ANALYZE no part scans jobs,
    the levels come from jobs_active_level and each window is a range of jobs_finished."""
    insert_jobs(jobs_database_url, KEPT_JOBS, "SUCCEEDED", finished_seconds_ago=86400)
    insert_jobs(jobs_database_url, KEPT_JOBS // 10, "FAILED", finished_seconds_ago=86400)
    insert_jobs(jobs_database_url, KEPT_JOBS // 10, "EXPIRED", finished_seconds_ago=60)
    fill_the_queue(jobs_database_url)
    finish_recently(jobs_database_url)
    with psycopg.connect(jobs_database_url, autocommit=True) as conn:
        conn.execute("ANALYZE jobs")
        (plan,) = conn.execute(  # type: ignore[misc]
            b"EXPLAIN (FORMAT JSON) " + QUEUE_STATS_QUERY.encode(), {"windows": list(THROUGHPUT_WINDOWS_SECONDS)}
        ).fetchone()
    nodes = list(plan_nodes(plan[0]["Plan"]))
    assert not [node for node in nodes if node["Node Type"] == "Seq Scan" and node.get("Relation Name") == "jobs"]
    by_index = {node["Index Name"]: node for node in nodes if "Index Name" in node}
    assert {"jobs_active_level", "jobs_finished"} <= set(by_index), sorted(by_index)
    assert "updated_at >" in by_index["jobs_finished"]["Index Cond"]  # a range, not the whole index
    # And the figures are the same as without the jobs kept.
    stats = repo.queue_stats()
    assert (stats.queued, stats.running, stats.waiting_retry) == (5, 3, 1)
    assert stats.throughput == EXPECTED_THROUGHPUT


def test_a_running_service_reports_levels_and_throughput(
    jobs_database_url: str, redis_url: str, storage_server: RunningService, service_starter: StartService
) -> None:
    env = {**loopback_env("jobs"), "DATABASE_URL": jobs_database_url, "REDIS_URL": redis_url}
    settings = JobsSettings.from_env({**env, "STORAGE_ADDR": storage_server.address, "SWEEP_INTERVAL_SECONDS": "3600"})
    running = service_starter(build_jobs, settings, metrics=True, event_prefix=f"test-{uuid.uuid4().hex[:8]}")
    fill_the_queue(jobs_database_url)
    finish_recently(jobs_database_url)
    with grpc.insecure_channel(running.address) as channel:
        stats = pb_grpc.JobsServiceStub(channel).GetQueueStats(pb.GetQueueStatsRequest(), timeout=10)
    assert [level.level for level in stats.by_level] == list(LEVEL_NAMES)
    medium = next(level for level in stats.by_level if level.level == "medium")
    assert (medium.queued, medium.running, medium.waiting_retry) == (3, 2, 1)
    assert [(w.window_seconds, w.succeeded, w.failed) for w in stats.throughput] == [
        (60, 2, 0),
        (300, 5, 1),
        (900, 6, 1),
    ]
    assert stats.throughput[1].jobs_per_minute == pytest.approx(1.2)
    # succeeded/failed: the longest window's, not every job kept.
    assert (stats.queued, stats.running, stats.succeeded, stats.failed, stats.waiting_retry) == (5, 3, 6, 1, 1)
    samples = scrape(running.metrics_port)
    depth = samples["pdfsmaller_jobs_level_queue_depth"]
    assert depth[(("level", "medium"), ("state", "QUEUED"))] == 3
    assert depth[(("level", "lossless"), ("state", "RUNNING"))] == 1
    assert depth[(("level", "maximum"), ("state", "QUEUED"))] == 0
    finished = samples["pdfsmaller_jobs_finished_in_window"]
    assert finished[(("state", "SUCCEEDED"), ("window_seconds", "300"))] == 5
    assert finished[(("state", "FAILED"), ("window_seconds", "60"))] == 0
    assert samples["jobs_queue_depth"][(("state", "QUEUED"),)] == 5
