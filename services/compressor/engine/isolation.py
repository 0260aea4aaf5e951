"""Run ``compress`` in the project's child-process sandbox (libs/sandbox.py) with CPU-time and memory limits and
a wall-clock timeout, and say in the engine's reason codes why a child that gave no result ended.

The job goes to ``services.compressor.engine.child``; progress and the result come back as its messages. Given a
pool of warm spares (``engine_spares``, libs/spares.py), the job runs in a child started and loaded before the call
instead of one started for it; the limits, the timeout and the one-job-per-child rule are the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from libs import sandbox
from libs.sandbox import ChildLimits, Ending
from libs.spares import SparePool

from .errors import ENGINE_CRASHED, OUT_OF_MEMORY, TIMEOUT, EngineError
from .options import CompressOptions, Limits
from .report import Report

Progress = Callable[[int], None]

log = logging.getLogger(__name__)

CHILD_MODULE = "services.compressor.engine.child"
# The project root: the child's working directory, so the module always imports.
_PROJECT_ROOT = Path(__file__).resolve().parents[3]


def engine_spares(size: int) -> SparePool:
    """A pool of ``size`` engine children started ahead of their jobs (one per worker thread); ``start`` it
    from the thread that will ``close`` it."""
    return SparePool(CHILD_MODULE, size, cwd=_PROJECT_ROOT)


def compress_isolated(
    input_path: Path,
    output_path: Path,
    options: CompressOptions,
    limits: Limits | None = None,
    progress: Progress | None = None,
    *,
    spares: SparePool | None = None,
) -> Report:
    """``compress`` in a child process (a warm spare from ``spares`` when given, else one started now). Raises
    EngineError: TIMEOUT, OUT_OF_MEMORY or ENGINE_CRASHED when the child is stopped or dies, or the engine's own
    reason codes (MALFORMED_PDF, ENCRYPTED_PDF, ...)."""
    return Report.from_dict(compress_isolated_json(input_path, output_path, options, limits, progress, spares=spares))


def compress_isolated_json(
    input_path: Path,
    output_path: Path,
    options: CompressOptions,
    limits: Limits | None = None,
    progress: Progress | None = None,
    *,
    spares: SparePool | None = None,
) -> dict[str, Any]:
    """``compress_isolated`` with the report as the child sent it (``Report.to_dict()``'s JSON object), for
    callers that only pass it on (the worker stores it with the job as it is)."""
    limits = limits or Limits()
    options.validate()
    job = {
        "input": str(Path(input_path).resolve()),
        "output": str(Path(output_path).resolve()),
        "options": asdict(options),
        "limits": asdict(limits),
    }
    child_limits = ChildLimits(
        wall_seconds=limits.wall_timeout(), cpu_seconds=limits.cpu_seconds, memory_bytes=limits.memory_bytes
    )
    heard = _Heard(progress)
    outcome = sandbox.run_started(_child_from(spares), job, child_limits, on_progress=heard)
    if spares is not None and not heard.anything and outcome.ending in _DIED:
        # The spare died before its first message (killed as it was taken: the pool saw it alive a moment
        # before), so it did none of the job's work: the job runs again in a child started for it.
        log.warning("the engine spare died before it started the job; running the job in a fresh child")
        fresh = sandbox.start_child(CHILD_MODULE, cwd=_PROJECT_ROOT)
        outcome = sandbox.run_started(fresh, job, child_limits, on_progress=heard)
    return _report_of(outcome)


# Endings of a child that died on its own or by someone else's signal (not stopped by us at a limit).
_DIED = (Ending.SIGNALLED, Ending.MEMORY_LIMIT, Ending.EXITED)


class _Heard:
    """Progress callback that forwards the percentage and remembers that the child sent something: the
    engine's first message (progress 0) comes before it reads the input."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self.anything = False

    def __call__(self, message: dict[str, Any]) -> None:
        self.anything = True
        if self._progress is not None:
            self._progress(int(message["pct"]))


def _child_from(spares: SparePool | None) -> sandbox.StartedChild:
    if spares is None:
        return sandbox.start_child(CHILD_MODULE, cwd=_PROJECT_ROOT)
    if spares.module != CHILD_MODULE:
        raise ValueError(f"spares of {spares.module} cannot run the engine")
    return spares.take()


def _report_of(outcome: sandbox.Outcome) -> dict[str, Any]:
    """The child's report, or the EngineError its result or its ending stands for."""
    if outcome.result is None:
        raise _ending_error(outcome.ending)
    if outcome.result["type"] == "ok":
        return dict(outcome.result["report"])
    raise EngineError(outcome.result["reason"], outcome.result["message"])


def _ending_error(ending: Ending) -> EngineError:
    if ending in (Ending.WALL_TIMEOUT, Ending.CPU_LIMIT):
        return EngineError(TIMEOUT, "Compression took longer than allowed.")
    if ending is Ending.MEMORY_LIMIT:
        return EngineError(OUT_OF_MEMORY, "The PDF needs more memory than allowed.")
    return EngineError(ENGINE_CRASHED, "The compression engine failed on this PDF.")
