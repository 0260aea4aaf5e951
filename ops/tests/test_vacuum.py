"""`pdfsmaller-ops vacuum` against a real PostgreSQL with dead rows in the jobs table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.cli import main
from ops.tests.database_servers import create_jobs, source_database


@pytest.mark.integration
def test_vacuum_removes_the_dead_rows_it_reports_and_checks_autovacuum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with source_database(tmp_path, archiving=False) as source:
        create_jobs(source.url, 20)
        source.query("UPDATE jobs SET updated_at = now()")  # 20 dead row versions, as state changes leave
        source.query("SELECT pg_stat_force_next_flush()")
        capsys.readouterr()
        status = main(["--json", "vacuum", "--database-url", source.url])
        document = json.loads(capsys.readouterr().out)
        assert status == 0, document
        jobs = document["results"]["tables"]["jobs"]
        assert jobs["live_rows"] == 20
        assert jobs["dead_rows_before"] >= 20
        assert jobs["dead_rows_after"] == 0
        assert "schema_migrations" in document["results"]["tables"]
        assert document["results"]["autovacuum"] == "on"

        source.query("ALTER SYSTEM SET autovacuum = off")
        source.query("SELECT pg_reload_conf()")
        status = main(["--json", "vacuum", "--database-url", source.url])
        document = json.loads(capsys.readouterr().out)
        assert status == 1
        assert "autovacuum is off" in document["steps"][-1]["error"]
