"""The compressor's worker loop feeds OperatorService: its lease calls name its host and process start,
and it says once (not at every poll) that the queue is paused, and once that it leases again."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path

import grpc
import pytest
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as pb_grpc
from pdfsmaller.jobs.v1 import operator_service_pb2 as ops
from pdfsmaller.jobs.v1 import operator_service_pb2_grpc as ops_grpc
from pdfsmaller.storage.v1 import storage_service_pb2_grpc as spb_grpc
from prometheus_client import CollectorRegistry

from libs.service import RunningService
from services.compressor.engine import Limits, compress_isolated_json
from services.compressor.worker import Worker, WorkerConfig
from services.jobs.tests.test_operator_service import AUTH, start_jobs

pytestmark = pytest.mark.integration

WORKER_LOGGER = "services.compressor.worker"


def eventually(check: Callable[[], bool], message: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


@pytest.fixture
def running_worker(
    fresh_database_url: str, redis_url: str, storage_server: RunningService, tmp_path: Path
) -> Iterator[tuple[ops_grpc.OperatorServiceStub, WorkerConfig]]:
    app, channel = start_jobs(fresh_database_url, redis_url, storage_server.address)
    storage_channel = grpc.insecure_channel(storage_server.address)
    config = WorkerConfig(
        worker_id="compressor-1",
        lease_seconds=15,
        lease_wait_seconds=1,
        limits=Limits(cpu_seconds=60, memory_bytes=1 << 30),
        work_dir=tmp_path,
        call_timeout_seconds=10,
    )
    worker = Worker(
        config,
        pb_grpc.JobsServiceStub(channel),
        spb_grpc.StorageServiceStub(storage_channel),
        compress_isolated_json,
        CollectorRegistry(),
    )
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield ops_grpc.OperatorServiceStub(channel), config
    finally:
        stop.set()
        thread.join(timeout=20)
        channel.close()
        storage_channel.close()
        app.stop(grace=0)


def test_the_worker_names_itself_and_logs_a_pause_once(
    running_worker: tuple[ops_grpc.OperatorServiceStub, WorkerConfig], caplog: pytest.LogCaptureFixture
) -> None:
    stub, config = running_worker
    caplog.set_level(logging.INFO, logger=WORKER_LOGGER)

    def listed() -> list[ops.Worker]:
        return list(stub.ListWorkers(ops.ListWorkersRequest(), metadata=AUTH, timeout=5).workers)

    eventually(lambda: [worker.id for worker in listed()] == ["compressor-1"], "the worker never made a lease call")
    (worker,) = listed()
    assert worker.host == socket.gethostname() == config.host
    assert worker.start_time.ToDatetime(tzinfo=UTC) == config.start_time
    assert worker.state == ops.WORKER_STATE_ACTIVE

    def lines(text: str) -> int:
        return sum(text in record.getMessage() for record in caplog.records if record.name == WORKER_LOGGER)

    stub.PauseQueue(ops.PauseQueueRequest(reason="test"), metadata=AUTH, timeout=5)
    eventually(lambda: lines("the queue is paused") == 1, "the worker did not say the queue is paused")
    time.sleep(3.5)  # three more polls of a second each, all answered "paused"
    assert lines("the queue is paused") == 1
    stub.ResumeQueue(ops.ResumeQueueRequest(), metadata=AUTH, timeout=5)
    eventually(lambda: lines("leasing jobs again") == 1, "the worker did not say it leases again")
    time.sleep(2.5)
    assert (lines("the queue is paused"), lines("leasing jobs again")) == (1, 1)
