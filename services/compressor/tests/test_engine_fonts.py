"""Font techniques: subsetting fully embedded TrueType fonts and dropping hinting, in lossy levels only."""

from __future__ import annotations

import io
from pathlib import Path

import pikepdf
import pytest
from fontTools.fontBuilder import FontBuilder
from fontTools.pens.ttGlyphPen import TTGlyphPen
from fontTools.ttLib import TTFont, newTable
from pikepdf import Dictionary, Name

from services.compressor.engine import CompressOptions, compress
from services.compressor.engine.fontusage import find_font_usage

from .builders import font_descriptor

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _font_bytes() -> bytes:
    """A TrueType font with 26 distinct, detailed glyphs and a (dummy) hinting program."""
    fb = FontBuilder(1000, isTTF=True)
    names = [".notdef", *LETTERS]
    fb.setupGlyphOrder(names)
    fb.setupCharacterMap({ord(c): c for c in LETTERS})
    glyphs = {}
    for i, name in enumerate(names):
        pen = TTGlyphPen(None)
        for k in range(12):  # many contours so each glyph weighs something
            x = 40 + (k % 4) * 150 + i * 3
            y = 60 + (k // 4) * 200
            pen.moveTo((x, y))
            pen.lineTo((x + 100, y))
            pen.lineTo((x + 100, y + 120 + i))
            pen.lineTo((x, y + 120 + i))
            pen.closePath()
        glyphs[name] = pen.glyph()
    fb.setupGlyf(glyphs)
    fb.setupHorizontalMetrics(dict.fromkeys(names, (700, 40)))
    fb.setupHorizontalHeader(ascent=800, descent=-200)
    fb.setupNameTable({"familyName": "Test", "styleName": "Regular"})
    fb.setupOS2()
    fb.setupPost()
    fb.setupMaxp()
    font = fb.font
    fpgm = newTable("fpgm")
    from fontTools.ttLib.tables import ttProgram

    prog = ttProgram.Program()
    prog.fromBytecode(bytes([0xB0, 0x00, 0x2C]) * 400)  # PUSHB[0] 0, FDEF... a body of instructions
    fpgm.program = prog
    font["fpgm"] = fpgm
    out = io.BytesIO()
    font.save(out)
    return out.getvalue()


def _pdf_with_font(path: Path, text: str) -> Path:
    pdf = pikepdf.new()
    data = _font_bytes()
    ff = pikepdf.Stream(pdf, data)
    ff.stream_dict["/Length1"] = len(data)
    desc = font_descriptor(pdf, "TestFont", 32, FontFile2=pdf.make_indirect(ff))
    font = pdf.make_indirect(
        Dictionary(
            Type=Name.Font,
            Subtype=Name.TrueType,
            BaseFont=Name("/TestFont"),
            FirstChar=65,
            LastChar=90,
            Widths=[700] * 26,
            Encoding=Name.WinAnsiEncoding,
            FontDescriptor=desc,
        )
    )
    page = pdf.add_blank_page(page_size=(400, 200))
    page.obj.Resources = Dictionary(Font=Dictionary(F1=font))
    page.obj.Contents = pdf.make_stream(f"BT /F1 36 Tf 20 80 Td ({text}) Tj ET".encode())
    pdf.save(path)
    return path


def _embedded_font(path: Path) -> TTFont:
    with pikepdf.open(path) as pdf:
        for obj in pdf.objects:
            if isinstance(obj, Dictionary) and obj.get("/Type") == Name.FontDescriptor:
                return TTFont(io.BytesIO(obj.FontFile2.read_bytes()))
    raise AssertionError("no embedded font")


def _drawn_glyphs(font: TTFont) -> set[str]:
    glyf = font["glyf"]
    return {n for n in font.getGlyphOrder() if glyf[n].numberOfContours != 0}


@pytest.fixture(scope="module")
def font_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _pdf_with_font(tmp_path_factory.mktemp("font") / "font.pdf", "CAB")


def test_medium_subsets_to_shown_glyphs_and_drops_hinting(font_pdf: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.pdf"
    report = compress(font_pdf, out, CompressOptions(level="medium"))
    assert report.verification.passed
    assert report.verification.text_recall == 1.0
    font = _embedded_font(out)
    assert _drawn_glyphs(font) == {".notdef", "A", "B", "C"}
    assert font.getGlyphOrder()[:4] == [".notdef", "A", "B", "C"]  # glyph ids kept
    assert "fpgm" not in font
    assert any(t.name == "fonts" and t.saved_bytes > 0 for t in report.techniques)


def test_lossless_keeps_font_whole(font_pdf: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.pdf"
    compress(font_pdf, out, CompressOptions(level="lossless"))
    font = _embedded_font(out)
    assert len(_drawn_glyphs(font)) == 27
    assert "fpgm" in font


def test_form_fonts_are_not_subset(font_pdf: Path, tmp_path: Path) -> None:
    src = tmp_path / "form.pdf"
    with pikepdf.open(font_pdf) as pdf:
        font = pdf.pages[0].obj.Resources.Font.F1
        pdf.Root.AcroForm = Dictionary(Fields=pikepdf.Array(), DR=Dictionary(Font=Dictionary(F1=font)))
        pdf.save(src)
    out = tmp_path / "out.pdf"
    compress(src, out, CompressOptions(level="medium"))
    assert len(_drawn_glyphs(_embedded_font(out))) == 27  # a field could show any letter


def test_usage_scan_ignores_operands_that_are_not_strings_and_operators_that_are_not_utf8() -> None:
    pdf = pikepdf.new()
    font = pdf.make_indirect(Dictionary(Type=Name.Font, Subtype=Name.Type1, BaseFont=Name.Helvetica))
    page = pdf.add_blank_page(page_size=(200, 200))
    content = b"BT /F1 9 Tf (C) Tj q'\xff\xfe Q ET"  # an operator that is not UTF-8
    form = pdf.make_stream(content, Type=Name.XObject, Subtype=Name.Form, BBox=[0, 0, 9, 9])
    form.Resources = Dictionary(Font=Dictionary(F1=font))
    page.obj.Resources = Dictionary(Font=Dictionary(F1=font), XObject=Dictionary(X=form))
    page.obj.Contents = pdf.make_stream(b"BT /F1 9 Tf null Tj 2000000000 ' [(A) null 3 /N (B)] TJ ET /X Do")
    usage = find_font_usage(pdf)
    assert usage.shown == {font.objgen: {b"A", b"B", b"C"}}
    assert usage.complete
    page.obj.Contents = pdf.make_stream(b"BT /F#ff 9 Tf (D) Tj ET")  # a font name that is not UTF-8, not found
    assert not find_font_usage(pdf).complete
