"""Wiring: settings -> backend -> servicer -> service (used by __main__ and by tests)."""

from __future__ import annotations

import grpc
from pdfsmaller.storage.v1 import storage_service_pb2, storage_service_pb2_grpc
from prometheus_client import CollectorRegistry

from libs.grpc_server import ServerSpec
from libs.metrics import VolumeUsage
from libs.service import Service
from services.storage.backends import Backend
from services.storage.backends.local import LocalBackend
from services.storage.backends.s3 import S3Backend
from services.storage.servicer import StorageServicer
from services.storage.settings import StorageSettings

SERVICE_NAME = storage_service_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name


def build_backend(settings: StorageSettings) -> Backend:
    if settings.backend == "s3":
        assert settings.s3 is not None
        backend = S3Backend(settings.s3)
        backend.ensure_bucket()
        return backend
    return LocalBackend(settings.directory)


def build(settings: StorageSettings, backend: Backend | None = None) -> Service:
    """`backend` defaults to the one the settings name (tests pass one with their own spool folder)."""
    backend = backend if backend is not None else build_backend(settings)
    registry = CollectorRegistry()
    servicer = StorageServicer(backend, registry)
    if isinstance(backend, LocalBackend):  # an S3 bucket's disk is the S3 service's to watch
        registry.register(VolumeUsage({"objects": backend.root}))

    def register(server: grpc.Server) -> None:
        storage_service_pb2_grpc.add_StorageServiceServicer_to_server(servicer, server)

    spec = ServerSpec(
        name="storage",
        listen=settings.listen,
        address_file=settings.address_file,
        register=register,
        service_names=[SERVICE_NAME],
        readiness=backend.ready,
        metrics_port=settings.metrics_port,
        registry=registry,
    )
    return Service(spec)


def local_settings(directory: str, listen: str = "127.0.0.1:0") -> StorageSettings:
    """A local-backend storage on a free loopback port: for other services' tests and benchmarks."""
    return StorageSettings(listen=listen, metrics_port=0, backend="local", directory=directory, s3=None)
