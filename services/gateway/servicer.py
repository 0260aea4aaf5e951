"""The public GatewayService: authenticate, validate, then delegate."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote

import grpc
from google.api import httpbody_pb2
from google.protobuf import empty_pb2
from google.protobuf.message import Message
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.gateway.v1 import gateway_service_pb2_grpc as public_grpc
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as jobs_grpc
from pdfsmaller.scanner.v1 import scanner_service_pb2 as scanner
from pdfsmaller.scanner.v1 import scanner_service_pb2_grpc as scanner_grpc
from pdfsmaller.storage.v1 import storage_service_pb2 as storage
from pdfsmaller.storage.v1 import storage_service_pb2_grpc as storage_grpc
from prometheus_client import CollectorRegistry, Counter

from libs.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
    Unavailable,
    error_info,
    from_rpc,
    reason_of,
)
from libs.telemetry import current_traceparent
from services.gateway.auth import Authenticator, Caller, Scope
from services.gateway.convert import download_name, parse_options, to_public
from services.gateway.health import HealthReporter, status_header
from services.gateway.quotas import Quotas, QuotaUsage
from services.gateway.ratelimit import Budget, LimitExceeded, Metadata, RateLimiter, WindowState
from services.gateway.security_events import SecurityEvents
from services.gateway.uploads import UploadBody, clean_filename, store_upload, upload_body

log = logging.getLogger(__name__)

MAX_REQUEST_ID_CHARS = 128
Reply = TypeVar("Reply")


@dataclass(frozen=True)
class Dependencies:
    jobs: jobs_grpc.JobsServiceStub
    storage: storage_grpc.StorageServiceStub
    scanner: scanner_grpc.ScannerServiceStub
    authenticator: Authenticator
    rate_limiter: RateLimiter
    quotas: Quotas
    health: HealthReporter
    security_events: SecurityEvents
    max_upload_bytes: int
    call_timeout_seconds: float
    refuse_active_content: frozenset[str] = frozenset()
    # A whole upload from a slow client may take long; Envoy's idle timeout ends a stalled one.
    upload_timeout_seconds: float = 3600.0


class GatewayServicer(public_grpc.GatewayServiceServicer):
    def __init__(self, deps: Dependencies, registry: CollectorRegistry) -> None:
        self._deps = deps
        self._uploads = Counter("gateway_uploads_total", "Uploads by outcome.", ["outcome"], registry=registry)
        self._upload_bytes = Counter("gateway_upload_bytes_total", "Bytes received in uploads.", registry=registry)

    # --- helpers -------------------------------------------------------------

    def _tenant(self, context: grpc.ServicerContext, scope: Scope | None, budget: Budget = Budget.UPLOADS) -> str:
        """Authenticate, check the key has `scope`, and spend one request of the caller's `budget`; the
        RateLimit headers go out now as initial metadata."""
        tenant, headers = self._limited(context, budget, scope)
        context.send_initial_metadata(headers)
        return tenant

    def _uploader(self, context: grpc.ServicerContext) -> tuple[str, Metadata]:
        """The tenant and its RateLimit headers for an upload, refused at once when the tenant's daily
        quota is used up. The headers are not sent yet: an upload answers with them, or fails with
        them in a trailers-only status (the only trailers Envoy turns into HTTP headers), so a
        refusal decided after the body arrived still carries Retry-After to REST clients."""
        tenant, headers = self._limited(context, Budget.UPLOADS, Scope.UPLOAD)
        with _limit_headers(context, headers), self._quota_refusals_logged(context, tenant):
            self._deps.quotas.ensure_room(tenant)
        return tenant, headers

    def _limited(self, context: grpc.ServicerContext, budget: Budget, scope: Scope | None) -> tuple[str, Metadata]:
        """The tenant and the RateLimit headers, for a call that sends its own initial metadata."""
        caller = self._caller(context, scope)
        with _limit_headers(context):
            try:
                decision = self._deps.rate_limiter.check(caller.limiter_id, budget)
            except LimitExceeded as refused:
                self._deps.security_events.rate_limit_exceeded(context, caller.tenant, budget, refused.metadata)
                raise
        return caller.tenant, decision.headers()

    def _caller(self, context: grpc.ServicerContext, scope: Scope | None = None) -> Caller:
        """Who is calling, refused (PERMISSION_DENIED) when the key lacks `scope`; a missing or unknown
        API key, and a key used outside its scopes, are security events."""
        try:
            caller = self._deps.authenticator.caller_of(context)
        except Unauthenticated as refused:
            self._deps.security_events.authentication_failed(context, refused.reason)
            raise
        if scope is not None:
            try:
                caller.require(scope)
            except PermissionDenied:
                self._deps.security_events.permission_denied(context, caller.tenant, scope.label)
                raise
        return caller

    @contextmanager
    def _quota_refusals_logged(self, context: grpc.ServicerContext, tenant: str) -> Iterator[None]:
        try:
            yield
        except LimitExceeded as refused:
            self._deps.security_events.quota_exceeded(context, tenant, refused.metadata)
            raise

    def _charged(
        self,
        context: grpc.ServicerContext,
        tenant: str,
        size: int,
        job_id: str,
        admit: Callable[[], jobs.Job],
        headers: Metadata = (),
    ) -> jobs.Job:
        """Run `admit` with the upload charged to the tenant's daily quota, refunded unless it created
        the job `job_id` (refused, failed, or a retry answered with the first upload's job)."""
        with _limit_headers(context, headers), self._quota_refusals_logged(context, tenant):
            reservation = self._deps.quotas.reserve(tenant, size)
        try:
            job = admit()
        except BaseException:
            reservation.refund()
            raise
        if job.id != job_id:
            reservation.refund()
        return job

    def _delete_quietly(self, key: str) -> None:
        try:
            self._deps.storage.DeleteObject(
                storage.DeleteObjectRequest(key=key), timeout=self._deps.call_timeout_seconds
            )
        except grpc.RpcError:
            # The retention sweep cannot see an object without a job: log loudly for the operator.
            log.error("could not delete refused upload %s", key, exc_info=True)

    def _call_jobs(self, method: Callable[..., Reply], request: Message) -> Reply:
        """A unary call to the jobs service; a failure becomes this API's error (reason kept)."""
        try:
            return method(request, timeout=self._deps.call_timeout_seconds)
        except grpc.RpcError as error:
            raise from_rpc(error, "jobs") from None

    def _get_job(self, job_id: str, tenant: str) -> jobs.Job:
        return self._call_jobs(self._deps.jobs.GetJob, jobs.GetJobRequest(id=job_id, tenant=tenant))

    # --- uploads -------------------------------------------------------------

    def CreateJob(
        self, request_iterator: Iterable[public.CreateJobRequest], context: grpc.ServicerContext
    ) -> public.Job:
        body = upload_body(request_iterator, context, self._deps.max_upload_bytes)
        headers: Metadata = ()
        try:
            tenant, headers = self._uploader(context)
            job = self._create_job(body, context, tenant, headers)
        except LimitExceeded:
            body.drain()  # its trailers, headers included, are set already
            raise
        except Exception:
            body.drain()  # a client still sending when the error comes would see a TCP reset instead
            context.set_trailing_metadata(headers)
            raise
        context.send_initial_metadata(headers)
        return job

    def _create_job(
        self, body: UploadBody, context: grpc.ServicerContext, tenant: str, headers: Metadata
    ) -> public.Job:
        requested = body.read_options()
        options = parse_options(requested)
        request_id = _request_id(requested)
        existing = self._job_by_request_id(tenant, request_id)
        if existing is not None:
            return self._replay(existing, body, options)
        job_id = str(uuid.uuid4())
        key = f"inputs/{job_id}.pdf"
        stored = self._store(body, key)
        try:
            # The daily quota is charged on acceptance and refunded if admission fails.
            job = self._charged(
                context,
                tenant,
                stored.size_bytes,
                job_id,
                lambda: self._admit(context, tenant, job_id, stored, requested, options),
                headers,
            )
        except BaseException:
            self._delete_quietly(key)
            raise
        fields = {"job_id": job.id, "tenant": tenant, "input_size_bytes": stored.size_bytes}
        if job.id != job_id:  # a retry that raced the first upload: the first upload's job stands
            self._delete_quietly(key)
            log.info("upload matched job %s by request_id; copy discarded", job.id, extra={"fields": fields})
        else:
            log.info("job %s created", job.id, extra={"fields": fields})
        self._uploads.labels("ACCEPTED").inc()
        return to_public(job)

    def _job_by_request_id(self, tenant: str, request_id: str) -> jobs.Job | None:
        """The job an earlier upload with this request_id created, asked before anything is stored."""
        if not request_id:
            return None
        request = jobs.FindJobByRequestIdRequest(tenant=tenant, request_id=request_id)
        try:
            return self._deps.jobs.FindJobByRequestId(request, timeout=self._deps.call_timeout_seconds)
        except grpc.RpcError as error:
            if isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise from_rpc(error, "jobs") from None

    def _replay(self, existing: jobs.Job, body: UploadBody, options: jobs.CompressionOptions) -> public.Job:
        """A retried upload (AIP-155): read the body without storing it; the same file and options get the
        first job, anything else is a reuse of the request_id."""
        for _chunk in body.chunks():
            pass
        if body.sha256 != existing.input_sha256 or options != existing.options:
            self._uploads.labels("REQUEST_ID_REUSED").inc()
            raise AlreadyExists(
                "REQUEST_ID_REUSED",
                "this request_id was used for another file or other options; send a new request_id",
            )
        self._uploads.labels("REPLAYED").inc()
        log.info("upload matched job %s by request_id; nothing stored", existing.id)
        return to_public(existing)

    def _store(self, body: UploadBody, key: str) -> storage.ObjectInfo:
        def start_put(requests: Iterator[storage.PutObjectRequest]) -> grpc.Future:
            return self._deps.storage.PutObject.future(requests, timeout=self._deps.upload_timeout_seconds)

        try:
            stored = store_upload(body, key, start_put)
        except ServiceError as refusal:
            self._uploads.labels(refusal.reason).inc()
            raise
        except grpc.RpcError as error:
            self._uploads.labels("STORAGE_FAILED").inc()
            raise from_rpc(error, "storage") from None
        self._upload_bytes.inc(stored.size_bytes)
        return stored

    def _admit(
        self,
        context: grpc.ServicerContext,
        tenant: str,
        job_id: str,
        stored: storage.ObjectInfo,
        requested: public.CreateJobRequest,
        options: jobs.CompressionOptions,
    ) -> jobs.Job:
        """Scan a stored upload and create its job."""
        self._check_scan(self._scan(stored.key), context, tenant, stored.sha256)
        return self._call_jobs(
            self._deps.jobs.CreateJob,
            jobs.CreateJobRequest(
                tenant=tenant,
                request_id=requested.request_id.strip(),
                job_id=job_id,
                filename=clean_filename(requested.filename),
                options=options,
                input_key=stored.key,
                input_size_bytes=stored.size_bytes,
                input_sha256=stored.sha256,
                traceparent=current_traceparent(),
            ),
        )

    def _scan(self, key: str) -> scanner.ScanObjectResponse:
        try:
            return self._deps.scanner.ScanObject(
                scanner.ScanObjectRequest(key=key), timeout=self._deps.call_timeout_seconds * 4
            )
        except grpc.RpcError as error:
            self._uploads.labels("SCAN_FAILED").inc()
            raise _scan_error(error, key) from None

    def _check_scan(
        self, scan: scanner.ScanObjectResponse, context: grpc.ServicerContext, tenant: str, sha256: str
    ) -> None:
        """Refuse the upload for what the scan found: malware, a file the compressor would fail at once (with
        the job's reason), active content the operator refuses, or no verdict. Malware and refused active
        content are security events."""
        if scan.verdict == scanner.VERDICT_INFECTED:
            self._uploads.labels("MALWARE_DETECTED").inc()
            self._deps.security_events.malware_detected(context, tenant, scan.signature, sha256)
            raise InvalidArgument(
                "MALWARE_DETECTED", "the file contains malware and was refused", metadata={"signature": scan.signature}
            )
        refusal = opening_refusal(scan.pdf)
        if refusal is not None:
            self._uploads.labels(refusal.reason).inc()
            raise refusal
        found = active_content(scan.pdf) & self._deps.refuse_active_content
        if found:
            self._uploads.labels("ACTIVE_CONTENT_REFUSED").inc()
            self._deps.security_events.active_content_refused(context, tenant, found, sha256)
            raise InvalidArgument(
                "ACTIVE_CONTENT_REFUSED",
                f"the PDF carries active content this service refuses: {', '.join(sorted(found))}",
                metadata={"kinds": ",".join(sorted(found))},
            )
        if scan.verdict != scanner.VERDICT_CLEAN:
            raise ServiceError(
                "SCAN_INCONCLUSIVE", "the malware scan gave no verdict", code=grpc.StatusCode.UNAVAILABLE
            )

    # --- job resource ----------------------------------------------------------

    def GetJob(self, request: public.GetJobRequest, context: grpc.ServicerContext) -> public.Job:
        return to_public(self._get_job(request.id, self._tenant(context, Scope.READ, Budget.READS)))

    def ListJobs(self, request: public.ListJobsRequest, context: grpc.ServicerContext) -> public.ListJobsResponse:
        tenant = self._tenant(context, Scope.READ, Budget.READS)
        page = self._call_jobs(
            self._deps.jobs.ListJobs,
            jobs.ListJobsRequest(tenant=tenant, page_size=request.page_size, page_token=request.page_token),
        )
        return public.ListJobsResponse(jobs=[to_public(job) for job in page.jobs], next_page_token=page.next_page_token)

    def DeleteJob(self, request: public.DeleteJobRequest, context: grpc.ServicerContext) -> empty_pb2.Empty:
        tenant = self._tenant(context, Scope.DELETE)
        self._call_jobs(self._deps.jobs.DeleteJob, jobs.DeleteJobRequest(id=request.id, tenant=tenant))
        return empty_pb2.Empty()

    def CancelJob(self, request: public.CancelJobRequest, context: grpc.ServicerContext) -> public.Job:
        tenant = self._tenant(context, Scope.DELETE)
        return to_public(
            self._call_jobs(self._deps.jobs.CancelJob, jobs.CancelJobRequest(id=request.id, tenant=tenant))
        )

    def WatchJob(self, request: public.WatchJobRequest, context: grpc.ServicerContext) -> Iterator[public.Job]:
        # The RateLimit headers go with the first update: once initial metadata is out, an error
        # (no such job) can no longer set the HTTP status of a REST watch (Envoy's transcoder).
        tenant, limit_headers = self._limited(context, Budget.READS, Scope.READ)
        updates = self._deps.jobs.WatchJob(jobs.WatchJobRequest(id=request.id, tenant=tenant))
        context.add_callback(updates.cancel)
        try:
            for count, job in enumerate(updates):
                if count == 0:
                    context.send_initial_metadata(limit_headers)
                yield to_public(job)
        except grpc.RpcError as error:
            if context.is_active():
                raise from_rpc(error, "jobs") from None

    def GetJobResult(
        self, request: public.GetJobResultRequest, context: grpc.ServicerContext
    ) -> Iterator[httpbody_pb2.HttpBody]:
        tenant, limit_headers = self._limited(context, Budget.READS, Scope.READ)
        job = self._get_job(request.id, tenant)
        if job.state != jobs.JOB_STATE_SUCCEEDED:
            state = jobs.JobState.Name(job.state).removeprefix("JOB_STATE_")
            raise FailedPrecondition("JOB_NOT_SUCCEEDED", f"the job is {state}; a result exists once it has succeeded")
        parts = self._deps.storage.GetObject(storage.GetObjectRequest(key=job.output_key))
        context.add_callback(parts.cancel)
        try:
            first = next(parts)
            if not first.HasField("info"):
                raise ServiceError("STORAGE_PROTOCOL", "storage answered without object info")
            name = download_name(job.filename)
            # Sent before any byte: HTTP/1.1 clients cannot see a failure after the body starts.
            context.send_initial_metadata(
                (
                    ("content-disposition", _content_disposition(name)),
                    ("x-content-length", str(first.info.size_bytes)),
                    ("x-content-sha256", first.info.sha256),
                    *limit_headers,
                )
            )
            for part in parts:
                yield httpbody_pb2.HttpBody(content_type="application/pdf", data=part.chunk)
        except grpc.RpcError as error:
            raise _result_error(error, job) from None

    def GetQuota(self, request: public.GetQuotaRequest, context: grpc.ServicerContext) -> public.Quota:
        # Any key may see its own tenant's quota, whatever its scopes.
        caller = self._caller(context)
        tenant = self._tenant(context, None, Budget.READS)
        usage = self._deps.quotas.usage(tenant)
        windows = self._deps.rate_limiter.peek(caller.limiter_id) or ()
        return quota_reply(tenant, usage, windows)

    def GetHealth(self, request: public.GetHealthRequest, context: grpc.ServicerContext) -> public.Health:
        health = self._deps.health.report()
        # Envoy answers REST callers 503 for "not-serving" (the body stays this report); gRPC read `status`.
        context.send_initial_metadata((status_header(health.status),))
        return health

    def GetLiveness(self, request: public.GetLivenessRequest, context: grpc.ServicerContext) -> public.Liveness:
        """No dependency is asked: that this answers at all is the answer."""
        return public.Liveness(status=public.SERVING_STATUS_SERVING)


@contextmanager
def _limit_headers(context: grpc.ServicerContext, sent_with: Metadata = ()) -> Iterator[None]:
    """A refusal's headers (Retry-After, RateLimit; plus `sent_with`) go out as trailing metadata with
    its status."""
    try:
        yield
    except LimitExceeded as refused:
        context.set_trailing_metadata((*sent_with, *refused.headers))
        raise


def quota_reply(tenant: str, usage: QuotaUsage, windows: Iterable[WindowState]) -> public.Quota:
    reply = public.Quota(
        tenant=tenant,
        files=_counter(usage.limits.files_per_day, usage.files),
        bytes=_counter(usage.limits.bytes_per_day, usage.bytes),
        rate_limits=[
            public.RateLimitWindow(
                policy=w.name,
                quota=w.quota,
                window_seconds=w.window_seconds,
                remaining=w.remaining,
                reset_seconds=w.reset_seconds,
            )
            for w in windows
        ],
    )
    reply.reset_time.FromDatetime(usage.reset_time)
    return reply


def _counter(limit: int, used: int) -> public.QuotaCounter:
    return public.QuotaCounter(limit=limit, used=used, remaining=max(0, limit - used), unlimited=not limit)


def _request_id(requested: public.CreateJobRequest) -> str:
    request_id = requested.request_id.strip()
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise InvalidArgument("INVALID_REQUEST_ID", f"request_id is longer than {MAX_REQUEST_ID_CHARS} characters")
    return request_id


def _is_not_found(error: grpc.RpcError) -> bool:
    return isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.NOT_FOUND


def _result_error(error: grpc.RpcError, job: jobs.Job) -> ServiceError:
    """A failed read of a job's result as this API's error. Storage's NOT_FOUND names the object key
    and its own domain; the client learns only that the result is gone (deleted by hand, or removed
    by the retention sweep before a database restore brought the job back), the log which object."""
    if not _is_not_found(error):
        return from_rpc(error, "storage")
    fields = {"job_id": job.id, "output_key": job.output_key, "reason": reason_of(error)}
    log.warning("result %s of job %s is missing from storage", job.output_key, job.id, extra={"fields": fields})
    return NotFound(
        "RESULT_NOT_FOUND",
        "the result of this job is no longer available; upload the file again",
        metadata={"job_id": job.id},
    )


def _scan_error(error: grpc.RpcError, key: str) -> ServiceError:
    """A failed scan as this API's error. clamd being down keeps its own reason (CLAMD_UNAVAILABLE, a
    documented 503) instead of the generic DEPENDENCY_UNAVAILABLE: the scanner itself is up. The
    upload `key` missing when the scanner reads it (storage's NOT_FOUND, naming the key, passed on by
    the scanner) is storage failing, not the client: a 503 to retry, the key only in the log."""
    if _is_not_found(error):
        fields = {"input_key": key, "reason": reason_of(error)}
        log.warning("stored upload %s was missing when scanned", key, extra={"fields": fields})
        return Unavailable(
            "DEPENDENCY_UNAVAILABLE", "storage is unavailable; retry later", metadata={"dependency": "storage"}
        )
    info = error_info(error)
    if (
        isinstance(error, grpc.Call)
        and error.code() == grpc.StatusCode.UNAVAILABLE
        and info is not None
        and info.reason == "CLAMD_UNAVAILABLE"
    ):
        return Unavailable(
            "CLAMD_UNAVAILABLE",
            "the malware scanner is unavailable; the file was not accepted, retry later",
            metadata={"dependency": "malware-scanning"},
        )
    return from_rpc(error, "scanner")


def opening_refusal(report: scanner.PdfReport) -> InvalidArgument | None:
    """The refusal of a file the compressor would fail at once (the scanner asked its opening code), with the
    reason the job would have failed with."""
    if report.opening_failure == "ENCRYPTED_PDF":
        return InvalidArgument(
            "ENCRYPTED_PDF", "the PDF needs a password to open; only PDFs that open without one can be compressed"
        )
    if report.opening_failure == "MALFORMED_PDF":
        return InvalidArgument("MALFORMED_PDF", "the PDF is damaged and could not be repaired")
    if report.opening_failure == "NOT_A_PDF":  # the first KiB was checked already: only a scanner's own finding
        return InvalidArgument("NOT_A_PDF", "the file is not a PDF (no %PDF- header)")
    return None


def active_content(report: scanner.PdfReport) -> set[str]:
    """The kinds of active content the scanner found, by REFUSE_ACTIVE_CONTENT's names."""
    flags = {
        "javascript": report.has_javascript,
        "launch": report.has_launch_action,
        "embedded_files": report.has_embedded_files,
    }
    return {kind for kind, present in flags.items() if present}


def _content_disposition(name: str) -> str:
    ascii_name = name.encode("ascii", "replace").decode().replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
