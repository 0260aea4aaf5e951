"""Damaged inputs end in a definite outcome (a report, or an EngineError reason) after one run, never a crash."""

from __future__ import annotations

from pathlib import Path

import pikepdf
import pypdfium2 as pdfium
import pytest

from services.compressor.engine import CompressOptions, EngineError, compress, compress_isolated
from services.compressor.engine import pipeline as pipeline_module
from services.compressor.engine import verify as verify_module

from .builders import DATA, bitonal_pdf, lost_page_pdf, minimal_pdf, text_pdf, truncated_download


def _pdfium_opens(path: Path) -> bool:
    try:
        pdfium.PdfDocument(str(path)).close()
    except pdfium.PdfiumError:
        return False
    return True


@pytest.fixture(params=["minimal", "text", "bitonal", "form", "owner-password"])
def truncated(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    build = {
        "minimal": lambda p: minimal_pdf(p),
        "text": lambda p: text_pdf(p, pages=2),
        "bitonal": lambda p: bitonal_pdf(p, 600, 450),
        "form": lambda _p: DATA / "pypdf__libreoffice-form.pdf",
        "owner-password": lambda _p: DATA / "pypdf__r4-owner-password.pdf",
    }[request.param]
    src = truncated_download(tmp_path / "cut.pdf", build(tmp_path / "full.pdf"))
    with pikepdf.open(src, attempt_recovery=True) as pdf:
        assert len(pdf.pages) >= 1  # qpdf repairs it...
    assert not _pdfium_opens(src)  # ...PDFium cannot open it: the shape of defect 7.3
    return src


def test_truncated_download_is_verified_against_the_repaired_file(truncated: Path, tmp_path: Path) -> None:
    report = compress(truncated, tmp_path / "o.pdf", CompressOptions())
    assert report.repaired
    assert report.candidates
    assert all(c["passed"] for c in report.candidates)  # rendered and compared, page by page
    if not report.kept_original:  # the hand-written minimal file cannot get smaller (NOT_SMALLER)
        assert report.verification.pages_compared
        assert _pdfium_opens(tmp_path / "o.pdf")


def test_truncated_download_isolated_is_not_a_crash(tmp_path: Path) -> None:
    src = truncated_download(tmp_path / "cut.pdf", text_pdf(tmp_path / "full.pdf", pages=2))
    report = compress_isolated(src, tmp_path / "o.pdf", CompressOptions())
    assert report.output_size_bytes == (tmp_path / "o.pdf").stat().st_size


def test_truncated_user_password_file_ends_in_a_reason(tmp_path: Path) -> None:
    """Cut before its trailer, the file loses /Encrypt: qpdf reads encrypted bytes as if plain, PDFium refuses it."""
    src = truncated_download(tmp_path / "cut.pdf", DATA / "samplefiles__libreoffice-writer-password.pdf")
    assert not _pdfium_opens(src)
    report = compress_isolated(src, tmp_path / "o.pdf", CompressOptions())
    assert report.output_size_bytes <= report.input_size_bytes


def test_no_readable_reference_is_malformed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit test (mock): when PDFium can read neither the input nor its repaired copy, the run ends MALFORMED_PDF,
    not with PDFium's exception."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise pdfium.PdfiumError("Failed to load document (PDFium: Data format error).")

    src = text_pdf(tmp_path / "in.pdf", pages=1)
    monkeypatch.setattr(verify_module.pdfium, "PdfDocument", refuse)
    with pytest.raises(EngineError) as err:
        compress(src, tmp_path / "o.pdf", CompressOptions())
    assert err.value.reason == "MALFORMED_PDF"


def test_damaged_but_readable_input_is_returned_as_it_is(tmp_path: Path) -> None:
    """Pages no repair recovers used to fail the job MALFORMED_PDF although readers open the input: now the
    input's own bytes come back, kept_original DAMAGED_PDF, saying what PDFium draws."""
    src = lost_page_pdf(tmp_path / "lost.pdf")
    out = tmp_path / "o.pdf"
    report = compress(src, out, CompressOptions())
    assert out.read_bytes() == src.read_bytes()
    assert (report.kept_original, report.kept_original_reason) == (True, "DAMAGED_PDF")
    assert "draws 2 of its 3 page(s)" in (report.kept_original_detail or "")
    assert report.pages == 3
    assert any("could not be recovered" in w for w in report.warnings)


def test_out_of_memory_in_a_level_technique_falls_back_to_the_lossless_rewrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unit test (fault injected): the image techniques running out of memory drop that candidate; the
    structural rewrite is delivered and the job succeeds."""

    def exhausted(*_args: object, **_kwargs: object) -> None:
        raise MemoryError

    src = text_pdf(tmp_path / "in.pdf", pages=2)
    monkeypatch.setattr(pipeline_module._Run, "_optimize_images", exhausted)
    report = compress(src, tmp_path / "o.pdf", CompressOptions(level="high"))
    assert [(c["name"], c["failures"]) for c in report.candidates[:1]] == [("high", ["memory"])]
    assert report.candidates[-1]["name"] == "structural"
    assert report.candidates[-1]["passed"]
    assert not report.kept_original
    assert report.verification.passed


def test_out_of_memory_in_the_lossless_rewrite_ends_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit test (fault injected): only when even the structural rewrite cannot run is the job out of memory."""

    def exhausted(*_args: object, **_kwargs: object) -> None:
        raise MemoryError

    src = text_pdf(tmp_path / "in.pdf", pages=1)
    monkeypatch.setattr(pipeline_module._Run, "_structural", exhausted)
    with pytest.raises(MemoryError):
        compress(src, tmp_path / "o.pdf", CompressOptions())
