"""The gateway's real wiring, `build(settings)`, in-process against jobs, storage, scanner and a
compressor that are built by their own `build()` (real PostgreSQL and Valkey): one upload through
the public API from CreateJob to the downloaded result."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.api import httpbody_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.gateway.v1 import gateway_service_pb2_grpc as public_grpc

from libs.service import RunningService
from services.compressor.app import build as build_compressor
from services.compressor.settings import CompressorSettings
from services.gateway.app import SERVICE_NAME
from services.gateway.app import build as build_gateway
from services.gateway.settings import GatewaySettings
from services.jobs.app import build as build_jobs
from services.jobs.settings import JobsSettings
from services.scanner.app import build as build_scanner
from services.scanner.settings import ScannerSettings
from tests.plugins.services import StartService, loopback_env

pytestmark = pytest.mark.integration

SOURCE = Path(__file__).resolve().parents[3] / "tests" / "data" / "pypdf__jpeg.pdf"
CHUNK = 64 * 1024
FINISHED = (public.JOB_STATE_SUCCEEDED, public.JOB_STATE_FAILED, public.JOB_STATE_CANCELLED)


@pytest.fixture
def gateway(
    fresh_database_url: str,
    redis_url: str,
    tmp_path: Path,
    storage_server: RunningService,
    service_starter: StartService,
) -> Iterator[grpc.Channel]:
    """A channel to the gateway; everything behind it runs in this process."""
    storage = {"STORAGE_ADDR": storage_server.address}
    jobs = service_starter(
        build_jobs,
        JobsSettings.from_env(
            {**loopback_env("jobs"), **storage, "DATABASE_URL": fresh_database_url, "REDIS_URL": redis_url}
        ),
        event_prefix=f"test-{uuid.uuid4().hex[:8]}",
    )
    scanner = service_starter(build_scanner, ScannerSettings.from_env({**loopback_env("scanner"), **storage}))
    compressor_env = {**loopback_env("compressor"), **storage, "JOBS_ADDR": jobs.address}
    compressor_env |= {"WORK_DIR": str(tmp_path / "work"), "LEASE_WAIT_SECONDS": "1"}
    service_starter(build_compressor, CompressorSettings.from_env(compressor_env), grace=10)
    gateway_env = {**loopback_env("gateway"), **storage, "JOBS_ADDR": jobs.address, "SCANNER_ADDR": scanner.address}
    running = service_starter(build_gateway, GatewaySettings.from_env({**gateway_env, "REDIS_URL": redis_url}))
    with grpc.insecure_channel(running.address) as channel:
        yield channel


def upload(data: bytes) -> Iterator[public.CreateJobRequest]:
    yield public.CreateJobRequest(filename=SOURCE.name)
    for start in range(0, len(data), CHUNK):
        yield public.CreateJobRequest(file=httpbody_pb2.HttpBody(data=data[start : start + CHUNK]))


def finished(stub: public_grpc.GatewayServiceStub, job_id: str, timeout: float = 90.0) -> public.Job:
    deadline = time.monotonic() + timeout
    while (job := stub.GetJob(public.GetJobRequest(id=job_id), timeout=10)).state not in FINISHED:
        assert time.monotonic() < deadline, f"job still {public.JobState.Name(job.state)}"
        time.sleep(0.2)
    return job


def test_upload_is_compressed_and_downloaded_through_the_built_gateway(gateway: grpc.Channel) -> None:
    # Ready: the gateway's own health checks reached jobs and storage.
    readiness = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
    assert (
        health_pb2_grpc.HealthStub(gateway).Check(readiness, timeout=10).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    stub = public_grpc.GatewayServiceStub(gateway)
    source = SOURCE.read_bytes()
    created = stub.CreateJob(upload(source), timeout=60)  # stored, scanned, queued
    assert (created.state, created.input_sha256) == (public.JOB_STATE_QUEUED, hashlib.sha256(source).hexdigest())
    job = finished(stub, created.id)
    assert job.state == public.JOB_STATE_SUCCEEDED, job.error
    parts = stub.GetJobResult(public.GetJobResultRequest(id=job.id), timeout=30)
    headers = dict(parts.initial_metadata())
    result = b"".join(part.data for part in parts)
    assert result.startswith(b"%PDF-")
    assert len(result) == job.output_size_bytes <= len(source)
    assert hashlib.sha256(result).hexdigest() == job.output_sha256 == headers["x-content-sha256"]
