"""What the backup and restore tests share: a real PostgreSQL (port 0, in a tmp folder), jobs written
through the jobs service's own repository, the CLI run in-process, a restored folder started to read it."""

from __future__ import annotations

import contextlib
import dataclasses
import shlex
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from devtools.servers.postgres import PostgresServer
from ops import cli
from services.jobs.db import migrate, open_pool
from services.jobs.repository import JobRecord, JobRepository, NewJob
from services.jobs.tests.test_repository import new_job
from services.storage.backends import Backend


@dataclass
class Source:
    server: PostgresServer
    url: str
    backup_dir: Path
    archive_location: list[str]

    def location(self, backup_dir: Path | None = None) -> list[str]:
        """The location arguments: the folder of the backups, or the location WAL is archived to."""
        if backup_dir is None and self.archive_location:
            return self.archive_location
        return ["--backup-dir", str(backup_dir or self.backup_dir)]

    def query(self, sql: str) -> list[tuple[object, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(sql.encode())
            return cursor.fetchall() if cursor.description is not None else []


def archive_command(location: list[str]) -> str:
    script = Path(sys.executable).parent / "pdfsmaller-ops"
    return shlex.join([str(script), "archive-wal", *location]) + " %p %f"


@contextlib.contextmanager
def source_database(tmp_path: Path, *, archiving: bool, location: list[str] | None = None) -> Iterator[Source]:
    """A migrated jobs database; with `archiving`, its WAL goes through archive-wal to the backup folder,
    or to `location` (location arguments: an S3 bucket...; the server inherits our environment)."""
    backup_dir = tmp_path / "backups"
    archive_to = location or ["--backup-dir", str(backup_dir)]
    settings = {"archive_mode": "on", "archive_command": archive_command(archive_to)} if archiving else {}
    server = PostgresServer(tmp_path / "source", port=0, durable=False, settings=settings)
    try:
        url = server.start()
        migrate(url)
        yield Source(server, url, backup_dir, location or [])
    finally:
        server.stop()


def create_jobs(url: str, count: int) -> list[uuid.UUID]:
    """`count` jobs, created as the jobs service creates them (JobRepository.create)."""
    pool = open_pool(url, max_size=2)
    pool.wait(timeout=10)
    try:
        repository = JobRepository(pool, retention_hours=168)
        ids = []
        for _ in range(count):
            new = new_job(tenant="backup-test")
            ids.append(repository.create(dataclasses.replace(new, request_id=str(new.id)))[0].id)
        return ids
    finally:
        pool.close()


def create_stored_job(
    repo: JobRepository, store: Backend, job_id: uuid.UUID, tenant: str, input_key: str, data: bytes
) -> JobRecord:
    """A job as an upload makes it: its input stored under `input_key`, then the row (JobRepository.create)."""
    meta = store.put(input_key, "application/pdf", [data], 0)
    new = NewJob(job_id, tenant, "", "a.pdf", "medium", 0, meta.key, meta.size_bytes, meta.sha256, "", {})
    return repo.create(new)[0]


def complete_stored_job(
    repo: JobRepository, store: Backend, job_id: uuid.UUID, output_key: str, data: bytes
) -> JobRecord:
    """The queued job `job_id` leased and completed as a worker does, its output stored under `output_key`."""
    lease = repo.lease("worker-1", 60)
    assert lease is not None
    assert lease.job.id == job_id
    out = store.put(output_key, "application/pdf", [data], 0)
    done = repo.complete(
        job_id, lease.token, output_key=out.key, output_size_bytes=out.size_bytes, output_sha256=out.sha256, report=None
    )
    assert done is not None
    return done


def wait_until_archived(source: Source, timeout: float = 30.0) -> None:
    """Switch to a new WAL segment and wait until the one holding everything so far is archived."""
    # A record first: after an idle spell (archive_timeout switched already) pg_switch_wal does nothing
    # and names a segment that no write will complete.
    source.query("SELECT pg_logical_emit_message(false, 'test', 'archive now')::text")
    segment = source.query("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        archived, failed = source.query("SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver")[0]
        if archived is not None and str(archived) >= str(segment):
            return
        time.sleep(0.1)
    pytest.fail(f"{segment} not archived within {timeout} s (last failed: {failed})")


def run_ops(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """`pdfsmaller-ops ARGV` in-process: its exit status and what it printed (stdout and stderr)."""
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def job_ids_in(data_dir: Path) -> set[uuid.UUID]:
    """Start the restored folder (`data_dir`/pgdata) with make run's launcher and read its job ids."""
    server = PostgresServer(data_dir, port=0, durable=False)
    try:
        url = server.start()
        with psycopg.connect(url) as conn:
            return {row[0] for row in conn.execute("SELECT id FROM jobs").fetchall()}
    finally:
        server.stop()
