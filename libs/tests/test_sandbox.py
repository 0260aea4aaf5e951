"""The child-process sandbox, with tiny child programs written for each test."""

from __future__ import annotations

import os
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from libs import sandbox
from libs.sandbox import ChildLimits, Ending

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# What every well-behaved child starts with.
PRELUDE = "from libs import sandbox\nchild = sandbox.enter_child()\nchild.apply_limits()\n"


def _run(
    tmp_path: Path, program: str, limits: ChildLimits, *, well_behaved: bool = True, **kwargs: Any
) -> sandbox.Outcome:
    """Run `program` (Python source, after PRELUDE when well behaved) as a module in a sandboxed child."""
    source = textwrap.dedent(program)
    (tmp_path / "child_program.py").write_text(PRELUDE + source if well_behaved else source)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(PROJECT_ROOT)]))
    return sandbox.run_child("child_program", {"answer": 42}, limits, env=env, **kwargs)


def test_success_streams_progress_and_returns_the_result(tmp_path: Path) -> None:
    program = """
        import sys
        for pct in (10, 50, 90):
            child.send({"type": "progress", "pct": pct})
        child.send({"type": "done", "job": child.job, "args": sys.argv[1:]})
    """
    seen: list[dict[str, Any]] = []
    outcome = _run(tmp_path, program, ChildLimits(wall_seconds=30), args=["a", "b"], on_progress=seen.append)
    assert outcome.ending is Ending.FINISHED
    assert outcome.result == {"type": "done", "job": {"answer": 42}, "args": ["a", "b"]}
    assert [m["pct"] for m in seen] == [10, 50, 90]
    assert outcome.returncode == 0


def test_child_over_its_memory_limit(tmp_path: Path) -> None:
    program = """
        hoard = [bytearray(8 << 20) for _ in range(64)]  # 512 MiB: twice the limit
        child.send({"type": "done"})
    """
    outcome = _run(tmp_path, program, ChildLimits(wall_seconds=30, memory_bytes=256 << 20))
    assert outcome.ending is Ending.MEMORY_LIMIT
    assert "MemoryError" in outcome.stderr_tail
    assert outcome.result is None


def test_a_crash_whose_traceback_quotes_memory_error_is_not_out_of_memory(tmp_path: Path) -> None:
    program = """
        def fails():
            raise KeyError("no such thing")  # except MemoryError: a source line the traceback quotes

        fails()
    """
    outcome = _run(tmp_path, program, ChildLimits(wall_seconds=30, memory_bytes=1 << 30))
    assert "except MemoryError" in outcome.stderr_tail
    assert outcome.ending is Ending.EXITED


def test_child_spinning_past_its_cpu_limit(tmp_path: Path) -> None:
    program = """
        import time
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            pass
        child.send({"type": "done"})
    """
    outcome = _run(tmp_path, program, ChildLimits(wall_seconds=30, cpu_seconds=1))
    assert outcome.ending is Ending.CPU_LIMIT
    assert outcome.returncode == -signal.SIGXCPU


def test_child_sleeping_past_the_wall_timeout_is_killed(tmp_path: Path) -> None:
    program = """
        import os, time
        child.send({"type": "progress", "pid": os.getpid()})
        time.sleep(60)
    """
    pids: list[int] = []
    started = time.monotonic()
    outcome = _run(tmp_path, program, ChildLimits(wall_seconds=3), on_progress=lambda m: pids.append(m["pid"]))
    assert time.monotonic() - started < sandbox.REAP_SECONDS  # killed at the deadline, not left to exit
    assert outcome.ending is Ending.WALL_TIMEOUT
    assert outcome.returncode == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):  # killed and reaped: the pid is gone
        os.kill(pids[0], 0)


def test_child_printing_garbage_is_unreadable(tmp_path: Path) -> None:
    # A child that ignores the protocol: writes a line that is not JSON on the message channel, then waits.
    program = """
        import json, os, sys, time
        envelope = json.loads(sys.stdin.read())
        os.write(envelope["channel_fd"], b"this is not json\\n")
        time.sleep(60)
    """
    outcome = _run(tmp_path, program, ChildLimits(wall_seconds=30), well_behaved=False)
    assert outcome.ending is Ending.UNREADABLE_OUTPUT
    assert "not a JSON object" in outcome.problem
    assert outcome.returncode == -signal.SIGKILL  # stopped at once, not at the wall timeout


def test_child_sending_more_than_the_output_cap_is_stopped(tmp_path: Path) -> None:
    program = """
        for _ in range(100_000):
            child.send({"type": "progress", "pct": 1})
    """
    outcome = _run(tmp_path, program, ChildLimits(wall_seconds=30), max_output_bytes=10_000)
    assert outcome.ending is Ending.UNREADABLE_OUTPUT
    assert outcome.problem == "more output than allowed"


def test_child_exiting_without_a_result_keeps_its_code_and_stderr(tmp_path: Path) -> None:
    program = """
        import sys
        child._channel.write(b'{"type": "done"')  # cut short: a line without its end is no result
        child._channel.flush()
        sys.stderr.write("giving up\\n")
        sys.exit(3)
    """
    outcome = _run(tmp_path, program, ChildLimits(wall_seconds=30))
    assert outcome.ending is Ending.EXITED
    assert outcome.returncode == 3
    assert outcome.stderr_tail == "giving up\n"
    assert outcome.result is None


def test_child_ended_by_a_signal_no_limit_explains(tmp_path: Path) -> None:
    program = """
        import os, signal
        os.kill(os.getpid(), signal.SIGTERM)
    """
    outcome = _run(tmp_path, program, ChildLimits(wall_seconds=30, memory_bytes=1 << 30))
    assert outcome.ending is Ending.SIGNALLED
    assert outcome.returncode == -signal.SIGTERM


def test_the_cpu_limit_counts_only_the_job_not_the_loading_before_it(tmp_path: Path) -> None:
    # A child that spends 1.2 s of CPU loading (as a warm spare imports before its job), then 0.3 s on its job:
    # within a 1 s limit, since RLIMIT_CPU would otherwise count the loading too.
    program = """
        import time
        from libs import sandbox

        def spin(seconds):
            end = time.process_time() + seconds
            while time.process_time() < end:
                pass

        child = sandbox.enter_child(prepare=lambda: spin(1.2))
        child.apply_limits()
        spin(0.3)
        child.send({"type": "done"})
    """
    outcome = _run(tmp_path, program, ChildLimits(wall_seconds=30, cpu_seconds=1), well_behaved=False)
    assert outcome.ending is Ending.FINISHED


def test_finish_sends_the_result_and_exits_at_once(tmp_path: Path) -> None:
    program = """
        import atexit, sys
        atexit.register(lambda: sys.stderr.write("torn down\\n"))  # the teardown finish skips
        child.finish({"type": "done"})
    """
    outcome = _run(tmp_path, program, ChildLimits(wall_seconds=30))
    assert outcome.ending is Ending.FINISHED
    assert outcome.returncode == 0
    assert outcome.stderr_tail == ""
