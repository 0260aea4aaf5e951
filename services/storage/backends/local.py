"""Objects as files under one root directory, written atomically.

Each object is one file, `<root>/<key>@object`: a fixed 1 KiB header holding
JSON metadata (size, sha256, content type) followed by the bytes. Keeping the
metadata in the same file means one `rename()` publishes data and metadata
together, so a crash can never pair new bytes with old metadata, and Stat
reads 1 KiB instead of re-hashing. The `@object` suffix (a character keys
cannot contain) keeps the file for key `a` apart from the directory for key
`a/b`.

Writes go to a temporary file in the destination directory (same filesystem,
so the rename is atomic), are fsynced, then renamed into place; the directory
is fsynced too. Temporary names start with "." which keys cannot, so a stray
temporary file never looks like an object. A writer holds an exclusive flock on
its temporary file until the rename; at start-up every temporary file nobody
holds locked (its writer died) is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from libs.errors import InvalidArgument
from services.storage.backends import READ_CHUNK_BYTES, Listed, ObjectMeta, copy_hashed, not_found
from services.storage.keys import DOMAIN

log = logging.getLogger(__name__)

HEADER_BYTES = 1024
_MAGIC = b"PDFSMALLER-OBJECT 1\n"
OBJECT_SUFFIX = "@object"
_TMP_PREFIX = ".tmp-"


class CorruptObject(Exception):
    """An object file whose header does not match its contents."""


class LocalBackend:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep_stale_temporaries()

    # -- paths -------------------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        path = self.root / (key + OBJECT_SUFFIX)
        # Keys cannot hold "..", but a symlink planted inside the root could still lead out of it.
        parent = path.parent.resolve()
        if parent != self.root and not parent.is_relative_to(self.root):
            raise InvalidArgument("INVALID_KEY", "the object key leads outside the storage root", domain=DOMAIN)
        return path

    # -- writing -----------------------------------------------------------------------------------------

    def put(self, key: str, content_type: str, chunks: Iterable[bytes], max_size_bytes: int) -> ObjectMeta:
        path = self._path(key)
        tmp, handle = self._create_temporary(path.parent)
        # The handle (and its lock) stays open until the rename: a sweeper must not take a live file.
        with handle:
            try:
                handle.write(b"\0" * HEADER_BYTES)
                size, sha256 = copy_hashed(chunks, handle, max_size_bytes)
                meta = ObjectMeta(key=key, size_bytes=size, sha256=sha256, content_type=content_type)
                handle.seek(0)
                handle.write(_encode_header(meta))
                handle.flush()
                os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                raise
        _fsync_directory(path.parent)
        return meta

    def _create_temporary(self, directory: Path) -> tuple[Path, BinaryIO]:
        """A new temporary file in `directory`, open and locked for writing."""
        # Retried when a concurrent delete prunes the (empty) directory between mkdir and open, or a
        # sweeper removes the file between its creation and its lock.
        for attempt in range(5):
            directory.mkdir(parents=True, exist_ok=True)
            tmp = directory / f"{_TMP_PREFIX}{uuid.uuid4().hex}"
            try:
                handle = open(tmp, "xb")  # noqa: SIM115 - closed by the caller's `with`
            except FileNotFoundError:
                if attempt == 4:
                    raise
                continue
            fcntl.flock(handle, fcntl.LOCK_EX)
            if _still_linked(tmp, handle):
                return tmp, handle
            handle.close()
        raise FileNotFoundError(f"could not create a temporary file in {directory}")

    # -- reading -----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[tuple[ObjectMeta, Iterator[bytes]]]:
        path = self._path(key)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed below
        except (FileNotFoundError, NotADirectoryError):
            raise not_found(key) from None
        with handle:
            meta = _read_header(handle, key, os.fstat(handle.fileno()).st_size)
            yield meta, _read_chunks(handle)

    def stat(self, key: str) -> ObjectMeta:
        with self.open(key) as (meta, _chunks):
            return meta

    # -- deleting ----------------------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return
        _fsync_directory(path.parent)
        self._prune_empty_directories(path.parent)

    def _prune_empty_directories(self, directory: Path) -> None:
        # Keys like jobs/<id>/input.pdf would otherwise leave one empty directory per job forever.
        while directory != self.root and directory.is_relative_to(self.root):
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    # -- listing -----------------------------------------------------------------------------------------

    def keys(self, prefix: str) -> Iterator[str]:
        return (path.relative_to(self.root).as_posix().removesuffix(OBJECT_SUFFIX) for path in self._paths(prefix))

    def listing(self, prefix: str) -> Iterator[Listed]:
        for path in self._paths(prefix):
            try:
                modified = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            except FileNotFoundError:
                continue  # deleted since the walk saw it
            yield Listed(path.relative_to(self.root).as_posix().removesuffix(OBJECT_SUFFIX), modified)

    def _paths(self, prefix: str) -> Iterator[Path]:
        # Walk only the folder the prefix names; a trailing partial segment filters within it.
        folder = prefix.rpartition("/")[0]
        start = self.root / folder if folder else self.root
        if not start.is_dir() or not start.resolve().is_relative_to(self.root):
            return
        for directory, subdirectories, files in os.walk(start):
            subdirectories[:] = [name for name in subdirectories if not name.startswith(".")]
            for name in files:
                if not name.endswith(OBJECT_SUFFIX) or name.startswith(_TMP_PREFIX):
                    continue
                path = Path(directory) / name
                if path.relative_to(self.root).as_posix().startswith(prefix):
                    yield path

    # -- health and housekeeping -------------------------------------------------------------------------

    def ready(self) -> bool:
        probe = self.root / f"{_TMP_PREFIX}ready-{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"ok")
            probe.unlink(missing_ok=True)  # another replica's start-up sweep may have taken it
        except OSError:
            log.warning("storage root %s is not writable", self.root, exc_info=True)
            return False
        return True

    def _sweep_stale_temporaries(self) -> None:
        """Remove the temporary files of writers that died (a killed process leaves its upload's).

        A live writer holds a lock on its file; the lock dies with the process, so a file nobody
        locks is abandoned, however new. Replicas sharing the root therefore never take each other's
        uploads in progress (flock works across hosts on NFSv4).
        """
        for directory, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(_TMP_PREFIX):
                    _remove_if_abandoned(Path(directory) / name)


def _encode_header(meta: ObjectMeta) -> bytes:
    body = json.dumps(
        {"size": meta.size_bytes, "sha256": meta.sha256, "content_type": meta.content_type}, separators=(",", ":")
    ).encode()
    header = _MAGIC + body + b"\n"
    if len(header) > HEADER_BYTES:
        raise ValueError("object metadata does not fit the header")
    return header.ljust(HEADER_BYTES, b" ")


def _read_header(handle: BinaryIO, key: str, file_size: int) -> ObjectMeta:
    header = handle.read(HEADER_BYTES)
    if len(header) != HEADER_BYTES or not header.startswith(_MAGIC):
        raise CorruptObject(f"object {key!r} has no valid header")
    fields = json.loads(header[len(_MAGIC) :])
    meta = ObjectMeta(
        key=key, size_bytes=int(fields["size"]), sha256=str(fields["sha256"]), content_type=str(fields["content_type"])
    )
    if meta.size_bytes != file_size - HEADER_BYTES:
        raise CorruptObject(f"object {key!r} is {file_size - HEADER_BYTES} bytes, its header says {meta.size_bytes}")
    return meta


def _read_chunks(handle: BinaryIO) -> Iterator[bytes]:
    while chunk := handle.read(READ_CHUNK_BYTES):
        yield chunk


def _still_linked(path: Path, handle: BinaryIO) -> bool:
    """Whether `path` is still the file `handle` has open (a sweep may have unlinked it)."""
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def _remove_if_abandoned(path: Path) -> None:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except (FileNotFoundError, IsADirectoryError):
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # a live writer's
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            log.info("removed abandoned temporary file %s", path)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename/unlink itself durable, not only the file's contents.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
