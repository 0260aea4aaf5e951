"""Damaged files that readers still open: truncations, cross-reference damage, bytes after stream data, broken
page trees, junk around the file, damaged compressed data. Each is a small real document (text and an image
per page) damaged one way; ``pages`` says what qpdf recovers, ``pdfium_pages`` what PDFium still reads."""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pikepdf
from pikepdf import Dictionary, Name

from .common import Case, Context, Family, sentence

PAGES = 4


def base_document(path: Path, rng: np.random.Generator, *, object_streams: bool = False) -> Path:
    """``PAGES`` pages of text with a Flate photo each, with a classic xref table (or object and xref streams)."""
    pdf = pikepdf.new()
    font = pdf.make_indirect(Dictionary(Type=Name.Font, Subtype=Name.Type1, BaseFont=Name.Helvetica))
    for page in range(PAGES):
        y, x = np.mgrid[0:200, 0:300]
        pixels = np.stack([x * 0.8, y * 1.2, 128 + 60 * np.sin((x + page * 40) / 15.0)], axis=-1)
        pixels = (pixels + rng.normal(0, 6, pixels.shape)).clip(0, 255).astype(np.uint8)
        image = pikepdf.Stream(pdf, zlib.compress(pixels.tobytes(), 6))
        image.stream_dict.update(
            {"/Type": Name.XObject, "/Subtype": Name.Image, "/Width": 300, "/Height": 200}
            | {"/BitsPerComponent": 8, "/ColorSpace": Name.DeviceRGB, "/Filter": Name.FlateDecode}
        )
        pg = pdf.add_blank_page(page_size=(612, 792))
        pg.obj.Resources = Dictionary(Font=Dictionary(F1=font), XObject=Dictionary(Im0=pdf.make_indirect(image)))
        text = b"".join(
            b"BT /F1 11 Tf 60 %d Td (%s) Tj ET\n" % (740 - 15 * k, sentence(rng).encode()) for k in range(30)
        )
        pg.obj.Contents = pdf.make_stream(text + b"q 300 0 0 200 150 40 cm /Im0 Do Q\n")
    mode = pikepdf.ObjectStreamMode.generate if object_streams else pikepdf.ObjectStreamMode.disable
    pdf.save(path, deterministic_id=True, object_stream_mode=mode, compress_streams=True)
    return path


def _xref_span(data: bytes) -> tuple[int, int]:
    """Start and end of the last classic xref table (from ``xref`` to ``trailer``)."""
    start = data.rfind(b"\nxref") + 1
    return start, data.index(b"trailer", start)


def _shift_offsets(data: bytes) -> bytes:
    start, end = _xref_span(data)
    table = re.sub(rb"(\d{10}) 00000 n", lambda m: b"%010d 00000 n" % (int(m[1]) + 7), data[start:end])
    return data[:start] + table + data[end:]


def _garbage_xref(data: bytes) -> bytes:
    start, end = _xref_span(data)
    return data[:start] + bytes((b * 7 + 3) % 256 for b in data[start:end]) + data[end:]


def _wrong_startxref(data: bytes) -> bytes:
    return re.sub(rb"startxref\s+\d+", b"startxref\n123", data)


def _no_xref(data: bytes) -> bytes:
    start, end = _xref_span(data)
    return data[:start] + data[end:]


def _junk_before_header(data: bytes) -> bytes:
    return b"MIME-Version: 1.0\r\nContent-Type: application/pdf\r\n\r\n" + data


def _junk_after_eof(data: bytes) -> bytes:
    return data + b"\r\n" + bytes(range(256)) * 16


def _no_eof(data: bytes) -> bytes:
    return data[: data.rfind(b"%%EOF")]


def _junk_before_endstream(data: bytes) -> bytes:
    """Bytes between every stream's data (as long as /Length says) and ``endstream``."""
    return data.replace(b"\nendstream", b"\n\x00\x00 stray bytes\r\nendstream")


def _stream_length(data: bytes, delta: int) -> bytes:
    """Every stream's /Length off by ``delta``: readers look for ``endstream`` instead."""
    return re.sub(rb"/Length (\d+)", lambda m: b"/Length %d" % max(1, int(m[1]) + delta), data)


def _truncate(fraction: float) -> Callable[[bytes], bytes]:
    return lambda data: data[: int(len(data) * fraction)]


def _broken_count(data: bytes) -> bytes:
    return data.replace(b"/Count %d" % PAGES, b"/Count %d" % (PAGES + 6), 1)


def _dangling_kid(data: bytes) -> bytes:
    """One more page in /Kids, pointing at an object that does not exist."""
    return re.sub(rb"/Kids \[ ", b"/Kids [ 9999 0 R ", data, count=1)


def _untyped_pages(data: bytes) -> bytes:
    """The page tree root without ``/Type /Pages`` and every page without ``/Type /Page`` (same length)."""
    return data.replace(b"/Type /Pages", b"/Tupe /Pages").replace(b"/Type /Page\n", b"/Tupe /Page\n")


def _damaged_content(data: bytes) -> bytes:
    """Sixteen bytes in the middle of the first stream's compressed data overwritten."""
    start = data.index(b"stream\n") + 7
    middle = start + (data.index(b"endstream", start) - start) // 2
    return data[:middle] + b"\xff" * 16 + data[middle + 16 :]


def _bytes_after_zlib_end(path: Path) -> None:
    """Every image stream with bytes after the end of its zlib data, inside /Length (the bomb-check hang)."""
    with pikepdf.open(path, allow_overwriting_input=True) as pdf:
        for page in pdf.pages:
            for image in page.images.values():
                image.write(image.read_raw_bytes() + b"\r\n\x00junk", filter=Name.FlateDecode)
        pdf.save(path, deterministic_id=True, object_stream_mode=pikepdf.ObjectStreamMode.disable)


def _broken_update(data: bytes) -> bytes:
    """An incremental update adding one object whose xref entry points past the end of the file."""
    prev = int(re.findall(rb"startxref\s+(\d+)", data)[-1])
    size = int(re.findall(rb"/Size (\d+)", data)[-1])
    root = re.findall(rb"/Root (\d+ 0 R)", data)[-1]
    update = b"\n%d 0 obj\n<< /Type /Annot /Subtype /Text /Rect [0 0 9 9] >>\nendobj\n" % size
    xref = len(data) + len(update)
    update += b"xref\n%d 1\n%010d 00000 n \n" % (size, xref + 5000)
    update += b"trailer\n<< /Size %d /Root %s /Prev %d >>\nstartxref\n%d\n%%%%EOF\n" % (size + 1, root, prev, xref)
    return data + update


@dataclass(frozen=True)
class Damage:
    name: str
    apply: Callable[[bytes], bytes]
    pages: int | None  # what qpdf recovers
    pdfium_pages: int | None  # what PDFium reads, where it still reads the file
    object_streams: bool = False


DAMAGES = (
    Damage("truncated-50pct", _truncate(0.5), None, None),
    Damage("truncated-90pct", _truncate(0.9), None, None),
    Damage("xref-offsets-shifted", _shift_offsets, PAGES, PAGES),
    Damage("xref-garbage", _garbage_xref, PAGES, None),  # PDFium refuses it
    Damage("xref-missing", _no_xref, PAGES, PAGES),
    Damage("startxref-wrong", _wrong_startxref, PAGES, PAGES),
    Damage("startxref-wrong-objstm", _wrong_startxref, PAGES, PAGES, object_streams=True),
    Damage("junk-before-header", _junk_before_header, PAGES, PAGES),
    Damage("junk-after-eof", _junk_after_eof, PAGES, PAGES),
    Damage("eof-missing", _no_eof, PAGES, PAGES),
    Damage("junk-before-endstream", _junk_before_endstream, PAGES, PAGES),
    Damage("length-too-short", lambda d: _stream_length(d, -9), PAGES, PAGES),
    Damage("length-too-long", lambda d: _stream_length(d, 40), PAGES, PAGES),
    Damage("page-count-wrong", _broken_count, PAGES, PAGES + 6),  # PDFium believes /Count, qpdf walks /Kids
    Damage("page-tree-dangling-kid", _dangling_kid, PAGES, PAGES),
    Damage("page-tree-untyped", _untyped_pages, PAGES, PAGES),
    Damage("content-zlib-damaged", _damaged_content, PAGES, PAGES),
    Damage("incremental-update-broken", _broken_update, PAGES, PAGES),
)


def build(ctx: Context) -> list[Case]:
    chosen = [d for d in DAMAGES if d.name in ("xref-garbage", "truncated-90pct")] if ctx.quick else list(DAMAGES)
    cases = []
    for damage in chosen:
        path = ctx.path("damaged", damage.name)
        base_document(path, ctx.rng("damaged", damage.name), object_streams=damage.object_streams)
        path.write_bytes(damage.apply(path.read_bytes()))
        cases.append(Case("damaged", damage.name, path, damage.pages, damage.pdfium_pages))
    if not ctx.quick:
        path = ctx.path("damaged", "bytes-after-zlib-end")
        _bytes_after_zlib_end(base_document(path, ctx.rng("damaged", "zlib-end")))
        cases.append(Case("damaged", "bytes-after-zlib-end", path, PAGES, PAGES))
    return cases


FAMILY = Family("damaged", "damaged files that readers still open (xref, truncation, streams, page tree)", build)
