"""Run ``compress`` in the project's child-process sandbox (libs/sandbox.py) with CPU-time and memory limits and
a wall-clock timeout, and say in the engine's reason codes why a child that gave no result ended.

The job goes to ``services.compressor.engine.child``; progress and the result come back as its messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from libs import sandbox
from libs.sandbox import ChildLimits, Ending

from .errors import ENGINE_CRASHED, OUT_OF_MEMORY, TIMEOUT, EngineError
from .options import CompressOptions, Limits
from .report import Report

Progress = Callable[[int], None]

# The project root: the child's working directory, so the module always imports.
_PROJECT_ROOT = Path(__file__).resolve().parents[3]


def compress_isolated(
    input_path: Path,
    output_path: Path,
    options: CompressOptions,
    limits: Limits | None = None,
    progress: Progress | None = None,
) -> Report:
    """``compress`` in a child process. Raises EngineError: TIMEOUT, OUT_OF_MEMORY or ENGINE_CRASHED when the
    child is stopped or dies, or the engine's own reason codes (MALFORMED_PDF, ENCRYPTED_PDF, ...)."""
    return Report.from_dict(compress_isolated_json(input_path, output_path, options, limits, progress))


def compress_isolated_json(
    input_path: Path,
    output_path: Path,
    options: CompressOptions,
    limits: Limits | None = None,
    progress: Progress | None = None,
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
    outcome = sandbox.run_child(
        "services.compressor.engine.child",
        job,
        ChildLimits(
            wall_seconds=limits.wall_timeout(), cpu_seconds=limits.cpu_seconds, memory_bytes=limits.memory_bytes
        ),
        cwd=_PROJECT_ROOT,
        on_progress=_forward_progress(progress),
    )
    return _report_of(outcome)


def _forward_progress(progress: Progress | None) -> Callable[[dict[str, Any]], None] | None:
    if progress is None:
        return None
    return lambda message: progress(int(message["pct"]))


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
