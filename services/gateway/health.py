"""The public health report: this gateway plus each dependency's readiness."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import redis
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as jobs_grpc
from pdfsmaller.scanner.v1 import scanner_service_pb2 as scanner
from pdfsmaller.scanner.v1 import scanner_service_pb2_grpc as scanner_grpc

from libs.health import CHECK_TIMEOUT_SECONDS, serving_problem

SERVING = public.SERVING_STATUS_SERVING
DEGRADED = public.SERVING_STATUS_DEGRADED
NOT_SERVING = public.SERVING_STATUS_NOT_SERVING
# A queued job older than this means no worker is taking jobs (or too few are).
STALE_QUEUE_SECONDS = 120.0


class HealthReporter:
    def __init__(
        self,
        channels: dict[str, tuple[grpc.Channel, str]],
        scanner_stub: scanner_grpc.ScannerServiceStub,
        jobs_stub: jobs_grpc.JobsServiceStub,
        redis_client: redis.Redis,
        auth_enabled: bool,
    ) -> None:
        # name -> (channel, full service name whose readiness to ask)
        self._channels = channels
        self._scanner = scanner_stub
        self._jobs = jobs_stub
        self._redis = redis_client
        self._auth_enabled = auth_enabled

    def _grpc_check(self, name: str) -> public.DependencyHealth:
        problem = serving_problem(*self._channels[name], timeout=CHECK_TIMEOUT_SECONDS)
        if problem is None:
            return public.DependencyHealth(name=name, status=SERVING, detail="ready")
        return public.DependencyHealth(name=name, status=NOT_SERVING, detail=problem)

    def _malware_scanning(self) -> public.DependencyHealth:
        name = "malware-scanning"
        try:
            status = self._scanner.GetScannerStatus(scanner.GetScannerStatusRequest(), timeout=CHECK_TIMEOUT_SECONDS)
        except grpc.RpcError:
            return public.DependencyHealth(name=name, status=NOT_SERVING, detail="scanner unreachable")
        if status.engine == scanner.MALWARE_ENGINE_NONE:
            return public.DependencyHealth(
                name=name, status=DEGRADED, detail="no clamd configured: PDF structure checks only"
            )
        if not status.clamd_reachable:
            return public.DependencyHealth(name=name, status=NOT_SERVING, detail="clamd unreachable: uploads refused")
        if status.test_signatures_only:
            return public.DependencyHealth(
                name=name, status=DEGRADED, detail=f"clamd {status.clamd_version} with TEST signatures only"
            )
        return public.DependencyHealth(name=name, status=SERVING, detail=f"clamd {status.clamd_version}")

    def _workers(self) -> public.DependencyHealth:
        """Workers are not addressable; a queue that stops moving is how their absence shows."""
        name = "compressor-workers"
        try:
            stats = self._jobs.GetQueueStats(jobs.GetQueueStatsRequest(), timeout=CHECK_TIMEOUT_SECONDS)
        except grpc.RpcError:
            return public.DependencyHealth(name=name, status=NOT_SERVING, detail="queue unknown: jobs unreachable")
        detail = f"{stats.queued} queued, {stats.running} running"
        if stats.queued and stats.oldest_queued_seconds > STALE_QUEUE_SECONDS:
            return public.DependencyHealth(
                name=name,
                status=DEGRADED,
                detail=f"{detail}; oldest waiting {stats.oldest_queued_seconds:.0f} s: are workers running?",
            )
        return public.DependencyHealth(name=name, status=SERVING, detail=detail)

    def _redis_check(self) -> public.DependencyHealth:
        try:
            self._redis.ping()
        except redis.RedisError:
            return public.DependencyHealth(name="redis", status=NOT_SERVING, detail="unreachable: rate limits off")
        return public.DependencyHealth(name="redis", status=SERVING, detail="ready")

    def _auth(self) -> public.DependencyHealth:
        if self._auth_enabled:
            return public.DependencyHealth(name="api-keys", status=SERVING, detail="API keys required")
        return public.DependencyHealth(
            name="api-keys", status=DEGRADED, detail="no API_KEYS configured: anonymous access (development mode)"
        )

    def report(self) -> public.Health:
        checks: list[Callable[[], public.DependencyHealth]] = [
            *(lambda name=name: self._grpc_check(name) for name in self._channels),
            self._malware_scanning,
            self._workers,
            self._redis_check,
            self._auth,
        ]
        with ThreadPoolExecutor(max_workers=len(checks)) as pool:
            dependencies = list(pool.map(lambda check: check(), checks))
        statuses = {dependency.status for dependency in dependencies}
        overall = NOT_SERVING if NOT_SERVING in statuses else DEGRADED if DEGRADED in statuses else SERVING
        return public.Health(status=overall, dependencies=dependencies)

    def ready(self) -> bool:
        """Readiness for the gateway's own gRPC health: jobs and storage answer."""
        return all(self._grpc_check(name).status == SERVING for name in ("jobs", "storage"))
