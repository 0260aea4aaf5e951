"""Moving job files between the storage service and the worker's disk, streamed."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

from pdfsmaller.storage.v1 import storage_service_pb2 as storage
from pdfsmaller.storage.v1 import storage_service_pb2_grpc as storage_grpc

from libs.errors import ServiceError

CHUNK_BYTES = 512 * 1024


class IntegrityError(ServiceError):
    """The bytes fetched do not match the sha256 recorded at upload."""


def download(stub: storage_grpc.StorageServiceStub, key: str, path: Path, expected_sha256: str, timeout: float) -> int:
    digest = hashlib.sha256()
    size = 0
    with path.open("wb") as out:
        for part in stub.GetObject(storage.GetObjectRequest(key=key), timeout=timeout):
            if part.HasField("chunk"):
                out.write(part.chunk)
                digest.update(part.chunk)
                size += len(part.chunk)
    if expected_sha256 and digest.hexdigest() != expected_sha256:
        raise IntegrityError("INPUT_CORRUPTED", "the stored input does not match its checksum")
    return size


def upload(stub: storage_grpc.StorageServiceStub, key: str, path: Path, timeout: float) -> storage.ObjectInfo:
    """Store the file as `key`. The last message carries the size and sha256 of what was sent: storage
    commits only then, so a worker that dies or gives up mid-way leaves nothing."""

    def requests() -> Iterator[storage.PutObjectRequest]:
        yield storage.PutObjectRequest(header=storage.PutObjectHeader(key=key, content_type="application/pdf"))
        digest = hashlib.sha256()
        size = 0
        with path.open("rb") as source:
            while chunk := source.read(CHUNK_BYTES):
                digest.update(chunk)
                size += len(chunk)
                yield storage.PutObjectRequest(chunk=chunk)
        yield storage.PutObjectRequest(finish=storage.PutObjectFinish(size_bytes=size, sha256=digest.hexdigest()))

    return stub.PutObject(requests(), timeout=timeout)
