"""Channels to other services, traced and sized like the servers.

The client interceptor is our own rather than the OpenTelemetry gRPC
instrumentation's: that one turns server-streaming calls into plain
generators, which lose `cancel()` — and cancelling upstream streams when a
client goes away is how the gateway stops WatchJob and downloads early.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from libs.grpc_server import MAX_MESSAGE_BYTES

_tracer = trace.get_tracer("pdfsmaller.grpc_client")


class _CallDetails(
    namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class _TracingInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """A CLIENT span per call, with the W3C trace context in the call's metadata."""

    def _call(self, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        service, _, method = details.method.lstrip("/").rpartition("/")
        span = _tracer.start_span(
            details.method.lstrip("/"),
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        metadata = [*(details.metadata or ()), *carrier.items()]
        traced = _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )
        try:
            call = continuation(traced, request)
        except BaseException:
            span.end()
            raise

        def finish(done: grpc.Call) -> None:
            code = done.code()
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code != grpc.StatusCode.OK:
                span.set_status(Status(StatusCode.ERROR, code.name))
            span.end()

        call.add_done_callback(finish)
        return call

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return self._call(continuation, client_call_details, request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return self._call(continuation, client_call_details, request)

    def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return self._call(continuation, client_call_details, request_iterator)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return self._call(continuation, client_call_details, request_iterator)


def open_channel(address: str) -> grpc.Channel:
    """An insecure channel (in-cluster traffic) whose calls carry the trace context."""
    channel = grpc.insecure_channel(
        address,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.enable_retries", 1),
            # Spread calls over every address a name resolves to (a headless Service lists each pod).
            ("grpc.lb_policy_name", "round_robin"),
            # Calls fail fast while a dependency is down; reconnect soon after it is back (the default
            # backoff grows to two minutes, which would keep answering UNAVAILABLE long after recovery).
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 3000),
        ],
    )
    return grpc.intercept_channel(channel, _TracingInterceptor())
