"""Shared helpers for the storage tests: a running server per backend and stream builders."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from pdfsmaller.storage.v1 import storage_service_pb2 as pb
from pdfsmaller.storage.v1 import storage_service_pb2_grpc as pb_grpc

from libs.grpc_server import MAX_MESSAGE_BYTES, RunningServer
from services.storage.app import build
from services.storage.backends import Backend
from services.storage.backends.local import LocalBackend
from services.storage.backends.s3 import S3Backend, S3Config
from services.storage.settings import StorageSettings


@dataclass
class StorageUnderTest:
    name: str
    server: RunningServer
    channel: grpc.Channel
    stub: pb_grpc.StorageServiceStub
    backend: Backend

    def leftovers(self) -> list[str]:
        """Anything stored besides complete objects' files (temporaries) plus every object name."""
        if isinstance(self.backend, LocalBackend):
            return sorted(str(p.relative_to(self.backend.root)) for p in self.backend.root.rglob("*") if p.is_file())
        assert isinstance(self.backend, S3Backend)
        client = self.backend.client
        names = [obj.object_name or "" for obj in client.list_objects(self.backend.bucket, recursive=True)]
        uploads = client._list_multipart_uploads(self.backend.bucket)  # minio has no public call for this
        return sorted(names + [f"multipart:{u.object_name}" for u in uploads.uploads])


def start(name: str, tmp_path: Path, s3_endpoint: str | None, bucket: str) -> StorageUnderTest:
    if name == "local":
        settings = StorageSettings(
            listen="127.0.0.1:0", metrics_port=0, backend="local", directory=str(tmp_path / "objects"), s3=None
        )
        backend: Backend = LocalBackend(settings.directory)
    else:
        assert s3_endpoint is not None
        config = S3Config(
            endpoint=s3_endpoint, bucket=bucket, access_key="test", secret_key="test", region="us-east-1", secure=False
        )
        settings = StorageSettings(listen="127.0.0.1:0", metrics_port=0, backend="s3", directory="", s3=config)
        s3 = S3Backend(config, spool_dir=str(tmp_path))
        s3.ensure_bucket()
        backend = s3
    spec = build(settings, backend).spec
    spec.metrics_port = None  # its HTTP server takes 0.5 s to shut down; one test checks metrics separately
    server = RunningServer(spec).start()
    channel = plain_channel(server.address)
    return StorageUnderTest(name, server, channel, pb_grpc.StorageServiceStub(channel), backend)


def plain_channel(address: str) -> grpc.Channel:
    """A plain channel sized like the services' (no tracing interceptors needed in tests)."""
    return grpc.insecure_channel(
        address,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )


def put_requests(
    key: str, chunks: Iterator[bytes] | list[bytes], content_type: str = "application/pdf", max_size_bytes: int = 0
) -> Iterator[pb.PutObjectRequest]:
    """A whole PutObject stream: the header, the chunks, and the finish counted and hashed on the way."""
    yield pb.PutObjectRequest(
        header=pb.PutObjectHeader(key=key, content_type=content_type, max_size_bytes=max_size_bytes)
    )
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
        yield pb.PutObjectRequest(chunk=chunk)
    yield finish_of(size, digest.hexdigest())


def finish_of(size_bytes: int, sha256_hex: str) -> pb.PutObjectRequest:
    return pb.PutObjectRequest(finish=pb.PutObjectFinish(size_bytes=size_bytes, sha256=sha256_hex))


def get_all(stub: pb_grpc.StorageServiceStub, key: str) -> tuple[pb.ObjectInfo, list[bytes]]:
    responses = iter(stub.GetObject(pb.GetObjectRequest(key=key), timeout=60))
    first = next(responses)
    assert first.WhichOneof("part") == "info"
    chunks = []
    for response in responses:
        assert response.WhichOneof("part") == "chunk"
        chunks.append(response.chunk)
    return first.info, chunks


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
