"""Asking another service's gRPC health whether it is ready: one answer for every caller.

The gateway's health report, the scanner's readiness (storage) and the compressor's lease gate
(jobs, storage) all ask the same question; they differ only in what they do with the answer.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.errors import reason_of

CHECK_TIMEOUT_SECONDS = 2.0


def serving_problem(channel: grpc.Channel, service: str, timeout: float = CHECK_TIMEOUT_SECONDS) -> str | None:
    """None when `service` answers SERVING on `channel`; else why not, e.g. "unreachable (UNAVAILABLE)"."""
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    except grpc.RpcError as error:
        return f"unreachable ({reason_of(error)})"
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return f"not ready ({health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)})"
    return None
