"""Object storage backends behind one interface: local filesystem and S3."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol

from libs.errors import NotFound, ResourceExhausted
from services.storage.keys import DOMAIN

# Chunk size for reading objects back (the contract asks for 256 KiB to 1 MiB).
READ_CHUNK_BYTES = 512 * 1024


@dataclass(frozen=True)
class ObjectMeta:
    key: str
    size_bytes: int
    sha256: str
    content_type: str


@dataclass(frozen=True)
class Listed:
    """A key a listing found, and when its object was last written."""

    key: str
    modified_at: datetime


class Backend(Protocol):
    """What the servicer needs from a store. Keys are already validated."""

    def put(self, key: str, content_type: str, chunks: Iterable[bytes], max_size_bytes: int) -> ObjectMeta:
        """Store the chunks as `key`, atomically: on any error nothing new is left behind."""
        ...

    def open(self, key: str) -> AbstractContextManager[tuple[ObjectMeta, Iterator[bytes]]]:
        """The object's metadata and an iterator over its bytes; NotFound when missing."""
        ...

    def stat(self, key: str) -> ObjectMeta: ...

    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""
        ...

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key that starts with `prefix` (a whole leading segment path such as "jobs/"), in no
        particular order; used by operator tools (backups, sweeps), never by the request path."""
        ...

    def listing(self, prefix: str) -> Iterator[Listed]:
        """`keys(prefix)` with each object's last write time (the orphan sweep spares recent ones)."""
        ...

    def ready(self) -> bool:
        """Whether the store can take writes now (for readiness)."""
        ...


def copy_hashed(chunks: Iterable[bytes], sink: BinaryIO, max_size_bytes: int) -> tuple[int, str]:
    """Write the chunks to `sink`, hashing and counting as they pass; (size, sha256 hex).

    Raises OBJECT_TOO_LARGE as soon as `max_size_bytes` (0: no limit) is passed.
    """
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if max_size_bytes and size > max_size_bytes:
            raise too_large(max_size_bytes)
        digest.update(chunk)
        sink.write(chunk)
    return size, digest.hexdigest()


def not_found(key: str) -> NotFound:
    return NotFound("OBJECT_NOT_FOUND", "no object with this key", domain=DOMAIN, metadata={"key": key})


def too_large(max_size_bytes: int) -> ResourceExhausted:
    return ResourceExhausted(
        "OBJECT_TOO_LARGE",
        f"the object is larger than the limit of {max_size_bytes} bytes",
        domain=DOMAIN,
        metadata={"max_size_bytes": str(max_size_bytes)},
    )
