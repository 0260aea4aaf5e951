from collections.abc import Iterable

import pytest
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public

from libs.errors import ServiceError
from services.gateway.uploads import UploadStream, clean_filename


def _messages(chunks: Iterable[bytes], **options: object) -> list[public.CreateJobRequest]:
    messages = [public.CreateJobRequest(file={"data": chunk}) for chunk in chunks]
    for name, value in options.items():
        setattr(messages[0], name, value)
    return messages


def _drain(upload: UploadStream) -> bytes:
    parts = list(upload.requests())
    assert parts[0].HasField("header")
    return b"".join(part.chunk for part in parts[1:])


def test_pdf_streams_through_with_options() -> None:
    body = [b"%PDF-1.7\n", b"x" * 5000, b"%%EOF\n"]
    upload = UploadStream(_messages(body, filename="a.pdf", level="high", image_quality=40), "inputs/k.pdf", 10**6)
    assert _drain(upload) == b"".join(body)
    assert upload.size == sum(map(len, body))
    assert (upload.options.filename, upload.options.level, upload.options.image_quality) == ("a.pdf", "high", 40)


def test_header_may_follow_leading_junk_within_a_kib() -> None:
    body = b"\x00" * 500 + b"%PDF-1.4\n" + b"y" * 2000
    assert _drain(UploadStream(_messages([body]), "k", 10**6)) == body


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([b"GIF89a" + b"z" * 990], "NOT_A_PDF"),
        ([b"<html>"], "NOT_A_PDF"),
        ([b""], "EMPTY_FILE"),
        ([b"%PDF-1.4\n", b"a" * 2000], "FILE_TOO_LARGE"),
    ],
)
def test_refusals_carry_a_reason(body: list[bytes], reason: str) -> None:
    upload = UploadStream(_messages(body), "k", 1000)
    with pytest.raises(ServiceError) as caught:
        _drain(upload)
    assert caught.value.reason == reason
    assert upload.error is caught.value


def test_not_a_pdf_refused_before_its_body_is_forwarded() -> None:
    upload = UploadStream(_messages([b"MZ" + b"\x90" * 2000, b"more" * 1000]), "k", 10**6)
    forwarded = []
    with pytest.raises(ServiceError):
        forwarded.extend(upload.requests())
    assert all(not part.chunk for part in forwarded)


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


def test_interrupted_upload_is_refused() -> None:
    body = [b"%PDF-1.7\n", b"x" * 5000]
    upload = UploadStream(_messages(body), "k", 10**6, client_finished=lambda: False)
    with pytest.raises(ServiceError) as caught:
        _drain(upload)
    assert caught.value.reason == "UPLOAD_ABORTED"
