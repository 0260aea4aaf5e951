"""`backup-files` and `restore-files` against a real PostgreSQL (jobs written by the jobs repository) and
object stores in folders through the storage service's LocalBackend."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import ConnectionPool

from ops.cli import main
from ops.files_backup import (
    LATEST_KEY,
    OBJECTS_PREFIX,
    RUNS_PREFIX,
    FilesBackup,
    FilesPruned,
    FilesRun,
    prune_files,
    read_live_objects,
    run_started_at,
    stored_hashes,
    stored_key,
)
from ops.location import BackupLocation
from ops.tests.database_servers import complete_stored_job, create_stored_job
from services.jobs.db import migrate, open_pool
from services.jobs.repository import JobRecord, JobRepository
from services.storage.backends.local import OBJECT_SUFFIX, LocalBackend


@dataclass
class Site:
    """A migrated jobs database, its object store and a backup folder."""

    database_url: str
    pool: ConnectionPool
    repo: JobRepository
    objects: Path
    backups: Path

    @property
    def store(self) -> LocalBackend:
        return LocalBackend(self.objects)

    def add_job(self, data: bytes, output: bytes | None = None, repo: JobRepository | None = None) -> JobRecord:
        """A job with its input stored; with `output`, leased and completed with that output stored."""
        repo = repo or self.repo
        job_id = uuid.uuid4()
        job = create_stored_job(repo, self.store, job_id, "tenant-a", f"jobs/{job_id}/input.pdf", data)
        if output is None:
            return job
        return complete_stored_job(repo, self.store, job_id, f"jobs/{job_id}/output.pdf", output)

    def run(self, capsys: pytest.CaptureFixture[str], command: str, *extra: str) -> tuple[int, dict[str, Any]]:
        """Run the subcommand with --json; (exit status, results)."""
        capsys.readouterr()
        arguments = ["--storage-dir", str(self.objects), "--backup-dir", str(self.backups), *extra]
        if command == "backup-files":
            arguments = ["--database-url", self.database_url, *arguments]
        status = main(["--json", command, *arguments])
        document = json.loads(capsys.readouterr().out)
        return status, document["results"]

    def latest_manifest(self) -> dict[str, Any]:
        location = BackupLocation.folder(self.backups)
        return dict(location.get_json(location.get_json(LATEST_KEY)["manifest"]))


@pytest.fixture
def site(fresh_database_url: str, tmp_path: Path) -> Iterator[Site]:
    migrate(fresh_database_url)
    pool = open_pool(fresh_database_url, max_size=2)
    pool.wait(timeout=10)
    try:
        repo = JobRepository(pool, retention_hours=168)
        yield Site(fresh_database_url, pool, repo, tmp_path / "objects", tmp_path / "backups")
    finally:
        pool.close()


def test_a_first_run_copies_every_live_object_and_a_second_run_copies_nothing(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = [site.add_job(b"%PDF-1 one", b"%PDF-1 small one"), site.add_job(b"%PDF-1 two", b"%PDF-1 small two")]
    # Same bytes as the first input: stored once.
    twin = site.add_job(b"%PDF-1 one")
    status, first = site.run(capsys, "backup-files")
    assert status == 0
    assert (first["jobs_considered"], first["objects_copied"], first["objects_skipped"]) == (3, 4, 1)
    assert first["bytes_copied"] == sum(
        len(b) for b in (b"%PDF-1 one", b"%PDF-1 small one", b"%PDF-1 two", b"%PDF-1 small two")
    )
    manifest = site.latest_manifest()
    assert manifest["objects"][twin.input_key]["job_ids"] == [str(twin.id)]
    assert manifest["objects"][twin.input_key]["stored_key"] == manifest["objects"][jobs[0].input_key]["stored_key"]
    assert set(manifest["objects"]) == {key for job in [*jobs, twin] for key in job.object_keys}
    location = BackupLocation.folder(site.backups)
    assert len(stored_hashes(location)) == 4
    for key, entry in manifest["objects"].items():
        assert location.get_bytes(entry["stored_key"]) == _read(site.store, key)

    status, second = site.run(capsys, "backup-files")
    assert status == 0
    assert (second["objects_copied"], second["objects_skipped"], second["bytes_copied"]) == (0, 5, 0)
    assert second["bytes_total"] == first["bytes_total"]
    assert site.latest_manifest()["objects"] == manifest["objects"]


def test_a_changed_object_is_copied_again_and_a_job_past_retention_is_not_backed_up(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    job = site.add_job(b"%PDF-1 first bytes", b"%PDF-1 output")
    past_retention = site.add_job(b"%PDF-1 expired", repo=JobRepository(site.pool, retention_hours=0))
    assert site.run(capsys, "backup-files")[1]["objects_copied"] == 2
    site.store.put(job.input_key, "application/pdf", [b"%PDF-1 rewritten bytes"], 0)

    status, results = site.run(capsys, "backup-files")
    assert status == 0
    assert (results["jobs_considered"], results["objects_copied"], results["objects_skipped"]) == (1, 1, 1)
    manifest = site.latest_manifest()
    assert set(manifest["objects"]) == {job.input_key, job.output_key}
    assert past_retention.input_key not in manifest["objects"]
    stored = BackupLocation.folder(site.backups).get_bytes(manifest["objects"][job.input_key]["stored_key"])
    assert stored == b"%PDF-1 rewritten bytes"


def test_an_object_deleted_after_the_job_list_was_read_is_reported_missing_not_failed(site: Site) -> None:
    kept = site.add_job(b"%PDF-1 kept", b"%PDF-1 kept out")
    deleted = site.add_job(b"%PDF-1 deleted", b"%PDF-1 deleted out")
    jobs_considered, owners = read_live_objects(site.database_url)
    assert jobs_considered == 2
    # The user deletes the job while the backup runs: its row, then its objects.
    assert site.repo.delete(deleted.id, deleted.tenant)
    for key in deleted.object_keys:
        site.store.delete(key)
    location = BackupLocation.folder(site.backups)
    run = FilesRun("run-1", kept.created_at, source=str(site.objects), jobs_considered=jobs_considered)
    FilesBackup(site.store, location, stored_hashes(location), io.StringIO().write).copy_all(run, owners)
    assert run.missing == {key: [str(deleted.id)] for key in deleted.object_keys}
    assert run.failed == {}
    assert set(run.objects) == set(kept.object_keys)
    assert run.copied == 2


def test_a_missing_object_exits_0_and_an_unreadable_one_exits_1_keeping_the_last_complete_run(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    good = site.add_job(b"%PDF-1 good", b"%PDF-1 good out")
    never_stored = site.add_job(b"%PDF-1 gone")
    site.store.delete(never_stored.input_key)
    status, results = site.run(capsys, "backup-files")
    assert (status, results["objects_missing"], results["objects_copied"]) == (0, 1, 2)
    latest = site.latest_manifest()

    corrupt = site.add_job(b"%PDF-1 about to be corrupted")
    (site.objects / (corrupt.input_key + OBJECT_SUFFIX)).write_bytes(b"not an object file")
    status, results = site.run(capsys, "backup-files")
    assert status == 1
    assert results["objects_failed"] == 1
    assert site.latest_manifest() == latest
    failed_run = BackupLocation.folder(site.backups).get_json(results["manifest"])
    assert list(failed_run["failed"]) == [corrupt.input_key]
    assert set(failed_run["objects"]) == set(good.object_keys)


def test_restore_files_puts_back_byte_identical_objects_and_refuses_a_tampered_copy(
    site: Site, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    jobs = [site.add_job(f"%PDF-1 input {n}".encode() * 1000, f"%PDF-1 out {n}".encode()) for n in range(3)]
    assert site.run(capsys, "backup-files")[0] == 0
    restored = tmp_path / "restored"
    status, results = site.run(capsys, "restore-files", "--storage-dir", str(restored))
    assert status == 0
    assert (results["objects_restored"], results["objects_failed"]) == (6, 0)
    target = LocalBackend(restored)
    for key in (key for job in jobs for key in job.object_keys):
        assert _read(target, key) == _read(site.store, key)
        assert target.stat(key).content_type == "application/pdf"
    assert site.run(capsys, "restore-files", "--storage-dir", str(restored))[1]["objects_already_present"] == 6

    # The backup copy of one object is replaced by other bytes: the restore refuses it.
    entry = site.latest_manifest()["objects"][jobs[0].input_key]
    LocalBackend(site.backups).put(entry["stored_key"], "application/pdf", [b"%PDF-1 tampered"], 0)
    fresh = tmp_path / "fresh"
    status, results = site.run(capsys, "restore-files", "--storage-dir", str(fresh))
    assert status == 1
    assert (results["objects_restored"], results["objects_failed"]) == (5, 1)
    assert jobs[0].input_key not in set(LocalBackend(fresh).keys("jobs/"))
    assert entry["stored_key"] == stored_key(entry["sha256"])


def test_runs_past_retention_are_pruned_with_the_objects_only_they_list_never_the_latest(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = site.add_job(b"%PDF-1 kept", b"%PDF-1 kept out")
    gone = site.add_job(b"%PDF-1 deleted later")
    status, first = site.run(capsys, "backup-files")
    assert (status, first["runs_pruned"], first["objects_pruned"]) == (0, 0, 0)
    assert site.repo.delete(gone.id, gone.tenant)
    status, second = site.run(capsys, "backup-files")
    assert (status, second["runs_pruned"], second["objects_pruned"]) == (0, 0, 0)  # the first run is within 30 days
    location = BackupLocation.folder(site.backups)
    first_run_id = first["manifest"].removeprefix(RUNS_PREFIX).removesuffix(".json")
    gone_stored = stored_key(location.get_json(first["manifest"])["objects"][gone.input_key]["sha256"])

    # 31 days on: the first run goes, and the object only it listed; the latest run keeps its own.
    latest_run_id = location.get_json(LATEST_KEY)["run_id"]
    later = run_started_at(latest_run_id) + timedelta(days=31)  # type: ignore[operator]
    assert prune_files(location, 30, later, latest_run_id) == FilesPruned(runs=1, objects=1)
    assert [key.removeprefix(RUNS_PREFIX) for key in location.keys(RUNS_PREFIX)] == [f"{latest_run_id}.json"]
    assert gone_stored not in set(location.keys(OBJECTS_PREFIX))
    for key in kept.object_keys:
        assert location.get_bytes(site.latest_manifest()["objects"][key]["stored_key"]) == _read(site.store, key)
    assert first_run_id != latest_run_id
    # Only the latest run is left: it is never pruned, whatever its age.
    assert prune_files(location, 0, later + timedelta(days=365), latest_run_id) == FilesPruned(runs=0, objects=0)


def _read(store: LocalBackend, key: str) -> bytes:
    with store.open(key) as (_meta, chunks):
        return b"".join(chunks)
