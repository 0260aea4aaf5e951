"""The local backend's on-disk behaviour, without gRPC."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from libs.errors import InvalidArgument, NotFound, ResourceExhausted
from services.storage.backends.local import HEADER_BYTES, OBJECT_SUFFIX, CorruptObject, LocalBackend


def _read(backend: LocalBackend, key: str) -> bytes:
    with backend.open(key) as (_meta, chunks):
        return b"".join(chunks)


def test_object_file_is_header_then_bytes(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    meta = backend.put("jobs/1/input.pdf", "application/pdf", [b"%PDF-", b"1.7"], 0)
    path = tmp_path / f"jobs/1/input.pdf{OBJECT_SUFFIX}"
    raw = path.read_bytes()
    assert raw[HEADER_BYTES:] == b"%PDF-1.7"
    assert meta.sha256.encode() in raw[:HEADER_BYTES]
    assert backend.stat("jobs/1/input.pdf") == meta
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_failed_put_removes_its_temporary_file(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)

    def chunks() -> list[bytes]:
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError):
        backend.put("a/b", "x", (c for c in chunks()), 0)
    with pytest.raises(ResourceExhausted):
        backend.put("a/c", "x", [b"12345", b"6"], 5)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_symlink_leading_outside_the_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    backend = LocalBackend(root)
    (root / "escape").symlink_to(outside)
    with pytest.raises(InvalidArgument) as raised:
        backend.put("escape/x", "x", [b"data"], 0)
    assert raised.value.reason == "INVALID_KEY"
    assert list(outside.iterdir()) == []


def test_delete_prunes_empty_directories_but_keeps_the_root(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.put("jobs/1/in.pdf", "x", [b"1"], 0)
    backend.put("jobs/2/in.pdf", "x", [b"2"], 0)
    backend.delete("jobs/1/in.pdf")
    assert not (tmp_path / "jobs/1").exists()
    assert (tmp_path / "jobs/2").is_dir()
    backend.delete("jobs/2/in.pdf")
    assert list(tmp_path.iterdir()) == []
    backend.delete("jobs/2/in.pdf")
    with pytest.raises(NotFound):
        backend.stat("jobs/2/in.pdf")


def test_abandoned_temporaries_are_swept_at_start_however_new(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    abandoned = tmp_path / "jobs" / ".tmp-dead"
    live = tmp_path / "jobs" / ".tmp-writing"
    abandoned.write_bytes(b"x")  # just written: age does not matter, only whether a writer holds it
    with live.open("wb") as writer:
        fcntl.flock(writer, fcntl.LOCK_EX)  # what a live writer (another replica) holds
        LocalBackend(tmp_path)
        assert not abandoned.exists()
        assert live.exists()


_KILLED_WRITER = """
import sys, time
from services.storage.backends.local import LocalBackend

def endless():
    yield b"%PDF-1.7\\n" * 1000
    print("writing", flush=True)
    time.sleep(60)
    yield b""

LocalBackend(sys.argv[1]).put("inputs/slow.pdf", "application/pdf", endless(), 0)
"""


def test_a_killed_writers_temporary_is_removed_at_the_next_start(tmp_path: Path) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, cwd=Path(__file__).parents[3]
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == b"writing\n"
        left = [p.name for p in (tmp_path / "inputs").iterdir()]
        assert len(left) == 1
        assert left[0].startswith(".tmp-")
    finally:
        writer.kill()
        writer.wait(timeout=10)
    LocalBackend(tmp_path)
    assert list((tmp_path / "inputs").iterdir()) == []


def test_a_replica_starting_during_a_put_leaves_it_alone(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    writing, finish = threading.Event(), threading.Event()

    def chunks() -> Iterator[bytes]:
        yield b"first "
        writing.set()
        assert finish.wait(timeout=10)
        yield b"second"

    results: list[object] = []
    put = threading.Thread(target=lambda: results.append(backend.put("k", "text/plain", chunks(), 0)))
    put.start()
    try:
        assert writing.wait(timeout=10)
        LocalBackend(tmp_path)  # a second replica's start-up sweep over the same root
    finally:
        finish.set()
        put.join(timeout=10)
    assert len(results) == 1
    assert _read(backend, "k") == b"first second"


def test_truncated_object_is_reported_not_served(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    backend.put("k", "x", [b"0123456789"], 0)
    path = tmp_path / f"k{OBJECT_SUFFIX}"
    with path.open("r+b") as handle:
        handle.truncate(HEADER_BYTES + 5)
    with pytest.raises(CorruptObject):
        backend.stat("k")


def test_ready_needs_a_writable_root(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "root")
    assert backend.ready()
    (tmp_path / "root").rename(tmp_path / "gone")
    assert not backend.ready()
