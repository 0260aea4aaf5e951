import hashlib
from collections.abc import Iterator

import grpc
import pytest
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.storage.v1 import storage_service_pb2 as storage

from libs.errors import ServiceError
from services.gateway.tests.upload_fakes import WAIT_SECONDS, FakePut, FakeRpcError, upload_messages
from services.gateway.uploads import (
    BODY_LENGTH_HEADER,
    UploadBody,
    clean_filename,
    declared_body_length,
    store_upload,
)


def _body(messages: list[public.CreateJobRequest], max_bytes: int = 10**6, **kwargs: object) -> UploadBody:
    return UploadBody(iter(messages), max_bytes, **kwargs)  # type: ignore[arg-type]


def _read(body: UploadBody) -> bytes:
    body.read_options()
    return b"".join(body.chunks())


def test_pdf_streams_through_with_options() -> None:
    chunks = [b"%PDF-1.7\n", b"x" * 5000, b"%%EOF\n"]
    body = _body(upload_messages(chunks, filename="a.pdf", level="high", image_quality=40))
    assert _read(body) == b"".join(chunks)
    assert body.size == sum(map(len, chunks))
    assert body.sha256 == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert (body.options.filename, body.options.level, body.options.image_quality) == ("a.pdf", "high", 40)
    assert not body.options.HasField("file")


def test_options_come_from_the_first_message_only() -> None:
    messages = upload_messages([b"%PDF-1.7\n", b"y" * 2000], request_id="r1")
    messages[1].request_id = "later"
    body = _body(messages)
    assert body.read_options().request_id == "r1"
    assert _read(body) == b"%PDF-1.7\n" + b"y" * 2000  # the first message's data is not lost
    assert body.options.request_id == "r1"


def test_options_may_come_before_the_data() -> None:
    messages = [public.CreateJobRequest(filename="f.pdf"), *upload_messages([b"%PDF-1.4\n" * 200])]
    body = _body(messages)
    assert body.read_options().filename == "f.pdf"
    assert _read(body) == b"%PDF-1.4\n" * 200


def test_header_may_follow_leading_junk_within_a_kib() -> None:
    data = b"\x00" * 500 + b"%PDF-1.4\n" + b"y" * 2000
    assert _read(_body(upload_messages([data]))) == data


@pytest.mark.parametrize(
    ("chunks", "reason"),
    [
        ([b"GIF89a" + b"z" * 990], "NOT_A_PDF"),
        ([b"<html>"], "NOT_A_PDF"),
        ([b""], "EMPTY_FILE"),
        ([b"%PDF-1.4\n", b"a" * 2000], "FILE_TOO_LARGE"),
    ],
)
def test_refusals_carry_a_reason(chunks: list[bytes], reason: str) -> None:
    with pytest.raises(ServiceError) as caught:
        _read(_body(upload_messages(chunks), max_bytes=1000))
    assert caught.value.reason == reason


def test_not_a_pdf_refused_before_its_body_is_passed_on() -> None:
    body = _body(upload_messages([b"MZ" + b"\x90" * 2000, b"more" * 1000]))
    passed_on = []
    with pytest.raises(ServiceError):
        passed_on.extend(body.chunks())
    assert passed_on == []


def test_interrupted_upload_is_refused() -> None:
    body = _body(upload_messages([b"%PDF-1.7\n", b"x" * 5000]), client_finished=lambda: False)
    with pytest.raises(ServiceError) as caught:
        _read(body)
    assert caught.value.reason == "UPLOAD_ABORTED"


def _not_asked() -> bool:
    raise AssertionError("the settle check was asked although the length was declared")


def test_a_declared_length_reached_completes_the_body_without_the_settle_check() -> None:
    chunks = [b"%PDF-1.7\n", b"x" * 5000]
    body = _body(upload_messages(chunks), declared_size=5009, client_finished=_not_asked)
    assert _read(body) == b"".join(chunks)


@pytest.mark.parametrize("declared", [5010, 5008, 0])
def test_a_body_that_ends_away_from_its_declared_length_is_aborted(declared: int) -> None:
    # Fewer bytes: the client went away mid-body (grpcio ends the stream as for a half-close).
    body = _body(upload_messages([b"%PDF-1.7\n", b"x" * 5000]), declared_size=declared, client_finished=_not_asked)
    with pytest.raises(ServiceError) as caught:
        _read(body)
    assert caught.value.reason == "UPLOAD_ABORTED"


@pytest.mark.parametrize(
    ("metadata", "length"),
    [
        (((BODY_LENGTH_HEADER, "5009"), ("x-api-key", "k")), 5009),
        (((BODY_LENGTH_HEADER, "0"),), 0),
        ((), None),  # chunked, or a gRPC client: the settle check decides
        (((BODY_LENGTH_HEADER, "12"), (BODY_LENGTH_HEADER, "12")), None),
        (((BODY_LENGTH_HEADER, "-1"),), None),
        (((BODY_LENGTH_HEADER, " 12"),), None),
        (((BODY_LENGTH_HEADER, "\uff11\uff12"),), None),  # full-width digits: isdigit() alone takes them
        (((BODY_LENGTH_HEADER, "9" * 19),), None),
        (((BODY_LENGTH_HEADER, b"12"),), None),
    ],
)
def test_declared_body_length(metadata: tuple[tuple[str, str | bytes], ...], length: int | None) -> None:
    assert declared_body_length(metadata) == length


def _cancelled_by_client() -> Iterator[public.CreateJobRequest]:
    yield from upload_messages([b"%PDF-1.7\n" * 200])
    raise FakeRpcError(grpc.StatusCode.CANCELLED)  # what grpcio's request iterator does


def test_a_client_cancel_is_upload_aborted_and_drain_is_quiet() -> None:
    body = UploadBody(_cancelled_by_client(), 10**6)
    with pytest.raises(ServiceError) as caught:
        _read(body)
    assert caught.value.reason == "UPLOAD_ABORTED"
    body.drain()  # no exception: the client is gone


def _counted_messages(read: list[int], count: int) -> Iterator[public.CreateJobRequest]:
    for message in upload_messages([b"%PDF-1.7\n" + b"z" * 1015] + [b"z" * 1024] * (count - 1)):
        read.append(1)
        yield message


def test_drain_reads_the_rest_but_stops_past_the_limit() -> None:
    read: list[int] = []
    body = UploadBody(_counted_messages(read, 50), max_bytes=100 * 1024)
    body.read_options()
    body.drain()
    assert len(read) == 50
    read.clear()
    over = UploadBody(_counted_messages(read, 10_000), max_bytes=10 * 1024)
    over.drain()
    assert len(read) == 11  # stops at the first KiB past 10 KiB of a 10,000-message stream


# --- store_upload: the hand-off to the PutObject call -----------------------------------------------


def _store(body: UploadBody, fail_after: int | None = None) -> tuple[FakePut, object]:
    calls: list[FakePut] = []

    def start_put(requests: Iterator[object]) -> FakePut:
        calls.append(FakePut(requests, fail_after))  # type: ignore[arg-type]
        return calls[0]

    try:
        outcome: object = store_upload(body, "inputs/k.pdf", start_put)  # type: ignore[arg-type]
    except (ServiceError, grpc.RpcError) as error:
        outcome = error
    calls[0].thread.join(WAIT_SECONDS)
    assert not calls[0].thread.is_alive(), "grpcio's request thread was left waiting"
    return calls[0], outcome


def test_store_streams_every_chunk_and_commits() -> None:
    chunks = [b"%PDF-1.7\n" + b"a" * 2000] + [bytes([n]) * 3000 for n in range(20)]
    put, stored = _store(_body(upload_messages(chunks)))
    assert b"".join(put.chunks) == b"".join(chunks)
    assert put.header is not None
    assert (put.header.key, put.header.max_size_bytes) == ("inputs/k.pdf", 10**6)
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    assert put.finish == storage.PutObjectFinish(size_bytes=sum(map(len, chunks)), sha256=digest)
    assert put.committed
    assert not put.cancelled
    assert stored.sha256 == digest  # type: ignore[attr-defined]


def test_an_empty_object_is_never_finished() -> None:
    put, refused = _store(_body(upload_messages([b""])))
    assert isinstance(refused, ServiceError)
    assert refused.reason == "EMPTY_FILE"
    assert (put.finish, put.committed) == (None, False)


def test_a_refused_body_cancels_the_call_before_its_requests_end() -> None:
    put, refused = _store(_body(upload_messages([b"%PDF-1.7\n" + b"a" * 2000, b"b" * 100]), max_bytes=2050))
    assert isinstance(refused, ServiceError)
    assert refused.reason == "FILE_TOO_LARGE"
    assert put.cancelled
    assert (put.finish, put.committed) == (None, False)


def test_a_client_gone_mid_body_never_sends_the_finish() -> None:
    body = _body(upload_messages([b"%PDF-1.7\n" + b"a" * 2000, b"b" * 100]), declared_size=10_000)
    put, refused = _store(body)
    assert isinstance(refused, ServiceError)
    assert refused.reason == "UPLOAD_ABORTED"
    assert (put.finish, put.committed) == (None, False)


def test_storage_failing_mid_way_stops_reading_and_leaves_the_rest_to_drain() -> None:
    read: list[int] = []
    body = UploadBody(_counted_messages(read, 40), max_bytes=10**6)
    _put, failed = _store(body, fail_after=3)
    assert isinstance(failed, grpc.RpcError)
    assert len(read) < 40  # the handler is free to answer, after draining
    body.drain()
    assert len(read) == 40


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\report.pdf", "report.pdf"),
        ('a"b;c\r\n.pdf', "a_b_c_.pdf"),
        ("", "document.pdf"),
        ("...", "document.pdf"),
        ("résumé.pdf", "résumé.pdf"),
    ],
)
def test_clean_filename(raw: str, clean: str) -> None:
    assert clean_filename(raw) == clean
