"""Long documents (500+ pages): a text report with running headers, a small chart per page and an outline per
chapter (reportlab), and a catalogue whose pages share one logo and each show a small photograph (pikepdf)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pikepdf
from pikepdf import Dictionary, Name
from PIL import Image

from .common import Case, Context, Family, sentence, title


def text_report(path: Path, rng: np.random.Generator, *, pages: int) -> Path:
    from reportlab.pdfgen.canvas import Canvas

    canvas = Canvas(str(path), pagesize=(595.28, 841.89), invariant=1)
    for page in range(pages):
        if page % 20 == 0:
            canvas.bookmarkPage(f"chapter{page // 20}")
            canvas.addOutlineEntry(f"Chapter {page // 20 + 1}: {title(rng, 3)}", f"chapter{page // 20}", level=0)
        canvas.setFont("Times-Italic", 8)
        canvas.drawString(56, 810, f"Annual report, chapter {page // 20 + 1}")
        canvas.drawRightString(540, 30, f"page {page + 1} of {pages}")
        canvas.setFont("Times-Roman", 10)
        text = canvas.beginText(56, 780)
        for _ in range(46):
            text.textLine(sentence(rng, 10, 14)[:95])
        canvas.drawText(text)
        walk = np.cumsum(rng.normal(0, 1, 60))
        p = canvas.beginPath()
        p.moveTo(56, 90 + float(walk[0]))
        for k, v in enumerate(walk[1:], 1):
            p.lineTo(56 + k * 8, 90 + float(v) * 3)
        canvas.drawPath(p)
        canvas.showPage()
    canvas.showOutline()
    canvas.save()
    return path


def _jpeg(pdf: pikepdf.Pdf, pixels: np.ndarray) -> pikepdf.Object:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=85)
    stream = pikepdf.Stream(pdf, buf.getvalue())
    h, w = pixels.shape[:2]
    stream.stream_dict.update(
        {"/Type": Name.XObject, "/Subtype": Name.Image, "/Width": w, "/Height": h, "/BitsPerComponent": 8}
        | {"/ColorSpace": Name.DeviceRGB, "/Filter": Name.DCTDecode}
    )
    return pdf.make_indirect(stream)


def catalogue(path: Path, rng: np.random.Generator, *, pages: int) -> Path:
    pdf = pikepdf.new()
    y, x = np.mgrid[0:120, 0:160]
    logo = _jpeg(pdf, np.stack([x * 1.5, y * 2.0, 255 - x], axis=-1).clip(0, 255).astype(np.uint8))
    font = pdf.make_indirect(Dictionary(Type=Name.Font, Subtype=Name.Type1, BaseFont=Name.Helvetica))
    for page in range(pages):
        thumb = (rng.normal(128, 40, (90, 120, 3)) + np.linspace(0, 80, 120)[None, :, None]).clip(0, 255)
        pg = pdf.add_blank_page(page_size=(612, 792))
        pg.obj.Resources = Dictionary(
            XObject=Dictionary(Logo=logo, Thumb=_jpeg(pdf, thumb.astype(np.uint8))), Font=Dictionary(F1=font)
        )
        lines = b"".join(
            b"BT /F1 10 Tf 250 %d Td (%s) Tj ET\n" % (640 - 14 * k, sentence(rng, 4, 8).encode()) for k in range(30)
        )
        head = b"q 80 0 0 60 40 700 cm /Logo Do Q q 180 0 0 135 40 500 cm /Thumb Do Q\n"
        pg.obj.Contents = pdf.make_stream(head + b"BT /F1 14 Tf 140 720 Td (Item %d) Tj ET\n" % page + lines)
    pdf.save(path, deterministic_id=True)
    return path


def build(ctx: Context) -> list[Case]:
    report_pages, catalogue_pages = (20, 10) if ctx.quick else (600, 520)
    report = text_report(ctx.path("long", f"report-{report_pages}p"), ctx.rng("long", "report"), pages=report_pages)
    cat = catalogue(ctx.path("long", f"catalogue-{catalogue_pages}p"), ctx.rng("long", "cat"), pages=catalogue_pages)
    return [
        Case("long", f"report-{report_pages}p", report, report_pages),
        Case("long", f"catalogue-{catalogue_pages}p", cat, catalogue_pages),
    ]


FAMILY = Family(
    "long", "500+ page documents: a text report with outline, a catalogue of photos", build, modules=("reportlab",)
)
