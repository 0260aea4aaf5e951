"""Warm spares (libs/spares.py): children started before their jobs, with tiny child programs written per test."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from libs import sandbox
from libs.sandbox import ChildLimits, Ending
from libs.spares import SparePool
from libs.tests.processes import running, wait_until

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# A child that says when it finished loading (before its job existed), its pid and its job; the job may ask it
# to spin (CPU) or to hoard memory first.
PROGRAM = """
import os, time
from libs import sandbox

loaded = {}

def load():
    loaded["at"] = time.time()

child = sandbox.enter_child(prepare=load)
child.apply_limits()
deadline = time.monotonic() + child.job.get("spin", 0)
while time.monotonic() < deadline:
    pass
hoard = [bytearray(8 << 20) for _ in range(child.job.get("hoard_mib", 0) // 8)]
child.send({"type": "done", "pid": os.getpid(), "loaded_at": loaded["at"], "job": child.job})
"""


def _program_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "spare_program.py").write_text(textwrap.dedent(PROGRAM))
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(PROJECT_ROOT)]))


@pytest.fixture
def pool_of(tmp_path: Path) -> Iterator[Callable[[int], SparePool]]:
    """Started pools of the test program, always closed at the end."""
    pools: list[SparePool] = []

    def make(size: int) -> SparePool:
        pool = SparePool("spare_program", size, env=_program_env(tmp_path))
        pool.start()
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


def _run(pool: SparePool, job: dict[str, int], limits: ChildLimits | None = None) -> sandbox.Outcome:
    return sandbox.run_started(pool.take(), job, limits or ChildLimits(wall_seconds=30))


def test_the_job_runs_in_the_spare_started_before_it_and_a_new_spare_follows(
    pool_of: Callable[[int], SparePool],
) -> None:
    pool = pool_of(1)
    wait_until(lambda: len(pool.waiting_pids()) == 1)
    (spare,) = pool.waiting_pids()
    time.sleep(0.5)  # the spare loads meanwhile
    called_at = time.time()
    outcome = _run(pool, {"answer": 42})
    assert outcome.ending is Ending.FINISHED
    assert outcome.result is not None
    assert outcome.result["pid"] == spare
    assert outcome.result["loaded_at"] < called_at  # loaded before there was a job
    assert outcome.result["job"] == {"answer": 42}
    assert (pool.warm_taken, pool.cold_started) == (1, 0)
    assert not running(spare)  # one job per child: it is gone
    wait_until(lambda: len(pool.waiting_pids()) == 1)
    assert pool.waiting_pids() != [spare]


def test_a_spare_that_died_while_waiting_is_replaced_and_the_job_runs_on_a_fresh_child(
    pool_of: Callable[[int], SparePool],
) -> None:
    pool = pool_of(1)
    wait_until(lambda: len(pool.waiting_pids()) == 1)
    (spare,) = pool.waiting_pids()
    os.kill(spare, signal.SIGKILL)  # as the OOM killer would
    wait_until(lambda: not running(spare))
    outcome = _run(pool, {"answer": 1})
    assert outcome.ending is Ending.FINISHED
    assert outcome.result is not None
    assert outcome.result["pid"] != spare
    assert (pool.warm_taken, pool.cold_started) == (0, 1)
    wait_until(lambda: len(pool.waiting_pids()) == 1)
    assert spare not in pool.waiting_pids()


def test_limits_still_apply_to_a_job_in_a_spare(pool_of: Callable[[int], SparePool]) -> None:
    pool = pool_of(2)
    wait_until(lambda: len(pool.waiting_pids()) == 2)
    spinning = _run(pool, {"spin": 25}, ChildLimits(wall_seconds=30, cpu_seconds=1))
    hoarding = _run(pool, {"hoard_mib": 512}, ChildLimits(wall_seconds=30, memory_bytes=256 << 20))
    past_the_deadline = _run(pool, {"spin": 25}, ChildLimits(wall_seconds=1))
    assert spinning.ending is Ending.CPU_LIMIT
    assert hoarding.ending is Ending.MEMORY_LIMIT
    assert past_the_deadline.ending is Ending.WALL_TIMEOUT
    assert pool.warm_taken >= 2


def test_close_kills_the_spares_and_later_takes_start_their_own_child(pool_of: Callable[[int], SparePool]) -> None:
    pool = pool_of(2)
    wait_until(lambda: len(pool.waiting_pids()) == 2)
    spares = pool.waiting_pids()
    pool.close()
    assert not any(running(pid) for pid in spares)
    assert pool.waiting_pids() == []
    outcome = _run(pool, {"answer": 2})  # a worker thread still busy after the stop
    assert outcome.ending is Ending.FINISHED
    assert pool.cold_started == 1
    time.sleep(0.2)
    assert pool.waiting_pids() == []  # no spare started after the close


# A parent that keeps two spares waiting, says their pids, and waits to be killed.
KILLED_PARENT = """
import sys, time
from libs.spares import SparePool
pool = SparePool("spare_program", 2)
pool.start()
while len(pool.waiting_pids()) < 2:
    time.sleep(0.02)
print(*pool.waiting_pids(), flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_the_spares_of_a_killed_parent_die_with_it(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", KILLED_PARENT], stdout=subprocess.PIPE, cwd=PROJECT_ROOT, env=_program_env(tmp_path)
    )
    spares: list[int] = []
    try:
        assert parent.stdout is not None
        spares = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(spares) == 2
        assert all(running(pid) for pid in spares)
        parent.kill()
        parent.wait()
        wait_until(lambda: not any(running(pid) for pid in spares), seconds=10)
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
        for pid in spares:  # the test failed: leave nothing behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
