"""Deleting a job's stored objects through the storage service."""

from __future__ import annotations

import logging

import grpc
from pdfsmaller.storage.v1 import storage_service_pb2, storage_service_pb2_grpc

from libs.errors import from_rpc

log = logging.getLogger(__name__)

# A missing object is already gone; an invalid key cannot name a stored object.
_NOTHING_TO_DELETE = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)


class ObjectDeleter:
    def __init__(self, channel: grpc.Channel, timeout_seconds: float = 10.0) -> None:
        self._stub = storage_service_pb2_grpc.StorageServiceStub(channel)
        self._timeout = timeout_seconds

    def delete(self, keys: list[str]) -> None:
        """Delete every key (DeleteObject is idempotent); raises Unavailable when storage is down."""
        for key in keys:
            try:
                self._stub.DeleteObject(storage_service_pb2.DeleteObjectRequest(key=key), timeout=self._timeout)
            except grpc.RpcError as error:
                code = error.code() if isinstance(error, grpc.Call) else None
                if code in _NOTHING_TO_DELETE:
                    if code == grpc.StatusCode.INVALID_ARGUMENT:
                        log.warning("storage refused key %r as invalid; nothing to delete", key)
                    continue
                raise from_rpc(error, "storage") from error
