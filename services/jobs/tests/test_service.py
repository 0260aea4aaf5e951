"""The jobs service over a real gRPC channel: real PostgreSQL, Valkey and storage server."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import psycopg
import pytest
from google.protobuf import struct_pb2
from pdfsmaller.jobs.v1 import jobs_service_pb2 as pb
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as pb_grpc
from pdfsmaller.storage.v1 import storage_service_pb2 as spb
from pdfsmaller.storage.v1 import storage_service_pb2_grpc as spb_grpc
from prometheus_client import CollectorRegistry

from libs.errors import reason_of
from libs.service import RunningService
from services.jobs.app import JobsService, build
from services.jobs.events import JobEvents
from services.jobs.outages import DatabaseOutages
from services.jobs.sweeper import Sweeper
from services.jobs.tests.conftest import ParkedCalls, service_settings
from services.storage.tests.helpers import put_requests

pytestmark = pytest.mark.integration

Q, R, S = pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING, pb.JOB_STATE_SUCCEEDED

# No wall-clock bounds on how fast things happen (bench/latency.py measures that). Instead the waiters'
# safety re-check (5 s in production) is pushed past every deadline here, and idle LeaseJob calls wait
# longer than the test does (their last look comes when the wait ends): a waiter that answers before
# EVENT_DEADLINE was woken by an event, and one that is not woken fails the test.
RECHECK_SECONDS = 120.0
EVENT_DEADLINE = 20.0
LONG_WAIT = 60


@dataclass
class JobsUnderTest:
    """The jobs service from its own `build()`, started, with the parts tests drive directly."""

    service: JobsService
    running: RunningService
    outages: DatabaseOutages

    @property
    def registry(self) -> CollectorRegistry:
        return self.service.spec.registry

    @property
    def events(self) -> JobEvents:
        return self.service.events

    @property
    def sweeper(self) -> Sweeper:
        return self.service.sweeper

    def ready(self) -> bool:
        return bool(self.service.spec.readiness())

    def stop(self, grace: float | None = None) -> None:
        self.running.stop(grace)


@dataclass
class Service:
    app: JobsUnderTest
    stub: pb_grpc.JobsServiceStub
    storage: spb_grpc.StorageServiceStub
    database_url: str

    def sql(self, query: str, *params: object) -> None:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(query.encode(), params)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.app.registry.get_sample_value(name, labels or {}) or 0.0


def start_service(
    database_url: str,
    redis_url: str,
    storage_address: str,
    *,
    wait_recheck_seconds: float = RECHECK_SECONDS,
    outages: DatabaseOutages | None = None,
) -> tuple[JobsUnderTest, grpc.Channel]:
    settings = service_settings(database_url, redis_url, storage_address, wait_recheck_seconds=wait_recheck_seconds)
    # A channel prefix per test: pub/sub channels are shared by the whole Valkey server.
    outages = outages if outages is not None else DatabaseOutages()
    service = build(settings, event_prefix=f"test-{uuid.uuid4().hex}", outages=outages)
    service.spec.metrics_port = None
    app = JobsUnderTest(service, service.start(), outages)
    return app, grpc.insecure_channel(app.running.address)


@pytest.fixture
def service(fresh_database_url: str, redis_url: str, storage_server: RunningService) -> Iterator[Service]:
    app, channel = start_service(fresh_database_url, redis_url, storage_server.address)
    storage_channel = grpc.insecure_channel(storage_server.address)
    try:
        yield Service(
            app, pb_grpc.JobsServiceStub(channel), spb_grpc.StorageServiceStub(storage_channel), fresh_database_url
        )
    finally:
        channel.close()
        storage_channel.close()
        app.stop(grace=0)


def create(service: Service, tenant: str = "t1", **fields: object) -> pb.Job:
    request = pb.CreateJobRequest(
        tenant=tenant,
        filename="in.pdf",
        options=pb.CompressionOptions(level=pb.COMPRESSION_LEVEL_MEDIUM, image_quality=60),
        input_key=f"jobs/{uuid.uuid4()}/input.pdf",
        input_size_bytes=100,
        input_sha256="00" * 32,
    )
    for name, value in fields.items():
        if isinstance(value, pb.CompressionOptions):
            getattr(request, name).CopyFrom(value)
        else:
            setattr(request, name, value)
    return service.stub.CreateJob(request, timeout=5)


def put_object(service: Service, key: str, data: bytes = b"%PDF-1.7 test") -> None:
    service.storage.PutObject(put_requests(key, [data]), timeout=5)


def object_exists(service: Service, key: str) -> bool:
    try:
        service.storage.StatObject(spb.StatObjectRequest(key=key), timeout=5)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return False
    return True


def lease(service: Service, wait: int = 0, lease_seconds: int = 30) -> pb.LeaseJobResponse:
    return service.stub.LeaseJob(
        pb.LeaseJobRequest(worker_id="w1", lease_seconds=lease_seconds, wait_seconds=wait), timeout=wait + 5
    )


def eventually(check: Callable[[], bool], message: str, timeout: float = EVENT_DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, message
        time.sleep(0.01)


def rpc_error(call: object) -> grpc.RpcError:
    assert callable(call)
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_create_get_and_idempotency(service: Service) -> None:
    job_id = str(uuid.uuid4())
    job = create(service, job_id=job_id, request_id="r1", traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01")
    assert (job.id, job.state, job.options.level, job.options.image_quality) == (
        job_id,
        Q,
        pb.COMPRESSION_LEVEL_MEDIUM,
        60,
    )
    assert job.expire_time.ToSeconds() - job.create_time.ToSeconds() == 168 * 3600
    again = create(service, request_id="r1")
    assert again.id == job_id
    fetched = service.stub.GetJob(pb.GetJobRequest(id=job_id, tenant="t1"), timeout=5)
    assert fetched.traceparent == job.traceparent
    assert service.metric("jobs_created_total") == 1


def test_a_reused_request_id_needs_the_same_file_and_options(service: Service) -> None:
    first = create(service, request_id="r2")
    assert create(service, request_id="r2").id == first.id
    for change in (
        {"input_sha256": "ff" * 32},
        {"options": pb.CompressionOptions(level=pb.COMPRESSION_LEVEL_HIGH, image_quality=60)},
        {"options": pb.CompressionOptions(level=pb.COMPRESSION_LEVEL_MEDIUM, image_quality=60, grayscale=True)},
    ):
        error = rpc_error(lambda change=change: create(service, request_id="r2", **change))  # type: ignore[misc]
        assert (error.code(), reason_of(error)) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    assert service.metric("jobs_created_total") == 1


def test_find_job_by_request_id(service: Service) -> None:
    job = create(service, request_id="r3")
    find = service.stub.FindJobByRequestId
    assert find(pb.FindJobByRequestIdRequest(tenant="t1", request_id="r3"), timeout=5) == job
    for tenant, request_id in (("other", "r3"), ("t1", "r4")):
        request = pb.FindJobByRequestIdRequest(tenant=tenant, request_id=request_id)
        error = rpc_error(lambda request=request: find(request, timeout=5))  # type: ignore[misc]
        assert (error.code(), reason_of(error)) == (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")
    empty = rpc_error(lambda: find(pb.FindJobByRequestIdRequest(tenant="t1"), timeout=5))
    assert (empty.code(), reason_of(empty)) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REQUIRED")


def test_errors_carry_reasons(service: Service) -> None:
    job = create(service)
    stub = service.stub
    cases = {
        "INVALID_JOB_ID": lambda: stub.GetJob(pb.GetJobRequest(id="nope", tenant="t1"), timeout=5),
        "JOB_NOT_FOUND": lambda: stub.GetJob(pb.GetJobRequest(id=job.id, tenant="other"), timeout=5),
        "INPUT_KEY_REQUIRED": lambda: stub.CreateJob(pb.CreateJobRequest(tenant="t1"), timeout=5),
        "INVALID_PAGE_TOKEN": lambda: stub.ListJobs(pb.ListJobsRequest(tenant="t1", page_token="!!"), timeout=5),
        "INVALID_LEASE_SECONDS": lambda: stub.LeaseJob(pb.LeaseJobRequest(lease_seconds=-1), timeout=5),
        "INVALID_LEASE_TOKEN": lambda: stub.RenewLease(pb.RenewLeaseRequest(id=job.id, lease_token="x"), timeout=5),
        "LEASE_LOST": lambda: stub.RenewLease(
            pb.RenewLeaseRequest(id=job.id, lease_token=str(uuid.uuid4())), timeout=5
        ),
    }
    for reason, call in cases.items():
        assert reason_of(rpc_error(call)) == reason, reason
    conflict = rpc_error(lambda: create(service, tenant="other", job_id=job.id))
    assert (conflict.code(), reason_of(conflict)) == (grpc.StatusCode.ALREADY_EXISTS, "JOB_ID_EXISTS")
    # Another tenant's job cannot be watched, cancelled or deleted either.
    for call in (
        lambda: next(stub.WatchJob(pb.WatchJobRequest(id=job.id, tenant="other"), timeout=5)),
        lambda: stub.CancelJob(pb.CancelJobRequest(id=job.id, tenant="other"), timeout=5),
        lambda: stub.DeleteJob(pb.DeleteJobRequest(id=job.id, tenant="other"), timeout=5),
    ):
        error = rpc_error(call)
        assert (error.code(), reason_of(error)) == (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")


def test_idle_lease_is_woken_by_create(service: Service, parked: ParkedCalls) -> None:
    result: dict[str, pb.LeaseJobResponse] = {}
    waiter = threading.Thread(target=lambda: result.update(response=lease(service, wait=LONG_WAIT)))
    waiter.start()
    parked.wait_for()  # the LeaseJob call found the queue empty and is idle
    job = create(service)
    waiter.join(timeout=EVENT_DEADLINE)
    # Neither its re-check nor the end of its wait comes before the deadline: the Redis queue event woke it.
    assert not waiter.is_alive(), "the idle LeaseJob was not woken by the new job's queue event"
    response = result["response"]
    assert response.job.id == job.id
    assert response.job.state == R
    assert response.job.attempts == 1


def test_lease_without_jobs_waits_then_returns_empty(service: Service) -> None:
    started = time.monotonic()
    # A deadline far beyond the wait, so the server's "answer before the deadline" cap cannot shorten it.
    response = service.stub.LeaseJob(pb.LeaseJobRequest(worker_id="w1", wait_seconds=1), timeout=30)
    elapsed = time.monotonic() - started
    assert not response.HasField("job")
    # It waited the whole second (waits never end early); the upper bound is the call's own deadline.
    assert 1.0 <= elapsed < 30, elapsed


def test_watch_streams_every_state_until_finished(service: Service) -> None:
    job = create(service)
    seen: list[tuple[int, int]] = []
    stream = service.stub.WatchJob(pb.WatchJobRequest(id=job.id, tenant="t1"), timeout=15)
    first = next(stream)
    seen.append((first.state, first.progress_percent))

    def collect() -> None:
        seen.extend((update.state, update.progress_percent) for update in stream)

    collector = threading.Thread(target=collect)
    collector.start()
    leased = lease(service)
    # Each change is made only once the watcher has streamed the previous one, so none can be coalesced.
    eventually(lambda: (R, 0) in seen, f"the watcher did not stream the lease: {seen}")
    token = leased.lease_token
    service.stub.RenewLease(pb.RenewLeaseRequest(id=job.id, lease_token=token, progress_percent=50), timeout=5)
    eventually(lambda: (R, 50) in seen, f"the watcher did not stream the progress: {seen}")
    report = struct_pb2.Struct()
    report.update({"pages": 3, "engine": "test"})
    done = service.stub.CompleteJob(
        pb.CompleteJobRequest(
            id=job.id, lease_token=token, output_key="jobs/x/output.pdf", output_size_bytes=50, report=report
        ),
        timeout=5,
    )
    assert done.state == S
    assert dict(done.report) == {"pages": 3.0, "engine": "test"}
    collector.join(timeout=EVENT_DEADLINE)
    assert not collector.is_alive()
    assert seen == [(Q, 0), (R, 0), (R, 50), (S, 100)]
    assert service.metric("jobs_finished_total", {"state": "SUCCEEDED"}) == 1


def test_cancel_makes_the_worker_lose_its_lease(service: Service) -> None:
    job = create(service)
    token = lease(service).lease_token
    cancelled = service.stub.CancelJob(pb.CancelJobRequest(id=job.id, tenant="t1"), timeout=5)
    assert cancelled.state == pb.JOB_STATE_CANCELLED
    renew = rpc_error(lambda: service.stub.RenewLease(pb.RenewLeaseRequest(id=job.id, lease_token=token), timeout=5))
    assert (renew.code(), reason_of(renew)) == (grpc.StatusCode.FAILED_PRECONDITION, "LEASE_LOST")
    # Cancelling again is a no-op; a finished job cannot be cancelled.
    again = service.stub.CancelJob(pb.CancelJobRequest(id=job.id, tenant="t1"), timeout=5)
    assert again.state == pb.JOB_STATE_CANCELLED
    other = create(service)
    token = lease(service).lease_token
    failed = service.stub.FailJob(
        pb.FailJobRequest(id=other.id, lease_token=token, error=pb.JobError(reason="MALFORMED_PDF", message="bad")),
        timeout=5,
    )
    assert (failed.state, failed.error.reason) == (pb.JOB_STATE_FAILED, "MALFORMED_PDF")
    finished = rpc_error(lambda: service.stub.CancelJob(pb.CancelJobRequest(id=other.id, tenant="t1"), timeout=5))
    assert reason_of(finished) == "JOB_FINISHED"


def test_retryable_failure_goes_back_to_the_queue(service: Service) -> None:
    job = create(service)
    token = lease(service).lease_token
    retried = service.stub.FailJob(
        pb.FailJobRequest(id=job.id, lease_token=token, error=pb.JobError(reason="WORKER_OOM"), retryable=True),
        timeout=5,
    )
    assert (retried.state, retried.attempts) == (Q, 1)
    # It backs off instead of going straight back to the (same) worker...
    retry_at = retried.retry_time.ToDatetime(tzinfo=UTC)
    assert retry_at > retried.update_time.ToDatetime(tzinfo=UTC)
    early = lease(service)
    asked_by = datetime.now(UTC)
    if early.HasField("job"):
        # Full jitter drew a delay shorter than this round trip (random(0, 2 s)): due when leased.
        assert retry_at <= asked_by
        assert early.job.attempts == 2
        return
    waiting = service.stub.GetQueueStats(pb.GetQueueStatsRequest(), timeout=5).waiting_retry
    assert waiting == 1 or retry_at <= datetime.now(UTC)
    # ...and an idle long poll wakes when it comes due (within the 2 s backoff), with no event to wake it.
    started = time.monotonic()
    again = lease(service, wait=LONG_WAIT)
    assert again.job.attempts == 2
    assert time.monotonic() - started < EVENT_DEADLINE


def test_an_outage_failure_uses_no_attempt(service: Service) -> None:
    job = create(service)
    token = lease(service).lease_token
    request = pb.FailJobRequest(
        id=job.id, lease_token=token, error=pb.JobError(reason="STORAGE_UNAVAILABLE"), retryable=True, outage=True
    )
    retried = service.stub.FailJob(request, timeout=5)
    assert (retried.state, retried.attempts, retried.outage_retries) == (Q, 0, 1)
    assert retried.retry_time.ToDatetime() > retried.update_time.ToDatetime()
    assert service.metric("jobs_outage_requeues_total", {"cause": "dependency"}) == 1
    assert lease(service, wait=LONG_WAIT).job.attempts == 1


def test_list_jobs_pages(service: Service) -> None:
    ids = [create(service, tenant="lister").id for _ in range(5)]
    create(service, tenant="someone-else")
    seen: list[str] = []
    token = ""
    while True:
        page = service.stub.ListJobs(pb.ListJobsRequest(tenant="lister", page_size=2, page_token=token), timeout=5)
        seen += [job.id for job in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    everything = service.stub.ListJobs(pb.ListJobsRequest(tenant="lister", page_size=1000), timeout=5)
    assert len(everything.jobs) == 5
    assert not everything.next_page_token


def test_delete_removes_job_and_objects(service: Service) -> None:
    job = create(service)
    token = lease(service).lease_token
    output_key = f"jobs/{job.id}/output.pdf"
    put_object(service, job.input_key)
    put_object(service, output_key)
    service.stub.CompleteJob(
        pb.CompleteJobRequest(id=job.id, lease_token=token, output_key=output_key, output_size_bytes=5), timeout=5
    )
    service.stub.DeleteJob(pb.DeleteJobRequest(id=job.id, tenant="t1"), timeout=5)
    assert not object_exists(service, job.input_key)
    assert not object_exists(service, output_key)
    gone = rpc_error(lambda: service.stub.GetJob(pb.GetJobRequest(id=job.id, tenant="t1"), timeout=5))
    assert reason_of(gone) == "JOB_NOT_FOUND"
    # A queued job whose input never reached storage deletes fine too.
    queued = create(service)
    service.stub.DeleteJob(pb.DeleteJobRequest(id=queued.id, tenant="t1"), timeout=5)


def test_sweeper_expires_jobs_and_deletes_their_objects(service: Service) -> None:
    old = create(service)
    young = create(service)
    put_object(service, old.input_key)
    put_object(service, young.input_key)
    service.sql("UPDATE jobs SET expire_at = now() - interval '1 second' WHERE id = %s", old.id)
    service.app.sweeper.sweep_once()
    expired = service.stub.GetJob(pb.GetJobRequest(id=old.id, tenant="t1"), timeout=5)
    assert expired.state == pb.JOB_STATE_EXPIRED
    assert not object_exists(service, old.input_key)
    assert object_exists(service, young.input_key)
    assert service.metric("jobs_expired_total") == 1
    assert service.metric("jobs_queue_depth", {"state": "QUEUED"}) == 1


def test_sweeper_requeues_expired_leases_and_wakes_workers(service: Service, parked: ParkedCalls) -> None:
    job = create(service)
    lease(service)
    service.sql("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = %s", job.id)
    result: dict[str, pb.LeaseJobResponse] = {}
    waiter = threading.Thread(target=lambda: result.update(response=lease(service, wait=LONG_WAIT)))
    waiter.start()
    parked.wait_for()  # idle: an expired lease is not leasable until the sweeper requeues it
    service.app.sweeper.sweep_once()
    waiter.join(timeout=EVENT_DEADLINE)
    assert not waiter.is_alive(), "the sweeper's requeue did not wake the waiting worker"
    assert result["response"].job.id == job.id
    assert result["response"].job.attempts == 2
    assert service.metric("jobs_lease_expirations_total", {"outcome": "requeued"}) == 1


def test_no_lease_is_requeued_while_the_database_was_last_seen_down(service: Service) -> None:
    # The first sweep after an outage must not be the query that ends it: that pass would charge
    # every lease that lapsed in the outage before the service knew the outage was over.
    job = create(service)
    lease(service)
    service.sql("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE state = 'RUNNING'")
    service.app.outages.failed()
    assert service.app.sweeper.requeue_expired_leases() == 0
    running = service.stub.GetJob(pb.GetJobRequest(id=job.id, tenant="t1"), timeout=5)
    assert (running.state, running.attempts) == (R, 1)


def test_queue_stats(service: Service) -> None:
    for _ in range(3):
        create(service)
    lease(service)
    stats = service.stub.GetQueueStats(pb.GetQueueStatsRequest(), timeout=5)
    assert (stats.queued, stats.running, stats.succeeded, stats.failed) == (2, 1, 0, 0)
    assert stats.oldest_queued_seconds >= 0


def test_watch_ends_when_the_job_is_deleted(service: Service, parked: ParkedCalls) -> None:
    job = create(service)
    # The watch's re-check is past its deadline: only the delete's events can end it in time.
    stream = service.stub.WatchJob(pb.WatchJobRequest(id=job.id, tenant="t1"), timeout=EVENT_DEADLINE)
    assert next(stream).state == Q
    parked.wait_for()
    service.stub.DeleteJob(pb.DeleteJobRequest(id=job.id, tenant="t1"), timeout=5)
    updates: list[int] = []
    try:
        updates.extend(update.state for update in stream)
        # DeleteJob cancels first; a watcher that re-read in between sees CANCELLED, a terminal state.
        assert updates == [pb.JOB_STATE_CANCELLED]
    except grpc.RpcError as error:
        assert error.code() != grpc.StatusCode.DEADLINE_EXCEEDED, "no event ended the watch"  # noqa: PT017
        # One that re-read only after the row was gone learns it from the error.
        assert (updates, reason_of(error)) == ([], "JOB_NOT_FOUND")  # noqa: PT017
