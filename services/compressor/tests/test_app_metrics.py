"""The built compressor's /metrics after it ran a job: per-level outcome, time and ratio, busy time and
worker threads (utilisation), its work dir's volume, the process."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import grpc
import pytest
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as jobs_grpc
from pdfsmaller.storage.v1 import storage_service_pb2_grpc as storage_grpc

from libs.service import RunningService
from libs.tests.scrape import scrape
from services.compressor import transfer
from services.compressor.app import build as build_compressor
from services.compressor.settings import CompressorSettings
from services.jobs.app import build as build_jobs
from services.jobs.settings import JobsSettings
from tests.plugins.services import StartService, loopback_env

pytestmark = pytest.mark.integration

SOURCE = Path(__file__).resolve().parents[3] / "tests" / "data" / "pypdf__jpeg.pdf"


def submit(jobs_address: str, storage_address: str) -> str:
    job_id = str(uuid.uuid4())
    with grpc.insecure_channel(storage_address) as channel:
        stored = transfer.upload(storage_grpc.StorageServiceStub(channel), f"inputs/{job_id}.pdf", SOURCE, timeout=30)
    with grpc.insecure_channel(jobs_address) as channel:
        jobs_grpc.JobsServiceStub(channel).CreateJob(
            jobs.CreateJobRequest(
                tenant="t",
                job_id=job_id,
                filename=SOURCE.name,
                options=jobs.CompressionOptions(level=jobs.COMPRESSION_LEVEL_LOW),
                input_key=f"inputs/{job_id}.pdf",
                input_size_bytes=stored.size_bytes,
                input_sha256=stored.sha256,
            ),
            timeout=10,
        )
    return job_id


def test_a_running_compressor_exposes_its_job_metrics_and_work_volume(
    fresh_database_url: str,
    redis_url: str,
    tmp_path: Path,
    storage_server: RunningService,
    service_starter: StartService,
) -> None:
    storage = {"STORAGE_ADDR": storage_server.address}
    jobs_env = {**loopback_env("jobs"), **storage, "DATABASE_URL": fresh_database_url, "REDIS_URL": redis_url}
    running_jobs = service_starter(build_jobs, JobsSettings.from_env(jobs_env), event_prefix=f"t-{uuid.uuid4().hex}")
    work_dir = tmp_path / "work"
    compressor_env = {**loopback_env("compressor"), **storage, "JOBS_ADDR": running_jobs.address}
    compressor_env |= {"WORK_DIR": str(work_dir), "LEASE_WAIT_SECONDS": "1", "WORKER_CONCURRENCY": "2"}
    compressor = service_starter(build_compressor, CompressorSettings.from_env(compressor_env), metrics=True, grace=10)
    submit(running_jobs.address, storage_server.address)
    deadline = time.monotonic() + 90
    succeeded = (("level", "low"), ("outcome", "SUCCEEDED"))
    while not scrape(compressor.metrics_port)["compressor_jobs_total"][succeeded]:
        assert time.monotonic() < deadline, "the job was not compressed"
        time.sleep(0.2)
    samples = scrape(compressor.metrics_port)
    assert samples["compressor_job_seconds_count"][(("level", "low"),)] == 1
    assert samples["pdfsmaller_compressor_compression_ratio_count"][(("level", "low"),)] == 1
    assert 0 < samples["pdfsmaller_compressor_compression_ratio_sum"][(("level", "low"),)] < 1
    assert samples["pdfsmaller_compressor_busy_seconds_total"][()] > 0
    assert samples["pdfsmaller_compressor_worker_threads"][()] == 2
    stats = os.statvfs(work_dir)
    assert samples["pdfsmaller_volume_size_bytes"] == {(("volume", "work"),): stats.f_blocks * stats.f_frsize}
    assert samples["pdfsmaller_volume_available_bytes"][(("volume", "work"),)] > 0
    assert samples["process_resident_memory_bytes"][()] > 0
