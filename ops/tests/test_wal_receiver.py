"""`pdfsmaller-ops receive-wal`: WAL streamed off a real PostgreSQL into the archive, and restored from it."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from devtools.servers.postgres import PostgresServer
from ops.db_backup import archive_wal, store_partial_wal, wal_key
from ops.db_restore import fetch_wal, segments_to_replay
from ops.location import BackupLocation
from ops.postgres_tools import PostgresTools
from ops.report import Reporter
from ops.tests.database_servers import Source, create_jobs, job_ids_in, run_ops, source_database
from ops.wal_receiver import ReceiverMetrics, SlotLost, WalReceiver, ensure_slot

SEGMENT = "000000010000000000000003"
SEGMENT_SIZE = 16 * 1024 * 1024


def _receiver(spool: Path, location: BackupLocation) -> WalReceiver:
    return WalReceiver(
        PostgresTools(Path("/nonexistent")),  # sweep() runs no program
        "postgresql://unused",
        "pdfsmaller_wal",
        spool,
        location,
        work_dir=None,
        reporter=Reporter(),
        metrics=ReceiverMetrics(),
    )


def test_a_completed_segment_is_archived_once_and_replaces_its_partial_copy(tmp_path: Path) -> None:
    spool, location = tmp_path / "spool", BackupLocation.folder(tmp_path / "archive")
    spool.mkdir()
    receiver = _receiver(spool, location)
    (spool / f"{SEGMENT}.partial").write_bytes(b"begun" + bytes(100))
    receiver.sweep()
    receiver.sweep()  # unchanged: not stored again
    assert receiver.partial_uploads == 1
    assert gzip.decompress(location.get_bytes(wal_key(f"{SEGMENT}.partial"))).startswith(b"begun")

    (spool / f"{SEGMENT}.partial").rename(spool / SEGMENT)  # pg_receivewal completes the segment
    (spool / "00000002.history").write_bytes(b"1\t0/3000000\tno recovery target specified\n")
    receiver.sweep()
    assert sorted(location.keys("database/wal/")) == sorted([wal_key("00000002.history"), wal_key(SEGMENT)])
    assert list(spool.iterdir()) == []
    assert receiver.files_archived == 2


def test_a_partial_segment_that_grew_is_stored_again(tmp_path: Path) -> None:
    spool, location = tmp_path / "spool", BackupLocation.folder(tmp_path / "archive")
    spool.mkdir()
    receiver = _receiver(spool, location)
    partial = spool / f"{SEGMENT}.partial"
    partial.write_bytes(b"one")
    receiver.sweep()
    partial.write_bytes(b"one and two")
    os.utime(partial, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    receiver.sweep()
    assert receiver.partial_uploads == 2
    assert gzip.decompress(location.get_bytes(wal_key(f"{SEGMENT}.partial"))) == b"one and two"


def test_restore_replays_a_partial_segment_only_where_the_complete_one_is_missing(tmp_path: Path) -> None:
    location = BackupLocation.folder(tmp_path / "archive")
    source = tmp_path / "segment"
    for name in ("000000010000000000000002", "000000010000000000000003.partial", "000000010000000000000004.partial"):
        source.write_bytes(name.encode())
        if name.endswith(".partial"):
            store_partial_wal(location, source, name, None)
        else:
            archive_wal(location, source, name, None)
    source.write_bytes(b"complete 3")
    archive_wal(location, source, "000000010000000000000003", None)

    chosen = segments_to_replay(list(location.keys("database/wal/")), "000000010000000000000003")
    assert chosen == {
        "000000010000000000000003": wal_key("000000010000000000000003"),
        "000000010000000000000004": wal_key("000000010000000000000004.partial"),
    }
    fetched = tmp_path / "pg_wal" / "RECOVERYXLOG"
    fetched.parent.mkdir()
    fetch_wal(location, "000000010000000000000004", fetched)  # restore_command without the prefetch
    assert fetched.read_bytes() == b"000000010000000000000004.partial"
    fetch_wal(location, "000000010000000000000003", fetched)
    assert fetched.read_bytes() == b"complete 3"


def _emit_marker(source: Source) -> tuple[bytes, str]:
    """A WAL record holding a unique marker, and the segment it went to."""
    marker = f"marker-{uuid.uuid4()}".encode()
    lsn = source.query(f"SELECT pg_logical_emit_message(false, 'test', '{marker.decode()}')::text")[0][0]
    return marker, str(source.query(f"SELECT pg_walfile_name('{lsn}')")[0][0])


def _wait_until_stored(location: BackupLocation, marker: bytes, segment: str, tmp_path: Path) -> None:
    """Until the archive's copy of `segment` (complete or partial) holds `marker`."""
    copy = tmp_path / "check" / segment
    copy.parent.mkdir(exist_ok=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            fetch_wal(location, segment, copy)
            if marker in copy.read_bytes():
                return
        except Exception:  # noqa: BLE001, S110 - not stored yet
            pass
        time.sleep(0.2)
    pytest.fail(f"{marker!r} was not stored within 60 s")


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.integration
def test_jobs_committed_seconds_before_a_kill_are_restored_from_the_received_wal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = tmp_path / "spool"
    with source_database(tmp_path, archiving=False) as source:
        assert run_ops(capsys, "backup", "--full", "--database-url", source.url, *source.location())[0] == 0
        location = BackupLocation.folder(source.backup_dir)
        command = [sys.executable, "-m", "ops", "receive-wal", "--database-url", source.url, "--spool", str(spool)]
        receiver = subprocess.Popen([*command, "--partial-seconds", "0.5", *source.location()])
        try:
            first = create_jobs(source.url, 3)
            _wait_until_stored(location, *_emit_marker(source), tmp_path)
            # pg_receivewal dies (a dropped connection): the receiver starts it again and goes on.
            for child in _children(receiver.pid):
                os.kill(child, signal.SIGKILL)
            second = create_jobs(source.url, 2)
            _wait_until_stored(location, *_emit_marker(source), tmp_path)
            assert receiver.poll() is None
        finally:
            receiver.kill()  # no last store: what is restored was stored on the way
            receiver.wait()
        postmaster = source.server._process
        assert postmaster is not None
        os.kill(postmaster.pid, signal.SIGKILL)
        postmaster.wait()
    restored = tmp_path / "restored"
    status, output = run_ops(capsys, "restore", "--target-dir", str(restored / "pgdata"), *source.location())
    assert status == 0, output
    assert job_ids_in(restored) == set(first) | set(second)


@pytest.mark.integration
def test_a_slot_the_server_invalidated_is_reported_with_what_to_do(tmp_path: Path) -> None:
    server = PostgresServer(tmp_path / "source", port=0, durable=False, settings={"max_slot_wal_keep_size": "1MB"})
    try:
        url = server.start()
        assert ensure_slot(url, "pdfsmaller_wal") is True
        assert ensure_slot(url, "pdfsmaller_wal") is False
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(3):  # nobody receives: the reserved WAL passes the 1 MB the slot may keep
                conn.execute("SELECT pg_logical_emit_message(false, 'test', repeat('x', 2000000))")
                conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
        with pytest.raises(SlotLost, match=r"backup --full.*pg_drop_replication_slot\('pdfsmaller_wal'\)"):
            ensure_slot(url, "pdfsmaller_wal")
    finally:
        server.stop()


def _streaming(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(url, autocommit=True) as conn:
            if conn.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'").fetchone() == (1,):
                return True
        time.sleep(0.2)
    return False


@pytest.mark.integration
def test_a_new_slot_streams_from_the_server_not_from_an_earlier_stream_s_spool(tmp_path: Path) -> None:
    """After a restore to an earlier point the spool holds a partial segment ahead of the new server:
    resuming from it would fail forever. It is stored as it was, then streaming starts at the slot."""
    spool, archive = tmp_path / "spool", tmp_path / "archive"
    spool.mkdir()
    stale = "0000000100000000000000F0.partial"
    (spool / stale).write_bytes(b"of an earlier stream")
    server = PostgresServer(tmp_path / "source", port=0, durable=False)
    try:
        url = server.start()
        command = [sys.executable, "-m", "ops", "receive-wal", "--database-url", url, "--spool", str(spool)]
        receiver = subprocess.Popen([*command, "--partial-seconds", "0.5", "--backup-dir", str(archive)])
        try:
            assert _streaming(url, 30), "pg_receivewal did not stream"
        finally:
            receiver.terminate()
            assert receiver.wait(30) == 0
    finally:
        server.stop()
    location = BackupLocation.folder(archive)
    assert gzip.decompress(location.get_bytes(wal_key(stale))) == b"of an earlier stream"
    assert not (spool / stale).exists()
