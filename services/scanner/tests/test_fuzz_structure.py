"""The structure check under coverage-guided fuzzing (a short run; docs/scanner.md has the long one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.tests.short_fuzz import run_short_fuzz
from services.scanner.fuzz_structure import Harness, write_seeds

# Every input the fuzzer once broke the check with: each must now give a verdict.
REGRESSIONS = Path(__file__).parent / "fuzz_regressions"
FUZZ_SECONDS = 20


@pytest.mark.parametrize("finding", sorted(REGRESSIONS.iterdir()), ids=lambda path: path.name)
def test_saved_fuzz_findings_give_a_verdict(tmp_path: Path, finding: Path) -> None:
    Harness(tmp_path).test_one_input(finding.read_bytes())


@pytest.mark.timeout(FUZZ_SECONDS + 150)
def test_short_fuzz_run_finds_nothing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    seeds = write_seeds(corpus)
    runs = run_short_fuzz("services.scanner.fuzz_structure", corpus, seeds, tmp_path / "findings", FUZZ_SECONDS)
    print(f"structure-check fuzz: {runs} runs in {FUZZ_SECONDS} s, 0 findings")
