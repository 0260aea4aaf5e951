"""Traced channels: a call through open_channel carries the caller's trace to the server."""

from collections.abc import Iterator

import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from libs.grpc_client import open_channel
from libs.grpc_server import RunningServer, ServerSpec


def test_calls_carry_the_trace_context() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    seen: list[str] = []

    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        seen.extend(value for key, value in context.invocation_metadata() if key == "traceparent")
        return request

    def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield request

    handler = grpc.method_handlers_generic_handler(
        "t.S",
        {
            "U": grpc.unary_unary_rpc_method_handler(unary),
            "S": grpc.unary_stream_rpc_method_handler(stream),
        },
    )
    spec = ServerSpec(
        name="t", listen="127.0.0.1:0", register=lambda s: s.add_generic_rpc_handlers((handler,)), service_names=["t.S"]
    )
    server = RunningServer(spec).start()
    try:
        trace.set_tracer_provider(provider)
        channel = open_channel(server.address)
        with tracer.start_as_current_span("caller") as span:
            assert channel.unary_unary("/t.S/U")(b"x", timeout=5) == b"x"
            replies = channel.unary_stream("/t.S/S")(b"y", timeout=5)
            assert list(replies) == [b"y"]
            replies.cancel()  # streaming calls stay grpc.Call objects: the gateway cancels them
        channel.close()
    finally:
        server.stop(0)
    trace_id = f"{span.get_span_context().trace_id:032x}"
    assert seen
    assert seen[0].split("-")[1] == trace_id
    client_spans = [s for s in exporter.get_finished_spans() if s.name.startswith("t.S/")]
    assert {s.name for s in client_spans} == {"t.S/U", "t.S/S"}
    assert all(s.context.trace_id == span.get_span_context().trace_id for s in client_spans)
