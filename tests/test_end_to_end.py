"""The whole system through Envoy, as a user with curl or a gRPC client meets it."""

from __future__ import annotations

import hashlib
import io
import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pikepdf
import pytest
from google.api import httpbody_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.gateway.v1 import gateway_service_pb2_grpc as public_grpc

from devtools.servers.processes import stop_process
from devtools.stack.stack import Stack
from tests.e2e_client import RestClient
from tests.plugins.otlp import OtlpReceiver
from tests.plugins.stack import API_KEYS, stored_objects

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data"
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


@pytest.fixture
def acme(stack: Stack) -> RestClient:
    return RestClient(stack.url, API_KEYS["acme"])


def _eicar_pdf() -> bytes:
    pdf = pikepdf.new()
    pdf.add_blank_page()
    # Uncompressed, so the signature is in the bytes clamd sees.
    pdf.Root.Payload = pdf.make_stream(EICAR)
    out = io.BytesIO()
    pdf.save(out, compress_streams=False, object_stream_mode=pikepdf.ObjectStreamMode.disable)
    return out.getvalue()


def test_health_lists_every_dependency(acme: RestClient) -> None:
    reply = acme.request("GET", "/v1/health")
    assert reply.status == 200
    health = reply.json()
    names = {dependency["name"]: dependency["status"] for dependency in health["dependencies"]}
    assert {"jobs", "storage", "scanner", "malware-scanning", "compressor-workers", "redis", "api-keys"} <= set(names)
    assert names["jobs"] == names["storage"] == names["scanner"] == "SERVING_STATUS_SERVING"


def test_upload_page(acme: RestClient) -> None:
    page = acme.request("GET", "/")
    assert page.status == 200
    assert page.headers["content-type"].startswith("text/html")
    assert b"<form" in page.body


def test_upload_compress_download(acme: RestClient) -> None:
    source = (DATA / "pypdf__jpeg.pdf").read_bytes()
    created = acme.upload(source, filename="photo page.pdf", level="medium", remove_metadata="true")
    assert created.status == 200, created.body
    job = created.json()
    assert job["state"] == "JOB_STATE_QUEUED"
    assert (job["level"], job["remove_metadata"], job["grayscale"]) == ("medium", True, False)
    assert job["name"] == f"jobs/{job['id']}"
    done = acme.wait(job["id"])
    assert done["state"] == "JOB_STATE_SUCCEEDED", done
    assert int(done["input_size_bytes"]) == len(source)
    assert 0 < int(done["output_size_bytes"]) <= len(source)
    assert done["report"]["input_size_bytes"] == len(source)

    result = acme.request("GET", done["result_uri"])
    assert result.status == 200
    assert result.headers["content-type"] == "application/pdf"
    assert 'filename="photo page-smaller.pdf"' in result.headers["content-disposition"]
    assert int(result.headers["x-content-length"]) == len(result.body) == int(done["output_size_bytes"])
    assert result.headers["x-content-sha256"] == hashlib.sha256(result.body).hexdigest() == done["output_sha256"]
    with pikepdf.open(io.BytesIO(result.body)) as output, pikepdf.open(io.BytesIO(source)) as original:
        assert len(output.pages) == len(original.pages)


@pytest.mark.parametrize(
    ("filename", "reason"),
    [
        ("samplefiles__libreoffice-writer-password.pdf", "ENCRYPTED_PDF"),
        ("truncated__pdfcpu_golang_first60pct.pdf", "MALFORMED_PDF"),
    ],
)
def test_pdfs_no_job_could_open_are_refused_at_upload_with_the_jobs_reason(
    stack: Stack, acme: RestClient, filename: str, reason: str
) -> None:
    """The scanner's opening check says what the job would have failed with; nothing is queued or kept."""
    before = stored_objects(stack)
    refused = acme.upload((DATA / filename).read_bytes(), filename=filename)
    assert (refused.status, refused.reason()) == (400, reason), refused.body
    assert stored_objects(stack) == before


def test_malware_is_refused_and_nothing_is_kept(stack: Stack, acme: RestClient) -> None:
    if stack.clamd is None:
        pytest.skip("clamd is not installed")
    before = stored_objects(stack)
    refused = acme.upload(_eicar_pdf(), filename="eicar.pdf")
    assert refused.status == 400
    assert refused.reason() == "MALWARE_DETECTED"
    assert stored_objects(stack) == before


def _pdf_with_action(action: pikepdf.Dictionary) -> bytes:
    pdf = pikepdf.new()
    pdf.add_blank_page()
    pdf.Root.OpenAction = pdf.make_indirect(action)
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def test_launch_actions_are_refused_javascript_is_allowed(stack: Stack, acme: RestClient) -> None:
    before = stored_objects(stack)
    launch = pikepdf.Dictionary(S=pikepdf.Name.Launch, F=pikepdf.String("cmd.exe"))
    refused = acme.upload(_pdf_with_action(launch), filename="launch.pdf")
    assert (refused.status, refused.reason()) == (400, "ACTIVE_CONTENT_REFUSED")
    assert stored_objects(stack) == before
    script = pikepdf.Dictionary(S=pikepdf.Name.JavaScript, JS=pikepdf.String("app.alert('hi')"))
    accepted = acme.upload(_pdf_with_action(script), filename="script.pdf")
    assert accepted.status == 200, accepted.body


def test_input_errors_are_json_with_reasons(stack: Stack, acme: RestClient) -> None:
    before = stored_objects(stack)
    not_pdf = acme.upload(b"GIF89a" + b"\x00" * 4096, filename="cat.gif")
    assert (not_pdf.status, not_pdf.reason()) == (400, "NOT_A_PDF")
    bad_level = acme.upload((DATA / "pypdf__jpeg.pdf").read_bytes(), level="ultra")
    assert (bad_level.status, bad_level.reason()) == (400, "INVALID_LEVEL")
    assert stored_objects(stack) == before

    missing = acme.request("GET", "/v1/jobs/00000000-0000-4000-8000-000000000000")
    missing.assert_error(404, 5, "JOB_NOT_FOUND", "jobs.pdfsmaller")
    # Envoy's own answers (deploy/envoy/envoy.yaml local_reply_config), shaped like the gateway's.
    unknown_path = acme.request("GET", "/v1/nothing-here")
    unknown_path.assert_error(404, 5, "NOT_FOUND", "envoy")
    unknown_parameter = acme.request("GET", "/v1/jobs?colour=blue")
    unknown_parameter.assert_error(400, 3, "BAD_REQUEST", "envoy")
    assert "colour" in unknown_parameter.json()["message"]


def test_oversized_upload_is_413_json(acme: RestClient) -> None:
    def body() -> Iterator[bytes]:
        yield b"%PDF-1.7\n"
        chunk = b"\x00" * (1024 * 1024)
        for _ in range(101):
            yield chunk

    reply = acme.upload(body(), filename="huge.pdf")
    info = reply.assert_error(413, 8, "PAYLOAD_TOO_LARGE", "envoy")
    assert info["metadata"] == {"max_bytes": str(100 * 1024 * 1024)}
    assert reply.json()["message"] == f"request body larger than {100 * 1024 * 1024} bytes"


def test_tenants_see_only_their_own_jobs(stack: Stack, acme: RestClient) -> None:
    created = acme.upload((DATA / "pypdf__libreoffice-form.pdf").read_bytes(), filename="form.pdf").json()
    globex = RestClient(stack.url, API_KEYS["globex"])
    assert globex.request("GET", f"/v1/jobs/{created['id']}").status == 404
    assert all(job["id"] != created["id"] for job in globex.request("GET", "/v1/jobs").json().get("jobs", []))
    assert any(job["id"] == created["id"] for job in acme.request("GET", "/v1/jobs").json()["jobs"])
    anonymous = RestClient(stack.url)
    reply = anonymous.request("GET", f"/v1/jobs/{created['id']}")
    assert (reply.status, reply.reason()) == (401, "API_KEY_MISSING")


def test_grpc_clients_use_the_same_port(stack: Stack) -> None:
    metadata = (("x-api-key", API_KEYS["acme"]),)
    source = (DATA / "pypdf__libreoffice-form.pdf").read_bytes()
    with grpc.insecure_channel(stack.url.removeprefix("http://")) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="pdfsmaller.gateway.v1.GatewayService"), timeout=10
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stub = public_grpc.GatewayServiceStub(channel)

        def messages() -> Iterator[public.CreateJobRequest]:
            yield public.CreateJobRequest(filename="form.pdf", level="lossless", request_id="grpc-req-1")
            for start in range(0, len(source), 10_000):
                yield public.CreateJobRequest(file=httpbody_pb2.HttpBody(data=source[start : start + 10_000]))

        job = stub.CreateJob(messages(), metadata=metadata, timeout=60)
        again = stub.CreateJob(messages(), metadata=metadata, timeout=60)
        assert again.id == job.id  # request_id makes the create idempotent
        states = [
            update.state for update in stub.WatchJob(public.WatchJobRequest(id=job.id), metadata=metadata, timeout=90)
        ]
        assert states[-1] == public.JOB_STATE_SUCCEEDED
        chunks = stub.GetJobResult(public.GetJobResultRequest(id=job.id), metadata=metadata, timeout=60)
        data = b"".join(chunk.data for chunk in chunks)
        assert (
            hashlib.sha256(data).hexdigest()
            == stub.GetJob(public.GetJobRequest(id=job.id), metadata=metadata, timeout=10).output_sha256
        )


def test_grpcurl_lists_the_public_service(stack: Stack) -> None:
    grpcurl = Path(__file__).resolve().parents[1] / ".venv/bin/grpcurl"  # linked by make install
    listed = subprocess.run(
        [str(grpcurl), "-plaintext", stack.url.removeprefix("http://"), "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "pdfsmaller.gateway.v1.GatewayService" in listed.stdout.split()


def _traced_job(client: RestClient, trace_id: str) -> str:
    """Upload inside the caller's trace (a W3C traceparent) and wait for success; the job's id."""
    created = client.request(
        "POST",
        "/v1/jobs?filename=traced.pdf",
        (DATA / "pypdf__libreoffice-form.pdf").read_bytes(),
        {"content-type": "application/pdf", "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
    )
    assert created.status == 200, created.body
    job_id: str = created.json()["id"]
    assert client.wait(job_id)["state"] == "JOB_STATE_SUCCEEDED"
    return job_id


def test_one_trace_from_envoy_to_the_worker(acme: RestClient, otlp_receiver: OtlpReceiver) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    _traced_job(acme, trace_id)
    expected = {
        ("pdfsmaller-envoy", "ingress"),
        # Server spans (the instrumentation names them with a leading slash) ...
        ("pdfsmaller-gateway", "/pdfsmaller.gateway.v1.GatewayService/CreateJob"),
        ("pdfsmaller-storage", "/pdfsmaller.storage.v1.StorageService/PutObject"),
        ("pdfsmaller-scanner", "/pdfsmaller.scanner.v1.ScannerService/ScanObject"),
        ("pdfsmaller-jobs", "/pdfsmaller.jobs.v1.JobsService/CreateJob"),
        # ... and the worker's, which join the upload's trace through the traceparent stored with the job.
        ("pdfsmaller-compressor", "compress job"),
        ("pdfsmaller-compressor", "pdfsmaller.storage.v1.StorageService/GetObject"),
        ("pdfsmaller-jobs", "/pdfsmaller.jobs.v1.JobsService/CompleteJob"),
    }
    deadline = time.monotonic() + 20  # Envoy flushes every 5 s
    while not expected <= {
        (service, name.split(" ")[0] if service == "pdfsmaller-envoy" else name)
        for service, name in otlp_receiver.in_trace(trace_id)
    }:
        assert time.monotonic() < deadline, "\n".join(map(str, sorted(otlp_receiver.in_trace(trace_id))))
        time.sleep(0.2)


def _files_of(stack: Stack, job_id: str) -> set[str]:
    return {name for name in stored_objects(stack) if job_id in name}


def test_cancel_a_queued_job_then_delete_it(stack: Stack, acme: RestClient) -> None:
    source = (DATA / "pypdf__libreoffice-form.pdf").read_bytes()
    # No worker while the job is created and cancelled, so it is certainly still queued. SIGTERM: a
    # worker finishes the job in hand first.
    stop_process(stack.service("compressor").process, "compressor", timeout=60)
    try:
        job = acme.create(source, filename="queued.pdf")
        assert job["state"] == "JOB_STATE_QUEUED"
        cancelled = acme.request("POST", f"/v1/jobs/{job['id']}:cancel")
        assert cancelled.status == 200, cancelled.body
        assert cancelled.json()["state"] == "JOB_STATE_CANCELLED"
        again = acme.request("POST", f"/v1/jobs/{job['id']}:cancel")  # a no-op, not an error
        assert (again.status, again.json()["state"]) == (200, "JOB_STATE_CANCELLED")
        assert acme.job(job["id"])["state"] == "JOB_STATE_CANCELLED"
    finally:
        stack.start_service("compressor")
    result = acme.request("GET", f"/v1/jobs/{job['id']}/result")
    result.assert_error(400, 9, "JOB_NOT_SUCCEEDED", "gateway.pdfsmaller")
    assert "CANCELLED" in result.json()["message"]
    # The queue is oldest first: once a later job is done, a worker has been past the cancelled one.
    later = acme.create(source, filename="later.pdf")
    assert acme.wait(later["id"])["state"] == "JOB_STATE_SUCCEEDED"
    assert acme.job(job["id"])["state"] == "JOB_STATE_CANCELLED"

    assert _files_of(stack, job["id"]) == {f"inputs/{job['id']}.pdf@object"}
    deleted = acme.request("DELETE", f"/v1/jobs/{job['id']}")
    assert (deleted.status, deleted.json()) == (200, {})
    acme.request("GET", f"/v1/jobs/{job['id']}").assert_error(404, 5, "JOB_NOT_FOUND", "jobs.pdfsmaller")
    assert _files_of(stack, job["id"]) == set()


def test_delete_removes_a_finished_job_and_its_files(stack: Stack, acme: RestClient) -> None:
    job = acme.create((DATA / "pypdf__libreoffice-form.pdf").read_bytes(), filename="done.pdf")
    assert acme.wait(job["id"])["state"] == "JOB_STATE_SUCCEEDED"
    assert _files_of(stack, job["id"]) == {f"inputs/{job['id']}.pdf@object", f"outputs/{job['id']}-1.pdf@object"}
    finished = acme.request("POST", f"/v1/jobs/{job['id']}:cancel")
    finished.assert_error(400, 9, "JOB_FINISHED", "jobs.pdfsmaller")
    globex = RestClient(stack.url, API_KEYS["globex"])
    globex.request("DELETE", f"/v1/jobs/{job['id']}").assert_error(404, 5, "JOB_NOT_FOUND", "jobs.pdfsmaller")
    assert len(_files_of(stack, job["id"])) == 2  # another tenant cannot delete it

    deleted = acme.request("DELETE", f"/v1/jobs/{job['id']}")
    assert (deleted.status, deleted.json()) == (200, {})
    assert _files_of(stack, job["id"]) == set()
    for method, path in (
        ("GET", f"/v1/jobs/{job['id']}"),
        ("GET", f"/v1/jobs/{job['id']}/result"),
        ("POST", f"/v1/jobs/{job['id']}:cancel"),
        ("DELETE", f"/v1/jobs/{job['id']}"),
    ):
        acme.request(method, path).assert_error(404, 5, "JOB_NOT_FOUND", "jobs.pdfsmaller")
    assert all(listed["id"] != job["id"] for listed in acme.request("GET", "/v1/jobs").json()["jobs"])


LOGGED_SERVICES = ("gateway", "jobs", "compressor")
LEVELS = {"debug", "info", "warning", "error", "critical"}


def _new_log_lines(stack: Stack, offsets: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """The lines each service logged since `offsets`, parsed; every one must be one JSON object."""
    lines: dict[str, list[dict[str, Any]]] = {}
    for service, offset in offsets.items():
        with (stack.data_dir / "logs" / f"{service}.log").open("rb") as handle:
            handle.seek(offset)
            raw = handle.read().decode()
        complete = raw[: raw.rfind("\n") + 1]  # a line being written is read next time
        lines[service] = []
        for line in complete.splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"{service} logged a line that is not JSON: {line!r}")
            assert isinstance(entry, dict), line
            lines[service].append(entry)
    return lines


def test_json_log_lines_carry_the_requests_trace(stack: Stack, acme: RestClient) -> None:
    logs = stack.data_dir / "logs"
    offsets = {service: (logs / f"{service}.log").stat().st_size for service in LOGGED_SERVICES}
    trace_id = secrets.token_hex(16)
    job_id = _traced_job(acme, trace_id)

    def traced(entry: dict[str, Any]) -> bool:
        return entry.get("trace_id") == trace_id

    def about_the_job(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [entry for entry in entries if traced(entry) and entry.get("job_id") == job_id]

    # Every service that handled the job says so in its trace (jobs may write its last line just after
    # the client saw SUCCEEDED; this only covers a slow machine).
    deadline = time.monotonic() + 10
    while True:
        lines = _new_log_lines(stack, offsets)
        if all(about_the_job(entries) for entries in lines.values()):
            break
        assert time.monotonic() < deadline, {service: about_the_job(entries) for service, entries in lines.items()}
        time.sleep(0.2)

    for service, entries in lines.items():
        for entry in entries:
            assert {"time", "level", "service", "logger", "message"} <= set(entry), entry
            assert datetime.fromisoformat(entry["time"]).utcoffset() is not None, entry
            assert entry["level"] in LEVELS, entry
            assert entry["service"] == service, entry
            assert isinstance(entry["logger"], str), entry
            assert entry["logger"], entry
            assert isinstance(entry["message"], str), entry
            if "trace_id" in entry:
                assert re.fullmatch(r"[0-9a-f]{32}", entry["trace_id"]), entry
                assert re.fullmatch(r"[0-9a-f]{16}", entry["span_id"]), entry
            # Whatever a service logs about this job, it logs inside the job's trace.
            if entry.get("job_id") == job_id or job_id in entry["message"]:
                assert traced(entry), entry
    created_lines = about_the_job(lines["gateway"])
    assert created_lines[0]["level"] == "info"
    assert created_lines[0]["tenant"] == "acme"
    assert any("succeeded" in entry["message"] for entry in about_the_job(lines["jobs"])), lines["jobs"]
    assert any("compressed" in entry["message"] for entry in about_the_job(lines["compressor"])), lines["compressor"]
