"""Wiring of the jobs service: pool, events, storage client, servicer, sweeper, server.

Used by `__main__` and by the tests, so tests exercise the real wiring.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import grpc
from pdfsmaller.jobs.v1 import (
    api_key_service_pb2,
    api_key_service_pb2_grpc,
    jobs_service_pb2,
    jobs_service_pb2_grpc,
    operator_service_pb2,
    operator_service_pb2_grpc,
)
from prometheus_client import CollectorRegistry
from psycopg_pool import ConnectionPool

from libs.errors import ServiceError
from libs.grpc_client import open_channel
from libs.grpc_server import ServerSpec
from libs.service import Loop, Service
from services.jobs.api_key_servicer import ApiKeyServicer
from services.jobs.api_keys import ApiKeyStore
from services.jobs.db import migrate, open_pool
from services.jobs.events import JobEvents
from services.jobs.maintenance_metrics import MaintenanceRuns
from services.jobs.metrics import JobsMetrics, PoolStats
from services.jobs.objects import ObjectDeleter
from services.jobs.operator_auth import OperatorGate, OperatorTokens
from services.jobs.operator_servicer import OperatorServicer
from services.jobs.outages import DatabaseOutages
from services.jobs.queue_admin import QueueAdmin
from services.jobs.queue_control import QueueControl
from services.jobs.repository import JobRepository, RetryPolicy
from services.jobs.servicer import JobsServicer
from services.jobs.settings import JobsSettings
from services.jobs.sweeper import Sweeper
from services.jobs.workers import WorkerRegistry

log = logging.getLogger(__name__)

SERVICE_NAME = jobs_service_pb2.DESCRIPTOR.services_by_name["JobsService"].full_name
OPERATOR_SERVICE_NAME = operator_service_pb2.DESCRIPTOR.services_by_name["OperatorService"].full_name
API_KEY_SERVICE_NAME = api_key_service_pb2.DESCRIPTOR.services_by_name["ApiKeyService"].full_name
# Reachable only with an operator token, and audited (services.jobs.operator_auth).
OPERATOR_APIS = (OPERATOR_SERVICE_NAME, API_KEY_SERVICE_NAME)


@dataclass
class JobsService(Service):
    """The jobs service, with the parts its tests and benchmark drive directly (a sweep, the events)."""

    sweeper: Sweeper = field(kw_only=True)
    events: JobEvents = field(kw_only=True)


class Readiness:
    """PostgreSQL answers and the schema is current (Redis is optional: events degrade)."""

    def __init__(self, database_url: str, repository: JobRepository) -> None:
        self._database_url = database_url
        self._repository = repository
        self._migrated = False

    def _migrate(self) -> bool:
        if not self._migrated:
            try:
                migrate(self._database_url)
                self._migrated = True
            except Exception:  # not ready until it works; retried by the readiness loop
                log.warning("cannot apply migrations yet; will retry", exc_info=True)
        return self._migrated

    def __call__(self) -> bool:
        try:
            return self._migrate() and self._repository.ready()
        except ServiceError:
            return False


def build(
    settings: JobsSettings,
    *,
    registry: CollectorRegistry | None = None,
    event_prefix: str = "pdfsmaller:jobs",
    storage_channel: grpc.Channel | None = None,
    outages: DatabaseOutages | None = None,
) -> JobsService:
    """`storage_channel` defaults to a traced channel to STORAGE_ADDR (closed with the service; one passed
    in stays the caller's); `outages` (tests: with their clock) to one on the wall clock."""
    registry = registry if registry is not None else CollectorRegistry()
    metrics = JobsMetrics(registry)
    pool = open_pool(settings.database_url, max_size=settings.database_pool_size)
    registry.register(PoolStats(pool))  # connections in use/idle, waiting requests, acquire time, failed connects
    registry.register(MaintenanceRuns.from_pool(pool))  # the pdfsmaller-ops runs (ops/run_record.py)
    repository = _repository(settings, pool, outages if outages is not None else DatabaseOutages())
    events = JobEvents(settings.redis_url, metrics, prefix=event_prefix)
    channel = storage_channel if storage_channel is not None else open_channel(settings.storage_addr)
    deleter = ObjectDeleter(channel)
    api_keys = ApiKeyStore(pool)
    statements = repository.statements
    workers = WorkerRegistry(statements, metrics, lost_after_seconds=settings.worker_lost_after_seconds)
    queue_control = QueueControl(statements, metrics)
    operator_tokens = OperatorTokens(settings.operator_tokens)
    servicer = JobsServicer(
        repository,
        events,
        deleter,
        metrics,
        api_keys=api_keys,
        recheck_seconds=settings.wait_recheck_seconds,
        workers=workers,
        queue_control=queue_control,
    )
    admin = QueueAdmin(statements, deleter, metrics)
    operator = OperatorServicer(admin, workers, queue_control, events)
    sweeper = Sweeper(
        repository,
        events,
        deleter,
        metrics,
        settings.sweep_interval_seconds,
        keep_expired_days=settings.keep_expired_days,
        outage_lease_grace_seconds=settings.outage_lease_grace_seconds,
        workers=workers,
    )
    spec = ServerSpec(
        name="jobs",
        listen=settings.listen,
        address_file=settings.address_file,
        register=lambda server: _register(server, servicer, operator, ApiKeyServicer(api_keys)),
        service_names=[SERVICE_NAME, *OPERATOR_APIS],
        # Checked once as the server starts, so the schema is migrated before the sweeper's first pass.
        readiness=Readiness(settings.database_url, repository),
        metrics_port=settings.metrics_port,
        # LeaseJob long polls and WatchJob streams each hold a thread while they wait.
        max_workers=settings.max_workers,
        registry=registry,
        interceptors=[OperatorGate(operator_tokens, OPERATOR_APIS, registry)],
    )
    return JobsService(
        spec,
        background=[
            Loop(events.start, events.close),
            Loop(sweeper.start, sweeper.stop),
            # Stopped first: long polls and watches end now instead of holding the server's grace period.
            Loop(lambda: None, servicer.shutdown),
        ],
        resources=[pool] if storage_channel is not None else [channel, pool],
        sweeper=sweeper,
        events=events,
    )


def _register(server: grpc.Server, jobs: JobsServicer, operator: OperatorServicer, api_keys: ApiKeyServicer) -> None:
    jobs_service_pb2_grpc.add_JobsServiceServicer_to_server(jobs, server)
    operator_service_pb2_grpc.add_OperatorServiceServicer_to_server(operator, server)
    api_key_service_pb2_grpc.add_ApiKeyServiceServicer_to_server(api_keys, server)


def _repository(settings: JobsSettings, pool: ConnectionPool, outages: DatabaseOutages) -> JobRepository:
    return JobRepository(
        pool,
        retention_hours=settings.retention_hours,
        retry=RetryPolicy(
            max_attempts=settings.max_attempts,
            max_outage_retries=settings.max_outage_retries,
            backoff_base_seconds=settings.retry_backoff_base_seconds,
            backoff_cap_seconds=settings.retry_backoff_cap_seconds,
        ),
        outages=outages,
    )
