"""compress(): open, build candidates, verify each, keep the smallest that passes (or the original bytes)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pikepdf

from .errors import IO_ERROR, EngineError
from .opening import count_pages_pdfium, count_pages_pypdf, open_input
from .options import CompressOptions, Limits
from .report import Report, Verification

Progress = Callable[[int], None]


def _save_structural(pdf: pikepdf.Pdf, dest: Path) -> None:
    pdf.remove_unreferenced_resources()
    pdf.save(
        dest,
        object_stream_mode=pikepdf.ObjectStreamMode.generate,
        compress_streams=True,
        recompress_flate=True,
        stream_decode_level=pikepdf.StreamDecodeLevel.generalized,
    )


def _verify_pages(candidate: Path, expected: int) -> Verification:
    v = Verification(pages_in=expected)
    try:
        with pikepdf.open(candidate) as out:
            v.pages_out = len(out.pages)
    except pikepdf.PdfError:
        v.failures.append("opens")
        return v
    v.pages_second_parser = count_pages_pypdf(candidate, None)
    pdfium_pages = count_pages_pdfium(candidate, None)
    if v.pages_out != expected or v.pages_second_parser != expected or pdfium_pages != expected:
        v.failures.append("pages")
    v.passed = not v.failures
    return v


def _write_output(src: Path, output_path: Path) -> None:
    """Copy ``src`` to ``output_path`` atomically (never leave a half-written output)."""
    output_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".pdfsmaller-", suffix=".tmp", dir=output_path.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, output_path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        raise


def compress(
    input_path: Path,
    output_path: Path,
    options: CompressOptions | None = None,
    progress: Progress | None = None,
    limits: Limits | None = None,
) -> Report:
    t0 = time.monotonic()
    options = options or CompressOptions()
    options.validate()
    limits = limits or Limits()
    input_path, output_path = Path(input_path), Path(output_path)

    def step(pct: int) -> None:
        if progress is not None:
            progress(max(0, min(100, pct)))

    try:
        in_size = input_path.stat().st_size
    except OSError:
        raise EngineError(IO_ERROR, "The input file cannot be read.") from None
    report = Report(input_size_bytes=in_size, level=options.level, options=options.public_dict())
    step(0)
    with tempfile.TemporaryDirectory(prefix="pdfsmaller-") as td:
        work = Path(td)
        opened = open_input(input_path, options.password, work)
        report.pages = opened.pages
        report.repaired = opened.repaired
        report.warnings.extend(opened.warnings)
        step(10)
        candidate = work / "structural.pdf"
        with opened.pdf:
            _save_structural(opened.pdf, candidate)
        step(60)
        v = _verify_pages(candidate, opened.pages)
        report.verification = v
        size = candidate.stat().st_size
        report.candidates.append({"name": "structural", "size": size, "passed": v.passed})
        if v.passed and size < in_size:
            _write_output(candidate, output_path)
            report.output_size_bytes = size
        else:
            _write_output(input_path, output_path)
            report.output_size_bytes = in_size
            report.kept_original = True
            report.kept_original_reason = "NOT_SMALLER" if v.passed else "VERIFICATION_FAILED"
    report.seconds = round(time.monotonic() - t0, 3)
    step(100)
    return report
