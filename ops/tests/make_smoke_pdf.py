"""Writes ops/data/smoke.pdf, the small PDF `pdfsmaller-ops smoke` uploads (run once; the bytes are committed).

    .venv/bin/python -m ops.tests.make_smoke_pdf

A few pages of text in a standard font (Helvetica, not embedded) with uncompressed content streams,
and one photo-like image stored losslessly, so every compression level has something to do.
The output is deterministic (seeded noise, static document id).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pikepdf

TARGET = Path(__file__).resolve().parents[1] / "data" / "smoke.pdf"
PAGES = 3
IMAGE_SIDE = 112
LINES_PER_PAGE = 40


def _image(pdf: pikepdf.Pdf) -> pikepdf.Stream:
    """A smooth colour gradient with a little noise, Flate-compressed: a JPEG of it is much smaller."""
    axis = np.linspace(0.0, 1.0, IMAGE_SIDE)
    x, y = np.meshgrid(axis, axis)
    noise = np.random.default_rng(10).normal(0.0, 4.0, (IMAGE_SIDE, IMAGE_SIDE, 3))
    rgb = np.stack([200 * x + 40, 180 * y + 50, 220 * (1 - x * y) + 20], axis=-1) + noise
    pixels = np.clip(rgb, 0, 255).astype(np.uint8).tobytes()
    stream = pikepdf.Stream(pdf, zlib.compress(pixels, 9))
    stream.Type, stream.Subtype = pikepdf.Name.XObject, pikepdf.Name.Image
    stream.Width = stream.Height = IMAGE_SIDE
    stream.ColorSpace, stream.BitsPerComponent = pikepdf.Name.DeviceRGB, 8
    stream.Filter = pikepdf.Name.FlateDecode
    return stream


def _text(page_number: int) -> bytes:
    lines = [f"pdfsmaller-ops smoke test document, page {page_number} of {PAGES}."]
    lines += [
        f"Line {n:02d}: the quick brown fox jumps over the lazy dog; a blue/green switch checks this file."
        for n in range(1, LINES_PER_PAGE)
    ]
    drawn = b"".join(b"(" + line.encode("ascii") + b") Tj T* " for line in lines)
    return b"BT /F1 9 Tf 11 TL 50 800 Td " + drawn + b"ET"


def build() -> pikepdf.Pdf:
    pdf = pikepdf.new()
    font = pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.Font,
            Subtype=pikepdf.Name.Type1,
            BaseFont=pikepdf.Name.Helvetica,
            Encoding=pikepdf.Name.WinAnsiEncoding,
        )
    )
    image = pdf.make_indirect(_image(pdf))
    for number in range(1, PAGES + 1):
        page = pdf.add_blank_page(page_size=(595, 842))
        page.Resources = pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font), XObject=pikepdf.Dictionary(Im1=image))
        picture = b" q 200 0 0 200 350 60 cm /Im1 Do Q" if number == 1 else b""
        page.Contents = pdf.make_stream(_text(number) + picture)
    return pdf


def main() -> None:
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    with build() as pdf:
        pdf.save(TARGET, static_id=True, compress_streams=False, stream_decode_level=pikepdf.StreamDecodeLevel.none)
    print(f"{TARGET}: {TARGET.stat().st_size} bytes")


if __name__ == "__main__":
    main()
