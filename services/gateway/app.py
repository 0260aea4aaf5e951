"""Wiring of the gateway: channels, clients and the servicer, from settings."""

from __future__ import annotations

import grpc
import redis
from pdfsmaller.gateway.v1 import gateway_service_pb2, gateway_service_pb2_grpc
from pdfsmaller.jobs.v1 import jobs_service_pb2, jobs_service_pb2_grpc
from pdfsmaller.scanner.v1 import scanner_service_pb2, scanner_service_pb2_grpc
from pdfsmaller.storage.v1 import storage_service_pb2, storage_service_pb2_grpc
from prometheus_client import CollectorRegistry, Gauge

from libs.grpc_client import open_channel
from libs.grpc_server import ServerSpec
from libs.service import Service
from services.gateway.auth import Authenticator
from services.gateway.health import HealthReporter
from services.gateway.quotas import Quotas
from services.gateway.ratelimit import RateLimiter
from services.gateway.security_events import SecurityEvents
from services.gateway.servicer import Dependencies, GatewayServicer
from services.gateway.settings import GatewaySettings

SERVICE_NAME = gateway_service_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name
JOBS_SERVICE_NAME = jobs_service_pb2.DESCRIPTOR.services_by_name["JobsService"].full_name
STORAGE_SERVICE_NAME = storage_service_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name
SCANNER_SERVICE_NAME = scanner_service_pb2.DESCRIPTOR.services_by_name["ScannerService"].full_name


def build(settings: GatewaySettings) -> Service:
    jobs_channel = open_channel(settings.jobs_addr)
    storage_channel = open_channel(settings.storage_addr)
    scanner_channel = open_channel(settings.scanner_addr)
    redis_client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    registry = CollectorRegistry()
    deps = _dependencies(settings, jobs_channel, storage_channel, scanner_channel, redis_client, registry)
    servicer = GatewayServicer(deps, registry)

    def register(server: grpc.Server) -> None:
        gateway_service_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server)

    spec = ServerSpec(
        name="gateway",
        listen=settings.listen,
        address_file=settings.address_file,
        metrics_port=settings.metrics_port,
        register=register,
        service_names=[SERVICE_NAME],
        readiness=deps.health.ready,
        max_workers=settings.max_workers,
        registry=registry,
    )
    return Service(spec, resources=[jobs_channel, storage_channel, scanner_channel, redis_client])


def _dependencies(
    settings: GatewaySettings,
    jobs_channel: grpc.Channel,
    storage_channel: grpc.Channel,
    scanner_channel: grpc.Channel,
    redis_client: redis.Redis,
    registry: CollectorRegistry,
) -> Dependencies:
    jobs_stub = jobs_service_pb2_grpc.JobsServiceStub(jobs_channel)
    authenticator = Authenticator(settings.api_keys, jobs_stub, anonymous=settings.anonymous_access)
    redis_up = Gauge(
        "pdfsmaller_gateway_redis_up",
        "1 after the feature's last Redis call succeeded, 0 after one failed (the feature then fails open).",
        ["feature"],
        registry=registry,
    )
    scanner_stub = scanner_service_pb2_grpc.ScannerServiceStub(scanner_channel)
    health = HealthReporter(
        channels={
            "jobs": (jobs_channel, JOBS_SERVICE_NAME),
            "storage": (storage_channel, STORAGE_SERVICE_NAME),
            "scanner": (scanner_channel, SCANNER_SERVICE_NAME),
        },
        scanner_stub=scanner_stub,
        jobs_stub=jobs_stub,
        redis_client=redis_client,
        auth_enabled=authenticator.enabled,
        cache_seconds=settings.health_cache_seconds,
    )
    return Dependencies(
        jobs=jobs_stub,
        storage=storage_service_pb2_grpc.StorageServiceStub(storage_channel),
        scanner=scanner_stub,
        authenticator=authenticator,
        rate_limiter=RateLimiter(redis_client, settings.rate_limits, redis_up.labels("rate_limits")),
        quotas=Quotas(redis_client, settings.quotas, redis_up=redis_up.labels("quotas")),
        health=health,
        security_events=SecurityEvents(registry),
        max_upload_bytes=settings.max_upload_bytes,
        call_timeout_seconds=settings.call_timeout_seconds,
        refuse_active_content=settings.refuse_active_content,
        upload_timeout_seconds=settings.upload_timeout_seconds,
    )
