"""The JobsService gRPC servicer: validation, tenant checks, events, metrics.

Job state lives in PostgreSQL (repository); every change is announced on Redis
(events) after its transaction commits. Jobs of another tenant are reported
as NOT_FOUND, never as someone else's.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf import empty_pb2, json_format, struct_pb2
from pdfsmaller.jobs.v1 import api_keys_pb2
from pdfsmaller.jobs.v1 import jobs_service_pb2 as pb
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as pb_grpc

from libs import compression
from libs.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from libs.proto_time import timestamp
from services.jobs.api_key_servicer import identity_to_proto
from services.jobs.api_keys import ApiKeyStore
from services.jobs.events import QUEUE, JobEvents
from services.jobs.metrics import JobsMetrics
from services.jobs.objects import ObjectDeleter
from services.jobs.queue_control import QueueControl
from services.jobs.repository import (
    CANCELLED,
    FAILED,
    QUEUED,
    SUCCEEDED,
    TERMINAL_STATES,
    JobIdConflict,
    JobRecord,
    JobRepository,
    NewJob,
    RequestIdReused,
)
from services.jobs.workers import WorkerRegistry

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
DEFAULT_LEASE_SECONDS = 60
MAX_LEASE_SECONDS = 3600
MAX_WAIT_SECONDS = 300
# Re-checks while waiting: events can be lost, so waiters look again now and then anyway,
# more often while the Redis subscription is down.
RECHECK_SECONDS = 5.0
RECHECK_WITHOUT_EVENTS_SECONDS = 1.0
_MAX_TEXT = 1024
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# Options with a column of their own (the level by its name, as libs/compression.py spells it); the others are
# kept in `options` as the proto3 JSON of CompressionOptions.
_OPTION_COLUMNS = ("level", "image_quality")


def _options_to_proto(job: JobRecord) -> pb.CompressionOptions:
    options = json_format.ParseDict(job.options, pb.CompressionOptions(), ignore_unknown_fields=True)
    options.level = compression.level_number(job.level)
    options.image_quality = job.image_quality
    return options


def _extra_options(options: pb.CompressionOptions) -> dict[str, Any]:
    """The options kept in the `options` column: all but those with their own column."""
    extra = json_format.MessageToDict(options, preserving_proto_field_name=True)
    for name in _OPTION_COLUMNS:
        extra.pop(name, None)
    return extra


def job_to_proto(job: JobRecord) -> pb.Job:
    message = pb.Job(
        id=str(job.id),
        tenant=job.tenant,
        state=pb.JobState.Value(f"JOB_STATE_{job.state}"),
        filename=job.filename,
        options=_options_to_proto(job),
        input_key=job.input_key,
        input_size_bytes=job.input_size_bytes,
        input_sha256=job.input_sha256,
        output_key=job.output_key,
        output_size_bytes=job.output_size_bytes,
        output_sha256=job.output_sha256,
        progress_percent=job.progress_percent,
        attempts=job.attempts,
        create_time=timestamp(job.created_at),
        update_time=timestamp(job.updated_at),
        expire_time=timestamp(job.expire_at),
        traceparent=job.traceparent,
        outage_retries=job.outage_retries,
    )
    if job.state == QUEUED and job.not_before > job.updated_at:
        message.retry_time.CopyFrom(timestamp(job.not_before))
    if job.error_reason:
        message.error.CopyFrom(pb.JobError(reason=job.error_reason, message=job.error_message))
    if job.report is not None:
        report = struct_pb2.Struct()
        report.update(job.report)
        message.report.CopyFrom(report)
    return message


def parse_job_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument("INVALID_JOB_ID", "job id must be a UUID") from None


def _parse_lease_token(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument("INVALID_LEASE_TOKEN", "lease_token must be the token LeaseJob returned") from None


def _lease_seconds(value: int) -> int:
    if value == 0:
        return DEFAULT_LEASE_SECONDS
    if not 1 <= value <= MAX_LEASE_SECONDS:
        raise InvalidArgument("INVALID_LEASE_SECONDS", f"lease_seconds must be 1-{MAX_LEASE_SECONDS} (0: default)")
    return value


def encode_page_token(job: JobRecord) -> str:
    micros = (job.created_at - _EPOCH) // timedelta(microseconds=1)
    raw = json.dumps({"c": micros, "i": str(job.id)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        return _EPOCH + timedelta(microseconds=int(data["c"])), uuid.UUID(str(data["i"]))
    except (binascii.Error, ValueError, KeyError, TypeError, OverflowError):
        raise InvalidArgument("INVALID_PAGE_TOKEN", "page_token is not one this service returned") from None


def _lease_lost() -> FailedPrecondition:
    return FailedPrecondition(
        "LEASE_LOST", "the lease expired, the job was cancelled or it was given to another worker"
    )


class JobsServicer(pb_grpc.JobsServiceServicer):
    def __init__(
        self,
        repository: JobRepository,
        events: JobEvents,
        deleter: ObjectDeleter,
        metrics: JobsMetrics,
        *,
        api_keys: ApiKeyStore,
        recheck_seconds: float = RECHECK_SECONDS,
        workers: WorkerRegistry | None = None,
        queue_control: QueueControl | None = None,
    ) -> None:
        """`workers` (None: not tracked) learns of every worker call; `queue_control` says why a worker got
        nothing (paused, draining) and whether GetQueueStats is paused."""
        self._repo = repository
        self._workers = workers
        self._queue_control = queue_control
        self._api_keys = api_keys
        self._events = events
        self._deleter = deleter
        self._metrics = metrics
        self._recheck_seconds = recheck_seconds
        self._stopping = threading.Event()

    def shutdown(self) -> None:
        """End long polls and watches now instead of holding the server's grace period."""
        self._stopping.set()
        self._events.wake_all()

    def _recheck(self) -> float:
        return (
            self._recheck_seconds
            if self._events.healthy
            else min(self._recheck_seconds, RECHECK_WITHOUT_EVENTS_SECONDS)
        )

    def _announce(self, job: JobRecord) -> None:
        self._events.job_changed(str(job.id), job.state, queued=job.state == QUEUED)

    def _get(self, job_id: str, tenant: str) -> JobRecord:
        job = self._repo.get(parse_job_id(job_id), tenant)
        if job is None:
            raise NotFound("JOB_NOT_FOUND", "no such job")
        return job

    # --- client side -----------------------------------------------------

    def CreateJob(self, request: pb.CreateJobRequest, context: grpc.ServicerContext) -> pb.Job:
        job_id = parse_job_id(request.job_id) if request.job_id else uuid.uuid4()
        if not request.input_key:
            raise InvalidArgument("INPUT_KEY_REQUIRED", "input_key is required")
        if len(request.request_id) > _MAX_TEXT or len(request.filename) > _MAX_TEXT:
            raise InvalidArgument("FIELD_TOO_LONG", f"request_id and filename are limited to {_MAX_TEXT} characters")
        if request.input_size_bytes < 0:
            raise InvalidArgument("INVALID_INPUT_SIZE", "input_size_bytes must not be negative")
        # Level UNSPECIFIED is stored as the default level's name: the same request as naming it.
        values = compression.checked_values(request.options)
        new = NewJob(
            id=job_id,
            tenant=request.tenant,
            request_id=request.request_id,
            filename=request.filename,
            level=values["level"],
            image_quality=request.options.image_quality,
            input_key=request.input_key,
            input_size_bytes=request.input_size_bytes,
            input_sha256=request.input_sha256,
            traceparent=request.traceparent,
            options=_extra_options(request.options),
        )
        try:
            job, created = self._repo.create(new)
        except JobIdConflict:
            raise AlreadyExists("JOB_ID_EXISTS", "a different job already has this id") from None
        except RequestIdReused:
            raise AlreadyExists(
                "REQUEST_ID_REUSED", "this request_id was used for another file or other options"
            ) from None
        if created:
            self._metrics.created.inc()
            self._announce(job)
            log.info("job %s queued", job.id, extra={"fields": _log_fields(job, compression_level=job.level)})
        return job_to_proto(job)

    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.Job:
        return job_to_proto(self._get(request.id, request.tenant))

    def FindJobByRequestId(self, request: pb.FindJobByRequestIdRequest, context: grpc.ServicerContext) -> pb.Job:
        if not request.request_id:
            raise InvalidArgument("REQUEST_ID_REQUIRED", "request_id is required")
        if len(request.request_id) > _MAX_TEXT:
            raise InvalidArgument("FIELD_TOO_LONG", f"request_id is limited to {_MAX_TEXT} characters")
        job = self._repo.find_by_request_id(request.tenant, request.request_id)
        if job is None:
            raise NotFound("JOB_NOT_FOUND", "no job has this request_id")
        return job_to_proto(job)

    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        if request.page_size < 0:
            raise InvalidArgument("INVALID_PAGE_SIZE", "page_size must not be negative")
        page_size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = decode_page_token(request.page_token) if request.page_token else None
        jobs, more = self._repo.list_jobs(request.tenant, page_size, after)
        response = pb.ListJobsResponse(jobs=[job_to_proto(job) for job in jobs])
        if more and jobs:
            response.next_page_token = encode_page_token(jobs[-1])
        return response

    def DeleteJob(self, request: pb.DeleteJobRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        job = self._get(request.id, request.tenant)
        if job.state not in TERMINAL_STATES:
            # Cancel first so a worker holding the lease stops before its files go.
            cancelled, changed = self._repo.cancel(job.id, job.tenant)
            if cancelled is not None and changed:
                self._metrics.finished.labels(CANCELLED).inc()
                self._announce(cancelled)
                job = cancelled
        # Objects first: if storage is down the row stays and the client can retry the delete.
        try:
            self._deleter.delete(job.object_keys)
        except Exception:
            self._metrics.object_delete_failures.inc()
            raise
        if self._repo.delete(job.id, job.tenant):
            self._events.job_changed(str(job.id), "DELETED")
            log.info("job %s deleted", job.id, extra={"fields": _log_fields(job)})
        return empty_pb2.Empty()

    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.Job:
        job, changed = self._repo.cancel(parse_job_id(request.id), request.tenant)
        if job is None:
            raise NotFound("JOB_NOT_FOUND", "no such job")
        if changed:
            self._metrics.finished.labels(CANCELLED).inc()
            self._announce(job)
            log.info("job %s cancelled", job.id, extra={"fields": _log_fields(job)})
        elif job.state != CANCELLED:
            # Cancelling a cancelled job is a no-op; any other finished job cannot be cancelled.
            raise FailedPrecondition("JOB_FINISHED", f"the job already finished ({job.state})")
        return job_to_proto(job)

    def WatchJob(self, request: pb.WatchJobRequest, context: grpc.ServicerContext) -> Iterator[pb.Job]:
        job_id = parse_job_id(request.id)
        # Registered before the first read, so a change between read and wait still wakes us.
        with self._events.waiter(str(job_id)) as waiter:
            context.add_callback(waiter.wake)
            last: tuple[str, datetime, int] | None = None
            while True:
                waiter.clear()
                job = self._repo.get(job_id, request.tenant)
                if job is None:
                    raise NotFound("JOB_NOT_FOUND", "no such job")
                seen = (job.state, job.updated_at, job.progress_percent)
                if seen != last:
                    last = seen
                    yield job_to_proto(job)
                if job.state in TERMINAL_STATES or not context.is_active():
                    return
                if self._stopping.is_set():
                    raise Unavailable("SHUTTING_DOWN", "the server is shutting down; watch again")
                waiter.wait(self._recheck())

    # --- worker side -----------------------------------------------------

    def LeaseJob(self, request: pb.LeaseJobRequest, context: grpc.ServicerContext) -> pb.LeaseJobResponse:
        lease_seconds = _lease_seconds(request.lease_seconds)
        if not 0 <= request.wait_seconds <= MAX_WAIT_SECONDS:
            raise InvalidArgument("INVALID_WAIT_SECONDS", f"wait_seconds must be 0-{MAX_WAIT_SECONDS}")
        wait = float(request.wait_seconds)
        remaining_rpc = context.time_remaining()
        if remaining_rpc is not None:
            # Answer "nothing" before the client's deadline rather than let the call fail.
            wait = min(wait, max(remaining_rpc - 0.5, 0.0))
        deadline = time.monotonic() + wait
        if self._workers is not None:
            start = request.worker_start_time.ToDatetime(tzinfo=UTC) if request.HasField("worker_start_time") else None
            self._workers.lease_call(request.worker_id, request.host, start)
        with self._events.waiter(QUEUE) as waiter:
            context.add_callback(waiter.wake)
            while True:
                waiter.clear()
                if not context.is_active() or self._stopping.is_set():
                    return pb.LeaseJobResponse()
                lease = self._repo.lease(request.worker_id, lease_seconds)
                if lease is not None:
                    self._announce(lease.job)
                    return pb.LeaseJobResponse(
                        job=job_to_proto(lease.job),
                        lease_token=str(lease.token),
                        lease_expire_time=timestamp(lease.expires_at),
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return self._no_job_for(request.worker_id)
                # Paused or draining too: the call waits out its time, so a held-back worker does not spin.
                waiter.wait(self._idle_wait(remaining))

    def _no_job_for(self, worker_id: str) -> pb.LeaseJobResponse:
        """The empty answer, saying whether the queue is paused or this worker draining."""
        if self._queue_control is None:
            return pb.LeaseJobResponse()
        gate = self._queue_control.lease_gate(worker_id)
        return pb.LeaseJobResponse(paused=gate.paused, draining=gate.draining)

    def _idle_wait(self, remaining: float) -> float:
        """How long an idle LeaseJob sleeps: until an event, a re-check, or the next retry coming due."""
        wait = min(remaining, self._recheck())
        due = self._repo.seconds_until_next_due()
        # A little past the due time, so the job is due by the database's clock when we look.
        return wait if due is None else min(wait, due + 0.01)

    def RenewLease(self, request: pb.RenewLeaseRequest, context: grpc.ServicerContext) -> pb.RenewLeaseResponse:
        job_id = parse_job_id(request.id)
        token = _parse_lease_token(request.lease_token)
        lease_seconds = _lease_seconds(request.lease_seconds)
        if not 0 <= request.progress_percent <= 100:
            raise InvalidArgument("INVALID_PROGRESS", "progress_percent must be 0-100")
        renewed = self._repo.renew(job_id, token, lease_seconds, request.progress_percent)
        if renewed is None:
            raise _lease_lost()
        job, progressed = renewed
        if self._workers is not None:
            self._workers.seen(job.worker_id)
        if progressed:
            self._announce(job)
        assert job.lease_expires_at is not None
        return pb.RenewLeaseResponse(lease_expire_time=timestamp(job.lease_expires_at))

    def CompleteJob(self, request: pb.CompleteJobRequest, context: grpc.ServicerContext) -> pb.Job:
        job_id = parse_job_id(request.id)
        token = _parse_lease_token(request.lease_token)
        if not request.output_key:
            raise InvalidArgument("OUTPUT_KEY_REQUIRED", "output_key is required")
        if request.output_size_bytes < 0:
            raise InvalidArgument("INVALID_OUTPUT_SIZE", "output_size_bytes must not be negative")
        report = json_format.MessageToDict(request.report) if request.HasField("report") else None
        job = self._repo.complete(
            job_id,
            token,
            output_key=request.output_key,
            output_size_bytes=request.output_size_bytes,
            output_sha256=request.output_sha256,
            report=report,
        )
        if job is None:
            raise _lease_lost()
        self._count_for_worker(job, succeeded=True)
        self._metrics.finished.labels(SUCCEEDED).inc()
        self._announce(job)
        log.info(
            "job %s succeeded",
            job.id,
            extra={"fields": _log_fields(job, output_size_bytes=job.output_size_bytes, worker_id=job.worker_id)},
        )
        return job_to_proto(job)

    def _count_for_worker(self, job: JobRecord, *, succeeded: bool) -> None:
        """The worker's counters: one job done or failed, held from its lease until now (database times)."""
        if self._workers is None:
            return
        busy = (job.updated_at - job.leased_at).total_seconds() if job.leased_at is not None else 0.0
        self._workers.finished(job.worker_id, succeeded=succeeded, busy_seconds=busy)

    def FailJob(self, request: pb.FailJobRequest, context: grpc.ServicerContext) -> pb.Job:
        job_id = parse_job_id(request.id)
        token = _parse_lease_token(request.lease_token)
        if not request.error.reason:
            raise InvalidArgument("ERROR_REASON_REQUIRED", "error.reason is required")
        if len(request.error.reason) > _MAX_TEXT or len(request.error.message) > _MAX_TEXT:
            raise InvalidArgument("FIELD_TOO_LONG", f"error reason and message are limited to {_MAX_TEXT} characters")
        job = self._repo.fail(
            job_id,
            token,
            reason=request.error.reason,
            message=request.error.message,
            retryable=request.retryable,
            outage=request.outage,
        )
        if job is None:
            raise _lease_lost()
        self._count_for_worker(job, succeeded=False)
        fields = _log_fields(job, reason=request.error.reason, worker_id=job.worker_id, outage=request.outage)
        if job.state == FAILED:
            self._metrics.finished.labels(FAILED).inc()
            log.info("job %s failed: %s", job.id, request.error.reason, extra={"fields": fields})
        else:
            if request.outage:
                self._metrics.outage_requeues.labels("dependency").inc()
            what = "outage (no attempt used)" if request.outage else "attempt failed"
            log.info(
                "job %s %s (%s); queued again after %.1f s",
                job.id,
                what,
                request.error.reason,
                (job.not_before - job.updated_at).total_seconds(),
                extra={"fields": fields},
            )
        self._announce(job)
        return job_to_proto(job)

    def GetQueueStats(self, request: pb.GetQueueStatsRequest, context: grpc.ServicerContext) -> pb.QueueStats:
        stats = self._repo.queue_stats()
        self._metrics.observe_queue(stats)
        return pb.QueueStats(
            queued=stats.queued,
            running=stats.running,
            # The longest window's: totals over every job kept would cost a scan of them all.
            succeeded=stats.longest_window.succeeded,
            failed=stats.longest_window.failed,
            oldest_queued_seconds=stats.oldest_queued_seconds,
            waiting_retry=stats.waiting_retry,
            paused=self._queue_control is not None and self._queue_control.paused(),
            by_level=[
                pb.LevelDepth(
                    level=level.level, queued=level.queued, running=level.running, waiting_retry=level.waiting_retry
                )
                for level in stats.by_level
            ],
            throughput=[
                pb.Throughput(
                    window_seconds=window.window_seconds,
                    succeeded=window.succeeded,
                    failed=window.failed,
                    jobs_per_minute=window.jobs_per_minute,
                )
                for window in stats.throughput
            ],
        )

    def AuthenticateApiKey(
        self, request: api_keys_pb2.AuthenticateApiKeyRequest, context: grpc.ServicerContext
    ) -> api_keys_pb2.ApiKeyIdentity:
        """The gateway's check of a presented key (services.jobs.api_keys); never logs the key."""
        return identity_to_proto(self._api_keys.authenticate(request.api_key))


def _log_fields(job: JobRecord, **more: Any) -> dict[str, Any]:
    """What every job log line carries, so one job's lines can be found by its id (never the file name)."""
    return {"job_id": str(job.id), "tenant": job.tenant, "attempts": job.attempts, "state": job.state, **more}
