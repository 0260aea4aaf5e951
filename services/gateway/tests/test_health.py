"""The workers' entry in the health report, from queue statistics (unit: stubs are fakes)."""

from unittest import mock

import grpc
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs

from services.gateway.health import HealthReporter


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
