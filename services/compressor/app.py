"""Wiring of a compressor process: health/metrics server plus worker threads."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc
from pdfsmaller.storage.v1 import storage_service_pb2_grpc
from prometheus_client import CollectorRegistry

from libs.grpc_client import open_channel
from libs.grpc_server import RunningServer, ServerSpec
from services.compressor.engine import Limits, compress_isolated
from services.compressor.readiness import Dependency, DependencyGate
from services.compressor.settings import CompressorSettings
from services.compressor.worker import Worker, WorkerConfig

HEALTH_NAME = "pdfsmaller.compressor.v1.Worker"


@dataclass
class CompressorProcess:
    server: RunningServer
    workers: list[threading.Thread]
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> CompressorProcess:
        self.server.start()
        for thread in self.workers:
            thread.start()
        return self

    def shutdown(self, grace: float = 30.0) -> None:
        """Stop leasing; jobs in hand finish (or their leases expire and they are retried)."""
        self.stop.set()
        self.server.health.enter_graceful_shutdown()
        for thread in self.workers:
            thread.join(grace)
        self.server.stop(0)


def build(settings: CompressorSettings) -> CompressorProcess:
    jobs_channel = open_channel(settings.jobs_addr)
    storage_channel = open_channel(settings.storage_addr)
    registry = CollectorRegistry()
    # One gate for readiness and every worker thread: a worker is ready only while it can finish jobs.
    gate = DependencyGate(
        [
            Dependency("jobs", jobs_channel, "pdfsmaller.jobs.v1.JobsService"),
            Dependency("storage", storage_channel, "pdfsmaller.storage.v1.StorageService"),
        ],
        registry,
    )
    spec = ServerSpec(
        name="compressor",
        listen=settings.listen,
        address_file=settings.address_file,
        metrics_port=settings.metrics_port,
        register=lambda server: None,
        service_names=[],
        health_names=[HEALTH_NAME],
        readiness=gate.ready,
        registry=registry,
    )
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    worker = Worker(
        WorkerConfig(
            worker_id=settings.worker_id,
            lease_seconds=settings.lease_seconds,
            lease_wait_seconds=settings.lease_wait_seconds,
            limits=Limits(cpu_seconds=settings.engine_cpu_seconds, memory_bytes=settings.engine_memory_bytes),
            work_dir=settings.work_dir,
            call_timeout_seconds=settings.call_timeout_seconds,
            finish_retry_seconds=settings.finish_retry_seconds,
        ),
        jobs_service_pb2_grpc.JobsServiceStub(jobs_channel),
        storage_service_pb2_grpc.StorageServiceStub(storage_channel),
        compress_isolated,
        spec.registry,
        gate=gate,
    )
    process = CompressorProcess(server=RunningServer(spec), workers=[])
    process.workers = [
        threading.Thread(target=worker.run, args=(process.stop,), name=f"worker-{n}")
        for n in range(settings.concurrency)
    ]
    return process
