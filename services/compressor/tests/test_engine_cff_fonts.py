"""Type 1 fonts converted to CFF and CFF fonts subset (lossy levels). The tests write their own Type 1 font (the
conventional layout: cleartext, eexec-encrypted Private dict with Subrs and CharStrings) and CFF fonts."""

from __future__ import annotations

import copy
import io
import time
from pathlib import Path

import pikepdf
import pytest
from fontTools.cffLib import CFFFontSet, CharStrings, FDArrayIndex, FDSelect, FontDict
from fontTools.fontBuilder import FontBuilder
from fontTools.misc import eexec
from fontTools.misc.psCharStrings import T1CharString, T2CharString
from fontTools.pens.recordingPen import DecomposingRecordingPen, RecordingPen
from fontTools.pens.t2CharStringPen import T2CharStringPen
from fontTools.t1Lib import T1Font
from fontTools.ttLib import TTFont
from pikepdf import Array, Dictionary, Name

from services.compressor.engine import CompressOptions, compress
from services.compressor.engine.cff import CharstringError, builtin_encoding, type1_to_cff
from services.compressor.engine.type1 import parse_type1

from .builders import font_descriptor

# Standard Subrs 0-2 (flex) and 3 (hint replacement), then the font's own.
_FLEX_SUBRS = [
    [3, 0, "callothersubr", "pop", "pop", "setcurrentpoint", "return"],
    [0, 1, "callothersubr", "return"],
    [0, 2, "callothersubr", "return"],
    ["return"],
]
_SQUARE_SUBR = [100, 0, "rlineto", 0, 100, "rlineto", -100, 0, "rlineto", "closepath", "return"]
_HINT_SUBR = [20, 40, "hstem", "return"]


def _box(x: int, y: int, w: int, h: int) -> list[object]:
    return [x, y, "rmoveto", w, 0, "rlineto", 0, h, "rlineto", -w, 0, "rlineto", "closepath"]


def _flex_glyph() -> list[object]:
    """A contour with a flex curve (Type 1 spec section 8.3), through Subrs 0, 1 and 2."""
    flex: list[object] = [1, "callsubr"]
    for dx, dy in ((100, 0), (-50, 0), (30, 10), (20, 0), (30, 0), (20, -10), (30, 0)):
        flex += [dx, dy, "rmoveto", 2, "callsubr"]
    start = [50, 600, "hsbw", 100, 100, "rmoveto", 100, 0, "rlineto"]
    end = [50, 300, 100, 0, "callsubr", 0, 200, "rlineto", "closepath", "endchar"]
    return start + flex + end


def _many_boxes(n: int) -> list[object]:
    out: list[object] = [0, 700, "hsbw"]
    for k in range(n):
        out += _box(10 + (k % 5) * 3, 10 + k, 50 + k, 40)
    return [*out, "endchar"]


GLYPHS: dict[str, list[object]] = {
    ".notdef": [0, 500, "hsbw", "endchar"],
    "A": [30, 620, "hsbw", 0, 100, "hstem", 10, 80, "vstem", *_box(20, 0, 400, 600)[:-1], "closepath", "endchar"],
    "B": [40, 600, "hsbw", 50, 50, "rmoveto", 4, "callsubr", 5, 1, 3, "callothersubr", "pop", "callsubr", "endchar"],
    "C": _flex_glyph(),
    "D": [20, 1001, 2, "div", "hsbw", 100, 0, "rmoveto", 1001, 4, "div", 0, "rlineto", 0, 300, "rlineto", "endchar"],
    # Two collinear lines: a Type 2 writer may not merge them into one (the point between them is kept).
    "E": [20, 500, "hsbw", 0, 0, "rmoveto", 200, 0, "rlineto", 100, 0, "rlineto", 0, 50, "rlineto", "endchar"],
    "acute": [100, 300, "hsbw", *_box(0, 700, 120, 80), "endchar"],
    "Aacute": [30, 620, "hsbw", 30, 250, 60, 65, 194, "seac"],
    "Gamma": [30, 580, "hsbw", *_box(0, 0, 80, 700), *_box(0, 620, 400, 80), "endchar"],
    "Z": _many_boxes(40),
}
ENCODING = {0: "Gamma", 65: "A", 66: "B", 67: "C", 68: "D", 69: "E", 90: "Z", 161: "Gamma", 193: "Aacute", 194: "acute"}


def _charstring(program: list[object]) -> bytes:
    cs = T1CharString(program=program)
    cs.compile()
    return eexec.encrypt(b"\0\0\0\0" + cs.bytecode, 4330)[0]


def type1_font(
    glyphs: dict[str, list[object]] | None = None, subrs: list[list[object]] | None = None
) -> tuple[bytes, int, int]:
    """A Type 1 font program as a PDF embeds it: cleartext, binary eexec part, trailer; and Length1, Length2."""
    glyphs = GLYPHS if glyphs is None else glyphs
    subrs = [*_FLEX_SUBRS, _SQUARE_SUBR, _HINT_SUBR] if subrs is None else subrs
    enc = "".join(f"dup {c} /{n} put\n" for c, n in sorted(ENCODING.items()))
    clear = (
        "%!PS-AdobeFont-1.0: TestT1 001\n12 dict begin\n/FontType 1 def\n/FontName /TestT1 def\n/PaintType 0 def\n"
        "/FontMatrix [0.001 0 0 0.001 0 0] readonly def\n/FontBBox {0 -200 1000 800} readonly def\n"
        f"/Encoding 256 array\n0 1 255 {{1 index exch /.notdef put}} for\n{enc}readonly def\n"
        "currentdict end\ncurrentfile eexec\n"
    ).encode()
    private = [
        b"dup /Private 8 dict dup begin\n/RD{string currentfile exch readstring pop}executeonly def\n",
        b"/ND{noaccess def}executeonly def\n/NP{noaccess put}executeonly def\n/lenIV 4 def\n",
        b"/BlueValues [-20 0 700 720] def\n/MinFeature{16 16} def\n/password 5839 def\n",
        f"/Subrs {len(subrs)} array\n".encode(),
    ]
    for i, s in enumerate(subrs):
        data = _charstring(s)
        private.append(f"dup {i} {len(data)} RD ".encode() + data + b" NP\n")
    private.append(f"ND\n2 index /CharStrings {len(glyphs)} dict dup begin\n".encode())
    for name, program in glyphs.items():
        data = _charstring(program)
        private.append(f"/{name} {len(data)} RD ".encode() + data + b" ND\n")
    private.append(b"end\nend\nreadonly put\nnoaccess put\ndup/FontName get exch definefont pop\n")
    private.append(b"mark currentfile closefile\n")
    encrypted = _eexec(b"".join(private))
    trailer = b"\n" + (b"0" * 64 + b"\n") * 8 + b"cleartomark\n"
    return clear + encrypted + trailer, len(clear), len(encrypted)


def _eexec(plain: bytes) -> bytes:
    """eexec encryption with a first cipher byte that is not a hex digit (else readers take the part for hex)."""
    for seed in range(256):
        cipher = eexec.encrypt(bytes([seed, 1, 2, 3]) + plain, 55665)[0]
        if chr(cipher[0]) not in "0123456789abcdefABCDEF \t\r\n":
            return cipher
    raise AssertionError("no seed")


def _reference_outlines(tmp_path: Path, data: bytes) -> dict[str, tuple[list[object], float]]:
    """Every glyph as fontTools' own Type 1 reader draws it (components decomposed), with its width."""
    path = tmp_path / "font.pfa"
    path.write_bytes(data)
    glyph_set = T1Font(str(path)).getGlyphSet()
    out = {}
    for name in glyph_set:
        pen = DecomposingRecordingPen(glyph_set)
        glyph_set[name].draw(pen)
        out[name] = (_points(pen), glyph_set[name].width)
    return out


def _points(pen: RecordingPen) -> list[object]:
    return [(op, args) for op, args in pen.value if op not in ("closePath", "endPath")]


def _cff_outlines(data: bytes) -> dict[str, tuple[list[object], float]]:
    font_set = CFFFontSet()
    font_set.decompile(io.BytesIO(data), TTFont())
    top = font_set.topDictIndex[0]
    out = {}
    for name in top.charset:
        pen = RecordingPen()
        cs = top.CharStrings[name]
        cs.draw(pen)
        width = getattr(cs, "width", cs.private.defaultWidthX)
        out[name] = (_points(pen), width)
    return out


def test_type1_to_cff_carries_outlines_widths_and_encoding(tmp_path: Path) -> None:
    data, _, _ = type1_font()
    cff = type1_to_cff(parse_type1(data))
    reference = _reference_outlines(tmp_path, data)
    converted = _cff_outlines(cff)
    assert set(converted) == set(reference)
    for name, (points, width) in reference.items():
        assert converted[name][0] == points, name  # subrs, flex, hint replacement, div, seac all resolved
        assert converted[name][1] == pytest.approx(width, abs=1e-4), name  # 1001/2 stays 500.5
    encoding = builtin_encoding(cff)
    assert {c: n for c, n in enumerate(encoding) if n != ".notdef"} == ENCODING  # code 0 and 161 both Gamma


def test_type1_subset_empties_glyphs_not_kept() -> None:
    data, _, _ = type1_font()
    full = _cff_outlines(type1_to_cff(parse_type1(data)))
    subset = _cff_outlines(type1_to_cff(parse_type1(data), keep={"A", "Aacute"}))
    assert subset["A"] == full["A"]
    assert subset["Aacute"] == full["Aacute"]
    assert subset["Z"][0] == []
    assert subset["acute"][0] == []
    assert list(subset) == list(full)  # names and codes stay


@pytest.mark.parametrize(
    "subrs",
    [
        [*_FLEX_SUBRS, [4, "callsubr", "return"]],  # a subr calling itself
        [*_FLEX_SUBRS, *([[i + 1, "callsubr"] * 30 + ["return"] for i in range(4, 12)]), ["return"]],  # 30^8 calls
        [*_FLEX_SUBRS, [1, 12, "callothersubr", "return"]],  # an OtherSubr with no fixed meaning
    ],
    ids=["recursion", "fan-out", "othersubr"],
)
def test_hostile_charstrings_are_refused_quickly(subrs: list[list[object]]) -> None:
    glyphs = {".notdef": [0, 500, "hsbw", "endchar"], "A": [0, 500, "hsbw", 4, "callsubr", "endchar"]}
    data, _, _ = type1_font(glyphs, subrs)
    start = time.monotonic()
    with pytest.raises(CharstringError):
        type1_to_cff(parse_type1(data))
    assert time.monotonic() - start < 5


def _type1_pdf(path: Path, text: bytes, font_data: tuple[bytes, int, int] | None = None) -> Path:
    data, length1, length2 = font_data or type1_font()
    pdf = pikepdf.new()
    ff = pikepdf.Stream(pdf, data)
    ff.stream_dict.update({"/Length1": length1, "/Length2": length2, "/Length3": len(data) - length1 - length2})
    desc = font_descriptor(pdf, "TestT1", 4, FontFile=pdf.make_indirect(ff))
    widths = [0] * 256
    for code, name in ENCODING.items():
        widths[code] = int(GLYPHS[name][1]) if isinstance(GLYPHS[name][1], int) else 500
    font = pdf.make_indirect(
        Dictionary(
            Type=Name.Font,
            Subtype=Name.Type1,
            BaseFont=Name("/TestT1"),
            FirstChar=0,
            LastChar=255,
            Widths=Array(widths),
            FontDescriptor=desc,
        )
    )
    page = pdf.add_blank_page(page_size=(500, 200))
    page.obj.Resources = Dictionary(Font=Dictionary(F1=font))
    content = b"BT /F1 40 Tf 20 80 Td (" + text + b") Tj ET"
    page.obj.Contents = pdf.make_stream(content)
    pdf.save(path)
    return path


def _font_file(path: Path) -> tuple[str, bytes]:
    with pikepdf.open(path) as pdf:
        desc = pdf.pages[0].obj.Resources.Font.F1.FontDescriptor
        key = "/FontFile3" if "/FontFile3" in desc else "/FontFile"
        return key, desc[key].read_bytes()


def test_medium_converts_type1_to_subset_cff(tmp_path: Path) -> None:
    src = _type1_pdf(tmp_path / "in.pdf", rb"\000AB\301CD")  # Gamma at code 0, Aacute through seac
    out = tmp_path / "out.pdf"
    report = compress(src, out, CompressOptions(level="medium"))
    assert report.verification.passed
    assert report.verification.text_recall == 1.0
    assert not report.kept_original
    key, program = _font_file(out)
    assert key == "/FontFile3"
    with pikepdf.open(out) as pdf:
        assert pdf.pages[0].obj.Resources.Font.F1.FontDescriptor.FontFile3.Subtype == Name.Type1C
    outlines = _cff_outlines(program)
    drawn = {n for n, (points, _) in outlines.items() if points}
    assert drawn == {"A", "B", "C", "D", "Aacute", "Gamma"}  # Z and acute are not shown
    assert builtin_encoding(program)[161] == "Gamma"  # codes not shown keep their glyph names
    assert report.bytes_by_kind_after["fonts"] < report.bytes_by_kind_before["fonts"]


def test_lossless_and_form_fonts_keep_type1_glyphs(tmp_path: Path) -> None:
    src = _type1_pdf(tmp_path / "in.pdf", b"AB")
    out = tmp_path / "lossless.pdf"
    compress(src, out, CompressOptions(level="lossless"))
    assert _font_file(out)[0] == "/FontFile"
    form = tmp_path / "form.pdf"
    with pikepdf.open(src) as pdf:
        font = pdf.pages[0].obj.Resources.Font.F1
        pdf.Root.AcroForm = Dictionary(Fields=Array(), DR=Dictionary(Font=Dictionary(F1=font)))
        pdf.save(form)
    out = tmp_path / "medium.pdf"
    compress(form, out, CompressOptions(level="medium"))
    key, program = _font_file(out)
    assert key == "/FontFile3"  # converted, but whole: a field may show any glyph
    assert all(points for name, (points, _) in _cff_outlines(program).items() if name != ".notdef")


def test_unconvertible_type1_font_stays_and_job_succeeds(tmp_path: Path) -> None:
    glyphs = {".notdef": [0, 500, "hsbw", "endchar"], "A": [0, 500, "hsbw", *_box(0, 0, 300, 300), 4, "callsubr"]}
    font = type1_font(glyphs, [*_FLEX_SUBRS, [4, "callsubr", "return"]])
    src = _type1_pdf(tmp_path / "in.pdf", b"A", font)
    out = tmp_path / "out.pdf"
    report = compress(src, out, CompressOptions(level="medium"))
    assert report.verification.passed or report.kept_original
    assert _font_file(out)[0] == "/FontFile"


def _cff_font() -> bytes:
    """A name-keyed CFF font (FontBuilder) with 26 detailed glyphs, as PDF /FontFile3 /Type1C carries it."""
    letters = [chr(c) for c in range(65, 91)]
    fb = FontBuilder(1000, isTTF=False)
    fb.setupGlyphOrder([".notdef", *letters])
    fb.setupCharacterMap({ord(c): c for c in letters})
    charstrings = {}
    for i, name in enumerate([".notdef", *letters]):
        pen = T2CharStringPen(600, None)
        for k in range(10):
            x, y = 40 + (k % 4) * 130 + i * 3, 60 + (k // 4) * 200
            pen.moveTo((x, y))
            pen.lineTo((x + 100, y))
            pen.lineTo((x + 100, y + 120 + i))
            pen.closePath()
        charstrings[name] = pen.getCharString()
    fb.setupCFF("TestCFF", {"FullName": "TestCFF"}, charstrings, {})
    fb.setupHorizontalMetrics(dict.fromkeys([".notdef", *letters], (600, 40)))
    fb.setupHorizontalHeader(ascent=800, descent=-200)
    fb.setupNameTable({"familyName": "TestCFF", "styleName": "Regular"})
    fb.setupOS2()
    fb.setupPost()
    out = io.BytesIO()
    fb.save(out)
    return TTFont(io.BytesIO(out.getvalue())).getTableData("CFF ")


def _cff_pdf(path: Path, text: str, *, cid: bool, font_program: bytes | None = None, cid_step: int = 1) -> Path:
    """A page showing ``text`` with a CFF font: simple (WinAnsi), or Type 0 / CIDFontType0 with Identity-H (the
    glyph of letter number n has CID n * ``cid_step``)."""
    pdf = pikepdf.new()
    ff = pdf.make_stream(font_program if font_program is not None else _cff_font())
    ff.stream_dict["/Subtype"] = Name.CIDFontType0C if cid else Name.Type1C
    desc = font_descriptor(pdf, "TestCFF", 32, FontFile3=ff)
    if cid:
        kid = Dictionary(
            Type=Name.Font,
            Subtype=Name.CIDFontType0,
            BaseFont=Name("/TestCFF"),
            FontDescriptor=desc,
            DW=600,
            CIDSystemInfo=Dictionary(
                Registry=pikepdf.String("Adobe"), Ordering=pikepdf.String("Identity"), Supplement=0
            ),
        )
        font = Dictionary(
            Type=Name.Font,
            Subtype=Name.Type0,
            BaseFont=Name("/TestCFF"),
            Encoding=Name("/Identity-H"),
            DescendantFonts=Array([pdf.make_indirect(kid)]),
        )
        shown = b"".join(((ord(c) - 64) * cid_step).to_bytes(2, "big") for c in text)
    else:
        font = Dictionary(
            Type=Name.Font,
            Subtype=Name.Type1,
            BaseFont=Name("/TestCFF"),
            FirstChar=65,
            LastChar=255,
            Widths=Array([600] * 191),
            Encoding=Name.WinAnsiEncoding,
            FontDescriptor=desc,
        )
        shown = text.encode("cp1252")
    page = pdf.add_blank_page(page_size=(500, 200))
    page.obj.Resources = Dictionary(Font=Dictionary(F1=pdf.make_indirect(font)))
    page.obj.Contents = pdf.make_stream(b"BT /F1 30 Tf 20 80 Td <" + shown.hex().encode() + b"> Tj ET")
    pdf.save(path)
    return path


@pytest.mark.parametrize("cid", [False, True], ids=["Type1C", "CIDFontType0C"])
def test_medium_subsets_cff_fonts(tmp_path: Path, cid: bool) -> None:
    src = _cff_pdf(tmp_path / "in.pdf", "CAB", cid=cid)
    out = tmp_path / "out.pdf"
    report = compress(src, out, CompressOptions(level="medium"))
    assert report.verification.passed
    assert not report.kept_original
    with pikepdf.open(out) as pdf:
        fonts = pdf.pages[0].obj.Resources.Font.F1
        desc = fonts.DescendantFonts[0].FontDescriptor if cid else fonts.FontDescriptor
        outlines = _cff_outlines(desc.FontFile3.read_bytes())
    assert list(outlines)[:4] == [".notdef", "A", "B", "C"]  # glyph ids kept
    assert {n for n, (points, _) in outlines.items() if points} == {".notdef", "A", "B", "C"}


def _cid_keyed(data: bytes, cid_step: int) -> bytes:
    """The name-keyed CFF font as a CID-keyed one (ROS Adobe-Identity-0): glyph n gets CID n * ``cid_step``, the
    first 14 glyphs use the first font dict of the FDArray and the others the second (FDSelect format 3)."""
    font_set = CFFFontSet()
    font_set.decompile(io.BytesIO(data), TTFont())
    top = font_set.topDictIndex[0]
    order = list(top.charset)
    fd_array = FDArrayIndex()
    for private in (copy.deepcopy(top.Private), top.Private):
        fd = FontDict()
        fd.setCFF2(False)
        fd.Private = private
        fd_array.append(fd)
    fd_select = FDSelect()
    fd_select.format = 3
    fd_select.gidArray = [0 if gid < 14 else 1 for gid in range(len(order))]
    names = [".notdef", *(f"cid{gid * cid_step:05d}" for gid in range(1, len(order)))]
    charstrings = CharStrings(None, None, font_set.GlobalSubrs, None, fd_select, fd_array)
    for gid, (old, new) in enumerate(zip(order, names, strict=True)):
        cs = top.CharStrings[old]
        cs.decompile()
        cs.private = fd_array[fd_select.gidArray[gid]].Private
        charstrings[new] = cs
    top.charset, top.CharStrings, top.FDArray, top.FDSelect = names, charstrings, fd_array, fd_select
    top.ROS, top.CIDCount = ("Adobe", "Identity", 0), len(order) * cid_step
    del top.Private
    out = io.BytesIO()
    font_set.compile(out, TTFont())
    return out.getvalue()


def test_medium_subsets_cid_keyed_cff_with_fd_array(tmp_path: Path) -> None:
    program = _cid_keyed(_cff_font(), cid_step=2)  # CIDs differ from glyph ids
    src = _cff_pdf(tmp_path / "in.pdf", "CAXB", cid=True, font_program=program, cid_step=2)  # X: second FD
    out = tmp_path / "out.pdf"
    report = compress(src, out, CompressOptions(level="medium"))
    assert report.verification.passed
    assert not report.kept_original
    with pikepdf.open(out) as pdf:
        subset = pdf.pages[0].obj.Resources.Font.F1.DescendantFonts[0].FontDescriptor.FontFile3.read_bytes()
    assert len(subset) < len(program)
    font_set = CFFFontSet()
    font_set.decompile(io.BytesIO(subset), TTFont())
    top = font_set.topDictIndex[0]
    assert top.ROS == ("Adobe", "Identity", 0)
    assert len(top.FDArray) == 2
    assert top.FDSelect.gidArray == [0 if gid < 14 else 1 for gid in range(27)]
    before, after = _cff_outlines(program), _cff_outlines(subset)
    assert list(after) == list(before)  # charset (glyph id -> CID) kept
    shown = {".notdef", "cid00006", "cid00002", "cid00048", "cid00004"}  # C A X B
    assert {n for n, (points, _) in after.items() if points} == shown
    assert all(after[n][0] == before[n][0] for n in shown)


def _seac_cff_font() -> bytes:
    """A name-keyed CFF font whose Aacute is a seac-like endchar (A with acute, StandardEncoding codes 65, 194)."""
    fb = FontBuilder(1000, isTTF=False)
    order = [".notdef", "A", "B", "acute", "Aacute"]
    fb.setupGlyphOrder(order)
    fb.setupCharacterMap({0x41: "A", 0x42: "B", 0xB4: "acute", 0xC1: "Aacute"})
    charstrings = {}
    for name, (w, h) in {".notdef": (0, 0), "A": (400, 600), "B": (300, 500), "acute": (120, 80)}.items():
        pen = T2CharStringPen(600, None)
        if w:
            pen.moveTo((20, 0 if name != "acute" else 700))
            pen.lineTo((20 + w, 0 if name != "acute" else 700))
            pen.lineTo((20 + w, h if name != "acute" else 780))
            pen.closePath()
        charstrings[name] = pen.getCharString()
    charstrings["Aacute"] = T2CharString(program=[150, 40, 65, 194, "endchar"])
    fb.setupCFF("TestSeac", {"FullName": "TestSeac"}, charstrings, {})
    fb.setupHorizontalMetrics(dict.fromkeys(order, (600, 20)))
    fb.setupHorizontalHeader(ascent=800, descent=-200)
    fb.setupNameTable({"familyName": "TestSeac", "styleName": "Regular"})
    fb.setupOS2()
    fb.setupPost()
    out = io.BytesIO()
    fb.save(out)
    return TTFont(io.BytesIO(out.getvalue())).getTableData("CFF ")


def test_cff_subset_keeps_seac_components_of_shown_accented_glyph(tmp_path: Path) -> None:
    program = _seac_cff_font()
    src = _cff_pdf(tmp_path / "in.pdf", "\u00c1", cid=False, font_program=program)  # only Aacute is shown
    out = tmp_path / "out.pdf"
    report = compress(src, out, CompressOptions(level="medium"))
    assert report.verification.passed
    with pikepdf.open(out) as pdf:
        subset = pdf.pages[0].obj.Resources.Font.F1.FontDescriptor.FontFile3.read_bytes()
    before, after = _cff_outlines(program), _cff_outlines(subset)
    assert {n for n, (points, _) in after.items() if points} == {"A", "acute", "Aacute"}  # B is not shown
    assert all(after[n] == before[n] for n in ("A", "acute", "Aacute"))
