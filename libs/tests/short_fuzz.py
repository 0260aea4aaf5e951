"""A short libFuzzer run of a fuzz harness module, for `make test` (the harnesses' long runs are documented)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# A fixed libFuzzer seed: the same mutations on every machine up to the time limit, so a suite run does not fail
# at random on a finding one run happens to reach (the documented longer runs explore).
SEED = 12


def run_short_fuzz(module: str, corpus: Path, seeds: int, artifacts: Path, seconds: int) -> int:
    """Fuzz ``python -m module`` from ``corpus`` for ``seconds``; fails on any finding (saved in ``artifacts``)
    or on a run that only replayed its ``seeds``. The number of inputs run."""
    artifacts.mkdir(exist_ok=True)
    command = [
        sys.executable,
        "-m",
        module,
        f"-max_total_time={seconds}",
        f"-seed={SEED}",
        "-timeout=10",  # seconds per input: a slow input is a finding too
        "-rss_limit_mb=1536",
        f"-artifact_prefix={artifacts}/",
        str(corpus),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, timeout=seconds + 120, check=False, cwd=ROOT, env=env)
    log = done.stderr.decode(errors="replace")
    findings = sorted(path.name for path in artifacts.iterdir())
    assert done.returncode == 0, f"fuzzer finding(s) saved in {artifacts}: {findings}\n{log[-4000:]}"
    assert not findings, findings
    ran = re.search(r"Done (\d+) runs", log)
    assert ran is not None, log[-2000:]
    runs = int(ran.group(1))
    assert runs > seeds  # it mutated, not only replayed the seeds
    return runs
