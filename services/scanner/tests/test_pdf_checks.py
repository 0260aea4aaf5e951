"""The structure report on real and constructed PDFs."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.scanner import pdf_checks
from services.scanner.pdf_checks import AttachmentsTooLargeError, PdfReport, inspect_pdf, inspect_pdf_isolated
from services.scanner.tests import pdfs

DATA = Path(__file__).resolve().parents[3] / "tests" / "data"


def _report(tmp_path: Path, data: bytes) -> PdfReport:
    path = tmp_path / "in.pdf"
    path.write_bytes(data)
    return inspect_pdf(path)


def test_plain_pdf(tmp_path: Path) -> None:
    assert _report(tmp_path, pdfs.plain(3)) == PdfReport(is_pdf=True, page_count=3)


def test_encrypted_needs_user_password() -> None:
    report = inspect_pdf(DATA / "samplefiles__libreoffice-writer-password.pdf")
    assert report.is_pdf
    assert report.encrypted
    assert report.page_count == 0


def test_libreoffice_form() -> None:
    report = inspect_pdf(DATA / "pypdf__libreoffice-form.pdf")
    assert report == PdfReport(is_pdf=True, page_count=1, has_forms=True)


@pytest.mark.parametrize(
    "build", [pdfs.with_open_action_javascript, pdfs.with_javascript_name_tree, pdfs.with_page_additional_action]
)
def test_javascript_is_found(tmp_path: Path, build: object) -> None:
    report = _report(tmp_path, build())  # type: ignore[operator]
    assert report.is_pdf
    assert report.has_javascript
    assert not report.has_launch_action


def test_launch_action(tmp_path: Path) -> None:
    report = _report(tmp_path, pdfs.with_launch_action())
    assert report.has_launch_action
    assert not report.has_javascript


def test_form_and_signature_fields(tmp_path: Path) -> None:
    report = _report(tmp_path, pdfs.with_form_and_signature_field())
    assert report.has_forms
    assert report.has_signature


def test_embedded_file(tmp_path: Path) -> None:
    report = _report(tmp_path, pdfs.with_embedded_file(b"hello"))
    assert report.has_embedded_files
    assert not report.has_javascript


@pytest.mark.parametrize(
    "data",
    [b"", b"hello world", b"%PDF-1.7\n garbage with no objects", b"PK\x03\x04 zip file"],
)
def test_not_a_pdf(tmp_path: Path, data: bytes) -> None:
    assert not _report(tmp_path, data).is_pdf


def test_header_must_be_in_first_kilobyte(tmp_path: Path) -> None:
    assert _report(tmp_path, b" " * 1000 + pdfs.plain(1)).is_pdf
    assert not _report(tmp_path, b" " * 1100 + pdfs.plain(1)).is_pdf


def test_truncated_pdf_is_damaged(tmp_path: Path) -> None:
    data = pdfs.plain(3)
    # Cut off the xref table and trailer: qpdf reconstructs them and warns.
    report = _report(tmp_path, data[: data.rindex(b"xref")])
    assert report.is_pdf
    assert report.damaged
    assert report.page_count == 3


def test_isolated_matches_in_process(tmp_path: Path) -> None:
    path = tmp_path / "form.pdf"
    path.write_bytes(pdfs.with_form_and_signature_field())
    assert inspect_pdf_isolated(path) == inspect_pdf(path)


def test_isolated_child_that_does_not_finish_is_not_a_usable_pdf(tmp_path: Path) -> None:
    path = tmp_path / "in.pdf"
    path.write_bytes(pdfs.plain(1))
    assert inspect_pdf_isolated(path, timeout=0.001) == PdfReport(is_pdf=False, damaged=True)


def test_attachments_are_written_out_decoded(tmp_path: Path) -> None:
    payload = b"attached payload " * 100
    path = tmp_path / "in.pdf"
    path.write_bytes(pdfs.with_embedded_file(payload, compress=True, subtype="/application/octet-stream"))
    out = tmp_path / "attachments"
    report = inspect_pdf_isolated(path, out)
    assert report.has_embedded_files
    assert [p.read_bytes() for p in out.iterdir()] == [payload]


def test_no_attachments_no_files(tmp_path: Path) -> None:
    path = tmp_path / "in.pdf"
    path.write_bytes(pdfs.plain(1))
    inspect_pdf(path, tmp_path / "attachments")
    assert not (tmp_path / "attachments").exists()


def test_attachment_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pdf_checks, "MAX_ATTACHMENT_BYTES", 1000)
    path = tmp_path / "in.pdf"
    path.write_bytes(pdfs.with_embedded_file(bytes(5000), compress=True))
    with pytest.raises(AttachmentsTooLargeError):
        inspect_pdf(path, tmp_path / "attachments")
