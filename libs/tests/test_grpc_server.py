"""The shared bootstrap over a real channel: error mapping, health, reflection."""

import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from libs.errors import NotFound, from_rpc, reason_of
from libs.grpc_server import RunningServer, ServerSpec

SERVICE = "test.Echo"


def _handlers(fail_with: list[Exception]) -> grpc.GenericRpcHandler:
    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        if fail_with:
            raise fail_with[0]
        return request

    def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield request
        raise fail_with[0]

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        },
    )


@pytest.fixture
def server() -> Iterator[tuple[RunningServer, list[Exception], list[bool]]]:
    fail_with: list[Exception] = []
    ready = [True]
    spec = ServerSpec(
        name="test",
        listen="127.0.0.1:0",
        register=lambda s: s.add_generic_rpc_handlers((_handlers(fail_with),)),
        service_names=[SERVICE],
        readiness=lambda: ready[0],
        readiness_interval_seconds=0.05,
        metrics_port=0,
    )
    running = RunningServer(spec).start()
    try:
        yield running, fail_with, ready
    finally:
        running.stop(0)


def _info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


def test_service_error_becomes_rich_status(server: tuple[RunningServer, list[Exception], list[bool]]) -> None:
    running, fail_with, _ = server
    fail_with.append(NotFound("JOB_NOT_FOUND", "no such job", metadata={"id": "x"}))
    with grpc.insecure_channel(running.address) as channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(f"/{SERVICE}/Unary")(b"hi", timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "no such job"
    info = _info(caught.value)
    assert (info.reason, info.metadata["id"], info.domain) == ("JOB_NOT_FOUND", "x", "test.pdfsmaller")
    mapped = from_rpc(caught.value, "jobs")
    assert isinstance(mapped, NotFound)
    assert mapped.reason == "JOB_NOT_FOUND"


def test_unexpected_error_is_internal_without_its_text(
    server: tuple[RunningServer, list[Exception], list[bool]],
) -> None:
    running, fail_with, _ = server
    fail_with.append(RuntimeError("secret path /etc/shadow"))
    with grpc.insecure_channel(running.address) as channel:
        replies = []
        with pytest.raises(grpc.RpcError) as caught:
            replies.extend(channel.unary_stream(f"/{SERVICE}/Stream")(b"hi", timeout=5))
    assert replies == [b"hi"]  # the stream failed after its first message
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "shadow" not in (caught.value.details() or "")
    assert reason_of(caught.value) == "INTERNAL"
    # An unexpected downstream failure is reported upstream as unavailable, never with its text.
    assert from_rpc(caught.value, "storage").reason == "DEPENDENCY_UNAVAILABLE"


def test_health_means_liveness_and_readiness(server: tuple[RunningServer, list[Exception], list[bool]]) -> None:
    running, _, ready = server
    with grpc.insecure_channel(running.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        serving = health_pb2.HealthCheckResponse.SERVING
        assert stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == serving
        assert stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5).status == serving
        ready[0] = False
        deadline = time.monotonic() + 20  # checked every 0.05 s; generous for a busy machine
        while stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5).status == serving:
            assert time.monotonic() < deadline, "readiness never turned NOT_SERVING"
            time.sleep(0.05)
        assert stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == serving


def test_reflection_lists_services(server: tuple[RunningServer, list[Exception], list[bool]]) -> None:
    running, _, _ = server
    with grpc.insecure_channel(running.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {service.name for service in next(replies).list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


def test_metrics_endpoint_counts_calls(server: tuple[RunningServer, list[Exception], list[bool]]) -> None:
    running, _, _ = server
    with grpc.insecure_channel(running.address) as channel:
        channel.unary_unary(f"/{SERVICE}/Unary")(b"hi", timeout=5)
    body = urllib.request.urlopen(f"http://127.0.0.1:{running.metrics_port}/metrics", timeout=5).read().decode()
    assert 'grpc_server_handled_total{grpc_code="OK",grpc_method="Unary",grpc_service="test.Echo"} 1.0' in body
