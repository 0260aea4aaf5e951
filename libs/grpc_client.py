"""Channels to other services, traced and sized like the servers."""

from __future__ import annotations

import grpc
from opentelemetry.instrumentation.grpc import client_interceptor

from libs.grpc_server import MAX_MESSAGE_BYTES


def open_channel(address: str) -> grpc.Channel:
    """An insecure channel (in-cluster traffic) with tracing and retries on connect."""
    channel = grpc.insecure_channel(
        address,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.enable_retries", 1),
        ],
    )
    return grpc.intercept_channel(channel, client_interceptor())
