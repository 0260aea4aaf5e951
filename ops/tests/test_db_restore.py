"""`pdfsmaller-ops restore` against real PostgreSQL: point-in-time recovery, incremental chains, damaged
backups refused, a target folder never overwritten."""

from __future__ import annotations

import gzip
import os
import subprocess
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from ops.backup_catalog import BackupCatalog
from ops.db_backup import sha256_of
from ops.db_restore import Target, configure_recovery
from ops.location import BackupLocation
from ops.postgres_tools import PostgresTools, unprivileged
from ops.tests.database_servers import create_jobs, job_ids_in, run_ops, source_database, wait_until_archived
from services.storage.backends.local import OBJECT_SUFFIX
from services.storage.backends.s3 import S3Backend
from services.storage.settings import s3_config_from_env


@pytest.mark.integration
def test_restore_to_a_time_between_two_writes_finds_exactly_the_jobs_before_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with source_database(tmp_path, archiving=True) as source:
        assert run_ops(capsys, "backup", "--full", "--database-url", source.url, *source.location())[0] == 0
        before = create_jobs(source.url, 3)
        between = source.query("SELECT clock_timestamp()")[0][0]
        time.sleep(0.05)
        after = create_jobs(source.url, 2)
        wait_until_archived(source)
        restored = tmp_path / "restored"
        status, output = run_ops(
            capsys,
            "restore",
            "--to-time",
            between.isoformat(),
            "--target-dir",
            str(restored / "pgdata"),
            "--start-and-check",
            *source.location(),
        )
    assert status == 0, output
    assert "job_count: 3" in output
    assert "wal_replayed_to: 0/" in output
    found = job_ids_in(restored)
    assert found == set(before)
    assert not found & set(after)


@pytest.mark.integration
def test_an_incremental_chain_restores_the_same_rows_as_a_full_backup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chain_dir, full_dir = tmp_path / "chain", tmp_path / "full"
    with source_database(tmp_path, archiving=False) as source:
        url = source.url
        assert run_ops(capsys, "backup", "--full", "--database-url", url, *source.location(chain_dir))[0] == 0
        create_jobs(url, 4)
        status, output = run_ops(capsys, "backup", "--incremental", "--database-url", url, *source.location(chain_dir))
        assert status == 0, output
        create_jobs(url, 3)
        status, output = run_ops(capsys, "backup", "--database-url", url, *source.location(chain_dir))
        assert status == 0, output
        assert run_ops(capsys, "backup", "--full", "--database-url", url, *source.location(full_dir))[0] == 0
        expected = {row[0] for row in source.query("SELECT id FROM jobs")}
    kinds = [record.kind for record in BackupCatalog(BackupLocation.folder(chain_dir)).records()]
    assert kinds == ["full", "incremental", "incremental"]
    for name, location in (("from-chain", chain_dir), ("from-full", full_dir)):
        status, output = run_ops(
            capsys, "restore", "--target-dir", str(tmp_path / name / "pgdata"), "--backup-dir", str(location)
        )
        assert status == 0, output
    assert (
        "pg_combinebackup ... ok"
        in run_ops(
            capsys, "restore", "--target-dir", str(tmp_path / "again" / "pgdata"), "--backup-dir", str(chain_dir)
        )[1]
    )
    assert job_ids_in(tmp_path / "from-chain") == job_ids_in(tmp_path / "from-full") == expected
    assert len(expected) == 7


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _repack_with_a_damaged_relation(location: BackupLocation, key: str, work: Path) -> str:
    """The archive at `key` with one table file's bytes changed inside (as bit rot before packing would);
    the archive itself is intact, so only pg_verifybackup can tell. Returns its new sha256."""
    work.mkdir()
    archive = work / "base.tar.gz"
    location.get_file(key, archive)
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(work / "unpacked", filter="data")
    relations = sorted((work / "unpacked" / "backup" / "base").glob("*/[0-9]*"), key=lambda p: -p.stat().st_size)
    _flip_a_byte(relations[0])
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(str(work / "unpacked" / "backup"), arcname="backup")
    location.put_file(key, archive)
    return sha256_of(archive)


@pytest.mark.integration
def test_a_damaged_backup_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with source_database(tmp_path, archiving=False) as source:
        create_jobs(source.url, 2)
        assert run_ops(capsys, "backup", "--full", "--database-url", source.url, *source.location())[0] == 0
    location = BackupLocation.folder(source.backup_dir)
    catalog = BackupCatalog(location)
    record = catalog.records()[-1]
    stored = record.files["archive"]
    object_file = source.backup_dir / (stored.key + OBJECT_SUFFIX)
    intact = object_file.read_bytes()
    _flip_a_byte(object_file)
    target = tmp_path / "restored" / "pgdata"
    status, output = run_ops(capsys, "restore", "--target-dir", str(target), *source.location())
    assert status == 1
    assert f"backup {record.id} is damaged" in output
    assert not target.exists()

    # Intact archive, damaged content: the record matches, pg_verifybackup does not.
    object_file.write_bytes(intact)
    new_sha = _repack_with_a_damaged_relation(location, stored.key, tmp_path / "work")
    document = location.get_json(record.prefix + "manifest.json")
    document["files"]["archive"]["sha256"] = new_sha
    document["files"]["archive"]["size_bytes"] = location.stat(stored.key).size_bytes
    location.put_json(record.prefix + "manifest.json", document)
    status, output = run_ops(capsys, "restore", "--target-dir", str(target), *source.location())
    assert status == 1
    assert "fails pg_verifybackup, refusing to restore it" in output
    assert "checksum mismatch" in output
    assert not target.exists()


@pytest.mark.integration
def test_restore_refuses_a_non_empty_or_live_target_unless_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with source_database(tmp_path, archiving=False) as source:
        create_jobs(source.url, 1)
        assert run_ops(capsys, "backup", "--full", "--database-url", source.url, *source.location())[0] == 0
    target = tmp_path / "restored" / "pgdata"
    target.mkdir(parents=True)
    (target / "PG_VERSION").write_text("18\n")
    status, output = run_ops(capsys, "restore", "--target-dir", str(target), *source.location())
    assert status == 1
    assert "is not empty: pass --force" in output
    assert (target / "PG_VERSION").read_text() == "18\n"
    assert [path.name for path in target.iterdir()] == ["PG_VERSION"]

    (target / "postmaster.pid").write_text(f"{os.getpid()}\n{target}\n")  # a live process holds it
    status, output = run_ops(capsys, "restore", "--force", "--target-dir", str(target), *source.location())
    assert status == 1
    assert "runs on" in output

    (target / "postmaster.pid").unlink()
    status, output = run_ops(capsys, "restore", "--force", "--scratch", "--target-dir", str(target), *source.location())
    assert status == 0, output
    assert (target / "postgresql.auto.conf").read_text().endswith("archive_mode = 'off'\n")  # a scratch copy
    aside = [path for path in target.parent.iterdir() if path.name.startswith("pgdata.before-restore-")]
    assert len(aside) == 1
    assert (aside[0] / "PG_VERSION").read_text() == "18\n"
    assert len(job_ids_in(tmp_path / "restored")) == 1


def test_fetch_wal_gives_postgresql_the_archived_segment_or_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    location = BackupLocation.folder(tmp_path / "backups")
    segment = os.urandom(1024) * 64
    location.put_bytes("database/wal/00000001000000000000000a.gz", gzip.compress(segment))
    destination = tmp_path / "pg_wal" / "RECOVERYXLOG"
    destination.parent.mkdir()
    arguments = ["--backup-dir", str(tmp_path / "backups")]
    status, _ = run_ops(capsys, "fetch-wal", *arguments, "00000001000000000000000A", str(destination))
    assert status == 0
    assert destination.read_bytes() == segment
    status, output = run_ops(capsys, "fetch-wal", *arguments, "00000001000000000000000B", str(destination))
    assert status == 1
    assert "not archived" in output
    assert [path.name for path in destination.parent.iterdir()] == ["RECOVERYXLOG"]


@pytest.mark.integration
def test_a_logical_backup_restores_into_an_empty_database_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with source_database(tmp_path, archiving=False) as source:
        jobs = set(create_jobs(source.url, 3))
        assert run_ops(capsys, "backup", "--logical", "--database-url", source.url, *source.location())[0] == 0
        source.query("CREATE DATABASE restored")
        empty = source.server.url.rsplit("/", 1)[0] + "/restored"
        status, output = run_ops(capsys, "restore", "--logical", "--database-url", empty, *source.location())
        assert status == 0, output
        assert "job_count: 3" in output
        with psycopg.connect(empty) as conn:
            assert {row[0] for row in conn.execute("SELECT id FROM jobs")} == jobs
        status, output = run_ops(capsys, "restore", "--logical", "--database-url", empty, *source.location())
    assert status == 1
    assert "restore into an empty one" in output


@pytest.mark.integration
def test_backup_archiving_and_restore_through_an_s3_location(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, s3_endpoint: str
) -> None:
    settings = {"S3_ENDPOINT": s3_endpoint, "S3_ACCESS_KEY": "test", "S3_SECRET_KEY": "test", "S3_SECURE": "false"}
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    S3Backend(s3_config_from_env(settings, bucket="db-backups")).ensure_bucket()
    s3 = ["--backup-s3-bucket", "db-backups", "--backup-s3-prefix", "site-a"]
    with source_database(tmp_path, archiving=True, location=s3) as source:
        assert run_ops(capsys, "backup", "--full", "--database-url", source.url, *s3)[0] == 0
        jobs = set(create_jobs(source.url, 3))
        wait_until_archived(source)
        restored = tmp_path / "restored"
        status, output = run_ops(capsys, "restore", "--target-dir", str(restored / "pgdata"), "--start-and-check", *s3)
    assert status == 0, output
    assert "job_count: 3" in output
    assert job_ids_in(restored) == jobs


@pytest.mark.integration
def test_a_new_recovery_target_replaces_the_one_a_backup_of_a_restored_server_carries(tmp_path: Path) -> None:
    tools = PostgresTools.locate()
    pgdata = tmp_path / "pgdata"
    initdb = [str(tools.path("initdb")), "-D", str(pgdata), "-U", "postgres", "--auth", "trust", "--no-sync"]
    subprocess.run(unprivileged(initdb), check=True, capture_output=True, timeout=120)
    configure_recovery(pgdata, "false", Target(time=datetime(2026, 1, 1, tzinfo=UTC)))  # the earlier restore
    configure_recovery(pgdata, "false", Target(lsn="0/3000028"))

    def effective(name: str) -> str:
        # `postgres -C` reads the configuration as the server would (its checks included) and prints one value.
        argv = unprivileged([str(tools.path("postgres")), "-D", str(pgdata), "-C", name])
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    assert effective("recovery_target_lsn") == "0/3000028"
    assert effective("recovery_target_time") == ""
