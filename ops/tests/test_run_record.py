"""Each scheduled `pdfsmaller-ops` run recorded in maintenance_runs (ops/run_record.py), on a real PostgreSQL:
real vacuum and sweep runs write their rows, a failed one its step, the table stays bounded, the jobs
service's collector exports them, and a failure to record leaves the exit status and stdout alone."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg_pool import ConnectionPool

from ops.cli import main, parser
from ops.locks import RunLock
from ops.report import Reporter
from ops.run_record import MAX_ITEMS, RunRecord, numeric_items, save_run, task_of
from services.jobs.db import migrate, open_pool
from services.jobs.maintenance_metrics import MaintenanceRuns
from services.storage.backends.local import OBJECT_SUFFIX, LocalBackend


def _runs(url: str, task: str | None = None) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cursor:
        cursor.execute(
            "SELECT * FROM maintenance_runs WHERE %(task)s::text IS NULL OR task = %(task)s ORDER BY id",
            {"task": task},
        )
        return cursor.fetchall()


def _ops(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    """Run pdfsmaller-ops --json ARGV in-process: its status, its JSON document, its stderr."""
    capsys.readouterr()
    status = main(["--json", *argv])
    captured = capsys.readouterr()
    return status, json.loads(captured.out), captured.err


@pytest.fixture
def jobs_url(fresh_database_url: str) -> str:
    migrate(fresh_database_url)
    return fresh_database_url


@pytest.fixture
def pool(jobs_url: str) -> Iterator[ConnectionPool]:
    pool = open_pool(jobs_url, max_size=2)
    pool.wait(timeout=10)
    try:
        yield pool
    finally:
        pool.close()


def _old_orphan(store: LocalBackend) -> str:
    key = f"inputs/{uuid.uuid4()}.pdf"
    store.put(key, "application/pdf", [b"%PDF-1.7 orphan"], 0)
    written = time.time() - 2 * 3600
    os.utime(store.root / (key + OBJECT_SUFFIX), (written, written))
    return key


# -- real runs ---------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_a_vacuum_run_records_what_it_did_and_the_jobs_collector_exports_it(
    jobs_url: str, pool: ConnectionPool, capsys: pytest.CaptureFixture[str]
) -> None:
    before = datetime.now(UTC)
    status, document, _ = _ops(capsys, "vacuum", "--database-url", jobs_url)
    assert status == 0, document
    assert set(document) == {"ok", "steps", "results"}  # the JSON line of the run is as it was
    [run] = _runs(jobs_url)
    assert (run["task"], run["ok"], run["failed_step"], run["error"]) == ("vacuum", True, "", "")
    assert before <= run["started_at"] <= run["finished_at"] <= datetime.now(UTC)
    assert run["results"] == json.loads(json.dumps(document["results"], default=str))
    tables = document["results"]["tables"]
    assert "maintenance_runs" in tables
    assert run["items"]["tables"] == len(tables)
    assert run["items"]["tables_dead_rows_after"] == sum(t["dead_rows_after"] for t in tables.values())
    assert "autovacuum" not in run["items"]  # a string: no figure

    registry = CollectorRegistry()
    registry.register(MaintenanceRuns.from_pool(pool))

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"pdfsmaller_maintenance_{name}", {"task": "vacuum", **labels})

    assert sample("last_run_ok") == 1
    assert sample("last_run_timestamp_seconds") == pytest.approx(run["finished_at"].timestamp())
    assert sample("last_success_timestamp_seconds") == pytest.approx(run["finished_at"].timestamp())
    duration = (run["finished_at"] - run["started_at"]).total_seconds()
    assert sample("last_run_duration_seconds") == pytest.approx(duration)
    assert sample("last_run_items", item="tables") == len(tables)


@pytest.mark.integration
def test_a_dry_run_sweep_is_recorded_as_a_task_of_its_own_with_its_counts(
    jobs_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = LocalBackend(tmp_path / "objects")
    orphan = _old_orphan(store)
    status, document, _ = _ops(
        capsys, "sweep-orphans", "--dry-run", "--database-url", jobs_url, "--storage-dir", str(store.root)
    )
    assert status == 0, document
    assert list(store.keys("")) == [orphan]
    [run] = _runs(jobs_url)
    assert (run["task"], run["ok"]) == ("sweep-orphans-dry-run", True)
    assert run["items"] == {**document["results"], "orphans": 1, "orphans_deleted": 0}

    status, document, _ = _ops(capsys, "sweep-orphans", "--database-url", jobs_url, "--storage-dir", str(store.root))
    assert status == 0, document
    assert _runs(jobs_url, "sweep-orphans")[0]["items"]["orphans_deleted"] == 1


@pytest.mark.integration
def test_a_failed_run_is_recorded_with_the_step_that_failed(
    jobs_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = LocalBackend(tmp_path / "objects")
    with RunLock.take(jobs_url, "sweep-orphans"):  # as a running sweep holds it
        status, document, _ = _ops(
            capsys, "sweep-orphans", "--database-url", jobs_url, "--storage-dir", str(store.root)
        )
    assert status == 1
    [run] = _runs(jobs_url)
    assert (run["task"], run["ok"]) == ("sweep-orphans", False)
    assert run["failed_step"] == "take the sweep-orphans lock" == document["steps"][-1]["name"]
    assert "another `pdfsmaller-ops sweep-orphans` is running" in run["error"]
    assert run["items"] == {}


@pytest.mark.integration
def test_a_failure_to_record_is_one_stderr_line_and_changes_no_exit_status(
    fresh_database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database without the jobs schema: the runs work (or fail) as without recording."""
    store = str(LocalBackend(tmp_path / "objects").root)
    status, document, err = _ops(capsys, "vacuum", "--database-url", fresh_database_url)
    assert (status, document["ok"]) == (0, True)
    assert err.splitlines() == [
        "pdfsmaller-ops vacuum: could not record the run in maintenance_runs "
        '(UndefinedTable: relation "maintenance_runs" does not exist)'
    ]
    with RunLock.take(fresh_database_url, "sweep-orphans"):
        status, document, err = _ops(
            capsys, "sweep-orphans", "--database-url", fresh_database_url, "--storage-dir", store
        )
    assert (status, document["ok"]) == (1, False)
    assert len(err.splitlines()) == 1
    assert "could not record the run" in err
    assert document["steps"][-1]["name"] == "take the sweep-orphans lock"

    params = psycopg.conninfo.conninfo_to_dict(fresh_database_url)
    unreachable = psycopg.conninfo.make_conninfo(**{**params, "host": "127.0.0.1", "port": "1"})
    status, document, err = _ops(capsys, "vacuum", "--database-url", unreachable)
    assert (status, document["ok"]) == (1, False)
    assert [line for line in err.splitlines() if "could not record" in line] == [err.strip()]


# -- the table's bound -------------------------------------------------------------------------------------


def _record(task: str, finished_at: datetime, *, ok: bool) -> RunRecord:
    return RunRecord(task, finished_at - timedelta(seconds=5), finished_at, ok, "" if ok else "step", "", {"n": 1})


@pytest.mark.integration
def test_the_table_keeps_each_tasks_newest_runs_and_its_newest_success(jobs_url: str) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    save_run(jobs_url, _record("vacuum", start, ok=True), keep=3)
    save_run(jobs_url, _record("backup", start, ok=True), keep=3)
    for day in range(1, 8):
        save_run(jobs_url, _record("vacuum", start + timedelta(days=day), ok=False), keep=3)
    runs = _runs(jobs_url, "vacuum")
    kept = [(run["finished_at"] - start).days for run in runs]
    assert kept == [0, 5, 6, 7]  # the only success, and the 3 newest
    assert len(_runs(jobs_url, "backup")) == 1  # another task's rows are its own

    save_run(jobs_url, _record("vacuum", start + timedelta(days=8), ok=True), keep=3)
    assert [(run["finished_at"] - start).days for run in _runs(jobs_url, "vacuum")] == [6, 7, 8]


# -- which runs, which figures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "task"),
    [
        (["vacuum"], "vacuum"),
        (["sweep-orphans"], "sweep-orphans"),
        (["sweep-orphans", "--dry-run"], "sweep-orphans-dry-run"),
        (["backup"], "backup"),
        (["backup", "--full"], "backup"),
        (["backup", "--incremental"], "backup"),
        (["backup", "--logical"], "backup-logical"),
        (["backup-files"], "backup-files"),
        (["recovery-test"], "recovery-test"),
        (["smoke"], None),
        (["restore", "--logical"], None),
        (["archive-wal", "--enable"], None),
    ],
)
def test_the_task_each_command_is_recorded_as(argv: list[str], task: str | None) -> None:
    assert task_of(parser(argv).parse_args(argv)) == task


def test_the_figures_are_the_numbers_list_lengths_and_table_sums_of_the_results() -> None:
    results = {
        "backup_id": "20261201T120000Z-full",
        "stored_bytes": 2048,
        "rto_seconds": 12.5,
        "pruned_backups": ["a", "b"],
        "restart_needed": True,
        "recovery_point_time": None,
        "tables": {
            "jobs": {"live_rows": 20, "dead_rows_after": 1, "last_autovacuum": None},
            "workers": {"live_rows": 2},
        },
        "Not-A-Name": 3,
    }
    assert numeric_items(results) == {
        "stored_bytes": 2048,
        "rto_seconds": 12.5,
        "pruned_backups": 2,
        "tables": 2,
        "tables_live_rows": 22,
        "tables_dead_rows_after": 1,
    }
    many = {f"figure_{index}": index for index in range(100)}
    assert len(numeric_items(many)) == MAX_ITEMS


def test_a_run_record_names_the_first_failed_step() -> None:
    reporter = Reporter(as_json=True)
    with reporter.step("first"):
        pass
    with pytest.raises(Exception, match="second"), reporter.step("second"):
        raise RuntimeError("broken")
    now = datetime.now(UTC)
    record = RunRecord.of("vacuum", reporter, now, now, 1)
    assert (record.ok, record.failed_step, record.error) == (False, "second", "RuntimeError: broken")
