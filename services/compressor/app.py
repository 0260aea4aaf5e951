"""Wiring of a compressor process: health/metrics server plus worker threads."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Sequence

import grpc
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc
from pdfsmaller.storage.v1 import storage_service_pb2_grpc
from prometheus_client import CollectorRegistry, Counter, Gauge

from libs.grpc_client import open_channel
from libs.grpc_server import ServerSpec
from libs.metrics import VolumeUsage
from libs.service import BackgroundLoop, Loop, Service
from services.compressor.engine import Limits, compress_isolated_json
from services.compressor.engine.isolation import engine_spares
from services.compressor.readiness import Dependency, DependencyGate
from services.compressor.settings import CompressorSettings
from services.compressor.workdir import sweep_stale
from services.compressor.worker import Engine, Worker, WorkerConfig

log = logging.getLogger(__name__)

HEALTH_NAME = "pdfsmaller.compressor.v1.Worker"
# A stop lets the jobs in hand finish this long (their leases expire and they are retried otherwise).
GRACE_SECONDS = 30.0


class WorkerThreads:
    """The worker's lease loops, one thread each: stopping ends leasing at once, jobs in hand finish.

    Also closes the workers' channels at the end (after the server, whose readiness uses them too),
    unless a thread is still busy past the grace: grpcio crashes on a stub made on a closed channel,
    so those are left to the process exit.
    """

    def __init__(self, worker: Worker, count: int, channels: Sequence[grpc.Channel]) -> None:
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=worker.run, args=(self._stop,), name=f"worker-{n}") for n in range(count)
        ]
        self._channels = channels

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, grace: float) -> None:
        self._stop.set()
        deadline = time.monotonic() + grace
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        busy = sum(thread.is_alive() for thread in self._threads)
        if busy:
            log.warning("%d worker(s) still busy after the grace period; their leases will expire", busy)
            return
        for channel in self._channels:
            channel.close()


def build(settings: CompressorSettings) -> Service:
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
        register=lambda server: None,  # serves health and metrics only
        service_names=[],
        health_names=[HEALTH_NAME],
        readiness=gate.ready,
        registry=registry,
        grace_seconds=GRACE_SECONDS,
    )
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    registry.register(VolumeUsage({"work": settings.work_dir}))
    swept = sweep_stale(settings.work_dir)  # what workers killed before this start left behind
    Counter(
        "pdfsmaller_compressor_workdir_swept_folders",
        "Job folders of killed workers removed at start.",
        registry=registry,
    ).inc(swept.folders)
    Counter("pdfsmaller_compressor_workdir_swept_bytes", "Bytes of those folders.", registry=registry).inc(swept.bytes)
    # Utilisation = rate(pdfsmaller_compressor_busy_seconds_total) / this.
    threads_gauge = Gauge("pdfsmaller_compressor_worker_threads", "WORKER_CONCURRENCY here.", registry=registry)
    threads_gauge.set(settings.concurrency)
    engine, spares = _engine(settings)
    worker = Worker(
        WorkerConfig(
            worker_id=settings.worker_id,
            host=settings.worker_host,
            lease_seconds=settings.lease_seconds,
            lease_wait_seconds=settings.lease_wait_seconds,
            limits=Limits(cpu_seconds=settings.engine_cpu_seconds, memory_bytes=settings.engine_memory_bytes),
            work_dir=settings.work_dir,
            call_timeout_seconds=settings.call_timeout_seconds,
            finish_retry_seconds=settings.finish_retry_seconds,
        ),
        jobs_service_pb2_grpc.JobsServiceStub(jobs_channel),
        storage_service_pb2_grpc.StorageServiceStub(storage_channel),
        engine,
        registry,
        gate=gate,
    )
    threads = WorkerThreads(worker, settings.concurrency, [jobs_channel, storage_channel])
    # The spares start before the workers and are killed after they stopped (loops stop newest first).
    return Service(spec, background=[*spares, threads], resources=[threads])


def _engine(settings: CompressorSettings) -> tuple[Engine, list[BackgroundLoop]]:
    """The isolated engine the workers call, with one warm spare child per worker thread unless turned off
    (ENGINE_WARM_SPARES=false: each job starts its child). The spares' loop starts and kills them."""
    if not settings.engine_warm_spares:
        return compress_isolated_json, []
    pool = engine_spares(settings.concurrency)
    return functools.partial(compress_isolated_json, spares=pool), [Loop(on_start=pool.start, on_stop=pool.close)]
