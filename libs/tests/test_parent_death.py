"""kill_when_parent_dies: a child started with it is killed by the kernel when its parent is SIGKILLed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from libs.tests.processes import running

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# A parent that starts a sleeping child the way the WAL receiver starts pg_receivewal, says its pid, and waits.
PARENT = textwrap.dedent(
    """
    import subprocess, sys, time
    from libs.parent_death import kill_when_parent_dies
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=kill_when_parent_dies())
    print(child.pid, flush=True)
    time.sleep(60)
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_the_child_of_a_killed_parent_is_killed_too() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": "."}
    )
    child_pid = 0
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert running(child_pid)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while running(child_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not running(child_pid)
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
        if child_pid and running(child_pid):  # the helper failed: do not leave the child behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(child_pid, signal.SIGKILL)
