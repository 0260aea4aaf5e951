"""OperatorService over a real gRPC channel, behind its token gate: real PostgreSQL, Valkey and storage server."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import grpc
import psycopg
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from pdfsmaller.jobs.v1 import jobs_service_pb2 as pb
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as pb_grpc
from pdfsmaller.jobs.v1 import operator_service_pb2 as ops
from pdfsmaller.jobs.v1 import operator_service_pb2_grpc as ops_grpc
from pdfsmaller.storage.v1 import storage_service_pb2_grpc as spb_grpc
from prometheus_client import CollectorRegistry

from libs.errors import reason_of
from libs.service import RunningService
from services.jobs.app import JobsService, build
from services.jobs.outages import DatabaseOutages
from services.jobs.tests.conftest import ParkedCalls, service_settings
from services.jobs.tests.test_service import JobsUnderTest, Service, object_exists, put_object, rpc_error
from services.jobs.tests.test_service import create as create_job

pytestmark = pytest.mark.integration

TOKEN = "oncall-secret-token-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
# Only an event wakes an idle LeaseJob before the test's deadline (see test_service.py).
RECHECK_SECONDS = 120.0
EVENT_DEADLINE = 20.0
LONG_WAIT = 60
# Long enough that a loaded machine's pause between a heartbeat and the next check is no silence.
LOST_AFTER_SECONDS = 4.0


@dataclass
class Operator:
    service: Service
    stub: ops_grpc.OperatorServiceStub

    @property
    def jobs(self) -> pb_grpc.JobsServiceStub:
        return self.service.stub

    def sql(self, query: str, *params: object) -> list[tuple[object, ...]]:
        with psycopg.connect(self.service.database_url, autocommit=True) as conn:
            cursor = conn.execute(query.encode(), params)
            return cursor.fetchall() if cursor.description else []

    def list_ids(self, **filter_fields: object) -> list[str]:
        request = ops.OperatorListJobsRequest(filter=ops.JobFilter(**filter_fields), page_size=500)  # type: ignore[arg-type]
        return [view.job.id for view in self.stub.ListJobs(request, metadata=AUTH, timeout=5).jobs]

    def lease(self, worker: str, wait: int = 0, **fields: object) -> pb.LeaseJobResponse:
        request = pb.LeaseJobRequest(worker_id=worker, lease_seconds=30, wait_seconds=wait, **fields)  # type: ignore[arg-type]
        return self.jobs.LeaseJob(request, timeout=wait + 10)

    def fail(self, job_id: str, token: str, reason: str = "MALFORMED_PDF") -> pb.Job:
        request = pb.FailJobRequest(id=job_id, lease_token=token, error=pb.JobError(reason=reason, message="bad"))
        return self.jobs.FailJob(request, timeout=5)

    def failed_job(self, tenant: str = "t1", reason: str = "MALFORMED_PDF", **fields: object) -> pb.Job:
        """A job leased by worker `w-fail` that failed for good."""
        job = create_job(self.service, tenant=tenant, **fields)
        leased = self.lease("w-fail")
        assert leased.job.id == job.id
        return self.fail(job.id, leased.lease_token, reason)

    def worker(self, worker_id: str) -> ops.Worker:
        listed = self.stub.ListWorkers(ops.ListWorkersRequest(include_gone=True), metadata=AUTH, timeout=5)
        (worker,) = [worker for worker in listed.workers if worker.id == worker_id]
        return worker


def start_jobs(database_url: str, redis_url: str, storage_address: str) -> tuple[JobsUnderTest, grpc.Channel]:
    settings = service_settings(
        database_url,
        redis_url,
        storage_address,
        wait_recheck_seconds=RECHECK_SECONDS,
        operator_tokens={"oncall": TOKEN},
        worker_lost_after_seconds=LOST_AFTER_SECONDS,
    )
    outages = DatabaseOutages()
    service: JobsService = build(
        settings, event_prefix=f"test-{uuid.uuid4().hex}", registry=CollectorRegistry(), outages=outages
    )
    service.spec.metrics_port = None
    app = JobsUnderTest(service, service.start(), outages)
    return app, grpc.insecure_channel(app.running.address)


@pytest.fixture
def operator(fresh_database_url: str, redis_url: str, storage_server: RunningService) -> Iterator[Operator]:
    app, channel = start_jobs(fresh_database_url, redis_url, storage_server.address)
    storage_channel = grpc.insecure_channel(storage_server.address)
    try:
        service = Service(
            app, pb_grpc.JobsServiceStub(channel), spb_grpc.StorageServiceStub(storage_channel), fresh_database_url
        )
        yield Operator(service, ops_grpc.OperatorServiceStub(channel))
    finally:
        channel.close()
        storage_channel.close()
        app.stop(grace=0)


def stamp(value: datetime) -> timestamp_pb2.Timestamp:
    message = timestamp_pb2.Timestamp()
    message.FromDatetime(value)
    return message


def code_and_reason(call: object) -> tuple[grpc.StatusCode, str]:
    error = rpc_error(call)
    return error.code(), reason_of(error)


def test_every_operator_rpc_is_behind_the_token_gate(operator: Operator) -> None:
    stub = operator.stub
    calls = {
        "ListJobs": lambda metadata: stub.ListJobs(ops.OperatorListJobsRequest(), metadata=metadata, timeout=5),
        "ListWorkers": lambda metadata: stub.ListWorkers(ops.ListWorkersRequest(), metadata=metadata, timeout=5),
        "PauseQueue": lambda metadata: stub.PauseQueue(ops.PauseQueueRequest(), metadata=metadata, timeout=5),
        "PurgeJobs": lambda metadata: stub.PurgeJobs(ops.PurgeJobsRequest(), metadata=metadata, timeout=5),
    }
    for name, call in calls.items():
        for metadata in ((), (("authorization", "Bearer not-the-token-at-all-000000"),)):
            code, _ = code_and_reason(lambda call=call, metadata=metadata: call(metadata))  # type: ignore[misc]
            assert code == grpc.StatusCode.UNAUTHENTICATED, name
    assert not stub.GetQueueControl(ops.GetQueueControlRequest(), metadata=AUTH, timeout=5).paused


def test_list_jobs_filters_each_narrow_the_list(operator: Operator) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    failed = operator.failed_job(tenant="t1", reason="MALFORMED_PDF")
    running = create_job(operator.service, tenant="t1")
    token = operator.lease("w-run").lease_token
    high = pb.CompressionOptions(level=pb.COMPRESSION_LEVEL_HIGH)
    queued_t2 = create_job(operator.service, tenant="t2", options=high)
    old = create_job(operator.service, tenant="t3")
    operator.sql(
        "UPDATE jobs SET created_at = now() - interval '2 hours', updated_at = now() - interval '2 hours'"
        " WHERE id = %s",
        old.id,
    )
    everything = operator.list_ids()
    assert everything == [queued_t2.id, running.id, failed.id, old.id]  # newest first
    hour_ago = stamp(datetime.now(UTC) - timedelta(hours=1))
    narrowed = {
        "states": (operator.list_ids(states=[pb.JOB_STATE_FAILED]), [failed.id]),
        "two states": (operator.list_ids(states=[pb.JOB_STATE_FAILED, pb.JOB_STATE_RUNNING]), [running.id, failed.id]),
        "reason": (operator.list_ids(reason="MALFORMED_PDF"), [failed.id]),
        "tenant": (operator.list_ids(tenant="t2"), [queued_t2.id]),
        "worker": (operator.list_ids(worker_id="w-run"), [running.id]),
        "level": (operator.list_ids(level="high"), [queued_t2.id]),
        "created_after": (operator.list_ids(created_after=hour_ago), [queued_t2.id, running.id, failed.id]),
        "created_before": (operator.list_ids(created_before=hour_ago), [old.id]),
        "updated_after": (operator.list_ids(updated_after=stamp(before)), [queued_t2.id, running.id, failed.id]),
        "updated_before": (operator.list_ids(updated_before=hour_ago), [old.id]),
        "not_updated_for": (operator.list_ids(not_updated_for=duration_pb2.Duration(seconds=600)), [old.id]),
        "ids": (operator.list_ids(ids=[old.id, failed.id]), [failed.id, old.id]),
        "all together": (
            operator.list_ids(states=[pb.JOB_STATE_RUNNING], tenant="t1", worker_id="w-run"),
            [running.id],
        ),
    }
    for name, (got, expected) in narrowed.items():
        assert got == expected, name
    view = operator.stub.ListJobs(
        ops.OperatorListJobsRequest(filter=ops.JobFilter(ids=[running.id])), metadata=AUTH, timeout=5
    ).jobs[0]
    assert view.worker_id == "w-run"
    assert view.job.state == pb.JOB_STATE_RUNNING
    assert token
    assert view.lease_start_time.ToDatetime() <= view.lease_expire_time.ToDatetime()
    assert 25 <= (view.lease_expire_time.ToDatetime() - view.lease_start_time.ToDatetime()).total_seconds() <= 30
    assert 0 <= view.age_seconds < 60
    queued_view = operator.stub.ListJobs(
        ops.OperatorListJobsRequest(filter=ops.JobFilter(ids=[old.id])), metadata=AUTH, timeout=5
    ).jobs[0]
    assert not queued_view.HasField("lease_expire_time")
    assert queued_view.age_seconds >= 7200
    invalid = {
        "INVALID_FILTER": ops.JobFilter(states=[pb.JOB_STATE_UNSPECIFIED]),
        "INVALID_JOB_ID": ops.JobFilter(ids=["nope"]),
        "INVALID_LEVEL": ops.JobFilter(level="ultra"),
    }
    for reason, job_filter in invalid.items():
        request = ops.OperatorListJobsRequest(filter=job_filter)
        assert code_and_reason(lambda request=request: operator.stub.ListJobs(request, metadata=AUTH, timeout=5)) == (  # type: ignore[misc]
            grpc.StatusCode.INVALID_ARGUMENT,
            reason,
        )


def test_list_jobs_pages_are_stable_while_jobs_arrive(operator: Operator) -> None:
    created = [create_job(operator.service, tenant=f"t{index % 3}").id for index in range(7)]
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = operator.stub.ListJobs(
            ops.OperatorListJobsRequest(page_size=3, page_token=token), metadata=AUTH, timeout=5
        )
        seen += [view.job.id for view in page.jobs]
        create_job(operator.service)  # newer than every page: never shows up behind the position
        token = page.next_page_token
        if not token:
            break
    assert seen == created[::-1]
    bad = ops.OperatorListJobsRequest(page_token="not-a-token")
    assert code_and_reason(lambda: operator.stub.ListJobs(bad, metadata=AUTH, timeout=5)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_PAGE_TOKEN",
    )


def test_requeue_dry_run_changes_nothing_and_the_real_run_makes_failed_jobs_leaseable(operator: Operator) -> None:
    failed = [operator.failed_job().id for _ in range(2)]
    create_job(operator.service)  # queued: not matched
    requeue = operator.stub.RequeueJobs
    dry = requeue(ops.RequeueJobsRequest(dry_run=True), metadata=AUTH, timeout=5)
    assert (dry.count, sorted(dry.job_ids), dry.dry_run, dry.more) == (2, sorted(failed), True, False)
    assert operator.list_ids(states=[pb.JOB_STATE_FAILED]) == failed[::-1]
    changed = ops.RequeueJobsRequest(expected_count=3)
    assert code_and_reason(lambda: requeue(changed, metadata=AUTH, timeout=5)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "COUNT_CHANGED",
    )
    assert len(operator.list_ids(states=[pb.JOB_STATE_FAILED])) == 2
    not_allowed = ops.RequeueJobsRequest(filter=ops.JobFilter(states=[pb.JOB_STATE_SUCCEEDED]))
    assert code_and_reason(lambda: requeue(not_allowed, metadata=AUTH, timeout=5)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "STATE_NOT_REQUEUEABLE",
    )
    limited = requeue(ops.RequeueJobsRequest(dry_run=True, limit=1), metadata=AUTH, timeout=5)
    assert (limited.count, limited.more) == (1, True)

    done = requeue(ops.RequeueJobsRequest(expected_count=2), metadata=AUTH, timeout=5)
    assert (done.count, done.dry_run) == (2, False)
    for job_id in failed:
        job = operator.jobs.GetJob(pb.GetJobRequest(id=job_id, tenant="t1"), timeout=5)
        assert (job.state, job.attempts, job.HasField("error"), job.HasField("retry_time")) == (
            pb.JOB_STATE_QUEUED,
            0,
            False,
            False,
        )
    leased = {operator.lease("w2").job.id for _ in range(3)}
    assert set(failed) <= leased


def test_requeueing_a_running_job_takes_its_lease(operator: Operator) -> None:
    job = create_job(operator.service)
    token = operator.lease("w1").lease_token
    done = operator.stub.RequeueJobs(
        ops.RequeueJobsRequest(filter=ops.JobFilter(states=[pb.JOB_STATE_RUNNING], worker_id="w1")),
        metadata=AUTH,
        timeout=5,
    )
    assert list(done.job_ids) == [job.id]
    renew = pb.RenewLeaseRequest(id=job.id, lease_token=token)
    assert code_and_reason(lambda: operator.jobs.RenewLease(renew, timeout=5)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "LEASE_LOST",
    )
    again = operator.lease("w2")
    assert (again.job.id, again.job.attempts) == (job.id, 1)


def test_purge_deletes_rows_and_their_objects(operator: Operator) -> None:
    key = f"jobs/{uuid.uuid4()}/input.pdf"
    put_object(operator.service, key)
    job = operator.failed_job(input_key=key)
    kept = create_job(operator.service)
    purge = operator.stub.PurgeJobs
    dry = purge(ops.PurgeJobsRequest(dry_run=True), metadata=AUTH, timeout=5)
    assert (dry.count, list(dry.job_ids), dry.objects_deleted) == (1, [job.id], 0)
    assert object_exists(operator.service, key)
    not_allowed = ops.PurgeJobsRequest(filter=ops.JobFilter(states=[pb.JOB_STATE_QUEUED]))
    assert code_and_reason(lambda: purge(not_allowed, metadata=AUTH, timeout=5)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "STATE_NOT_PURGEABLE",
    )
    done = purge(ops.PurgeJobsRequest(expected_count=1), metadata=AUTH, timeout=5)
    assert (done.count, list(done.job_ids), done.objects_deleted, done.dry_run) == (1, [job.id], 1, False)
    assert not object_exists(operator.service, key)
    gone = pb.GetJobRequest(id=job.id, tenant="t1")
    assert code_and_reason(lambda: operator.jobs.GetJob(gone, timeout=5))[1] == "JOB_NOT_FOUND"
    assert operator.list_ids() == [kept.id]


def test_a_purge_that_cannot_reach_storage_keeps_the_rows(
    fresh_database_url: str, redis_url: str, closed_address: str
) -> None:
    app, channel = start_jobs(fresh_database_url, redis_url, closed_address)
    try:
        service = Service(app, pb_grpc.JobsServiceStub(channel), None, fresh_database_url)  # type: ignore[arg-type]
        operator = Operator(service, ops_grpc.OperatorServiceStub(channel))
        job = operator.failed_job()
        error = rpc_error(lambda: operator.stub.PurgeJobs(ops.PurgeJobsRequest(), metadata=AUTH, timeout=30))
        assert (error.code(), reason_of(error)) == (grpc.StatusCode.UNAVAILABLE, "STORAGE_UNAVAILABLE")
        assert operator.list_ids() == [job.id]
    finally:
        channel.close()
        app.stop(grace=0)


def test_pause_holds_leases_and_resume_gives_the_job_at_once(operator: Operator, parked: ParkedCalls) -> None:
    job = create_job(operator.service)
    paused = operator.stub.PauseQueue(ops.PauseQueueRequest(reason="database failover"), metadata=AUTH, timeout=5)
    assert (paused.paused, paused.reason, paused.paused_by) == (True, "database failover", "oncall")
    assert paused.pause_time.ToDatetime(tzinfo=UTC) <= datetime.now(UTC)
    assert operator.stub.GetQueueControl(ops.GetQueueControlRequest(), metadata=AUTH, timeout=5) == paused
    assert operator.jobs.GetQueueStats(pb.GetQueueStatsRequest(), timeout=5).paused
    started = time.monotonic()
    nothing = operator.lease("w1", wait=1)
    # Nothing, and only after the whole wait: a held-back worker does not spin.
    assert (nothing.HasField("job"), nothing.paused, nothing.draining) == (False, True, False)
    assert time.monotonic() - started >= 1.0

    result: dict[str, pb.LeaseJobResponse] = {}
    waiter = threading.Thread(target=lambda: result.update(response=operator.lease("w1", wait=LONG_WAIT)))
    waiter.start()
    parked.wait_for()
    time.sleep(0.3)
    assert waiter.is_alive(), "a lease was given while the queue was paused"
    resumed = operator.stub.ResumeQueue(ops.ResumeQueueRequest(), metadata=AUTH, timeout=5)
    assert (resumed.paused, resumed.paused_by, resumed.HasField("pause_time")) == (False, "", False)
    waiter.join(timeout=EVENT_DEADLINE)
    assert not waiter.is_alive(), "the waiting LeaseJob was not woken by the resume"
    # Within EVENT_DEADLINE, far below the re-check (RECHECK_SECONDS): the resume's event woke it.
    assert result["response"].job.id == job.id
    assert not operator.jobs.GetQueueStats(pb.GetQueueStatsRequest(), timeout=5).paused


def test_a_drained_worker_finishes_its_job_and_takes_no_more(operator: Operator) -> None:
    first = create_job(operator.service)
    held = operator.lease("w1")
    assert held.job.id == first.id
    drained = operator.stub.DrainWorker(ops.DrainWorkerRequest(worker_id="w1"), metadata=AUTH, timeout=5)
    assert (drained.state, list(drained.job_ids)) == (ops.WORKER_STATE_DRAINING, [first.id])
    second = create_job(operator.service)
    nothing = operator.lease("w1", wait=1)
    assert (nothing.HasField("job"), nothing.draining, nothing.paused) == (False, True, False)
    assert operator.lease("w2").job.id == second.id
    complete = pb.CompleteJobRequest(id=first.id, lease_token=held.lease_token, output_key="jobs/x/out.pdf")
    assert operator.jobs.CompleteJob(complete, timeout=5).state == pb.JOB_STATE_SUCCEEDED
    after = operator.worker("w1")
    assert (after.state, list(after.job_ids), after.jobs_succeeded, after.jobs_failed) == (
        ops.WORKER_STATE_DRAINED,
        [],
        1,
        0,
    )
    assert after.busy_seconds > 0
    back = operator.stub.DrainWorker(ops.DrainWorkerRequest(worker_id="w1", undo=True), metadata=AUTH, timeout=5)
    assert back.state == ops.WORKER_STATE_ACTIVE
    third = create_job(operator.service)
    assert operator.lease("w1").job.id == third.id
    unknown = ops.DrainWorkerRequest(worker_id="nobody")
    assert code_and_reason(lambda: operator.stub.DrainWorker(unknown, metadata=AUTH, timeout=5)) == (
        grpc.StatusCode.NOT_FOUND,
        "WORKER_NOT_FOUND",
    )


def test_expire_lease_gives_a_dead_workers_job_to_another_at_once(operator: Operator) -> None:
    job = create_job(operator.service)
    dead = operator.lease("w-dead")
    expired = operator.stub.ExpireLease(ops.ExpireLeaseRequest(job_id=job.id), metadata=AUTH, timeout=5)
    assert (expired.state, expired.attempts) == (pb.JOB_STATE_QUEUED, 1)
    again = operator.lease("w-alive")
    assert (again.job.id, again.job.attempts) == (job.id, 2)
    renew = pb.RenewLeaseRequest(id=job.id, lease_token=dead.lease_token)
    assert code_and_reason(lambda: operator.jobs.RenewLease(renew, timeout=5))[1] == "LEASE_LOST"
    queued = create_job(operator.service)
    cases = {
        (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND"): str(uuid.uuid4()),
        (grpc.StatusCode.FAILED_PRECONDITION, "JOB_NOT_RUNNING"): queued.id,
        (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_JOB_ID"): "nope",
    }
    for expected, job_id in cases.items():
        request = ops.ExpireLeaseRequest(job_id=job_id)
        assert (
            code_and_reason(lambda request=request: operator.stub.ExpireLease(request, metadata=AUTH, timeout=5))
            == expected
        )  # type: ignore[misc]


def test_a_worker_that_stops_calling_shows_lost_and_is_forgotten_later(operator: Operator) -> None:
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    operator.lease("w1", host="node-a", worker_start_time=stamp(started))
    job = create_job(operator.service)
    held = operator.lease("w1", host="node-a", worker_start_time=stamp(started))
    operator.fail(job.id, held.lease_token)
    worker = operator.worker("w1")
    assert (worker.state, worker.host, worker.start_time.ToDatetime(tzinfo=UTC)) == (
        ops.WORKER_STATE_ACTIVE,
        "node-a",
        started,
    )
    assert (worker.jobs_succeeded, worker.jobs_failed) == (0, 1)
    time.sleep(LOST_AFTER_SECONDS + 0.5)
    assert operator.worker("w1").state == ops.WORKER_STATE_LOST
    # A new process under the same id: alive again, its counters start over.
    operator.lease("w1", host="node-b", worker_start_time=stamp(started + timedelta(hours=1)))
    restarted = operator.worker("w1")
    assert (restarted.state, restarted.host, restarted.jobs_failed) == (ops.WORKER_STATE_ACTIVE, "node-b", 0)
    # Lost two hours ago: gone from the default list; lost two days ago: forgotten by the sweeper.
    operator.sql("UPDATE workers SET last_seen = now() - interval '2 hours'")
    listed = operator.stub.ListWorkers(ops.ListWorkersRequest(), metadata=AUTH, timeout=5)
    assert [worker.id for worker in listed.workers] == []
    assert operator.worker("w1").state == ops.WORKER_STATE_LOST
    operator.service.app.sweeper.sweep_once()
    assert operator.sql("SELECT count(*) FROM workers") == [(1,)]
    operator.sql("UPDATE workers SET last_seen = now() - interval '2 days'")
    operator.service.app.sweeper.sweep_once()
    assert operator.sql("SELECT count(*) FROM workers") == [(0,)]


def test_a_requeue_wakes_an_idle_worker_at_once(operator: Operator, parked: ParkedCalls) -> None:
    job = operator.failed_job()
    result: dict[str, pb.LeaseJobResponse] = {}
    waiter = threading.Thread(target=lambda: result.update(response=operator.lease("w2", wait=LONG_WAIT)))
    waiter.start()
    parked.wait_for()  # found nothing to lease and sleeps until an event (its re-check is far away)
    operator.stub.RequeueJobs(ops.RequeueJobsRequest(filter=ops.JobFilter(ids=[job.id])), metadata=AUTH, timeout=5)
    waiter.join(timeout=EVENT_DEADLINE)
    assert not waiter.is_alive(), "the idle LeaseJob was not woken by the requeue"
    assert (result["response"].job.id, result["response"].job.attempts) == (job.id, 1)
