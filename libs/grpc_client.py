"""Channels to other services, traced and sized like the servers."""

from __future__ import annotations

import grpc
from opentelemetry.instrumentation.grpc import client_interceptor
from opentelemetry.instrumentation.grpc.grpcext import intercept_channel

from libs.grpc_server import MAX_MESSAGE_BYTES


def open_channel(address: str) -> grpc.Channel:
    """An insecure channel (in-cluster traffic) whose calls carry the trace context."""
    channel = grpc.insecure_channel(
        address,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.enable_retries", 1),
        ],
    )
    # The instrumentation's interceptor speaks its own interface, hence its own intercept_channel.
    return intercept_channel(channel, client_interceptor())  # type: ignore[no-any-return]
