"""The structure check under coverage-guided fuzzing (a short run; docs/scanner.md has the long one)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from services.scanner.fuzz_structure import Harness, write_seeds

ROOT = Path(__file__).resolve().parents[3]
# Every input the fuzzer once broke the check with: each must now give a verdict.
REGRESSIONS = Path(__file__).parent / "fuzz_regressions"
FUZZ_SECONDS = 20


@pytest.mark.parametrize("finding", sorted(REGRESSIONS.iterdir()), ids=lambda path: path.name)
def test_saved_fuzz_findings_give_a_verdict(tmp_path: Path, finding: Path) -> None:
    Harness(tmp_path).test_one_input(finding.read_bytes())


@pytest.mark.timeout(FUZZ_SECONDS + 150)
def test_short_fuzz_run_finds_nothing(tmp_path: Path) -> None:
    artifacts = tmp_path / "findings"
    artifacts.mkdir()
    corpus = tmp_path / "corpus"
    seeds = write_seeds(corpus)
    command = [
        sys.executable,
        "-m",
        "services.scanner.fuzz_structure",
        f"-max_total_time={FUZZ_SECONDS}",
        "-timeout=10",  # seconds per input: a slow input is a finding too
        "-rss_limit_mb=1536",
        f"-artifact_prefix={artifacts}/",
        str(corpus),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, timeout=FUZZ_SECONDS + 120, check=False, cwd=ROOT, env=env)
    log = done.stderr.decode(errors="replace")
    findings = sorted(path.name for path in artifacts.iterdir())
    assert done.returncode == 0, f"fuzzer finding(s) saved in {artifacts}: {findings}\n{log[-4000:]}"
    assert not findings, findings
    ran = re.search(r"Done (\d+) runs", log)
    assert ran is not None, log[-2000:]
    print(f"structure-check fuzz: {ran.group(1)} runs in {FUZZ_SECONDS} s, 0 findings")
    assert int(ran.group(1)) > seeds  # it mutated, not only replayed the seeds
