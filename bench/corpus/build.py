"""Runs the chosen families into one folder and writes its manifest."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .common import Case, Context, Family


@dataclass(frozen=True)
class FamilyResult:
    family: str
    cases: list[Case]
    seconds: float
    skipped: str = ""  # why the family was not built
    failed: str = ""  # the error that stopped it

    @property
    def bytes(self) -> int:
        return sum(c.path.stat().st_size for c in self.cases)


def build(
    families: Sequence[Family], out: Path, *, seed: int, quick: bool, log: TextIO = sys.stderr
) -> list[FamilyResult]:
    """Build every family into ``out`` (files of a family are replaced, others kept) and write the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="corpus-") as scratch:
        for family in families:
            results.append(_build_family(family, out, Path(scratch), seed=seed, quick=quick, log=log))
    _write_manifest(out, results)
    return results


def _build_family(family: Family, out: Path, scratch: Path, *, seed: int, quick: bool, log: TextIO) -> FamilyResult:
    missing = family.missing()
    if missing:
        why = "missing " + ", ".join(missing)
        print(f"{family.name}: SKIPPED ({why})", file=log)
        return FamilyResult(family.name, [], 0.0, skipped=why)
    for old in out.glob(f"{family.name}__*.pdf"):
        old.unlink()
    work = scratch / family.name
    work.mkdir()
    started = time.monotonic()
    try:
        cases = family.build(Context(out=out, work=work, seed=seed, quick=quick))
    except Exception as exc:  # noqa: BLE001 - one broken tool or family must not cost the other families
        print(f"{family.name}: FAILED ({type(exc).__name__}: {exc})", file=log)
        return FamilyResult(family.name, [], time.monotonic() - started, failed=f"{type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = FamilyResult(family.name, cases, time.monotonic() - started)
    print(f"{family.name}: {len(cases)} files, {result.bytes / 2**20:.1f} MiB, {result.seconds:.1f} s", file=log)
    return result


def _write_manifest(out: Path, results: list[FamilyResult]) -> None:
    """``manifest.json``: every file of the folder's families, merged with the entries of families not rebuilt."""
    path = out / "manifest.json"
    rebuilt = {r.family for r in results if not r.skipped and not r.failed}
    kept = []
    if path.exists():
        kept = [e for e in json.loads(path.read_text())["files"] if e["family"] not in rebuilt]
    fresh = [
        {"file": c.path.name, "family": c.family, "case": c.name, "pages": c.pages, "pdfium_pages": c.pdfium_pages}
        for r in results
        for c in r.cases
    ]
    files = sorted(kept + fresh, key=lambda e: e["file"])
    path.write_text(json.dumps({"files": files}, indent=1) + "\n")


def summary(results: list[FamilyResult]) -> str:
    """A table of files, size and time per family."""
    lines = ["| family | files | MiB | seconds |", "|---|---|---|---|"]
    for r in results:
        if r.skipped or r.failed:
            why = f"skipped: {r.skipped}" if r.skipped else f"FAILED: {r.failed.splitlines()[0]}"
            lines.append(f"| {r.family} | {why} | | |")
        else:
            lines.append(f"| {r.family} | {len(r.cases)} | {r.bytes / 2**20:.1f} | {r.seconds:.1f} |")
    built = [r for r in results if not r.skipped and not r.failed]
    total = sum(r.bytes for r in built) / 2**20
    lines.append(f"| total | {sum(len(r.cases) for r in built)} | {total:.1f} | {sum(r.seconds for r in built):.1f} |")
    return "\n".join(lines)
