"""The health report (unit: stubs are fakes): each entry, the overall status a load balancer reads
(required vs degrading dependencies), the shared cached check, and HEALTH_CACHE_SECONDS."""

from __future__ import annotations

import threading
import time
from unittest import mock

import grpc
import pytest
import redis
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs
from pdfsmaller.scanner.v1 import scanner_service_pb2 as scanner
from prometheus_client import CollectorRegistry

from libs.settings import SettingsError
from services.gateway.health import (
    DEFAULT_CACHE_SECONDS,
    DEGRADED,
    NOT_SERVING,
    SERVING,
    HealthReporter,
    SharedResult,
    overall_status,
    status_header,
)
from services.gateway.servicer import GatewayServicer
from services.gateway.settings import GatewaySettings

CLAMD = scanner.ScannerStatus(engine=scanner.MALWARE_ENGINE_CLAMD, clamd_reachable=True, clamd_version="ClamAV 1")


def _reporter(stats: jobs.QueueStats | Exception) -> HealthReporter:
    jobs_stub = mock.Mock()
    if isinstance(stats, Exception):
        jobs_stub.GetQueueStats.side_effect = stats
    else:
        jobs_stub.GetQueueStats.return_value = stats
    return HealthReporter({}, mock.Mock(), jobs_stub, mock.Mock(), auth_enabled=True)


def test_moving_queue_is_serving() -> None:
    health = _reporter(jobs.QueueStats(queued=3, running=2, oldest_queued_seconds=5))._workers()
    assert (health.status, health.detail) == (public.SERVING_STATUS_SERVING, "3 queued, 2 running")


def test_stale_queue_is_degraded() -> None:
    health = _reporter(jobs.QueueStats(queued=1, oldest_queued_seconds=600))._workers()
    assert health.status == public.SERVING_STATUS_DEGRADED
    assert "are workers running" in health.detail


def test_unknown_queue_is_not_serving() -> None:
    health = _reporter(grpc.RpcError())._workers()
    assert health.status == public.SERVING_STATUS_NOT_SERVING


# --- What users can do ------------------------------------------------------------


def _dependency(name: str, status: public.ServingStatus, required: bool) -> public.DependencyHealth:
    return public.DependencyHealth(name=name, status=status, required=required)


@pytest.mark.parametrize(
    ("down", "required", "overall"),
    [
        ("storage", True, NOT_SERVING),
        ("redis", False, DEGRADED),
        ("compressor-workers", False, DEGRADED),
    ],
)
def test_only_a_required_dependency_down_is_not_serving(
    down: str, required: bool, overall: public.ServingStatus
) -> None:
    dependencies = [_dependency("jobs", SERVING, True), _dependency(down, NOT_SERVING, required)]
    assert overall_status(dependencies) == overall


def test_all_serving_is_serving_and_any_degraded_is_degraded() -> None:
    serving = [_dependency("jobs", SERVING, True), _dependency("redis", SERVING, False)]
    assert overall_status(serving) == SERVING
    assert overall_status([*serving, _dependency("malware-scanning", DEGRADED, True)]) == DEGRADED


def _full_reporter(scanner_status: scanner.ScannerStatus | Exception, redis_up: bool) -> HealthReporter:
    scanner_stub, jobs_stub, redis_client = mock.Mock(), mock.Mock(), mock.Mock()
    if isinstance(scanner_status, Exception):
        scanner_stub.GetScannerStatus.side_effect = scanner_status
    else:
        scanner_stub.GetScannerStatus.return_value = scanner_status
    jobs_stub.GetQueueStats.return_value = jobs.QueueStats()
    if not redis_up:
        redis_client.ping.side_effect = redis.ConnectionError("refused")
    return HealthReporter({}, scanner_stub, jobs_stub, redis_client, auth_enabled=True, cache_seconds=0)


def test_redis_down_is_degraded_and_marked_not_required() -> None:
    health = _full_reporter(CLAMD, redis_up=False).check()
    entries = {dependency.name: dependency for dependency in health.dependencies}
    assert health.status == DEGRADED
    assert (entries["redis"].status, entries["redis"].required) == (NOT_SERVING, False)
    assert "rate limits" in entries["redis"].detail
    assert entries["malware-scanning"].required
    assert not entries["compressor-workers"].required
    assert not entries["api-keys"].required


def test_scanner_down_is_not_serving() -> None:
    health = _full_reporter(grpc.RpcError(), redis_up=True).check()
    assert health.status == NOT_SERVING


def test_healthy_report_is_serving() -> None:
    assert _full_reporter(CLAMD, redis_up=True).check().status == SERVING


@pytest.mark.parametrize(
    ("status", "value"), [(SERVING, "serving"), (DEGRADED, "degraded"), (NOT_SERVING, "not-serving")]
)
def test_status_header_is_what_envoy_matches(status: public.ServingStatus, value: str) -> None:
    assert status_header(status) == ("x-health-status", value)


# --- One check at a time, reused briefly ---------------------------------------------


class Clock:
    """A settable clock that counts its readings (SharedResult reads it once per caller finding the
    result stale, under its lock, and once per finished run)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        return self.now


def test_result_is_reused_while_fresh_then_recomputed() -> None:
    clock, runs = Clock(), []

    def check() -> int:
        runs.append(clock.now)
        return len(runs)

    shared = SharedResult(check, max_age_seconds=1.5, clock=clock)
    assert [shared.get(), shared.get()] == [1, 1]
    clock.now += 1.4
    assert shared.get() == 1
    clock.now += 0.2  # 1.6 s after the run finished
    assert shared.get() == 2
    assert len(runs) == 2


def test_concurrent_callers_share_the_run_in_flight() -> None:
    clock, runs, gate = Clock(), [], threading.Event()
    gate.set()

    def check() -> int:
        runs.append(1)
        assert gate.wait(10)
        return len(runs)

    shared = SharedResult(check, max_age_seconds=1, clock=clock)
    assert shared.get() == 1
    clock.now += 5  # stale
    gate.clear()  # the next run blocks until the gate opens
    results: list[int] = []
    callers = [threading.Thread(target=lambda: results.append(shared.get())) for _ in range(9)]
    for caller in callers:
        caller.start()
    # Every caller has found the result stale (one reading each) while the first of them runs the check.
    deadline = time.monotonic() + 10
    while clock.readings < 1 + len(callers):
        assert time.monotonic() < deadline, clock.readings
        time.sleep(0.001)
    gate.set()
    for caller in callers:
        caller.join(10)
    assert results == [2] * len(callers)
    assert len(runs) == 2


def test_a_failed_run_fails_its_waiters_and_is_not_kept() -> None:
    outcomes = iter([RuntimeError("boom"), 7])

    def check() -> int:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    shared = SharedResult(check, max_age_seconds=60)
    with pytest.raises(RuntimeError):
        shared.get()
    assert shared.get() == 7


def test_report_is_shared_for_cache_seconds() -> None:
    scanner_stub, jobs_stub = mock.Mock(), mock.Mock()
    scanner_stub.GetScannerStatus.return_value = CLAMD
    jobs_stub.GetQueueStats.return_value = jobs.QueueStats()
    reporter = HealthReporter({}, scanner_stub, jobs_stub, mock.Mock(), auth_enabled=True, cache_seconds=60)
    first = reporter.report()
    assert reporter.report() is first
    assert jobs_stub.GetQueueStats.call_count == 1


# --- The servicer's health methods -----------------------------------------------------


def test_liveness_asks_no_dependency() -> None:
    deps = mock.Mock()
    servicer = GatewayServicer(deps, CollectorRegistry())
    reply = servicer.GetLiveness(public.GetLivenessRequest(), mock.Mock())
    assert reply.status == SERVING
    assert deps.mock_calls == []


def test_health_sends_its_status_as_a_header_for_envoy() -> None:
    deps, context = mock.Mock(), mock.Mock()
    deps.health.report.return_value = public.Health(status=NOT_SERVING)
    reply = GatewayServicer(deps, CollectorRegistry()).GetHealth(public.GetHealthRequest(), context)
    assert reply.status == NOT_SERVING
    context.send_initial_metadata.assert_called_once_with((("x-health-status", "not-serving"),))


# --- HEALTH_CACHE_SECONDS -----------------------------------------------------------

BASE = {"REDIS_URL": "redis://127.0.0.1:1"}


def test_cache_seconds_default_and_setting() -> None:
    assert GatewaySettings.from_env(BASE).health_cache_seconds == DEFAULT_CACHE_SECONDS == 1.0
    assert GatewaySettings.from_env({**BASE, "HEALTH_CACHE_SECONDS": "2.5"}).health_cache_seconds == 2.5
    assert GatewaySettings.from_env({**BASE, "HEALTH_CACHE_SECONDS": "0"}).health_cache_seconds == 0


@pytest.mark.parametrize("raw", ["-1", "31", "nan", "soon"])
def test_cache_seconds_out_of_range_is_a_problem(raw: str) -> None:
    with pytest.raises(SettingsError, match="HEALTH_CACHE_SECONDS"):
        GatewaySettings.from_env({**BASE, "HEALTH_CACHE_SECONDS": raw})
