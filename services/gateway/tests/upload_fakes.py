"""Test doubles for the upload path: a storage PutObject call and the stubs the gateway calls."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs
from pdfsmaller.scanner.v1 import scanner_service_pb2 as scanner
from pdfsmaller.storage.v1 import storage_service_pb2 as storage

WAIT_SECONDS = 10


class FakeRpcError(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """A failed call with a status code and no details, as a dead or refusing server gives."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return ""

    def initial_metadata(self) -> tuple[()]:
        return ()

    def trailing_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: object) -> bool:
        return False


class FakePut:
    """A PutObject call like grpcio's: a thread of its own reads the requests; `fail_after` chunks it
    fails as a killed storage does (and reads one request more, as grpcio's thread is then waiting).
    It commits as storage does: only when the requests end with a finish that matches the chunks."""

    def __init__(self, requests: Iterator[storage.PutObjectRequest], fail_after: int | None = None) -> None:
        self.header: storage.PutObjectHeader | None = None
        self.chunks: list[bytes] = []
        self.finish: storage.PutObjectFinish | None = None
        self.cancelled = False
        self.committed = False
        self._fail_after = fail_after
        self._done = threading.Event()
        self._result: storage.ObjectInfo | None = None
        self._error: grpc.RpcError | None = None
        self.thread = threading.Thread(target=self._consume, args=(requests,), daemon=True)
        self.thread.start()

    def _consume(self, requests: Iterator[storage.PutObjectRequest]) -> None:
        for request in requests:
            part = request.WhichOneof("part")
            if part == "header":
                self.header = request.header
                continue
            if part == "finish":
                self.finish = request.finish
                continue
            self.chunks.append(request.chunk)
            if len(self.chunks) == self._fail_after:
                self._error = FakeRpcError(grpc.StatusCode.UNAVAILABLE)
                self._done.set()
                next(requests, None)
                return
        if not self._done.is_set():
            self._commit()

    def _commit(self) -> None:
        data = b"".join(self.chunks)
        assert self.header is not None
        info = storage.ObjectInfo(key=self.header.key, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
        if self.finish is None or (self.finish.size_bytes, self.finish.sha256) != (info.size_bytes, info.sha256):
            self._error = FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT)  # UPLOAD_INCOMPLETE or a mismatch
        else:
            self.committed = True
            self._result = info
        self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> bool:
        self.cancelled = True
        self._error = FakeRpcError(grpc.StatusCode.CANCELLED)
        self._done.set()
        return True

    def result(self, timeout: float | None = None) -> storage.ObjectInfo:
        assert self._done.wait(WAIT_SECONDS)
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


@dataclass
class FakeStorage:
    fail_after: int | None = None
    puts: list[FakePut] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.PutObject = self  # the stub's multi-callable: PutObject.future(requests, timeout=)

    def future(self, requests: Iterator[storage.PutObjectRequest], timeout: float) -> FakePut:
        put = FakePut(requests, self.fail_after)
        self.puts.append(put)
        return put

    def DeleteObject(self, request: storage.DeleteObjectRequest, timeout: float) -> None:
        self.deleted.append(request.key)


@dataclass
class FakeJobs:
    """Jobs by (tenant, request_id), created the way the jobs service does (idempotent)."""

    jobs: dict[tuple[str, str], jobs.Job] = field(default_factory=dict)
    created: list[jobs.CreateJobRequest] = field(default_factory=list)
    lookups: int = 0

    def FindJobByRequestId(self, request: jobs.FindJobByRequestIdRequest, timeout: float) -> jobs.Job:
        self.lookups += 1
        job = self.jobs.get((request.tenant, request.request_id))
        if job is None:
            raise FakeRpcError(grpc.StatusCode.NOT_FOUND)
        return job

    def CreateJob(self, request: jobs.CreateJobRequest, timeout: float) -> jobs.Job:
        self.created.append(request)
        job = jobs.Job(
            id=request.job_id,
            tenant=request.tenant,
            state=jobs.JOB_STATE_QUEUED,
            filename=request.filename,
            options=request.options,
            input_key=request.input_key,
            input_size_bytes=request.input_size_bytes,
            input_sha256=request.input_sha256,
        )
        if request.request_id:
            job = self.jobs.setdefault((request.tenant, request.request_id), job)
        return job


@dataclass
class CleanScanner:
    """No malware; the structure report `pdf` (a plain PDF unless a test says otherwise)."""

    pdf: scanner.PdfReport = field(default_factory=lambda: scanner.PdfReport(is_pdf=True, page_count=1))

    def ScanObject(self, request: scanner.ScanObjectRequest, timeout: float) -> scanner.ScanObjectResponse:
        return scanner.ScanObjectResponse(verdict=scanner.VERDICT_CLEAN, pdf=self.pdf)


def upload_messages(chunks: list[bytes], **options: object) -> list[public.CreateJobRequest]:
    """A CreateJob stream: options on the first message, one chunk per message."""
    messages = [public.CreateJobRequest(file={"data": chunk}) for chunk in chunks]  # type: ignore[arg-type]
    for name, value in options.items():
        setattr(messages[0], name, value)
    return messages
