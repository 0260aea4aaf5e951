"""Wiring: settings -> storage channel, clamd client, PDF inspector -> servicer -> service."""

from __future__ import annotations

import functools
import logging

import grpc
from pdfsmaller.scanner.v1 import scanner_service_pb2, scanner_service_pb2_grpc
from pdfsmaller.storage.v1 import storage_service_pb2, storage_service_pb2_grpc
from prometheus_client import CollectorRegistry, Gauge

from libs.grpc_client import open_channel
from libs.grpc_server import ServerSpec
from libs.health import serving_problem
from libs.service import Service
from services.scanner.clamd import ClamdClient
from services.scanner.pdf_checks import inspect_pdf_isolated
from services.scanner.servicer import ScannerServicer
from services.scanner.settings import ScannerSettings

log = logging.getLogger(__name__)

SERVICE_NAME = scanner_service_pb2.DESCRIPTOR.services_by_name["ScannerService"].full_name
STORAGE_SERVICE_NAME = storage_service_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name


def storage_ready(channel: grpc.Channel) -> bool:
    return serving_problem(channel, STORAGE_SERVICE_NAME) is None


def build(settings: ScannerSettings, storage_channel: grpc.Channel | None = None) -> Service:
    """`storage_channel` defaults to a traced channel to STORAGE_ADDR, closed with the service; one
    passed in stays the caller's."""
    channel = storage_channel if storage_channel is not None else open_channel(settings.storage_addr)
    clamd = ClamdClient(settings.clamd_addr, settings.clamd_timeout_seconds) if settings.clamd_addr else None
    if clamd is None:
        log.warning("DEGRADED: CLAMD_ADDR is not set; uploads get PDF structure checks only, no malware scan")
    registry = CollectorRegistry()
    servicer = ScannerServicer(
        storage_service_pb2_grpc.StorageServiceStub(channel),
        clamd,
        functools.partial(
            inspect_pdf_isolated,
            timeout=settings.pdf_check_timeout_seconds,
            memory_bytes=settings.pdf_check_memory_bytes,
        ),
        registry,
        incomplete_check=settings.incomplete_check,
    )

    def register(server: grpc.Server) -> None:
        scanner_service_pb2_grpc.add_ScannerServiceServicer_to_server(servicer, server)

    dependency_up = Gauge(
        "scanner_dependency_up",
        "1 while the readiness check finds the dependency answering (clamd only when configured).",
        ["dependency"],
        registry=registry,
    )

    def readiness() -> bool:
        # Configured clamd must answer: the scanner refuses every upload while it is down.
        answers = {"storage": storage_ready(channel)}
        if clamd is not None:
            answers["clamd"] = clamd.ping()
        for dependency, up in answers.items():
            dependency_up.labels(dependency).set(1 if up else 0)
        return all(answers.values())

    spec = ServerSpec(
        name="scanner",
        listen=settings.listen,
        address_file=settings.address_file,
        register=register,
        service_names=[SERVICE_NAME],
        readiness=readiness,
        metrics_port=settings.metrics_port,
        registry=registry,
    )
    return Service(spec, resources=[channel] if storage_channel is None else [])
