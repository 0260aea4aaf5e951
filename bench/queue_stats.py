"""Benchmark: GetQueueStats with 100k jobs kept, against real PostgreSQL, next to the full count it replaced.

    python -m bench.queue_stats [--jobs 100000] [--runs 200] [--out bench/queue_stats_results.md]

The table holds what a week of retention holds: mostly jobs finished over the last 7 days (SUCCEEDED,
some FAILED, some EXPIRED), a small queue spread over the levels (some backing off) and a few running.
Each figure is timed twice: right after ANALYZE (pages not yet all-visible, as after a burst of work)
and after VACUUM (ANALYZE) (as autovacuum leaves it). Figures:

- GetQueueStats over gRPC (the jobs app in this process, its real wiring): the call operators, the
  gateway's health check and the sweeper's gauges pay;
- the same statement from the repository (services/jobs/queue_stats.py), without gRPC;
- the full count GetQueueStats ran before issue 11 (count(*) FILTER over every job kept);
- an exact count of every SUCCEEDED/FAILED job kept, read index-only from jobs_finished: what keeping
  `succeeded`/`failed` as all-time totals would cost (it grows with the jobs kept, unlike the rest).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import psycopg
from pdfsmaller.jobs.v1 import jobs_service_pb2 as pb
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as pb_grpc

from bench.latency import load, machine, server_versions
from devtools.servers.postgres import PostgresServer
from devtools.servers.redis import RedisServer
from libs.compression import LEVEL_NAMES
from services.jobs.app import build as build_jobs
from services.jobs.db import migrate, open_pool
from services.jobs.repository import JobRepository
from services.jobs.settings import JobsSettings
from services.storage.app import build as build_storage
from services.storage.app import local_settings as local_storage_settings

ROOT = Path(__file__).resolve().parents[1]

# GetQueueStats's statement before issue 11 (services/jobs/repository.py queue_counts()).
FULL_COUNT_QUERY = """
    SELECT count(*) FILTER (WHERE state = 'QUEUED') AS queued,
           count(*) FILTER (WHERE state = 'RUNNING') AS running,
           count(*) FILTER (WHERE state = 'SUCCEEDED') AS succeeded,
           count(*) FILTER (WHERE state = 'FAILED') AS failed,
           count(*) FILTER (WHERE state = 'QUEUED' AND not_before > now()) AS waiting_retry,
           COALESCE(EXTRACT(EPOCH FROM now() - min(not_before)
               FILTER (WHERE state = 'QUEUED' AND not_before <= now())), 0)::float8 AS oldest_queued_seconds
    FROM jobs
"""
EXACT_TOTALS_QUERY = """
    SELECT count(*) FILTER (WHERE state = 'SUCCEEDED') AS succeeded, count(*) FILTER (WHERE state = 'FAILED') AS failed
    FROM jobs WHERE state IN ('SUCCEEDED', 'FAILED')
"""


def fill(database_url: str, jobs: int) -> dict[str, int]:
    """`jobs` rows as a week of retention leaves them; returns the count per state."""
    queued, running = max(jobs // 125, 1), max(jobs // 500, 1)
    expired = jobs // 50
    failed = (jobs - queued - running - expired) // 14
    succeeded = jobs - queued - running - expired - failed
    week = 7 * 86400
    with psycopg.connect(database_url, autocommit=True) as conn:
        for state, count in (("SUCCEEDED", succeeded), ("FAILED", failed), ("EXPIRED", expired)):
            # Finished at an even pace over the week (the newest a second ago).
            conn.execute(
                """
                INSERT INTO jobs (id, tenant, state, level, input_key, expire_at, updated_at, created_at)
                SELECT gen_random_uuid(), 'bench', %(state)s, (%(levels)s::text[])[1 + g %% 5], 'inputs/' || g,
                       now() + interval '7 days' - make_interval(secs => g * %(step)s),
                       now() - make_interval(secs => g * %(step)s), now() - make_interval(secs => g * %(step)s + 30)
                FROM generate_series(1, %(count)s) g
                """,
                {"state": state, "count": count, "step": week / count, "levels": list(LEVEL_NAMES)},
            )
        conn.execute(
            """
            INSERT INTO jobs (id, tenant, state, level, input_key, expire_at, not_before, lease_expires_at)
            SELECT gen_random_uuid(), 'bench', state, (%(levels)s::text[])[1 + g %% 5], 'inputs/q' || g,
                   now() + interval '7 days',
                   -- One queued job in eight backs off for a minute; the rest are due, the oldest 10 s ago.
                   CASE WHEN state = 'QUEUED' AND g %% 8 = 0 THEN now() + interval '1 minute'
                        ELSE now() - make_interval(secs => g %% 10) END,
                   CASE WHEN state = 'RUNNING' THEN now() + interval '1 minute' END
            FROM generate_series(1, %(active)s) g,
                 LATERAL (SELECT CASE WHEN g <= %(queued)s THEN 'QUEUED' ELSE 'RUNNING' END AS state) s
            """,
            {"active": queued + running, "queued": queued, "levels": list(LEVEL_NAMES)},
        )
    return {"SUCCEEDED": succeeded, "FAILED": failed, "EXPIRED": expired, "QUEUED": queued, "RUNNING": running}


def timed(runs: int, call: Callable[[], object]) -> list[float]:
    call()  # warm the statement cache and the channel
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[max(0, int(0.95 * len(ordered)) - 1)]
    return f"{statistics.median(ordered) * 1000:.2f} | {p95 * 1000:.2f} | {max(ordered) * 1000:.2f}"


def run(jobs: int, runs: int, work: Path) -> tuple[list[str], str, dict[str, int]]:
    postgres = PostgresServer(work / "postgres", port=0, durable=False)
    redis_server = RedisServer(work / "valkey", port=0)
    storage = running = channel = pool = None
    try:
        database_url = postgres.start()
        redis_url = redis_server.start()
        versions = server_versions(database_url, redis_server)
        migrate(database_url)
        counts = fill(database_url, jobs)
        storage = build_storage(local_storage_settings(str(work / "objects"))).start()
        settings = JobsSettings(
            listen="127.0.0.1:0",
            metrics_port=0,
            database_url=database_url,
            redis_url=redis_url,
            storage_addr=storage.address,
            retention_hours=168,
            max_attempts=3,
            sweep_interval_seconds=3600,  # no sweep during the runs
            database_pool_size=4,
            max_workers=8,
        )
        app = build_jobs(settings, event_prefix=f"bench-{uuid.uuid4().hex}")
        app.spec.metrics_port = None
        running = app.start()
        channel = grpc.insecure_channel(running.address)
        stub = pb_grpc.JobsServiceStub(channel)
        pool = open_pool(database_url, max_size=1)
        repo = JobRepository(pool, retention_hours=168)
        rows: list[str] = []
        with psycopg.connect(database_url, autocommit=True) as conn:
            for phase, maintenance in (("after ANALYZE", "ANALYZE jobs"), ("after VACUUM", "VACUUM (ANALYZE) jobs")):
                conn.execute(maintenance.encode())
                figures = (
                    ("GetQueueStats (gRPC)", lambda: stub.GetQueueStats(pb.GetQueueStatsRequest(), timeout=10)),
                    ("queue stats statement", repo.queue_stats),
                    ("full count (before issue 11)", lambda: conn.execute(FULL_COUNT_QUERY.encode()).fetchall()),
                    ("exact finished totals", lambda: conn.execute(EXACT_TOTALS_QUERY.encode()).fetchall()),
                )
                for name, call in figures:
                    print(f"{phase}: {name}", file=sys.stderr)
                    rows.append(f"| {name} | {phase} | {runs} | {summary(timed(runs, call))} |")
        stats = stub.GetQueueStats(pb.GetQueueStatsRequest(), timeout=10)
        if stats.queued != counts["QUEUED"] or stats.running != counts["RUNNING"]:
            raise RuntimeError(f"GetQueueStats counted {stats.queued}/{stats.running}, the bench inserted {counts}")
        return rows, versions, counts
    finally:
        if pool is not None:
            pool.close()
        if channel is not None:
            channel.close()
        if running is not None:
            running.stop(grace=0)
        if storage is not None:
            storage.stop(0)
        redis_server.stop()
        postgres.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100_000, help="jobs in the table (default 100000)")
    ap.add_argument("--runs", type=int, default=200, help="calls per figure (default 200)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "queue_stats_results.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="pdfsmaller-queue-stats-") as work:
        rows, versions, counts = run(args.jobs, args.runs, Path(work))
    lines = [
        "# GetQueueStats at scale",
        "",
        f"Machine: {machine()}. {versions}; jobs app, storage and client in one process.",
        f"Load average (1/5/15 min) before {load_before}, after {load()}.",
        f"Jobs: {args.jobs} ({', '.join(f'{count} {state}' for state, count in counts.items())}).",
        "",
        "Produced by `python -m bench.queue_stats` (its docstring says what each figure is).",
        "",
        "| figure | table | runs | median (ms) | p95 (ms) | max (ms) |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
