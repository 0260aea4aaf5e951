"""Type 1 and CFF fonts in a PDF (lossy levels). Type 1 programs (/FontFile) become CFF (/FontFile3 /Subtype
/Type1C), with the same glyph names, built-in encoding, outlines, FontMatrix and widths; CFF programs
(/FontFile3 /Type1C and /CIDFontType0C) and converted ones are subset to the glyphs the document shows. Glyph
ids, names, codes and CIDs stay valid, so no content stream, encoding or width array changes. The same safety
rules as TrueType subsetting: fonts of interactive forms keep every glyph, and nothing is subset when some
text cannot be attributed to a font. A font that cannot be converted or parsed stays as it is."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pikepdf
from fontTools.agl import toUnicode
from fontTools.encodings.StandardEncoding import StandardEncoding
from pikepdf import Array, Dictionary, Name, Stream

from . import codecs
from .cff import CFFFont, builtin_encoding, type1_to_cff
from .fontdicts import ObjId, cids_shown, differences, store_if_smaller, unicodes_of
from .type1 import parse_type1

if TYPE_CHECKING:
    from .fonts import FontResult
    from .fontusage import FontUsage

log = logging.getLogger(__name__)

_MAX_FONT_BYTES = 24 << 20  # decoded; larger programs are left alone (parsing is all Python)
_IDENTITY = (Name("/Identity-H"), Name("/Identity-V"))


@dataclass(frozen=True)
class _FontView:
    """What choosing the glyphs to keep needs to know of a parsed font program."""

    encoding: tuple[str, ...]  # the built-in encoding: 256 glyph names
    names: list[str]
    glyph_of_cid: dict[int, str]


_Chooser = Callable[[_FontView], set[str]]  # the glyphs to keep


@dataclass
class FontProgram:
    """One embedded Type 1 or CFF font program, the descriptors that embed it and the fonts that use them."""

    stream: Stream
    kind: str  # "type1" (/FontFile), "type1c" or "cid" (/FontFile3)
    descriptors: dict[ObjId, Dictionary] = field(default_factory=dict)
    users: dict[ObjId, Dictionary] = field(default_factory=dict)  # the font dictionaries text is shown with
    foreign: bool = False  # a descriptor is used by something this module does not understand


def optimize_cff_fonts(
    pdf: pikepdf.Pdf,
    programs: dict[ObjId, FontProgram],
    usage: FontUsage | None,
    protected: set[ObjId],
    result: FontResult,
) -> None:
    """Convert and subset the ``programs`` font_programs found. ``usage`` None: some text could not be attributed
    to a font, so nothing is subset (Type 1 fonts are still converted, whole)."""
    for key, program in programs.items():
        if program.foreign or not program.users:
            continue
        chooser = _chooser(program, usage, protected)
        try:
            saved = _rewrite(pdf, program, chooser)
        except Exception as exc:  # any font the parsers reject stays as it is
            log.debug("font program %s left unchanged: %r", key, exc, exc_info=True)
            continue
        if saved:
            result.bytes_saved += saved
            result.changed.add(key)
            result.converted += program.kind == "type1"
            if chooser is not None:
                result.subset += 1
            else:
                result.fonts_rewritten += 1


def font_programs(pdf: pikepdf.Pdf) -> dict[ObjId, FontProgram]:
    """Every embedded Type 1 and CFF program, with the descriptors and fonts using it."""
    programs: dict[ObjId, FontProgram] = {}
    by_descriptor: dict[ObjId, FontProgram] = {}
    fonts: list[Dictionary] = []
    for obj in pdf.objects:
        if not isinstance(obj, Dictionary) or isinstance(obj, Stream):
            continue
        if obj.get("/Type") == Name.FontDescriptor and obj.is_indirect:
            _add_descriptor(obj, programs, by_descriptor)
        elif "/FontDescriptor" in obj or "/DescendantFonts" in obj:
            fonts.append(obj)
    claimed: set[ObjId] = set()
    for font in fonts:
        _add_user(font, by_descriptor, claimed)
    for font in fonts:
        desc = font.get("/FontDescriptor")
        if isinstance(desc, Dictionary) and desc.objgen in by_descriptor and font.objgen not in claimed:
            by_descriptor[desc.objgen].foreign = True
    return programs


def _add_descriptor(
    desc: Dictionary, programs: dict[ObjId, FontProgram], by_descriptor: dict[ObjId, FontProgram]
) -> None:
    ff, kind = desc.get("/FontFile"), "type1"
    if ff is None:
        ff = desc.get("/FontFile3")
        subtype = ff.stream_dict.get("/Subtype") if isinstance(ff, Stream) else None
        kind = "type1c" if subtype == Name.Type1C else "cid" if subtype == Name.CIDFontType0C else ""
    if not isinstance(ff, Stream) or not ff.is_indirect or not kind:
        return
    program = programs.setdefault(ff.objgen, FontProgram(ff, kind))
    if program.kind != kind:
        program.foreign = True
    program.descriptors[desc.objgen] = desc
    by_descriptor[desc.objgen] = program


def _add_user(font: Dictionary, by_descriptor: dict[ObjId, FontProgram], claimed: set[ObjId]) -> None:
    """Record which program a simple Type 1 font or a Type 0 font with a CIDFontType0 descendant uses; the
    dictionaries understood (the font, and a descendant) are ``claimed``."""
    subtype = font.get("/Subtype")
    desc, holder = font.get("/FontDescriptor"), font
    if subtype == Name.Type0:
        kids = font.get("/DescendantFonts")
        kid = kids[0] if isinstance(kids, Array) and len(kids) == 1 else None
        if not isinstance(kid, Dictionary) or kid.get("/Subtype") != Name.CIDFontType0:
            return
        desc, holder = kid.get("/FontDescriptor"), kid
    elif subtype != Name.Type1:
        return
    program = by_descriptor.get(desc.objgen) if isinstance(desc, Dictionary) else None
    if program is None:
        return
    claimed.update({font.objgen, holder.objgen})
    if (program.kind == "cid") != (subtype == Name.Type0) or not font.is_indirect:
        program.foreign = True
    program.users[font.objgen] = font


def _chooser(program: FontProgram, usage: FontUsage | None, protected: set[ObjId]) -> _Chooser | None:
    """How to pick the glyphs to keep; None when every glyph must stay."""
    if usage is None or any(k in protected or k in usage.unknown for k in program.users):
        return None
    if program.kind == "cid":
        if any(f.get("/Encoding") not in _IDENTITY for f in program.users.values()):
            return None  # codes are not CIDs
        cids = cids_shown(s for k in program.users for s in usage.shown.get(k, ()))
        return lambda font: {font.glyph_of_cid[c] for c in cids if c in font.glyph_of_cid}
    if any(_base_encoding(f) == Name.MacExpertEncoding for f in program.users.values()):
        return None
    shown = {k: {c for s in usage.shown.get(k, ()) for c in s} for k in program.users}
    diffs = {k: differences(f) for k, f in program.users.items()}
    return lambda font: _glyphs_of_codes(shown, diffs, font.encoding, font.names)


def _base_encoding(font: Dictionary) -> pikepdf.Object | None:
    enc = font.get("/Encoding")
    return enc.get("/BaseEncoding") if isinstance(enc, Dictionary) else enc


def _glyphs_of_codes(
    shown: dict[ObjId, set[int]], diffs: dict[ObjId, dict[int, str]], encoding: tuple[str, ...], names: list[str]
) -> set[str]:
    """Every glyph a usual reader could pick for the codes shown: the /Differences name, the name the built-in,
    Standard, WinAnsi or MacRoman encoding gives, or a glyph whose name stands for the code's character."""
    by_unicode: dict[int, set[str]] = {}
    for name in names:
        u = toUnicode(name)
        if len(u) == 1:
            by_unicode.setdefault(ord(u), set()).add(name)
    keep = {".notdef"}
    for key, codes in shown.items():
        for code in codes:
            keep.update({diffs[key].get(code, ".notdef"), encoding[code], StandardEncoding[code]})
            for u in unicodes_of(code, diffs[key]):
                keep |= by_unicode.get(u, set())
    return keep & set(names)


def _rewrite(pdf: pikepdf.Pdf, program: FontProgram, chooser: _Chooser | None) -> int:
    """Convert or subset one program; the bytes saved (0: left as it was)."""
    stream = program.stream
    raw_len = len(stream.read_raw_bytes())
    data = stream.read_bytes()
    if len(data) > _MAX_FONT_BYTES:
        return 0
    if program.kind == "type1":
        return _convert(pdf, program, chooser, data, raw_len)
    if chooser is None:
        return 0  # CFF fonts that are not subset keep their hints: rewriting them whole gains little
    font = CFFFont(data)
    keep = chooser(_FontView(font.encoding(), font.glyph_order, font.glyph_of_cid()))
    return store_if_smaller(stream, font.subset(keep), raw_len, "")


def _convert(pdf: pikepdf.Pdf, program: FontProgram, chooser: _Chooser | None, data: bytes, raw_len: int) -> int:
    t1 = parse_type1(data)
    names = list(t1.charstrings)
    keep = chooser(_FontView(t1.encoding, names, {})) if chooser is not None else None
    cff = type1_to_cff(t1, keep)
    expected = tuple(n if n in t1.charstrings else ".notdef" for n in t1.encoding)
    if builtin_encoding(cff) != expected:
        return 0  # the encoding could not be carried over exactly
    packed = codecs.deflate(cff)
    if len(packed) >= raw_len:
        return 0
    font_file = pdf.make_stream(packed)
    font_file.stream_dict["/Filter"] = Name.FlateDecode
    font_file.stream_dict["/Subtype"] = Name.Type1C
    for desc in program.descriptors.values():
        del desc["/FontFile"]
        desc["/FontFile3"] = font_file
    return raw_len - len(packed)
