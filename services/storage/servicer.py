"""The StorageService servicer: streams objects between gRPC and a backend."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator

import grpc
from google.protobuf import empty_pb2
from pdfsmaller.storage.v1 import storage_service_pb2 as pb
from pdfsmaller.storage.v1 import storage_service_pb2_grpc as pb_grpc
from prometheus_client import CollectorRegistry, Counter

from libs.errors import InvalidArgument
from services.storage.backends import Backend, ObjectMeta
from services.storage.keys import DOMAIN, validate_key

log = logging.getLogger(__name__)

MAX_CONTENT_TYPE_LENGTH = 255


def _info(meta: ObjectMeta) -> pb.ObjectInfo:
    return pb.ObjectInfo(key=meta.key, size_bytes=meta.size_bytes, sha256=meta.sha256, content_type=meta.content_type)


class StorageServicer(pb_grpc.StorageServiceServicer):
    def __init__(self, backend: Backend, registry: CollectorRegistry) -> None:
        self._backend = backend
        self._bytes_written = Counter("storage_bytes_written_total", "Bytes of objects stored.", registry=registry)
        self._bytes_read = Counter("storage_bytes_read_total", "Bytes of objects streamed out.", registry=registry)
        self._objects_written = Counter(
            "storage_objects_written_total", "Objects stored successfully.", registry=registry
        )

    def PutObject(
        self, request_iterator: Iterator[pb.PutObjectRequest], context: grpc.ServicerContext
    ) -> pb.ObjectInfo:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument("MISSING_HEADER", "the first message must carry the header", domain=DOMAIN)
        header = first.header
        key = validate_key(header.key)
        if len(header.content_type) > MAX_CONTENT_TYPE_LENGTH:
            raise InvalidArgument(
                "INVALID_CONTENT_TYPE",
                f"the content type is longer than {MAX_CONTENT_TYPE_LENGTH} characters",
                domain=DOMAIN,
            )
        if header.max_size_bytes < 0:
            raise InvalidArgument("INVALID_MAX_SIZE", "max_size_bytes must not be negative", domain=DOMAIN)
        meta = self._backend.put(
            key,
            header.content_type or "application/octet-stream",
            _verified_chunks(request_iterator),
            header.max_size_bytes,
        )
        self._bytes_written.inc(meta.size_bytes)
        self._objects_written.inc()
        return _info(meta)

    def GetObject(self, request: pb.GetObjectRequest, context: grpc.ServicerContext) -> Iterator[pb.GetObjectResponse]:
        key = validate_key(request.key)
        with self._backend.open(key) as (meta, chunks):
            yield pb.GetObjectResponse(info=_info(meta))
            for chunk in chunks:
                self._bytes_read.inc(len(chunk))
                yield pb.GetObjectResponse(chunk=chunk)

    def StatObject(self, request: pb.StatObjectRequest, context: grpc.ServicerContext) -> pb.ObjectInfo:
        return _info(self._backend.stat(validate_key(request.key)))

    def DeleteObject(self, request: pb.DeleteObjectRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self._backend.delete(validate_key(request.key))
        return empty_pb2.Empty()


def _verified_chunks(request_iterator: Iterator[pb.PutObjectRequest]) -> Iterator[bytes]:
    """The chunks up to the finish, checked against it.

    Raising here makes the backend delete its temporary data, so only an upload whose finish
    arrived and matched is committed: a stream that just ends (a half-close without the finish,
    or a cancel, which grpcio ends the same way) is an abandoned upload.
    """
    digest = hashlib.sha256()
    size = 0
    for message in request_iterator:
        part = message.WhichOneof("part")
        if part == "finish":
            _check_finish(message.finish, size, digest.hexdigest())
            _expect_end(request_iterator)
            return
        if part != "chunk":
            raise InvalidArgument("UNEXPECTED_HEADER", "only the first message may carry a header", domain=DOMAIN)
        size += len(message.chunk)
        digest.update(message.chunk)
        yield message.chunk
    raise InvalidArgument(
        "UPLOAD_INCOMPLETE", "the upload ended without its finish message; nothing was stored", domain=DOMAIN
    )


def _check_finish(finish: pb.PutObjectFinish, size: int, sha256: str) -> None:
    if finish.size_bytes != size:
        raise InvalidArgument(
            "UPLOAD_SIZE_MISMATCH",
            f"the finish announces {finish.size_bytes} bytes but {size} arrived; nothing was stored",
            domain=DOMAIN,
        )
    if finish.sha256 != sha256:
        raise InvalidArgument(
            "UPLOAD_CHECKSUM_MISMATCH",
            "the sha256 of the bytes received differs from the finish's; nothing was stored",
            domain=DOMAIN,
        )


def _expect_end(request_iterator: Iterator[pb.PutObjectRequest]) -> None:
    """The finish must be the last message: read one more, which must be the end of the stream."""
    if next(request_iterator, None) is not None:
        raise InvalidArgument("UNEXPECTED_MESSAGE", "no message may follow the finish", domain=DOMAIN)
