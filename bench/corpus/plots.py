"""matplotlib vector charts: line, scatter, bar, contour, mesh, histogram, polar and table figures (many paths,
dense numbers in the content streams), with Type 3 or TrueType fonts, single pages and multi-page books."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .common import Case, Context, Family


def _line(ax: Any, rng: np.random.Generator, n: int) -> None:
    x = np.linspace(0, 10, n)
    for k in range(6):
        ax.plot(x, np.cumsum(rng.normal(0, 1, n)) / np.sqrt(n) + k, linewidth=0.8, label=f"series {k}")
    ax.legend(fontsize=6)
    ax.grid(True, linewidth=0.3)


def _scatter(ax: Any, rng: np.random.Generator, n: int) -> None:
    pts = rng.normal(0, 1, (n * 2, 2))
    ax.scatter(pts[:, 0], pts[:, 1], s=3, c=np.hypot(pts[:, 0], pts[:, 1]), cmap="viridis")


def _bars(ax: Any, rng: np.random.Generator, n: int) -> None:
    groups = max(8, n // 100)
    for k in range(4):
        ax.bar(np.arange(groups) + k * 0.2, rng.uniform(1, 10, groups), width=0.2, label=f"group {k}")
    ax.legend(fontsize=6)


def _contour(ax: Any, rng: np.random.Generator, n: int) -> None:
    side = max(40, int(np.sqrt(n)) * 2)
    y, x = np.mgrid[-3 : 3 : side * 1j, -3 : 3 : side * 1j]
    z = sum(
        rng.uniform(0.5, 1.5) * np.exp(-((x - rng.uniform(-2, 2)) ** 2 + (y - rng.uniform(-2, 2)) ** 2))
        for _ in range(5)
    )
    ax.contourf(x, y, z, levels=20, cmap="magma")
    ax.contour(x, y, z, levels=20, colors="k", linewidths=0.3)


def _mesh(ax: Any, rng: np.random.Generator, n: int) -> None:
    side = max(30, int(np.sqrt(n)))
    ax.pcolormesh(rng.normal(0, 1, (side, side)).cumsum(axis=0), cmap="coolwarm", edgecolors="face")


def _histogram(ax: Any, rng: np.random.Generator, n: int) -> None:
    for k in range(3):
        ax.hist(rng.normal(k, 1 + k / 2, n * 4), bins=120, alpha=0.5, label=f"sample {k}")
    ax.legend(fontsize=6)


def _polar(ax: Any, rng: np.random.Generator, n: int) -> None:
    theta = np.linspace(0, 8 * np.pi, n)
    ax.plot(theta * np.cos(theta), theta * np.sin(theta) + rng.normal(0, 0.2, n), linewidth=0.5)
    ax.set_aspect("equal")


def _table(ax: Any, rng: np.random.Generator, n: int) -> None:
    rows = max(10, min(40, n // 50))
    cells = [[f"{v:.4f}" for v in rng.normal(100, 30, 8)] for _ in range(rows)]
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=[f"col {k}" for k in range(8)], loc="center")
    table.set_fontsize(5)


KINDS: dict[str, Callable[[Any, np.random.Generator, int], None]] = {
    "line": _line,
    "scatter": _scatter,
    "bars": _bars,
    "contour": _contour,
    "mesh": _mesh,
    "histogram": _histogram,
    "polar": _polar,
    "table": _table,
}


def _figure(kind: str, rng: np.random.Generator, points: int) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 11) if kind == "table" else (8, 6))
    ax = fig.add_subplot()
    KINDS[kind](ax, rng, points)
    ax.set_title(f"{kind} ({points} points)")
    return fig


def book(path: Path, kinds: list[str], rng: np.random.Generator, *, points: int, fonttype: int) -> Path:
    """One PDF page per kind (PdfPages), fonts stored as Type 3 (``fonttype`` 3) or TrueType (42)."""
    import matplotlib
    from matplotlib.backends.backend_pdf import PdfPages

    with matplotlib.rc_context({"pdf.fonttype": fonttype}), PdfPages(path, metadata={"CreationDate": None}) as pdf:
        for kind in kinds:
            pdf.savefig(_figure(kind, rng, points))
    return path


def build(ctx: Context) -> list[Case]:
    if ctx.quick:
        plan = [("book-truetype-2p", ["line", "contour"], 300, 42)]
    else:
        plan = [
            (f"{kind}-{'type3' if ft == 3 else 'truetype'}-{points}", [kind], points, ft)
            for kind in KINDS
            for ft in (3, 42)
            for points in (400, 5000)
        ]
        plan += [
            ("book-type3-16p", list(KINDS) * 2, 2000, 3),
            ("book-truetype-8p", list(KINDS), 800, 42),
            ("book-dense-40p", list(KINDS) * 5, 8000, 3),
        ]
    cases = []
    for name, kinds, points, fonttype in plan:
        path = book(ctx.path("plots", name), kinds, ctx.rng("plots", name), points=points, fonttype=fonttype)
        cases.append(Case("plots", name, path, len(kinds)))
    return cases


FAMILY = Family(
    "plots",
    "matplotlib vector charts (Type 3 and TrueType fonts), single pages and books",
    build,
    modules=("matplotlib",),
)
