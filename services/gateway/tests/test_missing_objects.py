"""A job's stored object gone from storage (deleted by hand, or swept before a database restore brought
its job back), through the gateway's real wiring against real jobs (PostgreSQL, Valkey), storage and
scanner services: the client gets a stable reason and a plain message, never the object key or the
storage service's own error; the gateway's log names the key for the operator."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.api import httpbody_pb2
from grpc_status import rpc_status
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.gateway.v1 import gateway_service_pb2_grpc as public_grpc
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs_pb
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as jobs_grpc
from pdfsmaller.storage.v1 import storage_service_pb2 as storage_pb
from pdfsmaller.storage.v1 import storage_service_pb2_grpc as storage_grpc

from libs.errors import error_info
from libs.service import RunningService
from services.gateway.app import build as build_gateway
from services.gateway.auth import ANONYMOUS_TENANT
from services.gateway.settings import GatewaySettings
from services.jobs.app import build as build_jobs
from services.jobs.settings import JobsSettings
from services.scanner.app import build as build_scanner
from services.scanner.settings import ScannerSettings
from services.storage.tests.helpers import put_requests
from tests.plugins.services import StartService, local_storage, loopback_env

pytestmark = pytest.mark.integration

PDF = b"%PDF-1.7\n" + b"r" * 4000 + b"\n%%EOF\n"
GATEWAY_DOMAIN = "gateway.pdfsmaller"
# What storage's own NOT_FOUND says about itself; none of it may reach a client.
STORAGE_INTERNALS = ("storage.pdfsmaller", "OBJECT_NOT_FOUND", "no object with this key")


@dataclass
class Stack:
    gateway: public_grpc.GatewayServiceStub
    jobs: jobs_grpc.JobsServiceStub
    storage: storage_grpc.StorageServiceStub
    objects_dir: Path


@pytest.fixture
def stack(
    fresh_database_url: str,
    redis_url: str,
    tmp_path: Path,
    storage_server: RunningService,
    service_starter: StartService,
) -> Iterator[Stack]:
    """Gateway, jobs and storage as deployed, except that the scanner reads another, empty storage: to
    it every upload is already gone, which is what storage answers for an upload deleted before its scan."""
    storage = {"STORAGE_ADDR": storage_server.address}
    jobs_env = {**loopback_env("jobs"), **storage, "DATABASE_URL": fresh_database_url, "REDIS_URL": redis_url}
    jobs = service_starter(build_jobs, JobsSettings.from_env(jobs_env), event_prefix=f"test-{uuid.uuid4().hex[:8]}")
    with local_storage(str(tmp_path / "empty")) as empty_storage:
        scanner_env = {**loopback_env("scanner"), "STORAGE_ADDR": empty_storage.address}
        scanner = service_starter(build_scanner, ScannerSettings.from_env(scanner_env))
        gateway_env = {**loopback_env("gateway"), **storage, "JOBS_ADDR": jobs.address, "SCANNER_ADDR": scanner.address}
        gateway = service_starter(build_gateway, GatewaySettings.from_env({**gateway_env, "REDIS_URL": redis_url}))
        with (
            grpc.insecure_channel(gateway.address) as gateway_channel,
            grpc.insecure_channel(jobs.address) as jobs_channel,
            grpc.insecure_channel(storage_server.address) as storage_channel,
        ):
            yield Stack(
                public_grpc.GatewayServiceStub(gateway_channel),
                jobs_grpc.JobsServiceStub(jobs_channel),
                storage_grpc.StorageServiceStub(storage_channel),
                tmp_path,
            )


def succeeded_job(stack: Stack) -> tuple[str, str]:
    """A job of the anonymous tenant that succeeded with PDF as its result, finished the way a worker
    finishes one: (job id, output key)."""
    job_id = str(uuid.uuid4())
    output_key = f"outputs/{job_id}-1.pdf"
    request = jobs_pb.CreateJobRequest(tenant=ANONYMOUS_TENANT, job_id=job_id, input_key=f"inputs/{job_id}.pdf")
    stack.jobs.CreateJob(request, timeout=5)
    leased = stack.jobs.LeaseJob(jobs_pb.LeaseJobRequest(worker_id="w", lease_seconds=30), timeout=5)
    assert leased.job.id == job_id
    stored = stack.storage.PutObject(put_requests(output_key, [PDF]), timeout=5)
    completion = jobs_pb.CompleteJobRequest(
        id=job_id,
        lease_token=leased.lease_token,
        output_key=output_key,
        output_size_bytes=stored.size_bytes,
        output_sha256=stored.sha256,
    )
    stack.jobs.CompleteJob(completion, timeout=5)
    return job_id, output_key


def download(stack: Stack, job_id: str) -> bytes:
    parts = stack.gateway.GetJobResult(public.GetJobResultRequest(id=job_id), timeout=10)
    return b"".join(part.data for part in parts)


def refusal(call: pytest.ExceptionInfo[grpc.RpcError]) -> tuple[grpc.Call, str, dict[str, str]]:
    """The failed call, its ErrorInfo reason and metadata; its domain is the gateway's own."""
    error = call.value
    assert isinstance(error, grpc.Call)
    info = error_info(error)
    assert info is not None
    assert info.domain == GATEWAY_DOMAIN
    return error, info.reason, dict(info.metadata)


def assert_says_nothing_internal(error: grpc.Call, *secrets: str) -> None:
    """The whole google.rpc.Status the client gets (the REST JSON is made from it) names none of
    `secrets` nor storage's own error."""
    status = rpc_status.from_call(error)
    assert status is not None
    sent = status.SerializeToString()
    for secret in (*secrets, *STORAGE_INTERNALS):
        assert secret.encode() not in sent, f"{secret!r} reaches the client"


def logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in record.getMessage() for record in caplog.records if record.name.startswith("services.gateway"))


def test_a_result_deleted_from_storage_is_not_found_without_its_key(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    job_id, output_key = succeeded_job(stack)
    assert hashlib.sha256(download(stack, job_id)).hexdigest() == hashlib.sha256(PDF).hexdigest()
    stack.storage.DeleteObject(storage_pb.DeleteObjectRequest(key=output_key), timeout=5)

    with caplog.at_level(logging.INFO), pytest.raises(grpc.RpcError) as caught:
        download(stack, job_id)

    error, reason, metadata = refusal(caught)
    assert (error.code(), reason, metadata) == (grpc.StatusCode.NOT_FOUND, "RESULT_NOT_FOUND", {"job_id": job_id})
    assert error.details() == "the result of this job is no longer available; upload the file again"
    assert_says_nothing_internal(error, output_key, "outputs/", str(stack.objects_dir))
    assert logged(caplog, output_key)


def test_an_upload_gone_before_its_scan_is_a_retryable_503_without_its_key(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    messages = [
        public.CreateJobRequest(filename="a.pdf"),
        public.CreateJobRequest(file=httpbody_pb2.HttpBody(data=PDF)),
    ]
    with caplog.at_level(logging.INFO), pytest.raises(grpc.RpcError) as caught:
        stack.gateway.CreateJob(iter(messages), timeout=30)

    error, reason, metadata = refusal(caught)
    assert (error.code(), reason, metadata) == (
        grpc.StatusCode.UNAVAILABLE,
        "DEPENDENCY_UNAVAILABLE",
        {"dependency": "storage"},
    )
    assert_says_nothing_internal(error, "inputs/", str(stack.objects_dir))
    assert logged(caplog, "inputs/")
    assert stack.jobs.ListJobs(jobs_pb.ListJobsRequest(tenant=ANONYMOUS_TENANT), timeout=5).jobs == []
