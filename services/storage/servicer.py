"""The StorageService servicer: streams objects between gRPC and a backend."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import grpc
from google.protobuf import empty_pb2
from pdfsmaller.storage.v1 import storage_service_pb2 as pb
from pdfsmaller.storage.v1 import storage_service_pb2_grpc as pb_grpc
from prometheus_client import CollectorRegistry, Counter

from libs.errors import InvalidArgument, Unavailable
from libs.grpc_server import client_stream_completed
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
            self._chunks(request_iterator, context),
            header.max_size_bytes,
        )
        self._bytes_written.inc(meta.size_bytes)
        self._objects_written.inc()
        return _info(meta)

    def _chunks(
        self, request_iterator: Iterable[pb.PutObjectRequest], context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        for message in request_iterator:
            if message.WhichOneof("part") != "chunk":
                raise InvalidArgument("UNEXPECTED_HEADER", "only the first message may carry a header", domain=DOMAIN)
            yield message.chunk
        # Raising here makes the backend delete its temporary data instead of storing a truncated object.
        if not client_stream_completed(context):
            raise Unavailable("UPLOAD_ABORTED", "the upload was cancelled by the client", domain=DOMAIN)

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
