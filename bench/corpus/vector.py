"""reportlab documents and drawings: CAD-like plans (thousands of paths with long coordinates), chart pages from
reportlab.graphics, and reports with tables of dense numbers, in the standard fonts or an embedded TrueType
subset, with compressed or plain content streams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .common import Case, Context, Family, paragraph, title

TTF = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def cad_drawing(path: Path, rng: np.random.Generator, *, paths: int, pages: int, compress: bool) -> Path:
    """Plans of walls, hatching, dimension lines and labels: many short paths with 4-decimal coordinates."""
    from reportlab.lib.pagesizes import A3, landscape
    from reportlab.pdfgen.canvas import Canvas

    width, height = landscape(A3)
    canvas = Canvas(str(path), pagesize=(width, height), invariant=1, pageCompression=int(compress))
    for page in range(pages):
        canvas.setLineWidth(0.25)
        for _ in range(paths):
            x, y = rng.uniform(20, width - 20), rng.uniform(20, height - 20)
            p = canvas.beginPath()
            p.moveTo(x, y)
            for dx, dy in rng.normal(0, 12, (int(rng.integers(2, 9)), 2)):
                x, y = float(np.clip(x + dx, 10, width - 10)), float(np.clip(y + dy, 10, height - 10))
                p.lineTo(x, y)
            canvas.drawPath(p, stroke=1, fill=0)
        canvas.setFont("Helvetica", 5)
        for x, y in rng.uniform(30, min(width, height) - 30, (paths // 20, 2)):
            canvas.drawString(float(x), float(y), f"{rng.uniform(0, 9999):.3f} mm")
        canvas.setFont("Helvetica-Bold", 14)
        canvas.drawString(30, 20, f"Sheet {page + 1} of {pages}")
        canvas.showPage()
    canvas.save()
    return path


def _chart(kind: str, rng: np.random.Generator, points: int) -> Any:
    from reportlab.graphics.charts.barcharts import VerticalBarChart
    from reportlab.graphics.charts.lineplots import LinePlot
    from reportlab.graphics.charts.piecharts import Pie
    from reportlab.graphics.shapes import Drawing

    drawing = Drawing(500, 300)
    if kind == "pie":
        chart: Any = Pie()
        chart.data = rng.uniform(1, 10, 12).round(2).tolist()
    elif kind == "bars":
        chart = VerticalBarChart()
        chart.data = [rng.uniform(0, 100, max(6, points // 40)).round(1).tolist() for _ in range(3)]
    else:
        chart = LinePlot()
        xs = np.linspace(0, 100, points)
        chart.data = [
            list(zip(xs.tolist(), np.cumsum(rng.normal(0, 1, points)).tolist(), strict=True)) for _ in range(4)
        ]
    chart.x, chart.y, chart.width, chart.height = 50, 40, 400, 220
    drawing.add(chart)
    return drawing


def report(path: Path, rng: np.random.Generator, *, pages: int, embed_font: bool, compress: bool) -> Path:
    """A report of ``pages`` pages: a heading, paragraphs, a table of numbers and a chart on every page."""
    from reportlab.lib import colors
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Table, TableStyle

    styles = getSampleStyleSheet()
    font = "Helvetica"
    if embed_font and TTF.exists():
        pdfmetrics.registerFont(TTFont("DejaVuSans", str(TTF)))
        font = "DejaVuSans"
    body = styles["BodyText"].clone("body", fontName=font)
    story: list[Any] = []
    for page in range(pages):
        story.append(Paragraph(f"{page + 1}. {title(rng)}", styles["Heading2"]))
        story.append(Paragraph(paragraph(rng, 6), body))
        cells = [[f"{v:,.3f}" for v in rng.normal(1000, 400, 7)] for _ in range(14)]
        table = Table(cells)
        table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.25, colors.grey), ("FONT", (0, 0), (-1, -1), font, 7)]))
        story += [table, _chart(("line", "bars", "pie")[page % 3], rng, 300), PageBreak()]
    SimpleDocTemplate(str(path), invariant=1, pageCompression=int(compress)).build(story)
    return path


def build(ctx: Context) -> list[Case]:
    cases = []
    cad = (
        [(1500, 1, True)]
        if ctx.quick
        else [(p, n, c) for p in (800, 4000, 15000) for n in (1, 3) for c in (True, False)]
    )
    for paths, pages, compress in cad:
        name = f"cad-{paths}paths-{pages}p-{'flate' if compress else 'plain'}"
        path = cad_drawing(
            ctx.path("vector", name), ctx.rng("vector", name), paths=paths, pages=pages, compress=compress
        )
        cases.append(Case("vector", name, path, pages))
    reports = (
        [(2, True, True)]
        if ctx.quick
        else [(p, e, c) for p in (1, 4, 12, 30) for e in (True, False) for c in (True, False)]
    )
    for pages, embed, compress in reports:
        name = f"report-{pages}p-{'ttf' if embed else 'base14'}-{'flate' if compress else 'plain'}"
        path = report(
            ctx.path("vector", name), ctx.rng("vector", name), pages=pages, embed_font=embed, compress=compress
        )
        cases.append(Case("vector", name, path, pages))
    return cases


FAMILY = Family("vector", "reportlab CAD-like drawings, charts and number-dense reports", build, modules=("reportlab",))
