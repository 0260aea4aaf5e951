"""Where each image is drawn: the displayed size of every placement, hence its effective resolution.

Content streams are walked with only the operators that move images (q, Q, cm, Do), so text-heavy pages
cost little; pages without image XObjects in their resource tree are not parsed at all. Each form is walked once
per set of resources it is drawn with; the placements copied out of forms have a budget (nested forms drawing
each other many times multiply them), past which every placement is unknown (no image is resampled).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import pikepdf
from pikepdf import Dictionary, Name, Stream

from .matrix import IDENTITY, Matrix, compose

log = logging.getLogger(__name__)

_MAX_FORM_DEPTH = 12
# Image placements copied out of forms into the streams that draw them, per document. Each form is walked once
# per set of resources it is drawn with, so walking is linear in the file; copying is not (forms drawing forms
# many times multiply it). Far above real files, and about a second of work.
_MAX_COPIED_PLACEMENTS = 300_000


def _number(value: object, default: float) -> float:
    """A numeric PDF entry as a float; ``default`` when it is missing, not a number, or not finite."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return default
    return number if math.isfinite(number) else default


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


def resources_node(page: pikepdf.Object) -> pikepdf.Object | None:
    """The page, or the page-tree node it inherits /Resources from; at most 64 steps up (a /Parent chain may
    loop)."""
    node: pikepdf.Object | None = page
    for _ in range(64):
        if not isinstance(node, Dictionary):
            return None
        if node.get("/Resources") is not None:
            return node
        node = node.get("/Parent")
    return None


def page_resources(page: pikepdf.Object) -> pikepdf.Object | None:
    """A page's /Resources, inherited from the page tree."""
    node = resources_node(page)
    return node.get("/Resources") if node is not None else None


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


_ObjId = tuple[int, int]
# One image drawn: (image objgen, matrix to the drawing stream's parent space, declared width, height).
_Drawn = tuple[_ObjId, Matrix, int, int]


def _identity(resources: pikepdf.Object, holder: pikepdf.Object) -> _ObjId:
    """Which resources these are: their own object, or the object whose dictionary holds them directly."""
    return resources.objgen if resources.is_indirect else holder.objgen


class WalkBudgetExceeded(Exception):
    """More placements to copy than the budget allows: they cannot all be known."""


class PlacementFinder:
    def __init__(self, max_copied: int = _MAX_COPIED_PLACEMENTS) -> None:
        # (form XObject, the resources it is drawn with) -> [(image, matrix in the form's parent space, w, h)]:
        # a form that inherits its resources may name other objects in each place it is drawn.
        self._form_cache: dict[tuple[_ObjId, _ObjId], list[_Drawn]] = {}
        self._budget = max_copied

    def _spend(self, placements: int) -> None:
        self._budget -= placements
        if self._budget < 0:
            raise WalkBudgetExceeded

    def _scan(
        self,
        owner: pikepdf.Object,
        resources: pikepdf.Object | None,
        context: _ObjId,
        depth: int,
        stack: set[_ObjId],
    ) -> list[_Drawn]:
        xobjects = _xobjects(resources)
        if xobjects is None:
            return []
        out: list[_Drawn] = []
        ctm: Matrix = IDENTITY
        saved: list[Matrix] = []
        try:
            instructions = pikepdf.parse_content_stream(owner, "q Q cm Do")
        except (pikepdf.PdfError, TypeError, ValueError):
            return []
        for instruction in instructions:
            if not isinstance(instruction, pikepdf.ContentStreamInstruction):
                continue  # inline images
            # Bytes, not str: an operator's bytes (like a name's) need not be UTF-8.
            operands, name = instruction.operands, bytes(instruction.operator)
            if name == b"q":
                saved.append(ctm)
            elif name == b"Q":
                ctm = saved.pop() if saved else IDENTITY
            elif name == b"cm" and (m := _matrix(operands)) is not None:
                ctm = compose(m, ctm)
            elif name == b"Do" and operands and isinstance(operands[0], Name):
                xo = xobjects.get(operands[0])  # by the Name itself: its bytes need not be UTF-8
                if not isinstance(xo, Stream) or not xo.is_indirect:
                    continue
                st = xo.stream_dict.get("/Subtype")
                if st == Name.Image:
                    out.append((xo.objgen, ctm, *_declared_size(xo)))
                elif st == Name.Form and depth < _MAX_FORM_DEPTH and xo.objgen not in stack:
                    inner = self._form(xo, resources, context, depth + 1, stack)
                    self._spend(len(inner))
                    out.extend((og, compose(m, ctm), w, h) for og, m, w, h in inner)
        return out

    def _form(
        self, form: Stream, parent_resources: pikepdf.Object | None, parent: _ObjId, depth: int, stack: set[_ObjId]
    ) -> list[_Drawn]:
        own = form.stream_dict.get("/Resources")
        resources, context = (own, _identity(own, form)) if own is not None else (parent_resources, parent)
        key = (form.objgen, context)
        if key in self._form_cache:
            return self._form_cache[key]
        mat = form.stream_dict.get("/Matrix")
        fm = (_matrix(mat) if isinstance(mat, pikepdf.Array) else None) or IDENTITY
        stack.add(form.objgen)
        try:
            inner = self._scan(form, resources, context, depth, stack)
        finally:
            stack.discard(form.objgen)
        result = [(og, compose(m, fm), w, h) for og, m, w, h in inner]
        self._form_cache[key] = result
        return result

    def find(self, pdf: pikepdf.Pdf) -> dict[tuple[int, int], Placement]:
        placements: dict[tuple[int, int], Placement] = {}
        try:
            for index, page in enumerate(pdf.pages):
                self._find_on_page(index, page.obj, placements)
        except WalkBudgetExceeded:
            log.info("placement walk over budget: every image placement treated as unknown")
            for placement in placements.values():
                placement.unknown = True
        return placements

    def _find_on_page(self, index: int, po: pikepdf.Object, placements: dict[tuple[int, int], Placement]) -> None:
        resources = page_resources(po)
        if resources is not None and _has_images(_xobjects(resources)):
            unit = _number(po.get("/UserUnit"), 1.0) or 1.0
            for og, m, w, h in self._scan(po, resources, _identity(resources, po), 0, set()):
                placements.setdefault(og, Placement()).add(index, _dpi(m, w, h, unit))


def _matrix(values: Iterable[object]) -> Matrix | None:
    """Six finite numbers as a matrix; None for anything else (the operator or entry is then ignored)."""
    numbers = [_number(v, math.nan) for v in values]
    if len(numbers) != 6 or not all(math.isfinite(n) for n in numbers):
        return None
    a, b, c, d, e, f = numbers
    return (a, b, c, d, e, f)


def _declared_size(image: Stream) -> tuple[int, int]:
    """The image's /Width and /Height as declared; 0 for an entry that is not a usable number."""
    d = image.stream_dict
    return int(_number(d.get("/Width"), 0.0)), int(_number(d.get("/Height"), 0.0))


def _dpi(m: Matrix, w: int, h: int, unit: float) -> float | None:
    """Effective resolution of a ``w`` x ``h`` image drawn through ``m``; None when it cannot be told."""
    wpt = math.hypot(m[0], m[1]) * unit
    hpt = math.hypot(m[2], m[3]) * unit
    if wpt > 0 and hpt > 0 and w > 0 and h > 0:
        return min(w * 72.0 / wpt, h * 72.0 / hpt)
    return None


def find_placements(pdf: pikepdf.Pdf) -> dict[tuple[int, int], Placement]:
    """Map image objgen -> Placement for every image drawn by a page (directly or through forms)."""
    return PlacementFinder().find(pdf)
