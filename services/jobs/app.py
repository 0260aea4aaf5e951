"""Wiring of the jobs service: pool, events, storage client, servicer, sweeper, server.

Used by `__main__` and by the tests, so tests exercise the real wiring.
"""

from __future__ import annotations

import logging
import signal
import threading

import grpc
from pdfsmaller.jobs.v1 import jobs_service_pb2, jobs_service_pb2_grpc
from prometheus_client import CollectorRegistry

from libs.errors import ServiceError
from libs.grpc_client import open_channel
from libs.grpc_server import RunningServer, ServerSpec
from services.jobs.db import migrate, open_pool
from services.jobs.events import JobEvents
from services.jobs.metrics import JobsMetrics
from services.jobs.objects import ObjectDeleter
from services.jobs.outages import DatabaseOutages
from services.jobs.repository import JobRepository, RetryPolicy
from services.jobs.servicer import JobsServicer
from services.jobs.settings import JobsSettings
from services.jobs.sweeper import Sweeper

log = logging.getLogger(__name__)

SERVICE_NAME = jobs_service_pb2.DESCRIPTOR.services_by_name["JobsService"].full_name


class JobsApp:
    def __init__(
        self,
        settings: JobsSettings,
        registry: CollectorRegistry | None = None,
        *,
        event_prefix: str = "pdfsmaller:jobs",
        metrics_port: int | None = -1,
        storage_channel: grpc.Channel | None = None,
        outages: DatabaseOutages | None = None,
    ) -> None:
        """`metrics_port=None` serves no /metrics (tests); -1 takes it from the settings.

        `storage_channel` defaults to a traced channel to STORAGE_ADDR; `outages` (tests: with their clock)
        to one on the wall clock.
        """
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = JobsMetrics(self.registry)
        self.pool = open_pool(settings.database_url, max_size=settings.database_pool_size)
        self.outages = outages if outages is not None else DatabaseOutages()
        self.repository = JobRepository(
            self.pool,
            retention_hours=settings.retention_hours,
            retry=RetryPolicy(
                max_attempts=settings.max_attempts,
                max_outage_retries=settings.max_outage_retries,
                backoff_base_seconds=settings.retry_backoff_base_seconds,
                backoff_cap_seconds=settings.retry_backoff_cap_seconds,
            ),
            outages=self.outages,
        )
        self.events = JobEvents(settings.redis_url, self.metrics, prefix=event_prefix)
        self.storage_channel = storage_channel if storage_channel is not None else open_channel(settings.storage_addr)
        self.deleter = ObjectDeleter(self.storage_channel)
        self.servicer = JobsServicer(
            self.repository, self.events, self.deleter, self.metrics, recheck_seconds=settings.wait_recheck_seconds
        )
        self.sweeper = Sweeper(
            self.repository,
            self.events,
            self.deleter,
            self.metrics,
            settings.sweep_interval_seconds,
            keep_expired_days=settings.keep_expired_days,
            outage_lease_grace_seconds=settings.outage_lease_grace_seconds,
        )
        self._migrated = False
        self.spec = ServerSpec(
            name="jobs",
            listen=settings.listen,
            address_file=settings.address_file,
            register=lambda server: jobs_service_pb2_grpc.add_JobsServiceServicer_to_server(self.servicer, server),
            service_names=[SERVICE_NAME],
            readiness=self.ready,
            metrics_port=settings.metrics_port if metrics_port == -1 else metrics_port,
            # LeaseJob long polls and WatchJob streams each hold a thread while they wait.
            max_workers=settings.max_workers,
            registry=self.registry,
        )
        self.running: RunningServer | None = None

    def _migrate(self) -> bool:
        if not self._migrated:
            try:
                migrate(self.settings.database_url)
                self._migrated = True
            except Exception:  # not ready until it works; retried by the readiness loop
                log.warning("cannot apply migrations yet; will retry", exc_info=True)
        return self._migrated

    def ready(self) -> bool:
        """Readiness: PostgreSQL answers and the schema is current (Redis is optional: events degrade)."""
        try:
            return self._migrate() and self.repository.ready()
        except ServiceError:
            return False

    def start(self) -> RunningServer:
        self._migrate()
        self.events.start()
        self.sweeper.start()
        self.running = RunningServer(self.spec).start()
        return self.running

    def stop(self, grace: float | None = None) -> None:
        self.servicer.shutdown()
        if self.running is not None:
            self.running.stop(grace)
        self.sweeper.stop()
        self.events.close()
        self.storage_channel.close()
        self.pool.close()

    def serve_until_signal(self) -> None:
        self.start()
        stop_requested = threading.Event()

        def request_stop(signum: int, _frame: object) -> None:
            log.info("jobs received signal %d, shutting down", signum)
            stop_requested.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        stop_requested.wait()
        self.stop()
