"""Font techniques (lossy levels): TrueType hinting and tables no PDF reader needs are dropped, and fully
embedded TrueType fonts are subset to the glyphs the document shows. Glyph outlines and metrics are never
changed; a font is only replaced when the result is smaller, and the verification renders confirm the pages."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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


def _rewrite(
    data: bytes, keep: Callable[[Any], set[str]] | None, *, by_gid: bool = False, needs_windows_cmap: bool = False
) -> bytes | None:
    """Drop hinting and unneeded tables; with ``keep``, also empty every glyph outside what keep(font) returns (and
    the components of those glyphs) and prune the cmap to what is left. Emptied glyphs keep their ids and advance
    widths, so nothing in the PDF that refers to glyph ids or widths changes. Only the glyphs kept are ever
    decompiled. ``by_gid``: the PDF addresses glyphs by id (CID fonts), so glyph names are not needed either."""
    from fontTools.ttLib import TTFont
    from fontTools.ttLib.tables._g_l_y_f import Glyph

    font = TTFont(io.BytesIO(data), recalcBBoxes=False, recalcTimestamp=False)
    if "glyf" not in font or "loca" not in font:
        return None
    for tag in _DROP_TABLES:
        if tag in font:
            del font[tag]
    glyf = font["glyf"]
    order = font.getGlyphOrder()
    live = set(order)
    if keep is not None:
        wanted = (keep(font) | {order[0]}) & live
        stack = list(wanted)
        while stack:
            g = glyf[stack.pop()]
            if g.isComposite():
                for comp in g.components:
                    if comp.glyphName in live and comp.glyphName not in wanted:
                        wanted.add(comp.glyphName)
                        stack.append(comp.glyphName)
        # Glyphs after the last one kept are never addressed: the font ends there. Emptied glyphs get zero metrics
        # (the PDF's /W or /Widths give the advances), which lets hmtx/vmtx store them compactly.
        last = max(order.index(n) for n in wanted)
        for name in order[last + 1 :]:
            glyf.glyphs.pop(name, None)
            for tag in ("hmtx", "vmtx"):
                if tag in font:
                    font[tag].metrics.pop(name, None)
        order = order[: last + 1]
        font.setGlyphOrder(order)
        glyf.glyphOrder = order
        for name in order:
            if name not in wanted:
                glyf.glyphs[name] = Glyph()
                for tag in ("hmtx", "vmtx"):
                    if tag in font and name in font[tag].metrics:
                        font[tag].metrics[name] = (0, 0)
        live = wanted
        if "cmap" in font:
            for table in font["cmap"].tables:
                table.cmap = {c: g for c, g in table.cmap.items() if g in wanted}
        windows = "cmap" in font and any(t.platformID == 3 for t in font["cmap"].tables)
        if by_gid and "post" in font and (windows or not needs_windows_cmap):
            font["post"].formatType = 3.0  # no glyph names (a CJK font carries tens of thousands)
        if "name" in font:
            font["name"].names = [n for n in font["name"].names if 1 <= n.nameID <= 6]
    for name in live:
        glyf[name].removeHinting()
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
    subset_fonts(pdf, result)
    for ff in _descriptor_fonts(pdf):
        if ff.objgen in result.changed:
            continue
        try:
            raw_len = len(ff.read_raw_bytes())
            data = ff.read_bytes()
            if len(data) > _MAX_FONT_BYTES:
                continue
            new = _rewrite(data, None)
        except Exception as exc:  # noqa: BLE001 - fontTools raises many types on odd fonts; leave the font as is
            log.debug("font %s left unchanged: %s", ff.objgen, exc)
            continue
        saved = _store_if_smaller(ff, new, raw_len)
        if saved:
            result.fonts_rewritten += 1
            result.bytes_saved += saved
            result.changed.add(ff.objgen)
    return result


def _store_if_smaller(font_file: Stream, program: bytes | None, raw_len: int) -> int:
    """Replace a TrueType font file with `program`, Flate-packed, if that is smaller; the bytes saved (0: kept)."""
    if program is None:
        return 0
    packed = codecs.deflate(program)
    if len(packed) >= raw_len:
        return 0
    font_file.write(packed, filter=Name.FlateDecode)
    font_file.stream_dict["/Length1"] = len(program)
    return raw_len - len(packed)


def _name_text(obj: pikepdf.Object | None) -> str:
    # Names may hold any bytes (not UTF-8): go through the PDF syntax, e.g. "/ABCDEF+Name".
    return obj.unparse().decode("latin-1")[1:] if isinstance(obj, Name) else ""


def _differences(font: Dictionary) -> dict[int, str]:
    enc = font.get("/Encoding")
    out: dict[int, str] = {}
    if isinstance(enc, Dictionary) and isinstance(enc.get("/Differences"), Array):
        code = 0
        for item in enc.Differences:
            if isinstance(item, int):
                code = item
            elif isinstance(item, Name):
                out[code] = _name_text(item)
                code += 1
    return out


def _simple_glyphs(tt: object, codes: set[int], diffs: dict[int, str]) -> set[str]:
    """Every glyph any usual reader could pick for these codes (union of the routes: symbolic (3,0) cmap,
    Mac (1,0) cmap, Unicode cmap through WinAnsi/MacRoman/Differences, glyph names)."""
    from fontTools.agl import toUnicode

    order = set(tt.getGlyphOrder())  # type: ignore[attr-defined]
    names = {".notdef"}
    tables = tt["cmap"].tables if "cmap" in tt else []  # type: ignore[operator,index]
    for c in codes:
        uni: set[int] = {c}
        for codec in ("cp1252", "mac_roman"):
            with contextlib.suppress(UnicodeDecodeError, TypeError):
                uni.add(ord(bytes([c]).decode(codec)))
        if c in diffs:
            if diffs[c] in order:
                names.add(diffs[c])
            u = toUnicode(diffs[c])
            if len(u) == 1:
                uni.add(ord(u))
        for t in tables:
            keys = {c, 0xF000 + c, 0xF100 + c, 0xF200 + c} if (t.platformID, t.platEncID) == (3, 0) else uni | {c}
            for k in keys:
                g = t.cmap.get(k)
                if g is not None:
                    names.add(g)
    return names


def _cid_glyphs(tt: object, shown: set[bytes], cid_to_gid: bytes | None) -> set[str]:
    order = tt.getGlyphOrder()  # type: ignore[attr-defined]
    names = {".notdef"}
    for s in shown:
        for i in range(0, len(s) - 1, 2):
            cid = (s[i] << 8) | s[i + 1]
            gid = cid
            if cid_to_gid is not None:
                gid = (cid_to_gid[2 * cid] << 8) | cid_to_gid[2 * cid + 1] if 2 * cid + 1 < len(cid_to_gid) else 0
            if gid < len(order):
                names.add(order[gid])
    return names


def subset_fonts(pdf: pikepdf.Pdf, result: FontResult) -> None:
    """Subset fully embedded TrueType fonts (simple, or CID-keyed with Identity encoding) to the glyphs shown.
    Fonts of interactive forms (/AcroForm /DR) are kept whole: filling a field may need any glyph."""
    from .fontusage import find_font_usage

    usage = find_font_usage(pdf)
    if not usage.complete:
        return
    protected: set[tuple[int, int]] = set()
    acro = pdf.Root.get("/AcroForm")
    if isinstance(acro, Dictionary):
        dr = acro.get("/DR")
        fonts = dr.get("/Font") if isinstance(dr, Dictionary) else None
        if isinstance(fonts, Dictionary):
            protected.update(f.objgen for _, f in fonts.items() if isinstance(f, Dictionary) and f.is_indirect)
    users: dict[tuple[int, int], list[tuple[Dictionary, Dictionary, bool]]] = {}
    files: dict[tuple[int, int], Stream] = {}
    for obj in pdf.objects:
        if isinstance(obj, Stream) or not isinstance(obj, Dictionary) or obj.get("/Type") != Name.Font:
            continue
        st = obj.get("/Subtype")
        if st == Name.TrueType:
            desc, simple = obj.get("/FontDescriptor"), True
        elif st == Name.Type0 and obj.get("/Encoding") in (Name("/Identity-H"), Name("/Identity-V")):
            kids = obj.get("/DescendantFonts")
            kid = kids[0] if isinstance(kids, Array) and len(kids) else None
            if not isinstance(kid, Dictionary) or kid.get("/Subtype") != Name.CIDFontType2:
                continue
            desc, simple = kid.get("/FontDescriptor"), False
        else:
            continue
        if not isinstance(desc, Dictionary):
            continue
        ff = desc.get("/FontFile2")
        if isinstance(ff, Stream) and ff.is_indirect:
            users.setdefault(ff.objgen, []).append((obj, desc, simple))
            files[ff.objgen] = ff
    for key, fonts_using in users.items():
        ff = files[key]
        if any(f.objgen in protected or f.objgen in usage.unknown for f, _, _ in fonts_using):
            continue
        if len({s for _, _, s in fonts_using}) != 1:
            continue
        simple = fonts_using[0][2]
        shown: set[bytes] = set()
        codes: set[int] = set()
        diffs: dict[int, str] = {}
        for f, _, _ in fonts_using:
            for s in usage.shown.get(f.objgen, set()):
                shown.add(s)
                codes.update(s)
            diffs.update(_differences(f))
        cid_to_gid: bytes | None = None
        if not simple:
            kid = fonts_using[0][0].DescendantFonts[0]
            m = kid.get("/CIDToGIDMap")
            if isinstance(m, Stream):
                cid_to_gid = m.read_bytes()
            elif m is not None and m != Name.Identity:
                continue
        try:
            raw_len = len(ff.read_raw_bytes())
            data = ff.read_bytes()
            if len(data) > _MAX_FONT_BYTES:
                continue
            keep: Callable[[Any], set[str]]
            if simple:
                # Without a cmap, codes cannot be traced to glyphs: keep every glyph.
                def keep(tt: Any, codes: set[int] = codes, diffs: dict[int, str] = diffs) -> set[str]:
                    return _simple_glyphs(tt, codes, diffs) if "cmap" in tt else set(tt.getGlyphOrder())
            else:

                def keep(tt: Any, shown: set[bytes] = shown, cid_to_gid: bytes | None = cid_to_gid) -> set[str]:
                    return _cid_glyphs(tt, shown, cid_to_gid)

            # Glyph names matter only to a simple font whose /Differences name glyphs (or that has no Windows cmap).
            new = _rewrite(data, keep, by_gid=not simple or not diffs, needs_windows_cmap=simple)
        except Exception as exc:  # noqa: BLE001 - leave any font fontTools cannot handle as it is
            log.debug("font %s not subset: %s", key, exc)
            continue
        saved = _store_if_smaller(ff, new, raw_len)
        if saved:
            result.subset += 1
            result.bytes_saved += saved
            result.changed.add(key)
