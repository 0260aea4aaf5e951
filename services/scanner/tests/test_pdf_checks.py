"""The structure report on real and constructed PDFs."""

from __future__ import annotations

import io
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pikepdf
import pytest

from libs import sandbox
from services.scanner import pdf_checks
from services.scanner.pdf_checks import (
    AttachmentsTooLargeError,
    PdfReport,
    assume_active_content,
    inspect_pdf,
    inspect_pdf_isolated,
)
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
    assert not report.incomplete  # damaged but fully walked: still a verdict
    assert report.page_count == 3


def test_isolated_matches_in_process(tmp_path: Path) -> None:
    path = tmp_path / "form.pdf"
    path.write_bytes(pdfs.with_form_and_signature_field())
    assert inspect_pdf_isolated(path) == inspect_pdf(path)


def test_isolated_child_that_times_out_is_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "in.pdf"
    path.write_bytes(pdfs.launch_with_non_utf8_key())
    report = inspect_pdf_isolated(path, timeout=0.001)
    assert report.incomplete
    assert "timed out" in report.problem


def test_isolated_child_out_of_memory_is_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "in.pdf"
    path.write_bytes(pdfs.plain(3000))
    # Near what the interpreter already holds: qpdf's allocations for 3000 pages fail.
    report = inspect_pdf_isolated(path, memory_bytes=16 * 1024 * 1024)
    assert report.incomplete
    assert any(sign in report.problem for sign in ("MemoryError", "exited", "signal")), report.problem


def test_unreadable_child_output_is_incomplete() -> None:
    garbled = sandbox.Outcome(sandbox.Ending.UNREADABLE_OUTPUT, None, -9, "", "not a JSON object: b'{\"is_pdf\": tru'")
    unknown_field = sandbox.Outcome(sandbox.Ending.FINISHED, {"type": "report", "report": {"no_such_field": 1}}, 0, "")
    no_result = sandbox.Outcome(sandbox.Ending.EXITED, None, 0, "")
    for outcome in (garbled, unknown_field, no_result):
        assert pdf_checks._report_from_outcome(outcome, timeout=60).incomplete


def test_isolated_child_with_too_many_attachment_bytes_raises() -> None:
    outcome = sandbox.Outcome(sandbox.Ending.FINISHED, {"type": pdf_checks.ATTACHMENTS_TOO_LARGE}, 0, "")
    with pytest.raises(AttachmentsTooLargeError):
        pdf_checks._report_from_outcome(outcome, timeout=60)


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


# --- key names whose bytes are not UTF-8 (issue 7: the walk raised and the file passed as clean) ---


def test_bypass_file_shape_is_fully_checked(tmp_path: Path) -> None:
    report = _report(tmp_path, pdfs.launch_with_non_utf8_key())
    assert report == PdfReport(is_pdf=True, page_count=1, has_launch_action=True)


def _odd_key_in_action(pdf: pikepdf.Pdf) -> pikepdf.Dictionary:
    pdf.Root.OpenAction = pikepdf.Dictionary(S=pikepdf.Name.Launch, F=pikepdf.String("calc.exe"))
    return pdf.Root.OpenAction  # a direct dictionary, reached only by walking into the catalog


def _odd_key_in_stream(pdf: pikepdf.Pdf) -> pikepdf.Dictionary:
    pdf.Root.OpenAction = pikepdf.Dictionary(S=pikepdf.Name.Launch)
    stream = pdf.make_stream(b"q Q")
    pdf.pages[0].obj.Contents = stream
    return stream.stream_dict


def _odd_key_in_names(pdf: pikepdf.Pdf) -> pikepdf.Dictionary:
    action = pdf.make_indirect(pikepdf.Dictionary(S=pikepdf.Name.Launch))
    tree = pikepdf.Dictionary(Names=pikepdf.Array([pikepdf.String("a"), action]))
    pdf.Root.Names = pikepdf.Dictionary(JavaScript=tree)
    return pdf.Root.Names


def _odd_key_in_form(pdf: pikepdf.Pdf) -> pikepdf.Dictionary:
    pdf.Root.OpenAction = pikepdf.Dictionary(S=pikepdf.Name.Launch)
    field = pdf.make_indirect(pikepdf.Dictionary(FT=pikepdf.Name.Sig, T=pikepdf.String("s")))
    pdf.Root.AcroForm = pikepdf.Dictionary(Fields=pikepdf.Array([field]))
    return pdf.Root.AcroForm


def _odd_key_in_array_item(pdf: pikepdf.Pdf) -> pikepdf.Dictionary:
    action = pikepdf.Dictionary(S=pikepdf.Name.Launch)
    pdf.Root.Extra = pikepdf.Array([action])
    return pdf.Root.Extra[0]


@pytest.mark.parametrize(
    "place",
    [_odd_key_in_action, _odd_key_in_stream, _odd_key_in_names, _odd_key_in_form, _odd_key_in_array_item],
)
@pytest.mark.parametrize("raw_key", [b"/X#ff", b"/#c3#28", b"/#ed#a0#80", b"/A#80#80#80"])
def test_odd_key_names_anywhere_are_walked(tmp_path: Path, place: Any, raw_key: bytes) -> None:
    pdf = pdfs.blank()
    data = pdfs.with_raw_key(pdf, place(pdf), raw_key)
    report = _report(tmp_path, data)
    assert not report.incomplete, report.problem
    assert report.has_launch_action


def test_odd_key_names_in_attachments_are_walked(tmp_path: Path) -> None:
    data = pdfs.with_embedded_file(b"payload")
    pdf = pikepdf.open(io.BytesIO(data))
    filespec = next(o for o in pdf.objects if isinstance(o, pikepdf.Dictionary) and "/EF" in o)
    path = tmp_path / "in.pdf"
    path.write_bytes(pdfs.with_raw_key(pdf, filespec.EF))
    out = tmp_path / "attachments"
    report = inspect_pdf(path, out)
    assert report.has_embedded_files
    assert not report.incomplete, report.problem
    assert [p.read_bytes() for p in out.iterdir()] == [b"payload"]


# --- a walk that cannot finish is incomplete, never clean ----------------------------------------


def test_node_budget_exceeded_is_incomplete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pdf_checks, "MAX_NODES", 3)
    report = _report(tmp_path, pdfs.plain(5))
    assert report.incomplete
    assert "walk stopped" in report.problem


def test_nesting_too_deep_is_incomplete(tmp_path: Path) -> None:
    pdf = pdfs.blank()
    nested = pikepdf.Dictionary(S=pikepdf.Name.Launch)
    for _ in range(pdf_checks.MAX_DEPTH + 2):
        nested = pikepdf.Dictionary(Next=nested)
    pdf.Root.Deep = nested
    out = io.BytesIO()
    pdf.save(out)
    report = _report(tmp_path, out.getvalue())
    assert report.incomplete
    assert "deeper" in report.problem


@pytest.mark.parametrize("error", [pikepdf.PdfError("bad object"), TypeError("surprise"), MemoryError()])
def test_exception_mid_walk_is_incomplete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def fail(self: object, entries: object, depth: int) -> None:
        raise error

    monkeypatch.setattr(pdf_checks._Walk, "visit_dictionary", fail)
    report = _report(tmp_path, pdfs.with_launch_action())
    assert report.incomplete
    assert report.problem.startswith(pdf_checks.UNEXPECTED) == (not isinstance(error, pikepdf.PdfError))


def test_undecodable_attachment_is_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "in.pdf"
    path.write_bytes(_with_attachment_stream(b"\x00 not zlib data"))
    report = inspect_pdf(path, tmp_path / "attachments")
    assert report.incomplete
    assert "attachment" in report.problem


def test_truncated_attachment_is_incomplete(tmp_path: Path) -> None:
    # qpdf hands back nothing (with a warning) for a cut-off Flate stream; a viewer may recover the payload.
    path = tmp_path / "in.pdf"
    path.write_bytes(_with_attachment_stream(zlib.compress(b"payload " * 1000)[:-20]))
    report = inspect_pdf(path, tmp_path / "attachments")
    assert report.incomplete
    assert "partly" in report.problem


def _with_attachment_stream(flate_data: bytes) -> bytes:
    pdf = pikepdf.open(io.BytesIO(pdfs.with_embedded_file(b"x")))
    stream = next(o for o in pdf.objects if isinstance(o, pikepdf.Stream) and o.get("/Type") == "/EmbeddedFile")
    stream.write(flate_data, filter=pikepdf.Name.FlateDecode)
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def test_assume_active_content_sets_every_flag() -> None:
    report = assume_active_content(pdf_checks.unfinished("test"))
    assert report.incomplete
    assert all(value for name, value in asdict(report).items() if name.startswith("has_"))


def test_corpus_files_are_fully_checked() -> None:
    for path in sorted(DATA.glob("*.pdf")):
        report = inspect_pdf(path)
        assert not report.incomplete, (path.name, report.problem)
