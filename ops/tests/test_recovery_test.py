"""`pdfsmaller-ops recovery-test` end to end: real PostgreSQL with WAL archiving, jobs written by the jobs
repository, `backup --full` and `backup-files` through the CLI, then the recovery test restores both into
scratch servers, runs the five services on them and compresses a PDF; and a file backup that lacks a
SUCCEEDED job's output fails it, naming the job."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from ops.tests.database_servers import (
    Source,
    complete_stored_job,
    create_jobs,
    create_stored_job,
    run_ops,
    source_database,
    wait_until_archived,
)
from services.jobs.db import migrate, open_pool
from services.jobs.repository import JobRepository
from services.storage.backends.local import LocalBackend


def succeeded_job(url: str, objects: Path) -> uuid.UUID:
    """A job created, leased and completed through the jobs repository, its input and output stored."""
    store = LocalBackend(objects)
    pool = open_pool(url, max_size=2)
    pool.wait(timeout=10)
    try:
        repository = JobRepository(pool, retention_hours=168)
        job_id = uuid.uuid4()
        create_stored_job(
            repository, store, job_id, "recovery", f"jobs/{job_id}/input.pdf", b"%PDF-1.4 in " + job_id.bytes
        )
        complete_stored_job(repository, store, job_id, f"jobs/{job_id}/output.pdf", b"%PDF-1.4 out " + job_id.bytes)
        return job_id
    finally:
        pool.close()


def recorded_runs(database_url: str) -> list[dict[str, Any]]:
    """The recovery test's rows of maintenance_runs (what BackupOverdue and MaintenanceFailing read)."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT ok, failed_step, items FROM maintenance_runs WHERE task = 'recovery-test' ORDER BY id"
        ).fetchall()


def back_up(capsys: pytest.CaptureFixture[str], source: Source, command: str, objects: Path) -> None:
    extra = ["--full"] if command == "backup" else ["--storage-dir", str(objects)]
    status, output = run_ops(capsys, command, *extra, "--database-url", source.url, *source.location())
    assert status == 0, output


@pytest.mark.integration
def test_recovery_test_restores_checks_runs_the_system_and_prints_the_rto(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fresh_database_url: str
) -> None:
    migrate(fresh_database_url)  # the live jobs database, where only the run is recorded
    objects, scratch = tmp_path / "objects", tmp_path / "scratch"
    scratch.mkdir()
    with source_database(tmp_path, archiving=True) as source:
        succeeded_job(source.url, objects)  # first: the repository leases the oldest QUEUED job
        create_jobs(source.url, 3)
        back_up(capsys, source, "backup", objects)
        create_jobs(source.url, 2)  # after the backup: only the archived WAL has them
        back_up(capsys, source, "backup-files", objects)
        wait_until_archived(source)
    status, output = run_ops(
        capsys, "recovery-test", "--work-dir", str(scratch), "--database-url", fresh_database_url, *source.location()
    )
    assert status == 0, output
    results = dict(line.split(": ", 1) for line in output.splitlines() if ": " in line and " ... " not in line)
    assert (results["backup_job_count"], results["job_count"], results["succeeded_jobs_checked"]) == ("4", "6", "1")
    assert results["recovery_point"] == "the last replayed transaction"
    assert results["recovery_point_lsn"].startswith("0/")
    assert int(results["restored_jobs_held"]) == 5  # the QUEUED ones; the worker took only the test's PDF
    assert results["objects_restored"] == "2"
    assert results["health"].startswith("DEGRADED")
    assert float(results["rto_seconds"]) > float(results["rto_database_seconds"]) > 0
    assert "download it ... ok" in output
    assert list(scratch.iterdir()) == []  # torn down
    [run] = recorded_runs(fresh_database_url)
    assert (run["ok"], run["failed_step"], run["items"]["job_count"]) == (True, "", 6)
    assert run["items"]["rto_seconds"] == float(results["rto_seconds"])


@pytest.mark.integration
def test_a_file_backup_without_a_succeeded_jobs_output_fails_naming_the_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fresh_database_url: str
) -> None:
    migrate(fresh_database_url)
    objects, scratch = tmp_path / "objects", tmp_path / "scratch"
    scratch.mkdir()
    with source_database(tmp_path, archiving=False) as source:
        kept = succeeded_job(source.url, objects)
        lost = succeeded_job(source.url, objects)
        # Its output gone from the store before the file backup: a restore could not serve its download.
        LocalBackend(objects).delete(f"jobs/{lost}/output.pdf")
        back_up(capsys, source, "backup-files", objects)
        # Succeeded after the file backup started: its output is in no file backup yet, which is expected.
        later = succeeded_job(source.url, objects)
        back_up(capsys, source, "backup", objects)
    status, output = run_ops(
        capsys, "recovery-test", "--work-dir", str(scratch), "--database-url", fresh_database_url, *source.location()
    )
    assert status == 1, output
    assert [(run["ok"], run["failed_step"]) for run in recorded_runs(fresh_database_url)] == [
        (False, "check integrity")
    ]
    assert "check integrity ... FAILED" in output
    assert "1 SUCCEEDED job(s) of 2 have no output in file backup run" in output
    assert f"job {lost}: jobs/{lost}/output.pdf not in the file backup" in output
    assert str(kept) not in output
    assert str(later) not in output
    assert "start the services" not in output
    assert list(scratch.iterdir()) == []  # torn down after the failure too
