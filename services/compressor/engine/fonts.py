"""Font techniques (lossy levels): TrueType hinting and tables no PDF reader needs are dropped, and fully
embedded TrueType fonts are subset to the glyphs the document shows; Type 1 and CFF fonts are handled by
``cfffonts`` (converted to CFF, subset). Glyph outlines and metrics are never changed; a font is only replaced
when the result is smaller, and the verification renders confirm the pages."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pikepdf
from pikepdf import Array, Dictionary, Name, Stream

from .fontdicts import ObjId, cids_shown, differences, form_fonts, store_if_smaller, unicodes_of

if TYPE_CHECKING:
    from .fontusage import FontUsage

log = logging.getLogger(__name__)
logging.getLogger("fontTools").setLevel(logging.ERROR)

# Tables a PDF rasteriser never reads: hinting programs, device metrics, OpenType layout (PDF positions glyphs
# itself), digital signature of the font file, vertical/horizontal device tables.
_DROP_TABLES = ("fpgm", "prep", "cvt ", "hdmx", "VDMX", "LTSH", "DSIG", "GSUB", "GPOS", "GDEF", "kern", "PCLT", "JSTF")
# Fonts larger than this (decoded) are left alone: parsing is all Python.
_MAX_FONT_BYTES = 24 << 20


@dataclass
class FontResult:
    fonts_rewritten: int = 0  # font programs rewritten whole (TrueType unhinted, Type 1 converted without subset)
    bytes_saved: int = 0
    subset: int = 0  # font programs subset (TrueType, CFF, converted Type 1)
    converted: int = 0  # Type 1 font programs converted to CFF (subset or not)
    changed: set[tuple[int, int]] = field(default_factory=set)

    def describe(self) -> str:
        return (
            f"{self.subset} font(s) subset, {self.converted} Type 1 font(s) converted to CFF, "
            f"{self.fonts_rewritten} rewritten whole (unhinted)"
        )


def _embeds_font_programs(pdf: pikepdf.Pdf) -> bool:
    return any(
        isinstance(obj, Dictionary)
        and not isinstance(obj, Stream)
        and obj.get("/Type") == Name.FontDescriptor
        and any(key in obj for key in ("/FontFile", "/FontFile2", "/FontFile3"))
        for obj in pdf.objects
    )


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
        live = _subset_glyphs(font, glyf, order, keep, by_gid=by_gid, needs_windows_cmap=needs_windows_cmap)
    for name in live:
        glyf[name].removeHinting()
    _clear_hinting_limits(font)
    out = io.BytesIO()
    font.save(out, reorderTables=True)
    return out.getvalue()


def _subset_glyphs(
    font: Any, glyf: Any, order: list[str], keep: Callable[[Any], set[str]], *, by_gid: bool, needs_windows_cmap: bool
) -> set[str]:
    """Keep only what keep(font) returns (with .notdef and the components of what is kept); the glyphs kept."""
    live = set(order)
    wanted = _with_components(glyf, (keep(font) | {order[0]}) & live, live)
    metrics = [font[tag].metrics for tag in ("hmtx", "vmtx") if tag in font]  # looked up once, not per glyph
    order = _end_after_last_kept(font, glyf, order, wanted, metrics)
    _empty_glyphs(glyf, [name for name in order if name not in wanted], metrics)
    _prune_cmap_and_names(font, wanted, by_gid=by_gid, needs_windows_cmap=needs_windows_cmap)
    return wanted


def _with_components(glyf: Any, wanted: set[str], live: set[str]) -> set[str]:
    """``wanted`` and, transitively, every glyph its composite glyphs are built from (each visited once)."""
    stack = list(wanted)
    while stack:
        for name in _components(glyf[stack.pop()]):
            if name in live and name not in wanted:
                wanted.add(name)
                stack.append(name)
    return wanted


def _components(glyph: Any) -> list[str]:
    return [comp.glyphName for comp in glyph.components] if glyph.isComposite() else []


def _end_after_last_kept(
    font: Any, glyf: Any, order: list[str], wanted: set[str], metrics: list[dict[str, Any]]
) -> list[str]:
    """Glyphs after the last one kept are never addressed: the font ends there. The new glyph order."""
    last = max(i for i, name in enumerate(order) if name in wanted)
    for name in order[last + 1 :]:
        glyf.glyphs.pop(name, None)
        for table in metrics:
            table.pop(name, None)
    order = order[: last + 1]
    font.setGlyphOrder(order)
    glyf.glyphOrder = order
    return order


def _empty_glyphs(glyf: Any, names: list[str], metrics: list[dict[str, Any]]) -> None:
    """Empty outlines with zero metrics (the PDF's /W or /Widths give the advances), which lets hmtx/vmtx store
    them compactly. One empty glyph object serves them all: an empty glyph compiles to no bytes."""
    from fontTools.ttLib.tables._g_l_y_f import Glyph

    empty = Glyph()
    for name in names:
        glyf.glyphs[name] = empty
        for table in metrics:
            if name in table:
                table[name] = (0, 0)


def _prune_cmap_and_names(font: Any, wanted: set[str], *, by_gid: bool, needs_windows_cmap: bool) -> None:
    if "cmap" in font:
        for table in font["cmap"].tables:
            table.cmap = {c: g for c, g in table.cmap.items() if g in wanted}
    windows = "cmap" in font and any(t.platformID == 3 for t in font["cmap"].tables)
    if by_gid and "post" in font and (windows or not needs_windows_cmap):
        font["post"].formatType = 3.0  # no glyph names (a CJK font carries tens of thousands)
    if "name" in font:
        font["name"].names = [n for n in font["name"].names if 1 <= n.nameID <= 6]


def _clear_hinting_limits(font: Any) -> None:
    """maxp's hinting limits, for a font whose hinting programs are gone."""
    if "maxp" not in font:
        return
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


def optimize_fonts(pdf: pikepdf.Pdf) -> FontResult:
    """Subset TrueType and CFF fonts to what the document shows, convert Type 1 fonts to CFF, and drop TrueType
    hinting; each font program only when the result is smaller."""
    result = FontResult()
    if not _embeds_font_programs(pdf):
        return result  # nothing to do, and fontTools (0.6 s of imports) is not loaded
    from .cfffonts import font_programs, optimize_cff_fonts
    from .fontusage import find_font_usage

    truetype = _embedded_truetype(pdf)
    programs = font_programs(pdf)
    protected = form_fonts(pdf)
    # Scanning every content stream is the costly part: only for a document with a font program to subset.
    subsettable = truetype[0] or any(p.users and not p.foreign for p in programs.values())
    usage = find_font_usage(pdf) if subsettable else None
    complete = usage if usage is not None and usage.complete else None
    if complete is not None:
        subset_fonts(truetype, result, complete, protected)
    optimize_cff_fonts(pdf, programs, complete, protected, result)
    for ff in _descriptor_fonts(pdf):
        if ff.objgen not in result.changed:
            _unhint(ff, result)
    return result


def _unhint(ff: Stream, result: FontResult) -> None:
    try:
        raw_len = len(ff.read_raw_bytes())
        data = ff.read_bytes()
        if len(data) > _MAX_FONT_BYTES:
            return
        new = _rewrite(data, None)
    except Exception as exc:  # noqa: BLE001 - fontTools raises many types on odd fonts; leave the font as is
        log.debug("font %s left unchanged: %s", ff.objgen, exc)
        return
    saved = store_if_smaller(ff, new, raw_len)
    if saved:
        result.fonts_rewritten += 1
        result.bytes_saved += saved
        result.changed.add(ff.objgen)


def _simple_glyphs(tt: object, codes: set[int], diffs: dict[int, str]) -> set[str]:
    """Every glyph any usual reader could pick for these codes (union of the routes: symbolic (3,0) cmap,
    Mac (1,0) cmap, Unicode cmap through WinAnsi/MacRoman/Differences, glyph names)."""
    order = set(tt.getGlyphOrder())  # type: ignore[attr-defined]
    names = {".notdef"}
    tables = tt["cmap"].tables if "cmap" in tt else []  # type: ignore[operator,index]
    for c in codes:
        uni = unicodes_of(c, diffs)
        if c in diffs and diffs[c] in order:
            names.add(diffs[c])
        names.update(_cmap_glyphs(tables, c, uni))
    return names


def _cmap_glyphs(tables: list[Any], code: int, uni: set[int]) -> set[str]:
    """The glyphs the font's cmaps give: a symbolic (3,0) cmap by the code (in the 0xF000 pages too), any other
    by the code's characters."""
    found: set[str] = set()
    symbolic_keys = {code, 0xF000 + code, 0xF100 + code, 0xF200 + code}
    for t in tables:
        keys = symbolic_keys if (t.platformID, t.platEncID) == (3, 0) else uni | {code}
        found.update(g for k in keys if (g := t.cmap.get(k)) is not None)
    return found


def _cid_glyphs(tt: object, shown: set[bytes], cid_to_gid: bytes | None) -> set[str]:
    order = tt.getGlyphOrder()  # type: ignore[attr-defined]
    names = {".notdef"}
    for cid in cids_shown(shown):
        gid = cid
        if cid_to_gid is not None:
            gid = (cid_to_gid[2 * cid] << 8) | cid_to_gid[2 * cid + 1] if 2 * cid + 1 < len(cid_to_gid) else 0
        if gid < len(order):
            names.add(order[gid])
    return names


def subset_fonts(truetype: _TrueTypePrograms, result: FontResult, usage: FontUsage, protected: set[ObjId]) -> None:
    """Subset fully embedded TrueType fonts (simple, or CID-keyed with Identity encoding, as _embedded_truetype
    found them) to the glyphs shown (``usage`` must be complete). Fonts of interactive forms (``protected``) are
    kept whole."""
    users, files = truetype
    for key, fonts_using in users.items():
        if any(f.objgen in protected or f.objgen in usage.unknown for f, _, _ in fonts_using):
            continue
        if len({s for _, _, s in fonts_using}) != 1:
            continue
        saved = _subset_program(files[key], fonts_using, usage)
        if saved:
            result.subset += 1
            result.bytes_saved += saved
            result.changed.add(key)


# A font dictionary using a font program, its font descriptor, and whether it is a simple (not CID-keyed) font.
_FontUser = tuple[Dictionary, Dictionary, bool]
# Embedded TrueType programs by object id: the fonts using each, and the font file streams.
_TrueTypePrograms = tuple[dict[ObjId, list[_FontUser]], dict[ObjId, Stream]]


def _embedded_truetype(pdf: pikepdf.Pdf) -> _TrueTypePrograms:
    """Every embedded TrueType program (/FontFile2) by object id, with the fonts that use it."""
    users: dict[ObjId, list[_FontUser]] = {}
    files: dict[ObjId, Stream] = {}
    for obj in pdf.objects:
        user = _truetype_user(obj)
        ff = user[1].get("/FontFile2") if user is not None else None
        if user is not None and isinstance(ff, Stream) and ff.is_indirect:
            users.setdefault(ff.objgen, []).append(user)
            files[ff.objgen] = ff
    return users, files


def _truetype_user(obj: pikepdf.Object) -> _FontUser | None:
    """A TrueType font (simple, or CID-keyed with Identity encoding) with its font descriptor; None for any other
    object."""
    if isinstance(obj, Stream) or not isinstance(obj, Dictionary) or obj.get("/Type") != Name.Font:
        return None
    st = obj.get("/Subtype")
    if st == Name.TrueType:
        desc, simple = obj.get("/FontDescriptor"), True
    elif st == Name.Type0 and obj.get("/Encoding") in (Name("/Identity-H"), Name("/Identity-V")):
        kids = obj.get("/DescendantFonts")
        kid = kids[0] if isinstance(kids, Array) and len(kids) else None
        if not isinstance(kid, Dictionary) or kid.get("/Subtype") != Name.CIDFontType2:
            return None
        desc, simple = kid.get("/FontDescriptor"), False
    else:
        return None
    return (obj, desc, simple) if isinstance(desc, Dictionary) else None


@dataclass(frozen=True)
class _SubsetPlan:
    keep: Callable[[Any], set[str]]  # the glyphs to keep, given the parsed font
    by_gid: bool  # glyph names are not needed (see _rewrite)
    simple: bool


def _subset_program(ff: Stream, fonts_using: list[_FontUser], usage: FontUsage) -> int:
    """Subset one font program to the glyphs its fonts show; the bytes saved (0: left as it was)."""
    plan = _subset_plan(fonts_using, usage)
    if plan is None:
        return 0
    try:
        raw_len = len(ff.read_raw_bytes())
        data = ff.read_bytes()
        if len(data) > _MAX_FONT_BYTES:
            return 0
        new = _rewrite(data, plan.keep, by_gid=plan.by_gid, needs_windows_cmap=plan.simple)
    except Exception as exc:  # noqa: BLE001 - leave any font fontTools cannot handle as it is
        log.debug("font %s not subset: %s", ff.objgen, exc)
        return 0
    return store_if_smaller(ff, new, raw_len)


def _subset_plan(fonts_using: list[_FontUser], usage: FontUsage) -> _SubsetPlan | None:
    """Which glyphs the fonts using one program show; None when a CIDToGIDMap cannot be followed."""
    simple = fonts_using[0][2]
    shown, codes, diffs = _shown_by(fonts_using, usage)
    if simple:
        # Without a cmap, codes cannot be traced to glyphs: keep every glyph.
        def keep_simple(tt: Any) -> set[str]:
            return _simple_glyphs(tt, codes, diffs) if "cmap" in tt else set(tt.getGlyphOrder())

        # Glyph names matter only to a simple font whose /Differences name glyphs (or that has no Windows cmap).
        return _SubsetPlan(keep_simple, by_gid=not diffs, simple=True)
    m = fonts_using[0][0].DescendantFonts[0].get("/CIDToGIDMap")
    if m is not None and not isinstance(m, Stream) and m != Name.Identity:
        return None
    cid_to_gid = m.read_bytes() if isinstance(m, Stream) else None

    def keep_cids(tt: Any) -> set[str]:
        return _cid_glyphs(tt, shown, cid_to_gid)

    return _SubsetPlan(keep_cids, by_gid=True, simple=False)


def _shown_by(fonts_using: list[_FontUser], usage: FontUsage) -> tuple[set[bytes], set[int], dict[int, str]]:
    """The strings the fonts show, the codes in them, and the fonts' /Differences."""
    shown: set[bytes] = set()
    codes: set[int] = set()
    diffs: dict[int, str] = {}
    for f, _, _ in fonts_using:
        shown.update(usage.shown.get(f.objgen, set()))
        diffs.update(differences(f))
    for s in shown:
        codes.update(s)
    return shown, codes, diffs
