"""Minimal contract of the engine interface (the full behaviour is covered by the other test_engine* files)."""

from __future__ import annotations

from pathlib import Path

import pikepdf
import pytest

from services.compressor.engine import CompressOptions, EngineError, compress, compress_isolated


def _text_pdf(path: Path, pages: int = 2) -> Path:
    pdf = pikepdf.new()
    font = pdf.make_indirect(
        pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica)
    )
    for i in range(pages):
        page = pdf.add_blank_page(page_size=(300, 200))
        page.obj.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font))
        # Uncompressed, repetitive content: a structural rewrite must make it smaller.
        ops = b"".join(b"BT /F1 12 Tf 20 %d Td (Hello page %d) Tj ET\n" % (150 - 10 * k, i) for k in range(10))
        page.obj.Contents = pdf.make_stream(ops)
    pdf.save(path, compress_streams=False, object_stream_mode=pikepdf.ObjectStreamMode.disable)
    return path


def test_compress_writes_smaller_output_with_same_pages(tmp_path: Path) -> None:
    src = _text_pdf(tmp_path / "in.pdf")
    out = tmp_path / "out.pdf"
    report = compress(src, out, CompressOptions(level="lossless"))
    assert not report.kept_original
    assert report.output_size_bytes == out.stat().st_size < src.stat().st_size
    with pikepdf.open(out) as pdf:
        assert len(pdf.pages) == 2
    d = report.to_dict()
    assert d["verification"]["passed"] is True
    assert d["ratio"] == pytest.approx(out.stat().st_size / src.stat().st_size, rel=1e-5)


def test_not_a_pdf_is_rejected(tmp_path: Path) -> None:
    src = tmp_path / "in.pdf"
    src.write_bytes(b"hello, not a pdf" * 10)
    with pytest.raises(EngineError) as err:
        compress(src, tmp_path / "out.pdf", CompressOptions())
    assert err.value.reason == "NOT_A_PDF"


def test_isolated_returns_same_report_shape(tmp_path: Path) -> None:
    src = _text_pdf(tmp_path / "in.pdf")
    seen: list[int] = []
    report = compress_isolated(src, tmp_path / "out.pdf", CompressOptions(level="lossless"), progress=seen.append)
    assert report.output_size_bytes == (tmp_path / "out.pdf").stat().st_size
    assert seen
    assert seen[-1] == 100


def test_isolated_propagates_engine_reason(tmp_path: Path) -> None:
    src = tmp_path / "in.pdf"
    src.write_bytes(b"%PDF-1.4\n garbage without any object\n")
    with pytest.raises(EngineError) as err:
        compress_isolated(src, tmp_path / "out.pdf", CompressOptions())
    assert err.value.reason == "MALFORMED_PDF"
