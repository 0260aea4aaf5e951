"""The worker against the real jobs service (PostgreSQL + Valkey) and a real storage server."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as jobs_grpc
from pdfsmaller.storage.v1 import storage_service_pb2 as storage
from pdfsmaller.storage.v1 import storage_service_pb2_grpc as storage_grpc
from prometheus_client import CollectorRegistry

from libs.service import RunningService
from services.compressor import transfer
from services.compressor.engine import EngineError, Limits, compress_isolated_json
from services.compressor.readiness import Dependency, DependencyGate
from services.compressor.worker import Worker, WorkerConfig
from services.jobs.app import build as build_jobs
from services.jobs.settings import JobsSettings
from tests.plugins.services import in_process, local_storage

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[3] / "tests" / "data"


@dataclass
class System:
    jobs: jobs_grpc.JobsServiceStub
    storage: storage_grpc.StorageServiceStub
    work_dir: Path
    jobs_channel: grpc.Channel
    storage_channel: grpc.Channel
    storage_server: RunningService
    objects_dir: Path
    # Stops the storage started again by `start_storage` when the test ends.
    cleanup: ExitStack

    def stop_storage(self) -> None:
        self.storage_server.stop(0)

    def start_storage(self) -> None:
        """Storage back on the same address, so existing channels reconnect to it."""
        restarted = local_storage(str(self.objects_dir), listen=self.storage_server.address)
        self.storage_server = self.cleanup.enter_context(restarted)

    def submit(self, pdf: Path, sha256: str | None = None) -> str:
        job_id = str(uuid.uuid4())
        key = f"inputs/{job_id}.pdf"
        stored = transfer.upload(self.storage, key, pdf, timeout=30)
        self.jobs.CreateJob(
            jobs.CreateJobRequest(
                tenant="t",
                job_id=job_id,
                filename=pdf.name,
                options=jobs.CompressionOptions(level=jobs.COMPRESSION_LEVEL_MEDIUM),
                input_key=key,
                input_size_bytes=stored.size_bytes,
                input_sha256=sha256 if sha256 is not None else stored.sha256,
            ),
            timeout=10,
        )
        return job_id

    def worker(self, engine=compress_isolated_json, storage=None, gate=None, registry=None) -> Worker:  # type: ignore[no-untyped-def]
        config = WorkerConfig(
            worker_id="test-worker",
            lease_seconds=15,
            lease_wait_seconds=1,
            limits=Limits(cpu_seconds=60, memory_bytes=1 << 30),
            work_dir=self.work_dir,
            call_timeout_seconds=10,
        )
        return Worker(config, self.jobs, storage or self.storage, engine, registry or CollectorRegistry(), gate=gate)

    def lease_and_process(self, worker: Worker) -> None:
        # Waits out a retry's backoff (2 s at most for the first).
        lease = self.jobs.LeaseJob(
            jobs.LeaseJobRequest(worker_id="test", lease_seconds=15, wait_seconds=10), timeout=20
        )
        assert lease.HasField("job")
        worker.process(lease.job, lease.lease_token)

    def job(self, job_id: str) -> jobs.Job:
        return self.jobs.GetJob(jobs.GetJobRequest(id=job_id, tenant="t"), timeout=10)


@pytest.fixture
def system(fresh_database_url: str, redis_url: str, tmp_path: Path, storage_server: RunningService) -> Iterator[System]:
    settings = JobsSettings(
        listen="127.0.0.1:0",
        metrics_port=0,
        database_url=fresh_database_url,
        redis_url=redis_url,
        storage_addr=storage_server.address,
        retention_hours=168,
        max_attempts=3,
        sweep_interval_seconds=1,
        database_pool_size=4,
        max_workers=64,
    )
    with ExitStack() as cleanup:
        running_jobs = cleanup.enter_context(
            in_process(build_jobs, settings, event_prefix=f"test-{uuid.uuid4().hex[:8]}")
        )
        jobs_channel = cleanup.enter_context(grpc.insecure_channel(running_jobs.address))
        storage_channel = cleanup.enter_context(grpc.insecure_channel(storage_server.address))
        (tmp_path / "work").mkdir()
        yield System(
            jobs_grpc.JobsServiceStub(jobs_channel),
            storage_grpc.StorageServiceStub(storage_channel),
            tmp_path / "work",
            jobs_channel,
            storage_channel,
            storage_server,
            tmp_path / "objects",
            cleanup,
        )


def test_job_is_compressed_stored_and_completed(system: System) -> None:
    source = DATA / "pypdf__jpeg.pdf"
    job_id = system.submit(source)
    system.lease_and_process(system.worker())
    job = system.job(job_id)
    assert job.state == jobs.JOB_STATE_SUCCEEDED, job.error
    assert 0 < job.output_size_bytes <= source.stat().st_size
    assert job.output_key == f"outputs/{job_id}-1.pdf"  # one key per attempt
    assert job.report["input_size_bytes"] == source.stat().st_size
    stored = b"".join(
        part.chunk for part in system.storage.GetObject(storage.GetObjectRequest(key=job.output_key), timeout=10)
    )
    assert hashlib.sha256(stored).hexdigest() == job.output_sha256
    assert list(system.work_dir.iterdir()) == []  # temporary files are gone


def test_encrypted_input_fails_with_its_reason(system: System) -> None:
    job_id = system.submit(DATA / "samplefiles__libreoffice-writer-password.pdf")
    system.lease_and_process(system.worker())
    job = system.job(job_id)
    assert job.state == jobs.JOB_STATE_FAILED
    assert job.error.reason == "ENCRYPTED_PDF"


def test_corrupted_input_is_not_compressed(system: System) -> None:
    job_id = system.submit(DATA / "pypdf__jpeg.pdf", sha256="0" * 64)
    system.lease_and_process(system.worker())
    job = system.job(job_id)
    assert (job.state, job.error.reason) == (jobs.JOB_STATE_FAILED, "INPUT_CORRUPTED")


def test_engine_crash_is_retried(system: System) -> None:
    def crashing_engine(*_args: object, **_kwargs: object) -> dict[str, Any]:
        raise EngineError("ENGINE_CRASHED", "the engine died")

    job_id = system.submit(DATA / "pypdf__jpeg.pdf")
    system.lease_and_process(system.worker(crashing_engine))
    job = system.job(job_id)
    assert job.state == jobs.JOB_STATE_QUEUED  # back in the queue for another attempt
    assert job.attempts == 1
    system.lease_and_process(system.worker())
    assert system.job(job_id).state == jobs.JOB_STATE_SUCCEEDED


def test_run_loop_picks_up_new_jobs_and_stops(system: System) -> None:
    stop = threading.Event()
    loop = threading.Thread(target=system.worker().run, args=(stop,))
    loop.start()
    try:
        job_id = system.submit(DATA / "pypdf__libreoffice-form.pdf")
        deadline = time.monotonic() + 30
        while system.job(job_id).state != jobs.JOB_STATE_SUCCEEDED:
            assert time.monotonic() < deadline, system.job(job_id)
            time.sleep(0.1)
    finally:
        stop.set()
        loop.join(10)
    assert not loop.is_alive()


def test_result_of_a_job_cancelled_meanwhile_is_dropped(system: System) -> None:
    job_id = system.submit(DATA / "pypdf__jpeg.pdf")

    def engine_cancelled_midway(*args: object, **kwargs: object) -> dict[str, Any]:
        system.jobs.CancelJob(jobs.CancelJobRequest(id=job_id, tenant="t"), timeout=10)
        return compress_isolated_json(*args, **kwargs)  # type: ignore[arg-type]

    system.lease_and_process(system.worker(engine_cancelled_midway))
    job = system.job(job_id)
    assert job.state == jobs.JOB_STATE_CANCELLED
    with pytest.raises(grpc.RpcError) as caught:
        system.storage.StatObject(storage.StatObjectRequest(key=f"outputs/{job_id}-1.pdf"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_storage_outage_mid_job_uses_no_attempt(system: System, closed_address: str) -> None:
    job_id = system.submit(DATA / "pypdf__jpeg.pdf")
    with grpc.insecure_channel(closed_address) as unreachable:
        system.lease_and_process(system.worker(storage=storage_grpc.StorageServiceStub(unreachable)))
    job = system.job(job_id)
    assert (job.state, job.attempts, job.outage_retries) == (jobs.JOB_STATE_QUEUED, 0, 1)
    system.lease_and_process(system.worker())
    job = system.job(job_id)
    assert (job.state, job.attempts) == (jobs.JOB_STATE_SUCCEEDED, 1)


def test_a_worker_does_not_lease_while_storage_is_down(system: System, caplog: pytest.LogCaptureFixture) -> None:
    job_id = system.submit(DATA / "pypdf__libreoffice-form.pdf")
    system.stop_storage()
    registry = CollectorRegistry()
    gate = DependencyGate(
        [
            Dependency("jobs", system.jobs_channel, "pdfsmaller.jobs.v1.JobsService"),
            Dependency("storage", system.storage_channel, "pdfsmaller.storage.v1.StorageService"),
        ],
        registry,
        cache_seconds=0.0,
    )
    checks = {"storage": 0}
    ask = gate._ask

    def counted(dependency: Dependency) -> str | None:
        checks[dependency.name] = checks.get(dependency.name, 0) + 1
        return ask(dependency)

    gate._ask = counted  # type: ignore[method-assign]
    stop = threading.Event()
    loop = threading.Thread(target=system.worker(gate=gate, registry=registry).run, args=(stop,))
    caplog.set_level(logging.INFO, logger="services.compressor.readiness")
    loop.start()
    try:
        deadline = time.monotonic() + 30
        while checks["storage"] < 3:  # the worker looked several times and found storage down
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert registry.get_sample_value("compressor_dependency_up", {"dependency": "storage"}) == 0
        job = system.job(job_id)
        assert (job.state, job.attempts, job.outage_retries) == (jobs.JOB_STATE_QUEUED, 0, 0)
        system.start_storage()
        deadline = time.monotonic() + 60
        while (job := system.job(job_id)).state != jobs.JOB_STATE_SUCCEEDED:
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        assert (job.attempts, job.outage_retries) == (1, 0)
    finally:
        stop.set()
        loop.join(30)
    assert not loop.is_alive()
    said = [record.getMessage() for record in caplog.records if record.name == "services.compressor.readiness"]
    assert len([line for line in said if line.startswith("not leasing jobs: storage unreachable")]) == 1, said
    assert len([line for line in said if line.startswith("dependencies ready again")]) == 1, said
