"""OperatorService on a real system: real compressor workers, real jobs, real stored objects.

A killed worker shows LOST and ExpireLease requeues its job at once; RequeueJobs runs failed jobs
again with their attempts reset (a dry run changes nothing); PurgeJobs deletes rows and objects;
PauseQueue stops leasing at once and ResumeQueue restarts it; DrainWorker lets the running job finish
and the worker takes no more. These tests kill, pause and drain, so they run on a small stack of their
own (no clamd, no Prometheus) with short leases and a short lost-after time, never the session stack.
Each test leaves it as it found it: one live worker, not drained, the queue running.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs_pb
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as jobs_grpc
from pdfsmaller.jobs.v1 import operator_service_pb2 as pb
from pdfsmaller.jobs.v1 import operator_service_pb2_grpc as pb_grpc

from devtools.stack.stack import Ports, Stack
from services.compressor.tests.builders import pixel_bomb_pdf
from tests.e2e_client import RestClient
from tests.plugins.stack import GENEROUS_RATE_LIMITS, stored_objects
from tests.test_resilience import _slow_pdf

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data"
TENANT = "public"  # the stack runs without API_KEYS: anonymous uploads
QUEUED, RUNNING = jobs_pb.JOB_STATE_QUEUED, jobs_pb.JOB_STATE_RUNNING
SUCCEEDED, FAILED = jobs_pb.JOB_STATE_SUCCEEDED, jobs_pb.JOB_STATE_FAILED
# Renewed every 2 s while a job runs, a lease call every second while idle: a live worker is seen at
# least every 2 s, so 6 s of silence (LOST) leaves room for a loaded machine.
STACK_ENV = {
    "LEASE_SECONDS": "6",
    "LEASE_WAIT_SECONDS": "1",
    "WORKER_LOST_AFTER_SECONDS": "6",
    # No sweep requeues the killed worker's lapsed lease during the test: only ExpireLease does.
    "SWEEP_INTERVAL_SECONDS": "3600",
    **GENEROUS_RATE_LIMITS,
}
T = TypeVar("T")


@dataclass
class Operated:
    """The stack, an operator's stub with its token, and the JobsService stub of the workers' side."""

    stack: Stack
    operator: pb_grpc.OperatorServiceStub
    jobs: jobs_grpc.JobsServiceStub
    rest: RestClient
    metadata: tuple[tuple[str, str], ...]

    def call(self, method: str, request: Any) -> Any:
        return getattr(self.operator, method)(request, metadata=self.metadata, timeout=15)

    def job(self, job_id: str) -> jobs_pb.Job:
        return self.jobs.GetJob(jobs_pb.GetJobRequest(id=job_id, tenant=TENANT), timeout=10)

    def workers(self) -> list[pb.Worker]:
        return list(self.call("ListWorkers", pb.ListWorkersRequest()).workers)

    def live_worker(self) -> pb.Worker:
        """The one worker that is not LOST (earlier tests may have left lost ones behind)."""
        live = [worker for worker in self.workers() if worker.state != pb.WORKER_STATE_LOST]
        assert len(live) == 1, live
        return live[0]

    def upload(self, data: bytes, filename: str = "in.pdf") -> str:
        return str(self.rest.create(data, filename=filename)["id"])


def eventually(check: Callable[[], T | None], what: str, timeout: float = 30.0, interval: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while (value := check()) is None or value is False:
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(interval)
    return value


def in_state(ops: Operated, job_id: str, *states: int) -> Callable[[], jobs_pb.Job | None]:
    def check() -> jobs_pb.Job | None:
        job = ops.job(job_id)
        return job if job.state in states else None

    return check


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operated]:
    stack = Stack(
        data_dir=tmp_path_factory.mktemp("operated"),
        ports=Ports.any(),
        with_clamd=False,
        durable=False,
        extra_env=STACK_ENV,
    )
    try:
        stack.start(timeout=90)
        with grpc.insecure_channel(stack.service("jobs").address) as channel:
            operated = Operated(
                stack,
                pb_grpc.OperatorServiceStub(channel),
                jobs_grpc.JobsServiceStub(channel),
                RestClient(stack.url),
                (("authorization", f"Bearer {stack.operator_token}"),),
            )
            eventually(lambda: operated.workers() or None, "the compressor's first lease call")
            yield operated
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def slow_pdf() -> bytes:
    """Several seconds of engine work: a job that is surely RUNNING while the test acts."""
    return _slow_pdf(5)


@pytest.fixture(scope="module")
def failing_pdf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """An image declaring 10^10 pixels: its job fails TOO_COMPLEX (not retryable), before anything is decoded."""
    return pixel_bomb_pdf(tmp_path_factory.mktemp("bomb") / "bomb.pdf").read_bytes()


def test_a_killed_worker_is_lost_and_expire_lease_requeues_its_job_at_once(ops: Operated, slow_pdf: bytes) -> None:
    job_id = ops.upload(slow_pdf, "slow.pdf")
    running = eventually(in_state(ops, job_id, RUNNING), "the job running", interval=0.05)
    worker = ops.live_worker()
    assert worker.state == pb.WORKER_STATE_ACTIVE
    assert job_id in worker.job_ids
    try:
        ops.stack.kill_service("compressor")  # SIGKILL: no goodbye, heartbeats just stop

        def lost() -> pb.Worker | None:
            [seen] = [w for w in ops.workers() if w.id == worker.id]
            return seen if seen.state == pb.WORKER_STATE_LOST else None

        gone = eventually(lost, "the killed worker shown LOST", timeout=30)
        assert list(gone.job_ids) == [job_id]  # still holds the lease: nothing requeued it yet
        assert ops.job(job_id).state == RUNNING

        requeued = ops.call("ExpireLease", pb.ExpireLeaseRequest(job_id=job_id))
        assert requeued.state == QUEUED
        assert ops.job(job_id).state == QUEUED
        # A second expiry has nothing to end.
        with pytest.raises(grpc.RpcError) as again:
            ops.call("ExpireLease", pb.ExpireLeaseRequest(job_id=job_id))
        assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        ops.stack.start_service("compressor")
    done = eventually(in_state(ops, job_id, SUCCEEDED, FAILED), "the requeued job done by the new worker", 60)
    assert done.state == SUCCEEDED, done
    assert done.attempts == running.attempts + 1
    assert ops.live_worker().id != worker.id


def heard_after(ops: Operated, moment: Timestamp) -> Callable[[], pb.Worker | None]:
    """The live worker once its last heartbeat came a second or more after ``moment`` (its counts then include
    what it finished by ``moment``)."""

    def check() -> pb.Worker | None:
        worker = ops.live_worker()
        return worker if worker.last_seen_time.ToNanoseconds() >= moment.ToNanoseconds() + 10**9 else None

    return check


def test_requeue_runs_failed_jobs_again_with_attempts_reset_after_a_dry_run(ops: Operated, failing_pdf: bytes) -> None:
    job_id = ops.upload(failing_pdf, "bomb.pdf")
    failed = eventually(in_state(ops, job_id, FAILED, SUCCEEDED), "the pixel bomb's job failing")
    assert (failed.state, failed.error.reason, failed.attempts) == (FAILED, "TOO_COMPLEX", 1)
    # The worker's counts arrive with its heartbeats: the baseline is one sent well after the failure.
    worker = eventually(heard_after(ops, failed.update_time), "a heartbeat after the failure")
    only_this = pb.JobFilter(ids=[job_id], states=[FAILED])

    dry = ops.call("RequeueJobs", pb.RequeueJobsRequest(filter=only_this, dry_run=True))
    assert (dry.count, list(dry.job_ids), dry.dry_run) == (1, [job_id], True)
    time.sleep(1.5)  # a worker would have leased a requeued job by now
    unchanged = ops.job(job_id)
    assert (unchanged.state, unchanged.attempts, unchanged.update_time) == (FAILED, 1, failed.update_time)

    done = ops.call("RequeueJobs", pb.RequeueJobsRequest(filter=only_this, expected_count=1))
    assert (done.count, list(done.job_ids), done.dry_run) == (1, [job_id], False)

    def failed_again() -> jobs_pb.Job | None:
        job = ops.job(job_id)
        return job if job.state == FAILED and job.update_time != failed.update_time else None

    again = eventually(failed_again, "the requeued job run and failed again")
    after = eventually(heard_after(ops, again.update_time), "a heartbeat after the second failure")
    # Reset by the requeue, then one new lease: 1 (without the reset it would be 2).
    assert again.attempts == 1
    assert again.error.reason == "TOO_COMPLEX"
    assert after.id == worker.id
    assert after.jobs_failed == worker.jobs_failed + 1  # the worker really ran it again


def test_purge_deletes_failed_jobs_rows_and_objects_after_a_dry_run(ops: Operated, failing_pdf: bytes) -> None:
    before_upload = stored_objects(ops.stack)
    job_id = ops.upload(failing_pdf, "bomb.pdf")
    eventually(in_state(ops, job_id, FAILED), "the pixel bomb's job failing")
    objects = stored_objects(ops.stack) - before_upload
    assert objects, "the failed job stored no object"
    only_this = pb.JobFilter(ids=[job_id])

    dry = ops.call("PurgeJobs", pb.PurgeJobsRequest(filter=only_this, dry_run=True))
    assert (dry.count, list(dry.job_ids), dry.dry_run, dry.objects_deleted) == (1, [job_id], True, 0)
    assert ops.job(job_id).state == FAILED
    assert objects <= stored_objects(ops.stack)

    purged = ops.call("PurgeJobs", pb.PurgeJobsRequest(filter=only_this, expected_count=1))
    assert (purged.count, list(purged.job_ids), purged.dry_run) == (1, [job_id], False)
    assert purged.objects_deleted == len(objects)
    assert not objects & stored_objects(ops.stack)
    with pytest.raises(grpc.RpcError) as missing:
        ops.job(job_id)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    listed = ops.call("ListJobs", pb.OperatorListJobsRequest(filter=only_this))
    assert list(listed.jobs) == []


def test_pause_stops_leasing_at_once_and_resume_restarts_it(ops: Operated) -> None:
    small = (DATA / "pypdf__jpeg.pdf").read_bytes()
    try:
        paused = ops.call("PauseQueue", pb.PauseQueueRequest(reason="end-to-end test"))
        assert (paused.paused, paused.reason, paused.paused_by) == (True, "end-to-end test", "oncall")
        assert paused.HasField("pause_time")
        # Uploaded right after the pause: the idle worker's long poll is woken by it, and must not take it.
        job_id = ops.upload(small)
        time.sleep(2.5)  # two of the worker's lease calls (LEASE_WAIT_SECONDS=1)
        assert ops.job(job_id).state == QUEUED
        assert ops.jobs.GetQueueStats(jobs_pb.GetQueueStatsRequest(), timeout=10).paused
        assert ops.call("GetQueueControl", pb.GetQueueControlRequest()).paused
        assert ops.live_worker().job_ids == []
    finally:
        resumed = ops.call("ResumeQueue", pb.ResumeQueueRequest())
    assert resumed.paused is False
    done = eventually(in_state(ops, job_id, SUCCEEDED, FAILED), "the job done after the resume")
    assert done.state == SUCCEEDED, done


def test_a_drained_worker_finishes_its_job_and_takes_no_more(ops: Operated, slow_pdf: bytes) -> None:
    slow_id = ops.upload(slow_pdf, "slow.pdf")
    eventually(in_state(ops, slow_id, RUNNING), "the slow job running", interval=0.05)
    worker = ops.live_worker()
    assert slow_id in worker.job_ids
    try:
        draining = ops.call("DrainWorker", pb.DrainWorkerRequest(worker_id=worker.id))
        assert draining.state == pb.WORKER_STATE_DRAINING
        next_id = ops.upload((DATA / "pypdf__jpeg.pdf").read_bytes())
        finished = eventually(in_state(ops, slow_id, SUCCEEDED, FAILED), "the running job finished", 60)
        assert finished.state == SUCCEEDED, finished  # its lease was not taken away
        time.sleep(2.5)  # two of the worker's lease calls
        assert ops.job(next_id).state == QUEUED
        [drained] = [w for w in ops.workers() if w.id == worker.id]
        assert (drained.state, list(drained.job_ids)) == (pb.WORKER_STATE_DRAINED, [])
    finally:
        back = ops.call("DrainWorker", pb.DrainWorkerRequest(worker_id=worker.id, undo=True))
    assert back.state == pb.WORKER_STATE_ACTIVE
    done = eventually(in_state(ops, next_id, SUCCEEDED, FAILED), "the next job done once taken back")
    assert done.state == SUCCEEDED, done
