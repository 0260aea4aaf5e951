"""LaTeX documents: text, maths, tables and lists, one page per \\clearpage so the page count is exact. pdfTeX
documents use Type 1 fonts (Computer Modern, Latin Modern, Times, Palatino, Helvetica, Charter, Bookman), LuaTeX
ones OpenType and TrueType fonts through fontspec (Latin Modern, Latin Modern Math, DejaVu)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .common import SOURCE_DATE_EPOCH, Case, Context, Family, paragraph, title

COMPILE_TIMEOUT = 600.0


@dataclass(frozen=True)
class Setup:
    name: str
    engine: str  # pdflatex | lualatex
    preamble: str


SETUPS = (
    Setup("cm-type1", "pdflatex", ""),
    Setup("lmodern-type1", "pdflatex", "\\usepackage[T1]{fontenc}\\usepackage{lmodern}"),
    Setup("times-type1", "pdflatex", "\\usepackage[T1]{fontenc}\\usepackage{mathptmx}"),
    Setup("palatino-type1", "pdflatex", "\\usepackage[T1]{fontenc}\\usepackage{mathpazo}"),
    Setup(
        "helvet-type1",
        "pdflatex",
        "\\usepackage[T1]{fontenc}\\usepackage[scaled]{helvet}\\renewcommand{\\familydefault}{\\sfdefault}",
    ),
    Setup("charter-type1", "pdflatex", "\\usepackage[T1]{fontenc}\\usepackage{charter}"),
    Setup("bookman-type1", "pdflatex", "\\usepackage[T1]{fontenc}\\usepackage{bookman}"),
    Setup("lm-otf", "lualatex", "\\usepackage{fontspec}"),
    Setup("lm-math-otf", "lualatex", "\\usepackage{unicode-math}\\setmathfont{Latin Modern Math}"),
    Setup(
        "dejavu-ttf",
        "lualatex",
        "\\usepackage{fontspec}\\setmainfont{DejaVu Serif}\\setsansfont{DejaVu Sans}\\setmonofont{DejaVu Sans Mono}",
    ),
)


def _equation(rng: np.random.Generator) -> str:
    a, b, c = (int(v) for v in rng.integers(2, 30, 3))
    forms = (
        f"\\int_0^{{{a}}} \\frac{{x^{{{b}}}}}{{1+x^2}}\\,dx = \\sum_{{k=1}}^{{\\infty}} \\frac{{(-1)^k}}{{k^{{{c}}}}}",
        f"\\mathbf{{A}} = \\begin{{pmatrix}} {a} & {b} \\\\ {c} & {a + b} \\end{{pmatrix}}, \\quad "
        f"\\det \\mathbf{{A}} = {a * (a + b) - b * c}",
        f"f(x) = \\sqrt{{{a}x^2 + {b}}} - \\log\\left(1 + \\frac{{x}}{{{c}}}\\right)",
        f"\\lim_{{n\\to\\infty}} \\left(1 + \\frac{{{a}}}{{n}}\\right)^{{n}} = e^{{{a}}}, \\qquad "
        f"\\alpha_{{{b}}} \\le \\beta \\cdot \\gamma^{{{c}}}",
    )
    return forms[int(rng.integers(0, len(forms)))]


def _table(rng: np.random.Generator) -> str:
    rows = "\n".join(
        " & ".join(f"{v:.3f}" for v in rng.normal(50, 20, 5)) + " \\\\" for _ in range(int(rng.integers(4, 8)))
    )
    return (
        "\\begin{center}\\begin{tabular}{rrrrr}\\hline\n"
        "$x$ & $y$ & $\\sigma$ & $\\mu$ & $n$ \\\\ \\hline\n" + rows + "\n\\hline\\end{tabular}\\end{center}"
    )


def _page(rng: np.random.Generator, number: int) -> str:
    """One page's worth of LaTeX: short enough to always fit on one page."""
    parts = [f"\\section{{{title(rng)}}}", paragraph(rng, 4), "\\begin{equation}" + _equation(rng) + "\\end{equation}"]
    parts.append(paragraph(rng, 3) + f"\\footnote{{{paragraph(rng, 1)}}}")
    if number % 2:
        parts.append(_table(rng))
    else:
        items = "\n".join(f"\\item {paragraph(rng, 1)}" for _ in range(3))
        parts.append("\\begin{itemize}\n" + items + "\n\\end{itemize}")
    parts.append("\\begin{align}" + _equation(rng) + " \\\\ " + _equation(rng) + "\\end{align}")
    return "\n\n".join(parts) + "\n\\clearpage\n"


def document(setup: Setup, pages: int, rng: np.random.Generator) -> str:
    body = "".join(_page(rng, k) for k in range(pages))
    return (
        "\\documentclass[11pt]{article}\n\\usepackage{amsmath,amssymb}\n" + setup.preamble + "\n"
        "\\usepackage[a4paper,margin=25mm]{geometry}\n\\begin{document}\n" + body + "\\end{document}\n"
    )


def compile_tex(source: str, setup: Setup, work: Path, target: Path) -> Path:
    """Run the engine once in ``work`` (fixed dates, so the same source gives the same bytes); move the PDF."""
    tex = work / f"{target.stem}.tex"
    if setup.engine == "lualatex":  # LuaTeX puts the time into the /ID whatever SOURCE_DATE_EPOCH says: set it
        digest = hashlib.md5(source.encode(), usedforsecurity=False).hexdigest().upper()
        source = f"\\pdfvariable trailerid {{[<{digest}> <{digest}>]}}\n" + source
    tex.write_text(source)
    env = os.environ | {"SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH, "FORCE_SOURCE_DATE": "1"}
    # Relative names only: pdfTeX and LuaTeX hash the output file's name into the document /ID.
    argv = [setup.engine, "-interaction=nonstopmode", "-halt-on-error", tex.name]
    done = subprocess.run(argv, cwd=work, env=env, capture_output=True, timeout=COMPILE_TIMEOUT, check=False)
    pdf = tex.with_suffix(".pdf")
    if done.returncode != 0 or not pdf.exists():
        tail = done.stdout.decode(errors="replace")[-1500:]
        raise RuntimeError(f"{setup.engine} failed on {tex.name}:\n{tail}")
    shutil.move(pdf, target)
    return target


def build(ctx: Context) -> list[Case]:
    plan = [(SETUPS[1], 2), (SETUPS[7], 2)] if ctx.quick else [(s, n) for s in SETUPS for n in (1, 3, 10, 25, 50)]
    cases = []
    for setup, pages in plan:
        if shutil.which(setup.engine) is None:
            continue  # the family needs pdflatex; LuaTeX documents are skipped where only pdfTeX is installed
        name = f"{setup.name}-{pages}p"
        source = document(setup, pages, ctx.rng("latex", name))
        path = compile_tex(source, setup, ctx.work, ctx.path("latex", name))
        cases.append(Case("latex", name, path, pages))
    return cases


FAMILY = Family(
    "latex",
    "pdfLaTeX (Type 1) and LuaLaTeX (OpenType) documents with maths and tables, 1-50 pages",
    build,
    executables=("pdflatex",),
)
