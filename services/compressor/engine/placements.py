"""Where each image is drawn: the displayed size of every placement, hence its effective resolution.

Content streams are walked with only the operators that move images (q, Q, cm, Do), so text-heavy pages
cost little; pages without image XObjects in their resource tree are not parsed at all.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import pikepdf
from pikepdf import Dictionary, Name, Stream

log = logging.getLogger(__name__)

Matrix = tuple[float, float, float, float, float, float]
IDENTITY: Matrix = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
_MAX_FORM_DEPTH = 12


def _mul(m: Matrix, n: Matrix) -> Matrix:
    """m then n (PDF order: the result maps a point through m, then through n)."""
    a, b, c, d, e, f = m
    a2, b2, c2, d2, e2, f2 = n
    return (
        a * a2 + b * c2,
        a * b2 + b * d2,
        c * a2 + d * c2,
        c * b2 + d * d2,
        e * a2 + f * c2 + e2,
        e * b2 + f * d2 + f2,
    )


@dataclass
class Placement:
    """Everything known about where one image XObject is displayed."""

    pages: set[int] = field(default_factory=set)  # 0-based page indices
    # Lowest effective resolution over all placements (pixels per inch along the image's less-dense axis);
    # None when any placement is unknown (annotation appearance, pattern, ...): never downsample then.
    min_dpi: float | None = None
    unknown: bool = False

    def add(self, page: int, dpi: float | None) -> None:
        self.pages.add(page)
        if dpi is None or not math.isfinite(dpi) or dpi <= 0:
            self.unknown = True
            return
        self.min_dpi = dpi if self.min_dpi is None else min(self.min_dpi, dpi)

    @property
    def effective_dpi(self) -> float | None:
        return None if self.unknown else self.min_dpi


def _xobjects(resources: pikepdf.Object | None) -> Dictionary | None:
    if not isinstance(resources, Dictionary):
        return None
    xo = resources.get("/XObject")
    return xo if isinstance(xo, Dictionary) else None


def page_resources(page: pikepdf.Object) -> pikepdf.Object | None:
    """A page's /Resources, inherited from the page tree; at most 64 steps up (a /Parent chain may loop)."""
    node: pikepdf.Object | None = page
    for _ in range(64):
        if node is None:
            return None
        res = node.get("/Resources")
        if res is not None:
            return res
        node = node.get("/Parent")
    return None


def _has_images(xobjects: Dictionary | None, depth: int = 0, seen: set[tuple[int, int]] | None = None) -> bool:
    if xobjects is None or depth > _MAX_FORM_DEPTH:
        return False
    seen = seen if seen is not None else set()
    for _, xo in xobjects.items():
        if not isinstance(xo, Stream):
            continue
        st = xo.stream_dict.get("/Subtype")
        if st == Name.Image:
            return True
        if st == Name.Form and xo.is_indirect and xo.objgen not in seen:
            seen.add(xo.objgen)
            if _has_images(_xobjects(xo.stream_dict.get("/Resources")), depth + 1, seen):
                return True
    return False


class PlacementFinder:
    def __init__(self) -> None:
        # Form XObject -> [(image objgen, matrix in the form's parent space, width, height)]
        self._form_cache: dict[tuple[int, int], list[tuple[tuple[int, int], Matrix, int, int]]] = {}

    def _scan(
        self,
        owner: pikepdf.Object,
        resources: pikepdf.Object | None,
        depth: int,
        stack: set[tuple[int, int]],
    ) -> list[tuple[tuple[int, int], Matrix, int, int]]:
        xobjects = _xobjects(resources)
        if xobjects is None:
            return []
        out: list[tuple[tuple[int, int], Matrix, int, int]] = []
        ctm: Matrix = IDENTITY
        saved: list[Matrix] = []
        try:
            instructions = pikepdf.parse_content_stream(owner, "q Q cm Do")
        except (pikepdf.PdfError, TypeError, ValueError):
            return []
        for instruction in instructions:
            if not isinstance(instruction, pikepdf.ContentStreamInstruction):
                continue  # inline images
            operands, name = instruction.operands, str(instruction.operator)
            if name == "q":
                saved.append(ctm)
            elif name == "Q":
                ctm = saved.pop() if saved else IDENTITY
            elif name == "cm" and len(operands) == 6:
                try:
                    m = tuple(float(x) for x in operands)
                except (TypeError, ValueError):
                    continue
                ctm = _mul(m, ctm)  # type: ignore[arg-type]
            elif name == "Do" and operands:
                xo = xobjects.get(str(operands[0]))
                if not isinstance(xo, Stream) or not xo.is_indirect:
                    continue
                st = xo.stream_dict.get("/Subtype")
                if st == Name.Image:
                    w, h = int(xo.stream_dict.get("/Width", 0)), int(xo.stream_dict.get("/Height", 0))
                    out.append((xo.objgen, ctm, w, h))
                elif st == Name.Form and depth < _MAX_FORM_DEPTH and xo.objgen not in stack:
                    for og, m, w, h in self._form(xo, resources, depth + 1, stack):
                        out.append((og, _mul(m, ctm), w, h))
        return out

    def _form(
        self, form: Stream, parent_resources: pikepdf.Object | None, depth: int, stack: set[tuple[int, int]]
    ) -> list[tuple[tuple[int, int], Matrix, int, int]]:
        own = form.stream_dict.get("/Resources")
        key = form.objgen
        if own is not None and key in self._form_cache:
            return self._form_cache[key]
        fm: Matrix = IDENTITY
        mat = form.stream_dict.get("/Matrix")
        if isinstance(mat, pikepdf.Array) and len(mat) == 6:
            try:
                fm = tuple(float(x) for x in mat)  # type: ignore[assignment]
            except (TypeError, ValueError):
                fm = IDENTITY
        stack.add(key)
        try:
            inner = self._scan(form, own if own is not None else parent_resources, depth, stack)
        finally:
            stack.discard(key)
        result = [(og, _mul(m, fm), w, h) for og, m, w, h in inner]
        if own is not None:
            self._form_cache[key] = result
        return result

    def find(self, pdf: pikepdf.Pdf) -> dict[tuple[int, int], Placement]:
        placements: dict[tuple[int, int], Placement] = {}
        for index, page in enumerate(pdf.pages):
            po = page.obj
            resources = page_resources(po)
            if not _has_images(_xobjects(resources)):
                continue
            unit = float(po.get("/UserUnit", 1.0) or 1.0)
            for og, m, w, h in self._scan(po, resources, 0, set()):
                wpt = math.hypot(m[0], m[1]) * unit
                hpt = math.hypot(m[2], m[3]) * unit
                dpi = None
                if wpt > 0 and hpt > 0 and w > 0 and h > 0:
                    dpi = min(w * 72.0 / wpt, h * 72.0 / hpt)
                placements.setdefault(og, Placement()).add(index, dpi)
        return placements


def find_placements(pdf: pikepdf.Pdf) -> dict[tuple[int, int], Placement]:
    """Map image objgen -> Placement for every image drawn by a page (directly or through forms)."""
    return PlacementFinder().find(pdf)
