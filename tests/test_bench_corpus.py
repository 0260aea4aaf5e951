"""The generated development corpus (bench/corpus): the families that need only Python packages, in quick mode,
write files that open with the page counts they promise, listed in the manifest, the same bytes for the same
seed; a family whose tool is missing is skipped, not failed."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pikepdf
import pypdfium2
import pytest

from bench.corpus.build import build
from bench.corpus.common import Case, Context, Family
from bench.corpus.families import FAMILIES

PYTHON_ONLY = [f for f in FAMILIES if not f.executables]


def _pages_as_promised(case: Case) -> None:
    with pikepdf.open(case.path) as pdf:
        if case.pages is not None:
            assert len(pdf.pages) == case.pages, case.name
    if case.pdfium_pages is not None:
        document = pypdfium2.PdfDocument(case.path)
        try:
            assert len(document) == case.pdfium_pages, case.name
        finally:
            document.close()


def test_quick_corpus_opens_with_the_promised_pages(tmp_path: Path) -> None:
    results = build(PYTHON_ONLY, tmp_path, seed=0, quick=True, log=io.StringIO())
    built = {r.family for r in results if not r.skipped}
    assert {"scans", "damaged", "signed", "bombs"} <= built  # pikepdf, numpy and Pillow are always installed
    cases = [c for r in results for c in r.cases]
    for case in cases:
        assert case.path.name == f"{case.family}__{case.name}.pdf"
        _pages_as_promised(case)
    listed = json.loads((tmp_path / "manifest.json").read_text())["files"]
    on_disk = sorted(p.name for p in tmp_path.glob("*.pdf"))
    assert sorted(e["file"] for e in listed) == on_disk == sorted(c.path.name for c in cases)


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    chosen = [f for f in PYTHON_ONLY if f.name in ("damaged", "signed")]

    def digests(out: Path, seed: int) -> dict[str, str]:
        results = build(chosen, out, seed=seed, quick=True, log=io.StringIO())
        return {c.path.name: hashlib.sha256(c.path.read_bytes()).hexdigest() for r in results for c in r.cases}

    first = digests(tmp_path / "a", 0)
    assert first == digests(tmp_path / "b", 0)
    assert first.keys() == digests(tmp_path / "c", 1).keys() != set()
    assert first != digests(tmp_path / "d", 1)


def test_family_with_a_missing_tool_is_skipped(tmp_path: Path) -> None:
    def never(ctx: Context) -> list[Case]:
        pytest.fail("a family whose tool is missing must not run")

    family = Family("ghost", "needs a tool that is not installed", never, executables=("no-such-tool-pdfsmaller",))
    log = io.StringIO()
    [result] = build([family], tmp_path, seed=0, quick=True, log=log)
    assert result.skipped == "missing no-such-tool-pdfsmaller"
    assert "ghost: SKIPPED (missing no-such-tool-pdfsmaller)" in log.getvalue()
    assert json.loads((tmp_path / "manifest.json").read_text())["files"] == []
