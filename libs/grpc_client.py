"""Channels to other services, traced and sized like the servers.

The client interceptor is our own rather than the OpenTelemetry gRPC
instrumentation's: that one turns server-streaming calls into plain
generators, which lose `cancel()` — and cancelling upstream streams when a
client goes away is how the gateway stops WatchJob and downloads early.
"""

from __future__ import annotations

import threading
import time
from collections import namedtuple
from collections.abc import Callable
from typing import Any, Literal

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from libs.grpc_server import MAX_MESSAGE_BYTES
from libs.tls import PemSet, PemWatcher, TlsConfig, channel_credentials, tls_from_environment

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


class _CurrentChannelCallable:
    """A multicallable that resolves, per call, on the channel current at that moment."""

    def __init__(self, channel: ReloadingChannel, kind: str, method: str, options: dict[str, Any]) -> None:
        self._channel, self._kind, self._method, self._options = channel, kind, method, options
        self._bound: tuple[grpc.Channel, Any] | None = None

    def _target(self) -> Any:
        current = self._channel.current()
        bound = self._bound
        if bound is None or bound[0] is not current:
            bound = (current, getattr(current, self._kind)(self._method, **self._options))
            self._bound = bound
        return bound[1]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._target()(*args, **kwargs)

    def with_call(self, *args: Any, **kwargs: Any) -> Any:
        return self._target().with_call(*args, **kwargs)

    def future(self, *args: Any, **kwargs: Any) -> Any:
        return self._target().future(*args, **kwargs)


class ReloadingChannel(grpc.Channel):
    """A TLS channel that switches to new certificate files for new calls.

    grpcio's channel credentials are fixed when a channel is created, so on a
    call at most every `recheck_seconds` the files are stat'ed; when they
    changed a fresh channel is opened and later calls (also through stubs made
    earlier) use it. Calls and streams in flight finish on the old channel,
    which is released once they end (dropping a grpcio channel does not cancel
    its calls). Subscriptions stay on the channel current when they were made.
    """

    def __init__(
        self,
        open_secure: Callable[[PemSet], grpc.Channel],
        watcher: PemWatcher,
        recheck_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open_secure, self._watcher, self._recheck_seconds, self._clock = (
            open_secure,
            watcher,
            recheck_seconds,
            clock,
        )
        self._lock = threading.Lock()
        self._channel = open_secure(watcher.current)
        self._next_check = clock() + recheck_seconds

    def current(self) -> grpc.Channel:
        with self._lock:
            if self._clock() >= self._next_check:
                self._next_check = self._clock() + self._recheck_seconds
                pem = self._watcher.changed()
                if pem is not None:
                    self._channel = self._open_secure(pem)
            return self._channel

    def _callable(self, kind: str, method: str, options: dict[str, Any]) -> Any:
        return _CurrentChannelCallable(self, kind, method, options)

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._callable("unary_unary", method, self._options(*args, **kwargs))

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._callable("unary_stream", method, self._options(*args, **kwargs))

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._callable("stream_unary", method, self._options(*args, **kwargs))

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._callable("stream_stream", method, self._options(*args, **kwargs))

    @staticmethod
    def _options(
        request_serializer: Any = None, response_deserializer: Any = None, _registered_method: bool = False
    ) -> dict[str, Any]:
        return {
            "request_serializer": request_serializer,
            "response_deserializer": response_deserializer,
            "_registered_method": _registered_method,
        }

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self.current().subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self.current().unsubscribe(callback)

    def close(self) -> None:
        with self._lock:
            self._channel.close()

    def __enter__(self) -> ReloadingChannel:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


_CHANNEL_OPTIONS = [
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
]
# How often a TLS channel looks at its certificate files (one stat of three files, on a call).
TLS_RECHECK_SECONDS = 30.0


def open_channel(
    address: str,
    tls: TlsConfig | Literal["environment"] | None = "environment",
    *,
    tls_recheck_seconds: float = TLS_RECHECK_SECONDS,
) -> grpc.Channel:
    """A channel whose calls carry the trace context: plaintext, or mutual TLS when configured.

    `tls` defaults to the process's TLS_* variables (libs.tls). A TLS channel
    re-reads its certificate files when they change (see ReloadingChannel).
    """
    config = tls_from_environment() if tls == "environment" else tls
    if config is None:
        return grpc.intercept_channel(grpc.insecure_channel(address, options=_CHANNEL_OPTIONS), _TracingInterceptor())

    def secure(pem: PemSet) -> grpc.Channel:
        channel = grpc.secure_channel(address, channel_credentials(pem), options=_CHANNEL_OPTIONS)
        return grpc.intercept_channel(channel, _TracingInterceptor())

    return ReloadingChannel(secure, PemWatcher(config), tls_recheck_seconds)
