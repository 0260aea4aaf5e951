"""Interactive documents from reportlab: AcroForm fields with values (text, check boxes, radio groups, combo and
list boxes), annotations (notes, free text, highlights), links (internal and URI) and nested outlines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .common import Case, Context, Family, sentence, title

PAGE = (612.0, 792.0)


def _fields(canvas: Any, rng: np.random.Generator, page: int, count: int) -> None:
    """``count`` filled fields down the page, cycling through the field types."""
    form = canvas.acroForm
    for k in range(count):
        y = PAGE[1] - 90 - k * (650 / max(1, count))
        name = f"p{page}_f{k}"
        canvas.setFont("Helvetica", 9)
        canvas.drawString(50, y + 4, f"{title(rng, 2)}:")
        kind = k % 5
        if kind == 0:
            form.textfield(name=name, value=sentence(rng, 2, 5), x=200, y=y, width=300, height=18, fontSize=9)
        elif kind == 1:
            form.checkbox(name=name, checked=bool(rng.integers(0, 2)), x=200, y=y, size=14)
        elif kind == 2:
            for v in range(3):
                form.radio(name=name, value=f"option{v}", selected=v == 1, x=200 + 40 * v, y=y, size=14)
        elif kind == 3:
            options = [str(w) for w in title(rng, 5).split()]
            form.choice(name=name, value=options[2], options=options, x=200, y=y, width=160, height=18)
        else:
            options = [f"item {i}" for i in range(6)]
            form.listbox(name=name, value=options[1], options=options, x=200, y=y - 30, width=160, height=46)


def _annotations(canvas: Any, rng: np.random.Generator, count: int) -> None:
    for k in range(count):
        x, y = float(rng.uniform(40, 480)), float(rng.uniform(60, 700))
        rect = (x, y, x + 90, y + 30)
        kind = k % 3
        if kind == 0:
            canvas.textAnnotation(sentence(rng), Rect=rect)
        elif kind == 1:
            canvas.freeTextAnnotation(sentence(rng, 3, 6), Rect=rect, DA="0 g /Helv 9 Tf")
        else:
            quad = [x, y + 30, x + 90, y + 30, x, y, x + 90, y]
            canvas.highlightAnnotation(sentence(rng, 3, 6), Rect=rect, QuadPoints=quad)


def interactive(path: Path, rng: np.random.Generator, *, pages: int, fields: int, annots: int, depth: int) -> Path:
    """``pages`` pages each with ``fields`` filled fields and ``annots`` annotations, a contents page of links to
    every page, a URI link per page, and an outline ``depth`` levels deep."""
    from reportlab.pdfgen.canvas import Canvas

    canvas = Canvas(str(path), pagesize=PAGE, invariant=1)
    canvas.setFont("Helvetica-Bold", 16)
    canvas.drawString(50, 740, "Contents")
    for p in range(pages):
        y = 710 - 14 * (p % 48)
        canvas.setFont("Helvetica", 10)
        canvas.drawString(60, y, f"Page {p + 1}: {title(rng, 3)}")
        canvas.linkAbsolute("", f"page{p}", Rect=(55, y - 2, 400, y + 10))
    canvas.bookmarkPage("contents")
    canvas.addOutlineEntry("Contents", "contents", level=0)
    canvas.showPage()
    for p in range(pages):
        canvas.bookmarkPage(f"page{p}")
        canvas.addOutlineEntry(f"Part {p + 1}", f"page{p}", level=min(depth - 1, p % depth))
        _fields(canvas, rng, p, fields)
        _annotations(canvas, rng, annots)
        canvas.drawString(50, 40, "https://example.com/")
        canvas.linkURL(f"https://example.com/page/{p}", (48, 36, 160, 50))
        canvas.showPage()
    canvas.showOutline()
    canvas.save()
    return path


def build(ctx: Context) -> list[Case]:
    if ctx.quick:
        plan = [(2, 6, 4, 2)]
    else:
        plan = [(p, f, a, 1 + p % 3) for p in (1, 3, 12) for f in (0, 5, 20) for a in (0, 8)]
        plan += [(60, 4, 2, 4), (120, 1, 1, 3)]
    cases = []
    for pages, fields, annots, depth in plan:
        name = f"interactive-{pages}p-{fields}fields-{annots}annots"
        path = ctx.path("forms", name)
        interactive(path, ctx.rng("forms", name), pages=pages, fields=fields, annots=annots, depth=depth)
        cases.append(Case("forms", name, path, pages + 1))
    return cases


FAMILY = Family(
    "forms", "AcroForm fields with values, annotations, links and outlines (reportlab)", build, modules=("reportlab",)
)
