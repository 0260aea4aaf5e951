"""The gRPC server bootstrap every service shares.

One place builds the server the same way for all services: error mapping
interceptor (typed `ServiceError` -> google.rpc.Status + ErrorInfo), request
metrics, OpenTelemetry spans, gRPC health with liveness/readiness meaning,
reflection for grpcurl, a Prometheus /metrics endpoint (the process's CPU and
memory included) and a graceful stop (the process around it, signals included,
is libs.service).
Request bytes that do not parse (e.g. a string field that is not UTF-8) get
INVALID_ARGUMENT `INVALID_REQUEST_ENCODING`, not grpc's generic INTERNAL. With
TLS configured (libs.tls) the port requires client certificates.

Health: the overall status ("") is SERVING while the process runs (liveness);
each service's full name is SERVING only while its `readiness` check passes.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status
from opentelemetry.instrumentation.grpc import server_interceptor as otel_server_interceptor
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from libs.errors import InvalidArgument, ServiceError, internal_status
from libs.metrics import register_process_collectors
from libs.ports import PortInUse, bind_any_port
from libs.telemetry import current_trace_id
from libs.tls import TlsConfig, server_credentials, tls_from_environment

log = logging.getLogger(__name__)

# Large enough for upload/download chunks (up to 1 MiB from Envoy over HTTP/1.1).
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# Request metadata (headers) accepted; gRPC's default soft limit (8 KiB) refuses at random between
# 8 and 16 KiB. Envoy answers 414/431 well below this (deploy/envoy/render.py checks it).
MAX_METADATA_BYTES = 64 * 1024

ReadinessCheck = Callable[[], bool]
# Longest wait, when stopping, for a readiness check in progress.
READINESS_JOIN_SECONDS = 10.0
# How long a finished client stream is watched for a late cancel (see client_stream_completed).
CANCEL_SETTLE_SECONDS = 0.05


def client_stream_completed(context: grpc.ServicerContext, settle_seconds: float = CANCEL_SETTLE_SECONDS) -> bool:
    """Whether a client stream that just ended was half-closed by the client, not cancelled.

    grpcio ends the request iterator the same way for a client's half-close and
    for a cancel (disconnect); the cancel only shows in is_active() once grpc's
    polling thread has handled the next event, a moment later. A timing guard, not
    a proof, and it costs every caller `settle_seconds`: prefer a contract that
    says where the stream ends (storage's PutObject finish message, a declared
    length). The gateway calls it only for an upload of unknown length (chunked
    HTTP/1.1, gRPC clients), so such a dropped upload is not stored truncated.
    """
    deadline = time.monotonic() + settle_seconds
    while context.is_active():
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.005)
    return False


class _Undecodable:
    """Stands in for a request message whose bytes did not parse.

    grpcio answers a deserializer's exception with INTERNAL "Exception deserializing
    request!" before any interceptor runs; returning this marker instead lets the
    wrapped behaviour raise a client error with the usual rich status.
    """


_UNDECODABLE = _Undecodable()


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            return _UNDECODABLE

    return deserialize


def _undecodable_request() -> InvalidArgument:
    return InvalidArgument(
        "INVALID_REQUEST_ENCODING",
        "the request could not be decoded: a text field holds bytes that are not UTF-8, or the message is malformed",
    )


def _decoded(request: Any, streaming: bool) -> Any:
    """The request itself, or for a client stream an iterator raising at the first undecodable message."""
    if not streaming:
        if request is _UNDECODABLE:
            raise _undecodable_request()
        return request

    def messages() -> Iterator[Any]:
        for message in request:
            if message is _UNDECODABLE:
                raise _undecodable_request()
            yield message

    return messages()


class _ErrorMappingInterceptor(grpc.ServerInterceptor):
    """Turns exceptions into rich statuses and counts every call."""

    def __init__(self, registry: CollectorRegistry, domain: str) -> None:
        # ErrorInfo.domain of this service's own errors, e.g. "jobs.pdfsmaller".
        self._domain = domain
        self._handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, by method and status code.",
            ["grpc_service", "grpc_method", "grpc_code"],
            registry=registry,
        )
        self._seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time to complete an RPC on the server.",
            ["grpc_service", "grpc_method"],
            registry=registry,
            buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )

    def intercept_service(self, continuation: Callable[..., Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        deserializer = _tolerant(handler.request_deserializer)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, service, method, streaming=False),
                deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, service, method, streaming=True),
                deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, service, method, streaming=False),
                deserializer,
                handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(handler.stream_stream, service, method, streaming=True),
            deserializer,
            handler.response_serializer,
        )

    def _fail(self, error: BaseException, context: grpc.ServicerContext, service: str, method: str) -> None:
        if isinstance(error, ServiceError):
            self._handled.labels(service, method, error.code.name).inc()
            status = rpc_status.to_status(error.to_status(self._domain))
            # abort_with_status replaces the trailing metadata: keep what the servicer set for this
            # error (e.g. the gateway's Retry-After and RateLimit headers on a 429).
            kept = tuple(context.trailing_metadata() or ())
            context.abort_with_status(status._replace(trailing_metadata=kept + tuple(status.trailing_metadata)))
        trace_id = current_trace_id()
        log.exception("unhandled error in %s/%s", service, method, extra={"fields": {"trace_id": trace_id}})
        self._handled.labels(service, method, "INTERNAL").inc()
        context.abort_with_status(rpc_status.to_status(internal_status(trace_id, self._domain)))

    def _wrap_unary(
        self, behavior: Callable[..., Any], service: str, method: str, *, streaming: bool
    ) -> Callable[..., Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.monotonic()
            try:
                response = behavior(_decoded(request, streaming), context)
            except Exception as error:
                self._fail(error, context, service, method)
                raise
            finally:
                self._seconds.labels(service, method).observe(time.monotonic() - started)
            self._handled.labels(service, method, "OK").inc()
            return response

        return wrapped

    def _wrap_stream(
        self, behavior: Callable[..., Any], service: str, method: str, *, streaming: bool
    ) -> Callable[..., Any]:
        def wrapped(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.monotonic()
            try:
                yield from behavior(_decoded(request, streaming), context)
            except Exception as error:
                self._fail(error, context, service, method)
                raise
            finally:
                self._seconds.labels(service, method).observe(time.monotonic() - started)
            self._handled.labels(service, method, "OK").inc()

        return wrapped


@dataclass
class ServerSpec:
    """What a service plugs into the shared bootstrap."""

    name: str
    listen: str
    # Adds the service's servicers to the server.
    register: Callable[[grpc.Server], None]
    # Full names of the services registered (for health and reflection).
    service_names: Sequence[str]
    # More health names that follow readiness (for processes serving no API of their own).
    health_names: Sequence[str] = ()
    readiness: ReadinessCheck = lambda: True
    metrics_port: int | None = None
    # Defaults to the gRPC listen host, so a pod listening on 0.0.0.0 can be scraped.
    metrics_host: str | None = None
    max_workers: int = 32
    # Run inside the shared ones (their errors become rich statuses and are counted like the servicers').
    interceptors: Sequence[grpc.ServerInterceptor] = ()
    grace_seconds: float = 10.0
    readiness_interval_seconds: float = 2.0
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    # Where the bound addresses are written once serving (JSON), for whoever started the process
    # with port 0: {"grpc": "host:port", "metrics_port": N or null}, plus "health_port" if any.
    address_file: Path | None = None
    # Mutual TLS (libs.tls); by default from TLS_CERT_FILE/TLS_KEY_FILE/TLS_CA_FILE, unset = plaintext.
    tls: TlsConfig | None = field(default_factory=tls_from_environment)


class RunningServer:
    """A started server; `stop()` shuts it down gracefully."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        # CPU, memory and open files of this process, on every service's /metrics.
        register_process_collectors(spec.registry)
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=spec.max_workers, thread_name_prefix=spec.name),
            interceptors=[
                otel_server_interceptor(),
                _ErrorMappingInterceptor(spec.registry, f"{spec.name}.pdfsmaller"),
                *spec.interceptors,
            ],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_metadata_size", MAX_METADATA_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        spec.register(self.server)
        reflection.enable_server_reflection(
            [*spec.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        # The host as configured ("[::]" keeps its brackets for gRPC); the port is the one bound.
        self._host, _, listen_port = spec.listen.rpartition(":")
        self._credentials = server_credentials(spec.tls) if spec.tls is not None else None
        self.port = self._bind_grpc(int(listen_port))
        # Plaintext health for probes that cannot present a certificate (kubelet's gRPC probe).
        self.health_server: grpc.Server | None = None
        self.health_port: int | None = None
        if spec.tls is not None and spec.tls.plaintext_health_port is not None:
            self.health_server, self.health_port = self._plaintext_health(spec.tls.plaintext_health_port)
        self.metrics_port: int | None = None
        self._metrics_server: Any = None
        self._stopping = threading.Event()
        # The last readiness answer (None: not checked yet), so only its changes are logged.
        self._ready: bool | None = None
        self._readiness_thread = threading.Thread(target=self._watch_readiness, name="readiness", daemon=True)

    @property
    def address(self) -> str:
        return f"{self._host}:{self.port}"

    def _bind_grpc(self, port: int) -> int:
        """Listen on the configured address; port 0 means any port outside the ephemeral range
        (see libs.ports), so the process keeps a port nothing else can take across restarts."""

        def bind(candidate: int) -> int | None:
            address = f"{self._host}:{candidate}"
            try:
                if self._credentials is not None:
                    return self.server.add_secure_port(address, self._credentials) or None
                return self.server.add_insecure_port(address) or None
            except RuntimeError:  # grpcio raises on a bind failure ("Failed to bind to address")
                return None

        if port == 0:
            return bind_any_port(bind)
        bound = bind(port)
        if bound is None:
            raise self._port_in_use(self.spec.name, self.spec.listen, "LISTEN")
        return bound

    def _plaintext_health(self, port: int) -> tuple[grpc.Server, int]:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"{self.spec.name}-health"))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)

        def bind(candidate: int) -> int | None:
            try:
                return server.add_insecure_port(f"{self._host}:{candidate}") or None
            except RuntimeError:
                return None

        bound = bind_any_port(bind) if port == 0 else bind(port)
        if bound is None:
            address = f"{self._host}:{port}"
            error = PortInUse(
                f"{self.spec.name} health", address, "stop the program holding it or change TLS_PLAINTEXT_HEALTH_PORT"
            )
            log.error("%s", error, extra={"fields": {"event": "port_in_use", "address": address}})
            raise error
        return server, bound

    def _port_in_use(self, what: str, address: str, setting: str) -> PortInUse:
        # Every service's settings are named after it: GATEWAY_LISTEN, GATEWAY_METRICS_PORT, ...
        error = PortInUse(what, address, f"stop the program holding it or set {self.spec.name.upper()}_{setting}")
        # One structured line a launcher (devtools.stack) finds in the log and repeats.
        log.error("%s", error, extra={"fields": {"event": "port_in_use", "address": address}})
        return error

    def _start_metrics(self, port: int) -> int:
        host = self.spec.metrics_host or self._host.strip("[]")

        def bind(candidate: int) -> int | None:
            self._metrics_server, _ = start_http_server(candidate, addr=host, registry=self.spec.registry)
            return int(self._metrics_server.server_port)

        if port == 0:
            return bind_any_port(bind)
        try:
            return int(bind(port) or 0)
        except OSError as error:
            raise self._port_in_use(f"{self.spec.name} metrics", f"{host}:{port}", "METRICS_PORT") from error

    def start(self) -> RunningServer:
        if self.spec.metrics_port is not None:
            self.metrics_port = self._start_metrics(self.spec.metrics_port)
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._set_ready(self._check_ready())
        self.server.start()
        if self.health_server is not None:
            self.health_server.start()
        self._readiness_thread.start()
        self._report_address()
        log.info("%s listening on %s (%s)", self.spec.name, self.address, "mTLS" if self.spec.tls else "plaintext")
        return self

    def _report_address(self) -> None:
        path = self.spec.address_file
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        report: dict[str, object] = {"grpc": self.address, "metrics_port": self.metrics_port}
        if self.health_port is not None:
            report["health_port"] = self.health_port
        partial.write_text(json.dumps(report))
        os.replace(partial, path)  # readers see the whole file or none

    def _check_ready(self) -> bool:
        """The readiness check's answer; a check that raises means not ready. Logged once per change,
        not at every interval, so a dependency that stays down leaves one line, not a traceback per check."""
        error: Exception | None = None
        try:
            ready = bool(self.spec.readiness())
        except Exception as raised:  # noqa: BLE001 - a failing check means not ready; logged below on change
            ready, error = False, raised
        if ready != self._ready:
            if ready:
                log.info("%s ready", self.spec.name)
            else:
                log.warning("%s not ready", self.spec.name, exc_info=error)
        self._ready = ready
        return ready

    def _set_ready(self, ready: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in (*self.spec.service_names, *self.spec.health_names):
            self.health.set(name, status)

    def _watch_readiness(self) -> None:
        while not self._stopping.wait(self.spec.readiness_interval_seconds):
            self._set_ready(self._check_ready())

    def stop(self, grace: float | None = None) -> None:
        """Refuse new work, finish calls in flight within the grace period."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(self.spec.grace_seconds if grace is None else grace).wait()
        # A check in progress finishes before the caller closes what it uses (grpcio crashes on a stub
        # made on a closed channel); each check is bounded by its own timeouts.
        if self._readiness_thread.is_alive():
            self._readiness_thread.join(READINESS_JOIN_SECONDS)
        if self.health_server is not None:
            self.health_server.stop(0).wait()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        log.info("%s stopped", self.spec.name)

    def wait(self) -> None:
        self.server.wait_for_termination()
