"""The operator queries on real PostgreSQL: each filter reads an index, never every job kept (checked on
the plan with a few thousand finished jobs), and the lease statement still walks the queue index with
the pause and drain checks in it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg import sql
from psycopg_pool import ConnectionPool

from services.jobs.job_filter import JobSelection
from services.jobs.metrics import JobsMetrics
from services.jobs.outages import DatabaseOutages
from services.jobs.queue_admin import PURGEABLE, REQUEUEABLE, list_statement, pick_statement
from services.jobs.queue_control import QueueControl
from services.jobs.repository import JobRepository
from services.jobs.statements import Statements
from services.jobs.tests.test_repository import new_job
from services.jobs.workers import WorkerRegistry

pytestmark = pytest.mark.integration

FINISHED_JOBS = 4000


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def scans(conn: psycopg.Connection, query: sql.Composed, params: dict[str, Any]) -> set[tuple[str, str | None]]:
    (plan,) = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query), params).fetchone()  # type: ignore[misc]
    return {(node["Node Type"], node.get("Index Name")) for node in plan_nodes(plan[0]["Plan"])}


@pytest.fixture
def filled(jobs_database_url: str) -> str:
    """Thousands of finished jobs of many tenants and workers, a few active and failed ones."""
    with psycopg.connect(jobs_database_url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO jobs (id, tenant, state, input_key, expire_at, worker_id, error_reason, created_at, updated_at)
            SELECT gen_random_uuid(), 't' || (g %% 50),
                   CASE WHEN g %% 400 = 0 THEN 'FAILED' WHEN g %% 500 = 1 THEN 'RUNNING' ELSE 'SUCCEEDED' END,
                   'inputs/' || g, now() + interval '7 days', 'w' || (g %% 40),
                   CASE WHEN g %% 400 = 0 THEN 'ENGINE_CRASHED' ELSE '' END,
                   now() - make_interval(secs => g), now() - make_interval(secs => g)
            FROM generate_series(1, %s) g
            """,
            (FINISHED_JOBS,),
        )
        conn.execute("VACUUM ANALYZE jobs")
    return jobs_database_url


def test_each_operator_filter_reads_an_index(filled: str) -> None:
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    selections = {
        "everything": JobSelection(),
        "one state": JobSelection(states=("FAILED",)),
        "two states": JobSelection(states=("FAILED", "RUNNING")),
        "reason": JobSelection(states=("FAILED",), reason="ENGINE_CRASHED"),
        "tenant": JobSelection(tenant="t7"),
        "worker": JobSelection(worker_id="w3"),
        "created range": JobSelection(created_after=hour_ago, created_before=datetime.now(UTC)),
        "stuck running": JobSelection(states=("RUNNING",), not_updated_for_seconds=600),
        "ids": JobSelection(ids=(uuid.uuid4(), uuid.uuid4())),
    }
    with psycopg.connect(filled, autocommit=True) as conn:
        for name, selection in selections.items():
            for query, params in (
                list_statement(selection, 51, None),
                list_statement(selection, 51, (datetime.now(UTC), uuid.uuid4())),
                pick_statement(selection, REQUEUEABLE, 1001, inputs_kept=True, lock=False),
                pick_statement(selection, PURGEABLE, 1001, inputs_kept=False, lock=False),
            ):
                found = scans(conn, query, params)
                assert ("Seq Scan", None) not in found, (name, found)
                assert any("Index" in kind for kind, _ in found), (name, found)


def test_the_lease_still_walks_the_queue_index_and_workers_use_the_running_index(filled: str) -> None:
    with psycopg.connect(filled, autocommit=True) as conn:
        lease = conn.execute(
            b"""
            EXPLAIN (FORMAT JSON) SELECT id FROM jobs
            WHERE state = 'QUEUED' AND not_before <= now() AND expire_at > now()
              AND NOT EXISTS (SELECT FROM queue_control WHERE paused)
              AND NOT EXISTS (SELECT FROM workers WHERE id = 'w1' AND draining)
            ORDER BY created_at, id FOR UPDATE SKIP LOCKED LIMIT 1
            """
        ).fetchone()
        assert lease is not None
        nodes = list(plan_nodes(lease[0][0]["Plan"]))
        # The pause and drain checks are one-time filters (queue_control holds one row, workers by its key).
        assert not [
            node for node in nodes if node["Node Type"] == "Seq Scan" and node["Relation Name"] != "queue_control"
        ]
        assert {node.get("Index Name") for node in nodes} & {"jobs_queue", "jobs_queue_not_before"}, nodes
        conn.execute("INSERT INTO workers (id) SELECT 'w' || g FROM generate_series(1, 40) g")
        conn.execute("ANALYZE workers")
        jobs_in_hand = conn.execute(
            b"EXPLAIN (FORMAT JSON) SELECT id FROM jobs WHERE state = 'RUNNING' AND worker_id = 'w1'"
        ).fetchone()
        assert jobs_in_hand is not None
        found = {(node["Node Type"], node.get("Index Name")) for node in plan_nodes(jobs_in_hand[0][0]["Plan"])}
        assert ("Seq Scan", None) not in found, found


def test_a_pause_and_a_drain_are_read_by_the_lease_statement_itself(repo: JobRepository, pool: ConnectionPool) -> None:
    statements = Statements(pool, DatabaseOutages())
    metrics = JobsMetrics(CollectorRegistry())
    control = QueueControl(statements, metrics)
    workers = WorkerRegistry(statements, metrics)
    repo.create(new_job())
    control.pause("maintenance", "oncall")
    assert repo.lease("w1", 30) is None
    assert control.lease_gate("w1").paused
    control.resume()
    workers.lease_call("w1", "node", None)
    workers.set_draining("w1", True)
    assert repo.lease("w1", 30) is None
    assert control.lease_gate("w1").draining
    lease = repo.lease("w2", 30)
    assert lease is not None
    assert lease.job.leased_at is not None
    assert lease.job.leased_at == lease.job.updated_at
