"""The public health report: this gateway plus each dependency's readiness.

The overall status says what users can do. A required dependency down (jobs, storage, the
scanner, clamd when configured) means uploads or downloads fail: NOT_SERVING, which Envoy answers
as HTTP 503 so load balancers and `curl -f` see it. Anything else not SERVING (Redis, a stuck
queue, test signatures, no API keys) only lowers the guarantees: DEGRADED, HTTP 200.

The report is unauthenticated, so one check runs at a time and its result is reused for a second
or so: a flood of health calls costs the backends one check per `cache_seconds`, not per request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

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
# How long one deep check's report is reused (HEALTH_CACHE_SECONDS).
DEFAULT_CACHE_SECONDS = 1.0
# Without these users cannot upload, follow or download a job; the rest only degrade the service:
# compressor-workers (jobs queue and wait), redis (per-key rate limits and quotas off, job events
# polled), api-keys (anonymous access). docs/api.md has the table.
REQUIRED = frozenset({"jobs", "storage", "scanner", "malware-scanning"})
# The response header that carries the overall status, read by Envoy (deploy/envoy/envoy.yaml)
# to answer REST callers 503 when it is "not-serving".
STATUS_HEADER = "x-health-status"

Result = TypeVar("Result")


def overall_status(dependencies: Iterable[public.DependencyHealth]) -> public.ServingStatus:
    statuses = {(dependency.required, dependency.status) for dependency in dependencies}
    if (True, NOT_SERVING) in statuses:
        return NOT_SERVING
    if any(status != SERVING for _, status in statuses):
        return DEGRADED
    return SERVING


def status_header(status: public.ServingStatus) -> tuple[str, str]:
    """(STATUS_HEADER, "serving" | "degraded" | "not-serving")."""
    name = public.ServingStatus.Name(status).removeprefix("SERVING_STATUS_")
    return STATUS_HEADER, name.lower().replace("_", "-")


class SharedResult(Generic[Result]):
    """`compute()`'s last result, reused for `max_age_seconds` after it finished; a caller that
    finds it stale while another caller recomputes it waits for that run instead of starting one."""

    def __init__(
        self, compute: Callable[[], Result], max_age_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._compute = compute
        self._max_age = max_age_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._last: tuple[float, Result] | None = None
        self._running: Future[Result] | None = None

    def get(self) -> Result:
        with self._lock:
            if self._last is not None and self._clock() - self._last[0] < self._max_age:
                return self._last[1]
            running, leading = self._running, self._running is None
            if running is None:
                running = self._running = Future()
        if not leading:
            return running.result()
        return self._run(running)

    def _run(self, running: Future[Result]) -> Result:
        try:
            result = self._compute()
        except BaseException as error:
            with self._lock:
                self._running = None
            running.set_exception(error)
            raise
        with self._lock:
            self._last, self._running = (self._clock(), result), None
        running.set_result(result)
        return result


class HealthReporter:
    def __init__(
        self,
        channels: dict[str, tuple[grpc.Channel, str]],
        scanner_stub: scanner_grpc.ScannerServiceStub,
        jobs_stub: jobs_grpc.JobsServiceStub,
        redis_client: redis.Redis,
        auth_enabled: bool,
        cache_seconds: float = DEFAULT_CACHE_SECONDS,
    ) -> None:
        # name -> (channel, full service name whose readiness to ask)
        self._channels = channels
        self._scanner = scanner_stub
        self._jobs = jobs_stub
        self._redis = redis_client
        self._auth_enabled = auth_enabled
        self._shared_report = SharedResult(self.check, cache_seconds)

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
            return public.DependencyHealth(
                name="redis",
                status=NOT_SERVING,
                detail="unreachable: per-key rate limits and quotas off, job events polled",
            )
        return public.DependencyHealth(name="redis", status=SERVING, detail="ready")

    def _auth(self) -> public.DependencyHealth:
        if self._auth_enabled:
            return public.DependencyHealth(name="api-keys", status=SERVING, detail="API keys required")
        return public.DependencyHealth(
            name="api-keys", status=DEGRADED, detail="no API_KEYS configured: anonymous access (development mode)"
        )

    def report(self) -> public.Health:
        """The last check's report if it is fresh enough, else a new one (shared with concurrent callers)."""
        return self._shared_report.get()

    def check(self) -> public.Health:
        """Asks every dependency now, all at once (each bounded by CHECK_TIMEOUT_SECONDS)."""
        checks: list[Callable[[], public.DependencyHealth]] = [
            *(lambda name=name: self._grpc_check(name) for name in self._channels),
            self._malware_scanning,
            self._workers,
            self._redis_check,
            self._auth,
        ]
        with ThreadPoolExecutor(max_workers=len(checks)) as pool:
            dependencies = list(pool.map(lambda check: check(), checks))
        for dependency in dependencies:
            dependency.required = dependency.name in REQUIRED
        return public.Health(status=overall_status(dependencies), dependencies=dependencies)

    def ready(self) -> bool:
        """Readiness for the gateway's own gRPC health: jobs and storage answer."""
        return all(self._grpc_check(name).status == SERVING for name in ("jobs", "storage"))
