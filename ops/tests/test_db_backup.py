"""`pdfsmaller-ops backup` and `archive-wal`: what kind is taken, what is recorded, what retention keeps."""

from __future__ import annotations

import gzip
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ops.backup_catalog import (
    FULL,
    INCREMENTAL,
    LOGICAL,
    BackupCatalog,
    BackupRecord,
    StoredFile,
    backups_to_prune,
    newest_restorable,
    wal_to_prune,
)
from ops.db_backup import DatabaseFacts, archive_wal, plan_backup, wal_key
from ops.db_restore import wal_file_name
from ops.location import BackupLocation
from ops.locks import RunLock
from ops.postgres_tools import split_password
from ops.report import OpsError
from ops.tests.database_servers import create_jobs, run_ops, source_database

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _record(backup_id: str, kind: str, age: timedelta, parent: str | None = None, start_wal: str = "") -> BackupRecord:
    return BackupRecord(
        id=backup_id,
        kind=kind,
        start_time=NOW - age,
        end_time=NOW - age,
        postgres_version="18.1",
        database="pdfsmaller",
        superuser="postgres",
        database_size_bytes=1,
        job_count=0,
        files={"archive": StoredFile(f"database/base/{backup_id}/base.tar.gz", 1, "00" * 32)},
        parent_id=parent,
        end_lsn="0/3000000",
        start_wal_file=start_wal or None,
        system_identifier="42",
    )


def _facts(version_num: int = 180001, summarize_wal: bool = True) -> DatabaseFacts:
    return DatabaseFacts("18.1", version_num, "pdfsmaller", "postgres", True, 1, 0, "42", summarize_wal)


def test_without_a_flag_an_incremental_follows_a_full_backup_of_the_last_day() -> None:
    full = _record("f", FULL, timedelta(hours=7))
    incremental = _record("i", INCREMENTAL, timedelta(hours=1), parent="f")
    plan = plan_backup("", [full, incremental], _facts(), NOW)
    assert (plan.kind, plan.parent) == (INCREMENTAL, incremental)
    assert plan_backup("", [_record("f", FULL, timedelta(hours=25))], _facts(), NOW).kind == FULL
    assert plan_backup(INCREMENTAL, [_record("f", FULL, timedelta(hours=25))], _facts(), NOW).kind == INCREMENTAL


def test_a_full_backup_is_taken_when_an_incremental_cannot_be() -> None:
    full = _record("f", FULL, timedelta(hours=1))
    assert "no full backup" in plan_backup(INCREMENTAL, [], _facts(), NOW).why
    assert "summarize_wal is off" in plan_backup(INCREMENTAL, [full], _facts(summarize_wal=False), NOW).why
    assert "no incremental" in plan_backup(INCREMENTAL, [full], _facts(version_num=160004), NOW).why
    other_cluster = DatabaseFacts("18.1", 180001, "pdfsmaller", "postgres", True, 1, 0, "43", True)
    assert plan_backup(INCREMENTAL, [full], other_cluster, NOW).kind == FULL


def test_retention_keeps_the_newest_full_backup_and_the_chain_a_kept_incremental_needs() -> None:
    records = [
        _record("f1", FULL, timedelta(days=40)),
        _record("i1", INCREMENTAL, timedelta(days=39), parent="f1"),
        _record("l1", LOGICAL, timedelta(days=38)),
        _record("f2", FULL, timedelta(days=35)),
        _record("i2", INCREMENTAL, timedelta(days=34), parent="f2"),
        _record("i3", INCREMENTAL, timedelta(days=2), parent="i2"),
    ]
    pruned = backups_to_prune(records, NOW, timedelta(days=30))
    assert [record.id for record in pruned] == ["f1", "i1"]  # l1: the newest logical backup stays too
    # Everything older than the retention: the newest full backup and the newest backup's chain stay.
    all_old = backups_to_prune(records, NOW, timedelta(days=1))
    assert [record.id for record in all_old] == ["f1", "i1"]
    assert [record.id for record in newest_restorable([r for r in records if r not in all_old])] == ["f2", "i2", "i3"]


def test_retention_of_archived_wal_follows_the_oldest_kept_backup() -> None:
    kept = [_record("f2", FULL, timedelta(days=3), start_wal="00000002000000000000000C")]
    keys = [
        "database/wal/00000001000000000000000a.gz",
        "database/wal/00000001000000000000000b.00000028.backup.gz",
        "database/wal/00000002.history.gz",
        "database/wal/00000002000000000000000c.gz",
        "database/wal/00000002000000000000000d.gz",
    ]
    assert wal_to_prune(keys, kept) == keys[:2]
    assert wal_to_prune(keys, []) == []


def test_a_chain_missing_its_full_backup_is_not_restorable() -> None:
    records = [_record("i", INCREMENTAL, timedelta(hours=1), parent="gone")]
    with pytest.raises(OpsError, match="needs gone"):
        newest_restorable(records)


def test_archive_wal_stores_a_segment_once_and_refuses_other_bytes_under_its_name(tmp_path: Path) -> None:
    location = BackupLocation.folder(tmp_path / "backups")
    segment = tmp_path / "00000001000000000000000A"
    segment.write_bytes(b"wal" * 100_000)
    assert archive_wal(location, segment, segment.name, None) == "archived"
    assert archive_wal(location, segment, segment.name, None) == "already archived"
    assert gzip.decompress(location.get_bytes(wal_key(segment.name))) == segment.read_bytes()
    segment.write_bytes(b"other" * 10)
    with pytest.raises(OpsError, match="refusing to overwrite"):
        archive_wal(location, segment, segment.name, None)
    with pytest.raises(OpsError, match="not a WAL file name"):
        wal_key("../../etc/passwd")


@pytest.mark.integration
def test_backups_are_recorded_verified_and_pruned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with source_database(tmp_path, archiving=False) as source:
        url = source.url
        create_jobs(url, 5)
        status, output = run_ops(capsys, "backup", "--incremental", "--database-url", url, *source.location())
        assert status == 0, output
        assert "turned summarize_wal on" in output
        assert "full_because: there is no full backup of this database in the location yet" in output
        assert run_ops(capsys, "backup", "--logical", "--database-url", url, *source.location())[0] == 0
        create_jobs(url, 1)
        status, output = run_ops(capsys, "backup", "--database-url", url, "--retention-days", "0", *source.location())
        assert status == 0, output
    records = BackupCatalog(BackupLocation.folder(source.backup_dir)).records()
    assert [(record.kind, record.job_count) for record in records] == [(FULL, 5), (LOGICAL, 5), (INCREMENTAL, 6)]
    full, _logical, incremental = records
    assert incremental.parent_id == full.id
    assert full.start_lsn is not None
    assert full.end_lsn is not None
    assert full.timeline == 1
    assert full.postgres_version.startswith("18")
    assert set(full.files) == {"archive", "backup_manifest"}
    for stored in full.files.values():
        assert BackupLocation.folder(source.backup_dir).stat(stored.key).sha256 == stored.sha256
    assert "pruned_backups: []" in output  # retention 0: still the newest full, logical and the chain

    with source_database(tmp_path / "second", archiving=False) as source2:
        status, output = run_ops(capsys, "backup", "--full", "--database-url", source2.url, *source.location())
        assert status == 0, output
        status, output = run_ops(
            capsys, "backup", "--full", "--retention-days", "0", "--database-url", source2.url, *source.location()
        )
    assert status == 0, output
    assert f"'{full.id}'" in output  # superseded by the newer full backups: pruned
    assert f"'{incremental.id}'" in output


@pytest.mark.integration
def test_archive_wal_enable_sets_the_archive_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with source_database(tmp_path, archiving=False) as source:
        status, output = run_ops(capsys, "archive-wal", "--enable", "--database-url", source.url, *source.location())
        assert status == 0, output
        assert "restart_needed" in output
        # What the configuration files now say (the reload itself is asynchronous).
        command = source.query("SELECT setting FROM pg_file_settings WHERE name = 'archive_command'")[-1][0]
    assert shlex.split(str(command))[1:] == ["archive-wal", "--backup-dir", str(source.backup_dir), "%p", "%f"]


@pytest.mark.integration
def test_an_incremental_postgresql_refuses_becomes_a_full_backup_saying_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with source_database(tmp_path, archiving=False) as source:
        assert run_ops(capsys, "backup", "--full", "--database-url", source.url, *source.location())[0] == 0
        location = BackupLocation.folder(source.backup_dir)
        full = BackupCatalog(location).records()[-1]
        # A parent manifest PostgreSQL cannot use (its record agrees, so only PostgreSQL can tell).
        key = full.files["backup_manifest"].key
        meta = location.put_bytes(key, location.get_bytes(key).replace(b'"Files"', b'"Filez"', 1))
        document = location.get_json(full.prefix + "manifest.json")
        document["files"]["backup_manifest"]["sha256"] = meta.sha256
        location.put_json(full.prefix + "manifest.json", document)
        status, output = run_ops(capsys, "backup", "--incremental", "--database-url", source.url, *source.location())
    assert status == 0, output
    assert "full_because: PostgreSQL could not take the incremental backup" in output
    assert [record.kind for record in BackupCatalog(location).records()] == [FULL, FULL]


def test_a_password_goes_to_the_environment_not_the_command_line() -> None:
    conninfo, env = split_password("postgresql://backup:s3cret@db.internal:5432/pdfsmaller?sslmode=require")
    assert "s3cret" not in conninfo
    assert "sslmode=require" in conninfo
    assert env == {"PGPASSWORD": "s3cret"}
    assert split_password("postgresql://postgres@127.0.0.1:5433/pdfsmaller")[1] == {}


def test_archived_wal_keys_map_back_to_postgresql_names() -> None:
    for name in ("00000001000000000000000A", "00000002.history", "00000001000000000000000B.00000028.backup"):
        assert wal_file_name(wal_key(name)) == name


@pytest.mark.integration
def test_a_backup_refuses_to_run_beside_another_and_runs_once_it_ended(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with source_database(tmp_path, archiving=False) as source:
        with RunLock.take(source.url, "backup"):  # as a running backup holds it
            status, output = run_ops(capsys, "backup", "--database-url", source.url, *source.location())
            assert status == 1
            assert "another `pdfsmaller-ops backup` is running on this database" in output
            with (
                pytest.raises(OpsError, match="another `pdfsmaller-ops backup-files`"),
                RunLock.take(source.url, "backup-files"),
                RunLock.take(source.url, "backup-files"),
            ):
                pass
        status, output = run_ops(capsys, "backup", "--database-url", source.url, *source.location())
        assert status == 0, output
    assert [record.kind for record in BackupCatalog(BackupLocation.folder(source.backup_dir)).records()] == [FULL]
