"""Verification of a candidate against the input: pages, geometry, re-opening, renders (SSIM and colour),
text, form fields, links and outlines. The input side is analysed once (Reference) and reused for every
candidate; page renders are cached."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import math
import re
import time
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pikepdf
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from .opening import count_pages_pypdf
from .report import Verification
from .ssim import chroma_compare, page_ssim
from .structural import undecodable_streams

log = logging.getLogger(__name__)
logging.getLogger("pypdfium2").setLevel(logging.ERROR)

RENDER_DPI = 100.0
MAX_SIDE_PX = 3000
TEXT_RECALL_MIN = 0.99
GEOMETRY_TOLERANCE_PT = 1.0
# Pages rendered per candidate: all of them up to this count; beyond it, a spread sample (first, last, evenly
# spaced: catches structural damage anywhere) plus the pages whose images changed most, up to the same budget.
RENDER_BUDGET = 12


@dataclass(frozen=True)
class Gate:
    ssim_min: float
    chroma_diff_max: float
    chroma_ratio: tuple[float, float]
    identical: bool = False  # lossless: renders must be pixel-identical
    check_colour: bool = True  # off when the caller asked for grayscale


@dataclass
class Structure:
    sizes: list[tuple[float, float] | None] = field(default_factory=list)
    unloadable: list[int] = field(default_factory=list)
    widgets: int = 0
    fields: dict[str, list[tuple[int, str, bool | None]]] = field(default_factory=dict)
    links: list[tuple[int, str]] = field(default_factory=list)
    outline: list[tuple[str, int | None]] = field(default_factory=list)
    attachments: int = 0
    words: list[str] = field(default_factory=list)


def _utf16(fn: Any, *args: Any) -> str:
    n = fn(*args, None, 0)
    if n <= 2:
        return ""
    buf = (ctypes.c_ushort * ((n + 1) // 2))()
    fn(*args, buf, n)
    return bytes(buf)[:n].decode("utf-16-le", "replace").rstrip("\x00")


def _dest_page(doc: pdfium.PdfDocument, dest: Any) -> int | None:
    if not dest:
        return None
    i = pdfium_c.FPDFDest_GetDestPageIndex(doc, dest)
    return i if i >= 0 else None


def _link_target(doc: pdfium.PdfDocument, annot: Any) -> str:
    link = pdfium_c.FPDFAnnot_GetLink(annot)
    if not link:
        return "none"
    dest = pdfium_c.FPDFLink_GetDest(doc, link)
    if dest:
        return f"page:{_dest_page(doc, dest)}"
    action = pdfium_c.FPDFLink_GetAction(link)
    if not action:
        return "none"
    kind = pdfium_c.FPDFAction_GetType(action)
    if kind == pdfium_c.PDFACTION_URI:
        n = pdfium_c.FPDFAction_GetURIPath(doc, action, None, 0)
        buf = ctypes.create_string_buffer(max(n, 1))
        pdfium_c.FPDFAction_GetURIPath(doc, action, buf, n)
        return "uri:" + buf.raw[: max(n - 1, 0)].decode("latin-1")
    if kind == pdfium_c.PDFACTION_GOTO:
        return f"page:{_dest_page(doc, pdfium_c.FPDFAction_GetDest(doc, action))}"
    return f"action:{kind}"


def read_structure(doc: pdfium.PdfDocument) -> Structure:
    """What a reader sees besides the pixels: page sizes, words, links, form fields, outline, attachments."""
    s = Structure()
    s.sizes = [None] * len(doc)
    form = doc.formenv.raw if getattr(doc, "formenv", None) else None
    for i in range(len(doc)):
        _read_page(doc, i, form, s)
    for v in s.fields.values():
        v.sort(key=repr)
    with contextlib.suppress(pdfium.PdfiumError):
        _read_outline(doc, s.outline)
    s.attachments = max(0, doc.count_attachments())
    return s


def _read_page(doc: pdfium.PdfDocument, i: int, form: Any, s: Structure) -> None:
    """Size, words and annotations of page ``i`` (each page is loaded once); an unloadable page is recorded."""
    try:
        page = doc[i]
    except pdfium.PdfiumError:
        s.unloadable.append(i)
        return
    try:
        w, h = page.get_size()
        s.sizes[i] = (w, h)
        tp = page.get_textpage()
        s.words.extend(_words(tp.get_text_range()))
        tp.close()
        for j in range(pdfium_c.FPDFPage_GetAnnotCount(page)):
            annot = pdfium_c.FPDFPage_GetAnnot(page, j)
            if annot:
                _read_annotation(doc, i, form, annot, s)
    finally:
        page.close()


def _read_annotation(doc: pdfium.PdfDocument, i: int, form: Any, annot: Any, s: Structure) -> None:
    """A link's target or a widget's form field (then closes the annotation)."""
    try:
        subtype = pdfium_c.FPDFAnnot_GetSubtype(annot)
        if subtype == pdfium_c.FPDF_ANNOT_LINK:
            s.links.append((i, _link_target(doc, annot)))
        elif subtype == pdfium_c.FPDF_ANNOT_WIDGET:
            s.widgets += 1
            if form:
                _read_field(form, annot, s)
    finally:
        pdfium_c.FPDFPage_CloseAnnot(annot)


def _read_field(form: Any, annot: Any, s: Structure) -> None:
    name = _utf16(pdfium_c.FPDFAnnot_GetFormFieldName, form, annot)
    value = _utf16(pdfium_c.FPDFAnnot_GetFormFieldValue, form, annot)
    ftype = pdfium_c.FPDFAnnot_GetFormFieldType(form, annot)
    checked = bool(pdfium_c.FPDFAnnot_IsChecked(form, annot)) if ftype in (2, 3) else None
    s.fields.setdefault(name, []).append((ftype, value, checked))


# The outline walk stops after this index: a bound on hostile outlines.
_MAX_OUTLINE_ITEMS = 100_000


def _read_outline(doc: pdfium.PdfDocument, outline: list[tuple[str, int | None]]) -> None:
    """Appends (title, target page) per bookmark; a PdfiumError midway leaves what was read so far."""
    for k, item in enumerate(doc.get_toc(max_depth=64)):
        if k > _MAX_OUTLINE_ITEMS:
            break
        target = _bookmark_page(doc, item.raw)
        outline.append((unicodedata.normalize("NFKC", item.get_title()), target))


def _bookmark_page(doc: pdfium.PdfDocument, bookmark: Any) -> int | None:
    dest = pdfium_c.FPDFBookmark_GetDest(doc, bookmark)
    if dest:
        return _dest_page(doc, dest)
    action = pdfium_c.FPDFBookmark_GetAction(bookmark)
    if action and pdfium_c.FPDFAction_GetType(action) == pdfium_c.PDFACTION_GOTO:
        return _dest_page(doc, pdfium_c.FPDFAction_GetDest(doc, action))
    return None


# Control characters count as spaces; format characters (soft hyphen, zero-width, bidi marks) are dropped.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_FORMAT = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]"
)


def _words(text: str) -> list[str]:
    t = unicodedata.normalize("NFKC", text)
    return _FORMAT.sub("", _CONTROL.sub(" ", t)).split()


def _open(path: Path, password: str | None) -> pdfium.PdfDocument:
    doc = pdfium.PdfDocument(str(path), password=password)
    with contextlib.suppress(pdfium.PdfiumError):
        doc.init_forms()  # widgets must be drawn and read as a viewer would
    return doc


def render(doc: pdfium.PdfDocument, index: int) -> np.ndarray | None:
    try:
        page = doc[index]
    except pdfium.PdfiumError:
        return None
    try:
        w, h = page.get_size()
        scale = RENDER_DPI / 72.0
        longest = max(w, h) * scale
        if longest > MAX_SIDE_PX:
            scale *= MAX_SIDE_PX / longest
        bitmap = page.render(scale=scale, may_draw_forms=True, draw_annots=True, rev_byteorder=True)
        arr = np.array(bitmap.to_numpy()[:, :, :3], dtype=np.uint8, copy=True)
        bitmap.close()
        return arr
    except pdfium.PdfiumError:
        return None
    finally:
        page.close()


def choose_pages(n: int, changed: dict[int, int], budget: int = RENDER_BUDGET) -> list[int]:
    """All pages when they fit the budget; otherwise first, last and evenly spaced pages (a spread sample of
    unchanged structure), then the pages whose images changed, largest change first."""
    if n <= budget:
        return list(range(n))
    spread = max(2, budget // 3)
    chosen = {round(i * (n - 1) / (spread - 1)) for i in range(spread)}
    for page, _ in sorted(changed.items(), key=lambda kv: -kv[1]):
        if len(chosen) >= budget:
            break
        chosen.add(page)
    # Fill with more spread pages. The stride must be coprime to n, or the walk cycles through a few pages forever
    # (a 7919-page document once did).
    stride = 7919 if math.gcd(7919, n) == 1 else 1
    for k in range(n):
        if len(chosen) >= budget:
            break
        chosen.add((k * stride) % n)
    return sorted(chosen)


class Reference:
    """The input as readers see it, computed once."""

    def __init__(self, path: Path, password: str | None, pages: int) -> None:
        self.path = path
        self.password = password
        self.pages = pages
        self.doc = _open(path, password)
        self.structure = read_structure(self.doc)
        self.words = self.structure.words
        self._renders: dict[int, np.ndarray | None] = {}

    def render(self, index: int) -> np.ndarray | None:
        if index not in self._renders:
            self._renders[index] = render(self.doc, index) if index < len(self.doc) else None
        return self._renders[index]

    def close(self) -> None:
        self.doc.close()
        self._renders.clear()


def _multiset_loss(a: list[Any], b: list[Any]) -> int:
    ca, cb = collections.Counter(a), collections.Counter(b)
    return sum(max(0, c - cb[k]) for k, c in ca.items())


@dataclass
class Outcome:
    verification: Verification
    bad_pages: set[int]  # pages that failed the visual gate (candidates for reverting their images)


def _syntax_error(message: str) -> bool:
    # Numbers that overflow 64 bits are only a warning for the library but an error for `qpdf --check`.
    return message.startswith("ERROR") or "overflow/underflow" in message


def verify(
    ref: Reference,
    candidate: Path,
    gate: Gate,
    pages: list[int],
    *,
    deep_syntax: bool = False,
    password: str | None = None,
) -> Outcome:
    """``deep_syntax``: also parse every content stream (qpdf's full check); used when damaged streams were
    re-encoded from what could be recovered, since content that decoded cleanly is written back unchanged."""
    t0 = time.monotonic()
    v = Verification(pages_in=ref.pages, ssim_threshold=gate.ssim_min, render_dpi=RENDER_DPI)
    bad: set[int] = set()
    doc = _open_candidate(candidate, password, deep_syntax, v)
    if doc is None:
        v.seconds = round(time.monotonic() - t0, 3)
        return Outcome(v, bad)
    try:
        if v.pages_out == ref.pages == v.pages_second_parser == len(doc):
            st = read_structure(doc)
            _check_geometry(ref.structure, st, v)
            bad = _check_renders(ref, doc, gate, pages, v)
            _check_text(ref.words, st.words, v)
            _check_interactive(ref.structure, st, v)
        else:
            v.failures.append("pages")
    finally:
        doc.close()
        v.passed = not v.failures
        v.seconds = round(time.monotonic() - t0, 3)
    return Outcome(v, bad)


def _open_candidate(
    candidate: Path, password: str | None, deep_syntax: bool, v: Verification
) -> pdfium.PdfDocument | None:
    """The candidate as PDFium reads it, after qpdf and pypdf counted its pages (three independent readers);
    None, with the failure "opens", when qpdf or PDFium cannot open it."""
    if not _opens_with_qpdf(candidate, password, deep_syntax, v):
        return None
    v.pages_second_parser = count_pages_pypdf(candidate, password)
    try:
        return _open(candidate, password)
    except pdfium.PdfiumError:
        v.failures.append("opens")
        return None


def _opens_with_qpdf(candidate: Path, password: str | None, deep_syntax: bool, v: Verification) -> bool:
    """Counts the pages; "opens" fails on warnings or undecodable streams. False when qpdf cannot open it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _check_with_qpdf(candidate, password, deep_syntax, v)
    except pikepdf.PdfError:
        v.failures.append("opens")
        return False
    return True


def _check_with_qpdf(candidate: Path, password: str | None, deep_syntax: bool, v: Verification) -> None:
    with pikepdf.open(candidate, password=password or "") as out:
        v.pages_out = len(out.pages)
        # Decode every stream before reading the warnings: qpdf reports truncated Flate data only as a warning,
        # while decoding it.
        undecodable = undecodable_streams(out)
        if (
            undecodable
            or out.get_warnings()
            or (deep_syntax and any(_syntax_error(str(m)) for m in out.check_pdf_syntax()))
        ):
            v.failures.append("opens")


def _check_geometry(si: Structure, st: Structure, v: Verification) -> None:
    """Pages that no longer load, and page sizes that changed."""
    if set(st.unloadable) - set(si.unloadable):
        v.failures.append("opens")
    if any(sa and sb and _size_changed(sa, sb) for sa, sb in zip(si.sizes, st.sizes, strict=False)):
        v.failures.append("geometry")


def _size_changed(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return abs(a[0] - b[0]) > GEOMETRY_TOLERANCE_PT or abs(a[1] - b[1]) > GEOMETRY_TOLERANCE_PT


@dataclass
class _VisualTally:
    """What the rendered pages showed so far."""

    worst: float = 1.0
    identical: bool = True
    chroma_max: float = 0.0
    ratios: list[float] = field(default_factory=list)
    bad: set[int] = field(default_factory=set)


def _check_renders(ref: Reference, doc: pdfium.PdfDocument, gate: Gate, pages: list[int], v: Verification) -> set[int]:
    """Renders ``pages`` of both and applies the visual gate; the pages that failed it."""
    v.pages_compared = [p + 1 for p in pages]
    tally = _VisualTally()
    for p in pages:
        _compare_page(ref, doc, gate, p, tally, v)
    v.ssim_min = round(tally.worst, 5)
    v.identical_renders = tally.identical
    v.chroma_diff_max = round(tally.chroma_max, 3)
    v.chroma_ratio_min = round(min(tally.ratios), 4) if tally.ratios else None
    v.chroma_ratio_max = round(max(tally.ratios), 4) if tally.ratios else None
    if gate.identical and not tally.identical:
        v.failures.append("identical")
    if tally.worst < gate.ssim_min:
        v.failures.append("ssim")
    if gate.check_colour and tally.bad and "ssim" not in v.failures:
        v.failures.append("color")
    return tally.bad


def _compare_page(
    ref: Reference, doc: pdfium.PdfDocument, gate: Gate, p: int, tally: _VisualTally, v: Verification
) -> None:
    a = ref.render(p)
    if a is None:
        return  # the input page itself does not render; nothing to compare
    b = render(doc, p)
    if b is None or b.shape != a.shape:
        v.failures.append("render")
        tally.bad.add(p)
        tally.worst = 0.0
        return
    if np.array_equal(a, b):
        return
    tally.identical = False
    s = page_ssim(a, b)
    if s < tally.worst:
        tally.worst, v.ssim_min_page = s, p + 1
    page_bad = s < gate.ssim_min
    if gate.check_colour and _colour_changed(a, b, gate, tally):
        page_bad = True
    if page_bad:
        tally.bad.add(p)


def _colour_changed(a: np.ndarray, b: np.ndarray, gate: Gate, tally: _VisualTally) -> bool:
    diff, ratio = chroma_compare(a, b)
    tally.chroma_max = max(tally.chroma_max, diff)
    if ratio is not None:
        tally.ratios.append(ratio)
    lo, hi = gate.chroma_ratio
    return diff > gate.chroma_diff_max or (ratio is not None and not lo <= ratio <= hi)


def _check_text(words_in: list[str], words_out: list[str], v: Verification) -> None:
    """Share of the input's words (as a multiset) the candidate still has."""
    v.text_words_in = len(words_in)
    if not words_in:
        return
    ca, cb = collections.Counter(words_in), collections.Counter(words_out)
    recall = sum(min(c, cb[w]) for w, c in ca.items()) / len(words_in)
    v.text_recall = round(recall, 5)
    if recall < TEXT_RECALL_MIN:
        v.failures.append("text")


def _check_interactive(si: Structure, st: Structure, v: Verification) -> None:
    """Form fields (names, values, states), links, outline entries and attachments: none may be lost."""
    v.fields_in, v.fields_out = len(si.fields), len(st.fields)
    v.links_in, v.links_out = len(si.links), len(st.links)
    v.outlines_in, v.outlines_out = len(si.outline), len(st.outline)
    if any(k not in st.fields or st.fields[k] != val for k, val in si.fields.items()) or st.widgets < si.widgets:
        v.failures.append("fields")
    if _multiset_loss(si.links, st.links):
        v.failures.append("links")
    if _multiset_loss(si.outline, st.outline):
        v.failures.append("outlines")
    if st.attachments < si.attachments:
        v.failures.append("attachments")
