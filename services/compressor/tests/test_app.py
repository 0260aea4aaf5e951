"""The compressor's real wiring, `build(settings)`, in-process against jobs and storage built by their
own `build()` (real PostgreSQL and Valkey): it takes a job to SUCCEEDED, and its readiness follows
the jobs service going away and coming back without a traceback per check."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as jobs_grpc
from pdfsmaller.storage.v1 import storage_service_pb2_grpc as storage_grpc
from prometheus_client import CollectorRegistry

from libs.service import RunningService
from services.compressor import transfer
from services.compressor.app import HEALTH_NAME
from services.compressor.app import build as build_compressor
from services.compressor.readiness import Dependency, DependencyGate
from services.compressor.settings import CompressorSettings
from services.jobs.app import build as build_jobs
from services.jobs.settings import JobsSettings
from tests.plugins.services import StartService, loopback_env

pytestmark = pytest.mark.integration

SOURCE = Path(__file__).resolve().parents[3] / "tests" / "data" / "pypdf__jpeg.pdf"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class System:
    jobs: RunningService
    jobs_settings: JobsSettings
    event_prefix: str
    compressor: RunningService
    storage_address: str
    start: StartService

    def restart_jobs(self) -> None:
        """Jobs back on the address the compressor dials, so its channel reconnects."""
        settings = dataclasses.replace(self.jobs_settings, listen=self.jobs.address)
        self.jobs = self.start(build_jobs, settings, event_prefix=self.event_prefix)

    def submit(self) -> str:
        job_id = str(uuid.uuid4())
        key = f"inputs/{job_id}.pdf"
        with grpc.insecure_channel(self.storage_address) as channel:
            stored = transfer.upload(storage_grpc.StorageServiceStub(channel), key, SOURCE, timeout=30)
        request = jobs.CreateJobRequest(
            tenant="t",
            job_id=job_id,
            filename=SOURCE.name,
            input_key=key,
            input_size_bytes=stored.size_bytes,
            input_sha256=stored.sha256,
        )
        with grpc.insecure_channel(self.jobs.address) as channel:
            jobs_grpc.JobsServiceStub(channel).CreateJob(request, timeout=10)
        return job_id

    def job(self, job_id: str) -> jobs.Job:
        with grpc.insecure_channel(self.jobs.address) as channel:
            return jobs_grpc.JobsServiceStub(channel).GetJob(jobs.GetJobRequest(id=job_id, tenant="t"), timeout=10)

    def health(self) -> int:
        with grpc.insecure_channel(self.compressor.address) as channel:
            request = health_pb2.HealthCheckRequest(service=HEALTH_NAME)
            return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status)


@pytest.fixture
def system(
    fresh_database_url: str,
    redis_url: str,
    tmp_path: Path,
    storage_server: RunningService,
    service_starter: StartService,
) -> System:
    storage = {"STORAGE_ADDR": storage_server.address}
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    jobs_settings = JobsSettings.from_env(
        {**loopback_env("jobs"), **storage, "DATABASE_URL": fresh_database_url, "REDIS_URL": redis_url}
    )
    running_jobs = service_starter(build_jobs, jobs_settings, event_prefix=prefix)
    compressor_env = {**loopback_env("compressor"), **storage, "JOBS_ADDR": running_jobs.address}
    compressor_env |= {"WORK_DIR": str(tmp_path / "work"), "LEASE_WAIT_SECONDS": "1"}
    left_by_a_killed_worker = tmp_path / "work" / "job-deadbeef-left"
    left_by_a_killed_worker.mkdir(parents=True)
    long_ago = time.time() - 3600
    os.utime(left_by_a_killed_worker, (long_ago, long_ago))
    compressor = service_starter(build_compressor, CompressorSettings.from_env(compressor_env), grace=10)
    return System(running_jobs, jobs_settings, prefix, compressor, storage_server.address, service_starter)


def eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_the_built_compressor_takes_a_job_to_succeeded(system: System, tmp_path: Path) -> None:
    eventually(lambda: system.health() == SERVING, "the compressor never became ready")
    assert not (tmp_path / "work" / "job-deadbeef-left").exists(), "the start did not sweep the work folder"
    job_id = system.submit()
    eventually(lambda: system.job(job_id).state == jobs.JOB_STATE_SUCCEEDED, "the job did not succeed", 90)
    assert system.job(job_id).output_size_bytes > 0


def test_readiness_follows_jobs_down_and_back_logging_each_change_once(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    eventually(lambda: system.health() == SERVING, "the compressor never became ready")
    system.jobs.stop(0)
    eventually(lambda: system.health() == NOT_SERVING, "still SERVING with jobs stopped")
    time.sleep(5)  # two more readiness intervals (2 s) with jobs still down
    system.restart_jobs()
    eventually(lambda: system.health() == SERVING, "not SERVING again once jobs is back")
    ours = [record for record in caplog.records if record.name.startswith(("libs.grpc_server", "services.compressor"))]
    assert not [record for record in ours if record.exc_info], "a readiness check logged a traceback"
    # One line per change, not one per check. The gate may see jobs "not ready" (its graceful stop)
    # before "unreachable": two problems, so two lines at most.
    gate = [record.getMessage() for record in ours if record.name == "services.compressor.readiness"]
    assert 1 <= len([message for message in gate if message.startswith("not leasing jobs: jobs")]) <= 2, gate
    assert all(first != second for first, second in itertools.pairwise(gate)), gate
    server = [record.getMessage() for record in ours if record.name == "libs.grpc_server"]
    assert server.count("compressor not ready") == 1, server


class ClosedChannel:
    """Answers as a closed channel's stubs do: ValueError, not grpc.RpcError. (A real closed channel
    cannot stand in: grpcio crashes the process when a stub is made on one.)"""

    def unary_unary(self, *args: object, **kwargs: object) -> Any:
        def call(*call_args: object, **call_kwargs: object) -> Any:
            raise ValueError("Cannot invoke RPC on closed channel!")

        return call

    unary_stream = unary_unary


def test_a_dependency_that_cannot_be_checked_is_a_problem_not_an_error() -> None:
    channel: Any = ClosedChannel()
    gate = DependencyGate([Dependency("jobs", channel, "pdfsmaller.jobs.v1.JobsService")], CollectorRegistry())
    assert gate.problem() == "jobs cannot be checked (ValueError)"
    assert not gate.ready()


def _engine_children() -> list[int]:
    """This process's engine children that are alive (spares waiting, or at work)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"services.compressor.engine.child" in cmdline:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize("spares", ["true", "false"])
def test_the_warm_spares_start_with_the_workers_and_leave_nothing_after_the_stop(
    spares: str, tmp_path: Path, service_starter: StartService
) -> None:
    # Jobs and storage unreachable: the workers wait at their gate, the spares wait for jobs.
    unreachable = {"JOBS_ADDR": "127.0.0.1:9", "STORAGE_ADDR": "127.0.0.1:9"}
    env = {**loopback_env("compressor"), **unreachable, "WORK_DIR": str(tmp_path), "WORKER_CONCURRENCY": "2"}
    settings = CompressorSettings.from_env({**env, "ENGINE_WARM_SPARES": spares})
    assert _engine_children() == []
    compressor = service_starter(build_compressor, settings)
    if spares == "true":
        eventually(lambda: len(_engine_children()) == 2, "not one spare per worker thread", timeout=20)
    else:
        time.sleep(1)
        assert _engine_children() == []
    compressor.stop(5)
    assert _engine_children() == []
