"""Request bytes that do not parse get INVALID_ARGUMENT with a reason, not grpc's INTERNAL.

The calls are generic (bytes in, bytes out) so the test can send what no stub
would: a hand-made message whose string field holds a byte that is not UTF-8.
"""

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2

from libs.errors import reason_of
from libs.grpc_server import RunningServer, ServerSpec

SERVICE = "test.Decode"
# HealthCheckRequest{service: <0xFF>}: field 1, length 1, a byte that starts no UTF-8 sequence.
BAD_UTF8 = b"\x0a\x01\xff"
GOOD = health_pb2.HealthCheckRequest(service="ok").SerializeToString()


def _handlers(seen: list[str]) -> grpc.GenericRpcHandler:
    parse = health_pb2.HealthCheckRequest.FromString

    def unary(request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> bytes:
        seen.append(request.service)
        return b""

    def client_stream(requests: Iterator[health_pb2.HealthCheckRequest], context: grpc.ServicerContext) -> bytes:
        seen.extend(request.service for request in requests)
        return b""

    def server_stream(request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> Iterator[bytes]:
        seen.append(request.service)
        yield b""

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, request_deserializer=parse),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream, request_deserializer=parse),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream, request_deserializer=parse),
        },
    )


@pytest.fixture
def served() -> Iterator[tuple[grpc.Channel, list[str]]]:
    seen: list[str] = []
    spec = ServerSpec(
        name="test",
        listen="127.0.0.1:0",
        register=lambda server: server.add_generic_rpc_handlers((_handlers(seen),)),
        service_names=[SERVICE],
        tls=None,
    )
    running = RunningServer(spec).start()
    try:
        with grpc.insecure_channel(running.address) as channel:
            yield channel, seen
    finally:
        running.stop(0)


def _assert_invalid_encoding(error: grpc.RpcError) -> None:
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(error) == "INVALID_REQUEST_ENCODING"
    assert "UTF-8" in (error.details() or "")


def test_unary_request_with_invalid_utf8_is_invalid_argument(served: tuple[grpc.Channel, list[str]]) -> None:
    channel, seen = served
    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(f"/{SERVICE}/Unary")(BAD_UTF8, timeout=5)
    _assert_invalid_encoding(caught.value)
    assert seen == []  # the servicer never saw it
    channel.unary_unary(f"/{SERVICE}/Unary")(GOOD, timeout=5)
    assert seen == ["ok"]


def test_client_stream_stops_at_the_undecodable_message(served: tuple[grpc.Channel, list[str]]) -> None:
    channel, seen = served
    with pytest.raises(grpc.RpcError) as caught:
        channel.stream_unary(f"/{SERVICE}/ClientStream")(iter([GOOD, BAD_UTF8, GOOD]), timeout=5)
    _assert_invalid_encoding(caught.value)
    assert seen == ["ok"]


def test_server_stream_request_with_invalid_utf8_is_invalid_argument(served: tuple[grpc.Channel, list[str]]) -> None:
    channel, seen = served
    with pytest.raises(grpc.RpcError) as caught:
        list(channel.unary_stream(f"/{SERVICE}/ServerStream")(BAD_UTF8, timeout=5))
    _assert_invalid_encoding(caught.value)
    assert seen == []


def test_truncated_message_is_invalid_argument(served: tuple[grpc.Channel, list[str]]) -> None:
    channel, _ = served
    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(f"/{SERVICE}/Unary")(b"\x0a\x05ab", timeout=5)  # says 5 bytes, holds 2
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(caught.value) == "INVALID_REQUEST_ENCODING"
