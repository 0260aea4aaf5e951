"""OperatorService: on-call's view and controls of the queue and the workers (behind services.jobs.operator_auth).

Validation, proto mapping, events and log lines; the queries live in queue_admin (jobs), workers (the
registry, draining) and queue_control (pause). Every change is announced like the JobsService's own, so
idle workers wake at once (a requeue, a resume, a drain undone) and watchers see the change.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs_pb
from pdfsmaller.jobs.v1 import operator_service_pb2 as pb
from pdfsmaller.jobs.v1 import operator_service_pb2_grpc as pb_grpc

from libs.errors import InvalidArgument, NotFound
from libs.proto_time import timestamp
from services.jobs.events import JobEvents
from services.jobs.job_filter import parse_filter
from services.jobs.operator_auth import current_operator
from services.jobs.queue_admin import PURGEABLE, REQUEUEABLE, BulkResult, ListedJob, QueueAdmin
from services.jobs.queue_control import MAX_REASON_CHARS, QueueControl, QueueControlState
from services.jobs.repository import FAILED, QUEUED, RUNNING
from services.jobs.servicer import decode_page_token, encode_page_token, job_to_proto, parse_job_id
from services.jobs.workers import WorkerRecord, WorkerRegistry

log = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000
# BulkJobsResponse.job_ids holds the first this many.
LISTED_IDS = 100
# JobEvents publishes "the queue changed" only with a job's event; this pseudo job id carries the queue
# event of a resume or an undone drain (no watcher waits on it).
QUEUE_CONTROL_EVENT = "queue-control"


def job_view(listed: ListedJob) -> pb.JobView:
    job = listed.job
    view = pb.JobView(job=job_to_proto(job), worker_id=job.worker_id, age_seconds=listed.age_seconds)
    if job.state == RUNNING:
        if job.lease_expires_at is not None:
            view.lease_expire_time.CopyFrom(timestamp(job.lease_expires_at))
        if job.leased_at is not None:
            view.lease_start_time.CopyFrom(timestamp(job.leased_at))
    return view


def worker_to_proto(worker: WorkerRecord) -> pb.Worker:
    return pb.Worker(
        id=worker.id,
        host=worker.host,
        state=pb.WorkerState.Value(f"WORKER_STATE_{worker.state}"),
        job_ids=worker.job_ids,
        start_time=timestamp(worker.start_time),
        last_seen_time=timestamp(worker.last_seen),
        jobs_succeeded=worker.jobs_succeeded,
        jobs_failed=worker.jobs_failed,
        busy_seconds=worker.busy_seconds,
    )


def control_to_proto(state: QueueControlState) -> pb.QueueControl:
    message = pb.QueueControl(paused=state.paused, reason=state.reason, paused_by=state.paused_by)
    if state.paused_at is not None:
        message.pause_time.CopyFrom(timestamp(state.paused_at))
    return message


def bulk_to_proto(result: BulkResult) -> pb.BulkJobsResponse:
    return pb.BulkJobsResponse(
        count=len(result.job_ids),
        job_ids=[str(job_id) for job_id in result.job_ids[:LISTED_IDS]],
        dry_run=result.dry_run,
        objects_deleted=result.objects_deleted,
        more=result.more,
    )


def _limit(value: int) -> int:
    if value == 0:
        return DEFAULT_LIMIT
    if not 1 <= value <= MAX_LIMIT:
        raise InvalidArgument("INVALID_LIMIT", f"limit must be 1-{MAX_LIMIT} (0: {DEFAULT_LIMIT})")
    return value


def _expected_count(value: int) -> int:
    if value < 0:
        raise InvalidArgument("INVALID_EXPECTED_COUNT", "expected_count must not be negative (0: not checked)")
    return value


def _bulk_request(
    request: pb.RequeueJobsRequest | pb.PurgeJobsRequest, allowed_states: tuple[str, ...], refused_reason: str
) -> dict[str, Any]:
    """QueueAdmin.requeue's and purge's arguments from their requests, checked (FAILED when no state is named)."""
    return {
        "selection": parse_filter(
            request.filter, allowed_states=allowed_states, default_states=(FAILED,), refused_reason=refused_reason
        ),
        "dry_run": request.dry_run,
        "expected_count": _expected_count(request.expected_count),
        "limit": _limit(request.limit),
    }


class OperatorServicer(pb_grpc.OperatorServiceServicer):
    def __init__(
        self,
        admin: QueueAdmin,
        workers: WorkerRegistry,
        queue_control: QueueControl,
        events: JobEvents,
    ) -> None:
        self._admin = admin
        self._workers = workers
        self._queue_control = queue_control
        self._events = events

    def _wake_workers(self) -> None:
        """Idle LeaseJob calls on every replica look again (jobs may be theirs to lease now)."""
        self._events.queue_changed(QUEUE_CONTROL_EVENT)

    # --- jobs ----------------------------------------------------------------

    def ListJobs(
        self, request: pb.OperatorListJobsRequest, context: grpc.ServicerContext
    ) -> pb.OperatorListJobsResponse:
        if request.page_size < 0:
            raise InvalidArgument("INVALID_PAGE_SIZE", "page_size must not be negative")
        page_size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        selection = parse_filter(request.filter)
        after = decode_page_token(request.page_token) if request.page_token else None
        listed, more = self._admin.list_jobs(selection, page_size, after)
        response = pb.OperatorListJobsResponse(jobs=[job_view(item) for item in listed])
        if more and listed:
            response.next_page_token = encode_page_token(listed[-1].job)
        return response

    def RequeueJobs(self, request: pb.RequeueJobsRequest, context: grpc.ServicerContext) -> pb.BulkJobsResponse:
        result = self._admin.requeue(**_bulk_request(request, REQUEUEABLE, "STATE_NOT_REQUEUEABLE"))
        if not result.dry_run and result.job_ids:
            for job_id in result.job_ids:
                self._events.job_changed(str(job_id), QUEUED)
            self._wake_workers()
            count = len(result.job_ids)
            log.info("operator requeued %d job(s)", count, extra={"fields": {"count": count}})
        return bulk_to_proto(result)

    def PurgeJobs(self, request: pb.PurgeJobsRequest, context: grpc.ServicerContext) -> pb.BulkJobsResponse:
        result = self._admin.purge(**_bulk_request(request, PURGEABLE, "STATE_NOT_PURGEABLE"))
        if not result.dry_run and result.job_ids:
            for job_id in result.job_ids:
                self._events.job_changed(str(job_id), "DELETED")
            log.info(
                "operator purged %d job(s) and %d stored object(s)",
                len(result.job_ids),
                result.objects_deleted,
                extra={"fields": {"count": len(result.job_ids), "objects_deleted": result.objects_deleted}},
            )
        return bulk_to_proto(result)

    def ExpireLease(self, request: pb.ExpireLeaseRequest, context: grpc.ServicerContext) -> jobs_pb.Job:
        job = self._admin.expire_lease(parse_job_id(request.job_id))
        self._events.job_changed(str(job.id), job.state, queued=True)
        log.info(
            "operator expired the lease of job %s (worker %s)",
            job.id,
            job.worker_id,
            extra={"fields": {"job_id": str(job.id), "worker_id": job.worker_id, "attempts": job.attempts}},
        )
        return job_to_proto(job)

    # --- workers -------------------------------------------------------------

    def ListWorkers(self, request: pb.ListWorkersRequest, context: grpc.ServicerContext) -> pb.ListWorkersResponse:
        workers = self._workers.known(include_gone=request.include_gone)
        return pb.ListWorkersResponse(workers=[worker_to_proto(worker) for worker in workers])

    def DrainWorker(self, request: pb.DrainWorkerRequest, context: grpc.ServicerContext) -> pb.Worker:
        if not request.worker_id:
            raise InvalidArgument("WORKER_ID_REQUIRED", "worker_id is required")
        worker = self._workers.set_draining(request.worker_id, not request.undo)
        if worker is None:
            raise NotFound("WORKER_NOT_FOUND", "no worker with this id made a lease call")
        if request.undo:
            self._wake_workers()
        log.info(
            "operator %s worker %s",
            "took back" if request.undo else "drained",
            worker.id,
            extra={"fields": {"worker_id": worker.id, "draining": not request.undo}},
        )
        return worker_to_proto(worker)

    # --- queue ---------------------------------------------------------------

    def PauseQueue(self, request: pb.PauseQueueRequest, context: grpc.ServicerContext) -> pb.QueueControl:
        if len(request.reason) > MAX_REASON_CHARS:
            raise InvalidArgument("FIELD_TOO_LONG", f"reason is limited to {MAX_REASON_CHARS} characters")
        operator = current_operator()  # the gate's: it let this call in
        state = self._queue_control.pause(request.reason, operator)
        log.warning(
            "queue paused by %s: %s",
            operator,
            request.reason or "(no reason given)",
            extra={"fields": {"operator": operator, "reason": request.reason}},
        )
        return control_to_proto(state)

    def ResumeQueue(self, request: pb.ResumeQueueRequest, context: grpc.ServicerContext) -> pb.QueueControl:
        state = self._queue_control.resume()
        self._wake_workers()
        operator = current_operator()  # the gate's: it let this call in
        log.warning("queue resumed by %s", operator, extra={"fields": {"operator": operator}})
        return control_to_proto(state)

    def GetQueueControl(self, request: pb.GetQueueControlRequest, context: grpc.ServicerContext) -> pb.QueueControl:
        return control_to_proto(self._queue_control.get())
