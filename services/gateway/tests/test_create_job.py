"""CreateJob's upload path with fakes for jobs, storage and scanner: idempotency (AIP-155) decided
before anything is stored, and errors answered only once the client's body is read."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import MISSING, fields
from unittest import mock

import grpc
import pytest
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.scanner.v1 import scanner_service_pb2 as scanner_pb
from prometheus_client import CollectorRegistry

from libs.errors import ServiceError
from services.gateway.auth import Authenticator
from services.gateway.servicer import Dependencies, GatewayServicer
from services.gateway.tests.upload_fakes import CleanScanner, FakeJobs, FakeRpcError, FakeStorage, upload_messages
from services.gateway.uploads import BODY_LENGTH_HEADER

PDF = [b"%PDF-1.7\n" + b"a" * 3000, b"b" * 3000, b"%%EOF\n"]
OTHER_PDF = [b"%PDF-1.7\n" + b"a" * 3000, b"c" * 3000, b"%%EOF\n"]


def _servicer(jobs: FakeJobs, storage: FakeStorage, scanner: CleanScanner | None = None) -> GatewayServicer:
    # Dependencies the upload path does not look at (rate limits, quotas, health) are mocks.
    required = {f.name: mock.Mock() for f in fields(Dependencies) if f.default is MISSING}
    deps = {
        **required,
        "jobs": jobs,
        "storage": storage,
        "scanner": scanner or CleanScanner(),
        "authenticator": Authenticator({}),
        "max_upload_bytes": 10**6,
        "call_timeout_seconds": 5.0,
    }
    return GatewayServicer(Dependencies(**deps), CollectorRegistry())


def _context(metadata: tuple[tuple[str, str], ...] = ()) -> mock.Mock:
    context = mock.Mock()
    context.invocation_metadata.return_value = metadata
    context.is_active.return_value = True
    return context


class Sent:
    """A client's stream that records how many messages the gateway read."""

    def __init__(self, messages: list[public.CreateJobRequest]) -> None:
        self.messages = messages
        self.read = 0

    def __iter__(self) -> Iterator[public.CreateJobRequest]:
        for message in self.messages:
            self.read += 1
            yield message

    @property
    def all_read(self) -> bool:
        return self.read == len(self.messages)


def _upload(servicer: GatewayServicer, chunks: list[bytes], **options: object) -> public.Job:
    return servicer.CreateJob(iter(upload_messages(chunks, **options)), _context())


def _refused(servicer: GatewayServicer, sent: Sent) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        servicer.CreateJob(iter(sent), _context())
    return caught.value


def test_a_retry_with_the_same_file_and_options_gets_the_first_job_and_stores_nothing() -> None:
    jobs, storage = FakeJobs(), FakeStorage()
    servicer = _servicer(jobs, storage)
    first = _upload(servicer, PDF, request_id="r-1", level="high", filename="a.pdf")
    again = _upload(servicer, PDF, request_id="r-1", level="HIGH", filename="renamed.pdf")
    assert again.id == first.id
    assert len(storage.puts) == 1  # the retry was read and hashed, never stored
    assert len(jobs.created) == 1
    assert storage.deleted == []


@pytest.mark.parametrize(
    ("chunks", "options"),
    [
        (OTHER_PDF, {"level": "high"}),
        (PDF, {"level": "low"}),
        (PDF, {"level": "high", "grayscale": True}),
        (PDF[:2], {"level": "high"}),
    ],
    ids=["other-file", "other-level", "other-option", "truncated-file"],
)
def test_a_reused_request_id_is_409_and_stores_nothing(chunks: list[bytes], options: dict[str, object]) -> None:
    jobs, storage = FakeJobs(), FakeStorage()
    servicer = _servicer(jobs, storage)
    _upload(servicer, PDF, request_id="r-1", level="high")
    sent = Sent(upload_messages(chunks, request_id="r-1", **options))
    refused = _refused(servicer, sent)
    assert (refused.code, refused.reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    assert sent.all_read
    assert len(storage.puts) == 1
    assert len(jobs.created) == 1


def test_without_request_id_every_upload_is_a_new_job() -> None:
    jobs, storage = FakeJobs(), FakeStorage()
    servicer = _servicer(jobs, storage)
    assert _upload(servicer, PDF).id != _upload(servicer, PDF).id
    assert (len(storage.puts), jobs.lookups) == (2, 0)


def test_storage_failing_mid_upload_is_503_after_the_whole_body_is_read() -> None:
    jobs, storage = FakeJobs(), FakeStorage(fail_after=2)
    sent = Sent(upload_messages([b"%PDF-1.7\n" + b"a" * 2000] + [b"b" * 4000] * 30, request_id="r-2"))
    refused = _refused(_servicer(jobs, storage), sent)
    assert (refused.code, refused.reason) == (grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE")
    assert refused.metadata == {"dependency": "storage"}
    assert sent.all_read  # answered only once the client finished sending: no TCP reset
    assert jobs.created == []


def test_errors_before_the_body_is_read_wait_for_the_body_too() -> None:
    jobs, storage = FakeJobs(), FakeStorage()
    sent = Sent(upload_messages([b"%PDF-1.7\n"] + [b"b" * 4000] * 10, level="ultra"))
    refused = _refused(_servicer(jobs, storage), sent)
    assert refused.reason == "INVALID_LEVEL"
    assert sent.all_read
    assert storage.puts == []


def test_jobs_down_before_the_lookup_is_503_and_nothing_is_stored() -> None:
    jobs, storage = FakeJobs(), FakeStorage()
    jobs.FindJobByRequestId = mock.Mock(side_effect=FakeRpcError(grpc.StatusCode.UNAVAILABLE))  # type: ignore[method-assign]
    sent = Sent(upload_messages(PDF, request_id="r-3"))
    refused = _refused(_servicer(jobs, storage), sent)
    assert (refused.reason, refused.metadata) == ("DEPENDENCY_UNAVAILABLE", {"dependency": "jobs"})
    assert sent.all_read
    assert storage.puts == []


def test_a_body_of_its_declared_length_is_stored_without_the_settle_check() -> None:
    jobs, storage = FakeJobs(), FakeStorage()
    context = _context(((BODY_LENGTH_HEADER, str(sum(map(len, PDF)))),))
    job = _servicer(jobs, storage).CreateJob(iter(upload_messages(PDF)), context)
    assert job.input_size_bytes == sum(map(len, PDF))
    [put] = storage.puts
    assert put.committed
    context.is_active.assert_not_called()  # the settle check watches is_active()


def test_a_body_short_of_its_declared_length_is_aborted_and_nothing_is_stored() -> None:
    jobs, storage = FakeJobs(), FakeStorage()
    context = _context(((BODY_LENGTH_HEADER, str(sum(map(len, PDF)) + 1)),))
    with pytest.raises(ServiceError) as caught:
        _servicer(jobs, storage).CreateJob(iter(upload_messages(PDF)), context)
    assert caught.value.reason == "UPLOAD_ABORTED"
    [put] = storage.puts
    assert (put.finish, put.committed) == (None, False)
    assert jobs.created == []


def test_without_a_declared_length_a_cancel_seen_late_is_aborted() -> None:
    jobs, storage = FakeJobs(), FakeStorage()
    context = _context()
    context.is_active.side_effect = [True, False]  # the cancel shows a moment after the stream ended
    with pytest.raises(ServiceError) as caught:
        _servicer(jobs, storage).CreateJob(iter(upload_messages(PDF)), context)
    assert caught.value.reason == "UPLOAD_ABORTED"
    assert not storage.puts[0].committed


@pytest.mark.parametrize(
    ("report", "reason"),
    [
        (scanner_pb.PdfReport(is_pdf=True, encrypted=True, opening_failure="ENCRYPTED_PDF"), "ENCRYPTED_PDF"),
        (scanner_pb.PdfReport(opening_failure="MALFORMED_PDF"), "MALFORMED_PDF"),
    ],
)
def test_a_file_the_compressor_cannot_open_is_refused_with_the_jobs_reason(
    report: scanner_pb.PdfReport, reason: str
) -> None:
    jobs, storage = FakeJobs(), FakeStorage()
    with pytest.raises(ServiceError) as caught:
        _upload(_servicer(jobs, storage, CleanScanner(pdf=report)), PDF)
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert jobs.created == []
    assert storage.deleted == [storage.puts[0].header.key]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "report",
    [
        scanner_pb.PdfReport(is_pdf=True, encrypted=True),  # the opening check could not tell: the job decides
        scanner_pb.PdfReport(),  # qpdf could not open it, the compressor can (PDFium rebuilds it)
        scanner_pb.PdfReport(opening_failure="SOMETHING_NEW"),  # a reason this gateway does not know
    ],
)
def test_an_upload_without_a_known_opening_failure_is_queued(report: scanner_pb.PdfReport) -> None:
    jobs, storage = FakeJobs(), FakeStorage()
    _upload(_servicer(jobs, storage, CleanScanner(pdf=report)), PDF)
    assert len(jobs.created) == 1
