"""The gauges of the pdfsmaller-ops runs (services/jobs/maintenance_metrics.py), read from maintenance_runs on a
real PostgreSQL: the newest run and the newest success of each task, no series without a run, a reading
reused for a few seconds and kept through a failed read, and a running jobs service's /metrics carries them."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from libs.service import RunningService
from libs.tests.scrape import scrape
from services.jobs.app import build as build_jobs
from services.jobs.maintenance_metrics import MaintenanceRuns, read_latest_runs
from services.jobs.settings import JobsSettings
from tests.plugins.services import StartService, loopback_env

pytestmark = pytest.mark.integration

PREFIX = "pdfsmaller_maintenance_"
DAY = datetime(2026, 11, 29, 3, 45, tzinfo=UTC)


def insert_run(
    url: str,
    task: str,
    finished_at: datetime,
    *,
    ok: bool,
    seconds: float = 30.0,
    items: dict[str, float] | None = None,
) -> None:
    """One row as ops/run_record.py writes it."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO maintenance_runs (task, started_at, finished_at, ok, failed_step, items)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            (
                task,
                finished_at - timedelta(seconds=seconds),
                finished_at,
                ok,
                "" if ok else "a step",
                Jsonb(items or {}),
            ),
        )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _registry(collector: MaintenanceRuns) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def _value(registry: CollectorRegistry, name: str, task: str, **labels: str) -> float | None:
    return registry.get_sample_value(PREFIX + name, {"task": task, **labels})


def test_the_gauges_are_each_tasks_newest_run_and_newest_success(jobs_database_url: str, pool: ConnectionPool) -> None:
    url = jobs_database_url
    insert_run(url, "vacuum", DAY - timedelta(days=7), ok=True, items={"tables": 7})
    insert_run(url, "vacuum", DAY - timedelta(days=1), ok=True, items={"tables": 8, "tables_dead_rows_after": 0})
    insert_run(url, "vacuum", DAY, ok=False, seconds=12.5, items={"tables": 3})
    insert_run(url, "sweep-orphans", DAY, ok=False)  # never succeeded
    insert_run(url, "backup", DAY - timedelta(hours=6), ok=False)
    insert_run(url, "backup", DAY, ok=True, seconds=4.0, items={"stored_bytes": 22_000_000, "job_count": 100_000})
    registry = _registry(MaintenanceRuns.from_pool(pool))

    assert _value(registry, "last_run_timestamp_seconds", "vacuum") == DAY.timestamp()
    assert _value(registry, "last_success_timestamp_seconds", "vacuum") == (DAY - timedelta(days=1)).timestamp()
    assert _value(registry, "last_run_ok", "vacuum") == 0
    assert _value(registry, "last_run_duration_seconds", "vacuum") == 12.5
    # The newest run's figures, not the success's: a failed run's are what it got through.
    assert _value(registry, "last_run_items", "vacuum", item="tables") == 3
    assert _value(registry, "last_run_items", "vacuum", item="tables_dead_rows_after") is None

    assert _value(registry, "last_run_ok", "sweep-orphans") == 0
    assert _value(registry, "last_success_timestamp_seconds", "sweep-orphans") is None  # no series: no age to alert on

    assert _value(registry, "last_run_ok", "backup") == 1
    assert _value(registry, "last_success_timestamp_seconds", "backup") == DAY.timestamp()
    assert _value(registry, "last_run_duration_seconds", "backup") == 4.0
    assert _value(registry, "last_run_items", "backup", item="stored_bytes") == 22_000_000
    assert _value(registry, "last_run_items", "backup", item="job_count") == 100_000


def test_no_run_no_series(pool: ConnectionPool) -> None:
    registry = _registry(MaintenanceRuns.from_pool(pool))
    families = {family.name: family for family in registry.collect() if family.name.startswith(PREFIX)}
    assert set(families) == {
        PREFIX + "last_run_timestamp_seconds",
        PREFIX + "last_success_timestamp_seconds",
        PREFIX + "last_run_ok",
        PREFIX + "last_run_duration_seconds",
        PREFIX + "last_run_items",
    }
    assert all(family.samples == [] for family in families.values())


def test_a_reading_is_reused_for_its_cache_seconds(jobs_database_url: str, pool: ConnectionPool) -> None:
    clock = Clock()
    registry = _registry(MaintenanceRuns(lambda: read_latest_runs(pool), cache_seconds=10.0, clock=clock))
    insert_run(jobs_database_url, "vacuum", DAY, ok=True)
    assert _value(registry, "last_run_ok", "vacuum") == 1
    insert_run(jobs_database_url, "vacuum", DAY + timedelta(days=7), ok=False)
    clock.now += 9.9
    assert _value(registry, "last_run_ok", "vacuum") == 1
    clock.now += 0.1
    assert _value(registry, "last_run_ok", "vacuum") == 0


def test_a_failed_read_keeps_the_last_reading_and_warns_once(
    jobs_database_url: str, pool: ConnectionPool, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    registry = _registry(MaintenanceRuns(lambda: read_latest_runs(pool), cache_seconds=10.0, clock=clock))
    insert_run(jobs_database_url, "backup", DAY, ok=True)
    assert _value(registry, "last_run_ok", "backup") == 1
    with psycopg.connect(jobs_database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE maintenance_runs RENAME TO maintenance_runs_away")
        with caplog.at_level(logging.WARNING, logger="services.jobs.maintenance_metrics"):
            for _ in range(3):
                clock.now += 10
                assert _value(registry, "last_success_timestamp_seconds", "backup") == DAY.timestamp()
        conn.execute("ALTER TABLE maintenance_runs_away RENAME TO maintenance_runs")
    warnings = [record.getMessage() for record in caplog.records if record.name == "services.jobs.maintenance_metrics"]
    assert len(warnings) == 1
    assert "cannot read maintenance_runs: UndefinedTable" in warnings[0]
    insert_run(jobs_database_url, "backup", DAY + timedelta(hours=6), ok=False)
    clock.now += 10
    assert _value(registry, "last_run_ok", "backup") == 0  # reads again once the table is back


def test_a_running_jobs_service_exports_the_runs(
    jobs_database_url: str, redis_url: str, storage_server: RunningService, service_starter: StartService
) -> None:
    insert_run(jobs_database_url, "sweep-orphans", DAY, ok=True, items={"orphans_deleted": 4})
    env = {**loopback_env("jobs"), "DATABASE_URL": jobs_database_url, "REDIS_URL": redis_url}
    settings = JobsSettings.from_env({**env, "STORAGE_ADDR": storage_server.address, "SWEEP_INTERVAL_SECONDS": "3600"})
    running = service_starter(build_jobs, settings, metrics=True, event_prefix=f"test-{uuid.uuid4().hex[:8]}")
    samples = scrape(running.metrics_port)
    task = (("task", "sweep-orphans"),)
    assert samples[PREFIX + "last_run_ok"] == {task: 1}
    assert samples[PREFIX + "last_success_timestamp_seconds"] == {task: DAY.timestamp()}
    assert samples[PREFIX + "last_run_items"] == {(("item", "orphans_deleted"), *task): 4}
