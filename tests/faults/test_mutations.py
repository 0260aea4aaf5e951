"""Mutation run (issue 7 item 3): seeded random damage to the test PDFs and builder PDFs, each mutant compressed
at medium through the engine's isolated entry point; no mutant may crash the engine or hang it to TIMEOUT.

The long run over the development corpus is ``python -m bench.mutations`` (bench/mutations_results.md)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from bench import mutations
from tests.plugins.figures import Figures

MUTANTS = 40
SEED = 20261201


@pytest.mark.timeout(240)
def test_short_mutation_run_has_no_crash_and_no_hang(tmp_path: Path, figures: Figures) -> None:
    sources = mutations.pdfs_in([mutations.TEST_DATA]) + mutations.builder_pdfs(tmp_path)
    plan = mutations.plan(sources, MUTANTS, SEED)
    assert {m.mutation for m in plan} == set(mutations.MUTATORS)  # every kind of damage is exercised
    # CPU limit far above what these small files need (about 1 s each), far below a hang's.
    t0 = time.monotonic()
    results = mutations.run(plan, tmp_path, jobs=2, cpu_seconds=30, memory_bytes=2 << 30)
    seconds = time.monotonic() - t0
    print(mutations.table(results, seconds))
    tally = Counter(r.outcome for r in results)
    crashes = sum(r.is_crash for r in results)
    hangs = sum(r.is_hang for r in results)
    figures.add(
        "mutation run",
        f"{len(results)} mutants in {seconds:.0f} s: crashes {crashes}, hangs {hangs}; "
        + ", ".join(f"{outcome} {count}" for outcome, count in tally.most_common()),
    )
    findings = [f"{r.mutant.source.name} {r.mutant.mutation} {r.mutant.seed}: {r.outcome}" for r in results]
    assert [f for f, r in zip(findings, results, strict=True) if r.is_crash or r.is_hang] == []
    assert Counter(r.outcome for r in results)["OK"] > 0


def test_mutants_are_reproducible(tmp_path: Path) -> None:
    src = mutations.builder_pdfs(tmp_path)[0]
    a, b = mutations.plan([src], 8, SEED), mutations.plan([src], 8, SEED)
    assert [m.build() for m in a] == [m.build() for m in b]
    assert any(m.build() != src.read_bytes() for m in a)
