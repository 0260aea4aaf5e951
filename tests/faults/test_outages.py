"""Storage and PostgreSQL outages with jobs in flight lose no job and burn no attempt (real stack).

The 30 s and 60 s outages are in bench/faults.py (results in bench/faults_results.md).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.faults import OutageFigures, fault_stack, run_outage
from devtools.stack.stack import Stack
from tests.plugins.figures import Figures

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 5.0


@pytest.fixture(scope="module")
def outage_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = fault_stack(tmp_path_factory.mktemp("outages"))
    try:
        stack.start(timeout=90)
        yield stack
    finally:
        stack.stop()


def check(measured: OutageFigures) -> None:
    assert measured.running_at_outage > 0, "no job was running when the outage began"
    assert (measured.lost, measured.failed, measured.succeeded) == (0, 0, measured.submitted), measured.line()
    # Every job ran to success once the dependency was back; the outage took no attempt of its own.
    assert measured.max_attempts == 1, measured.line()


@pytest.mark.parametrize("dependency", ["storage", "postgres"])
def test_outage_with_jobs_in_flight_loses_nothing(outage_stack: Stack, dependency: str, figures: Figures) -> None:
    measured = run_outage(outage_stack, dependency, OUTAGE_SECONDS, job_count=6, pages=2)
    figures.add(f"{dependency} outage {OUTAGE_SECONDS:.0f} s", measured.line().split(": ", 1)[1])
    check(measured)
