"""Entry point of the isolated child process (see isolation.py and libs/sandbox.py). Not a public interface.

The child loads its libraries before it reads its job, so a warm spare (libs/spares.py) is ready when the job
arrives; the limits are set only then, before the PDF is touched.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from libs import sandbox

_OOM_MARKERS = ("MemoryError", "bad_alloc", "Cannot allocate memory", "failed to map segment", "out of memory")
_OUT_OF_MEMORY_MESSAGE = "The PDF needs more memory than allowed."


def _load_libraries() -> None:
    """Every library is loaded before the limits apply, so a low memory limit fails on the PDF's work (where it
    can be reported as OUT_OF_MEMORY), not on loading code."""
    import numpy  # noqa: F401
    import pikepdf  # noqa: F401
    import pypdf  # noqa: F401
    import pypdfium2  # noqa: F401
    from PIL import Image  # noqa: F401

    from . import pipeline  # noqa: F401


def _compress(child: sandbox.ChildSide) -> dict[str, Any]:
    """Run the job; the result message, with the engine's reason code when it failed."""
    from .errors import ENGINE_CRASHED, OUT_OF_MEMORY, EngineError
    from .options import CompressOptions, Limits
    from .pipeline import compress

    def progress(pct: int) -> None:
        with contextlib.suppress(OSError):
            child.send({"type": "progress", "pct": pct})

    job = child.job
    try:
        report = compress(
            Path(job["input"]),
            Path(job["output"]),
            CompressOptions(**job["options"]),
            progress=progress,
            limits=Limits(**job["limits"]),
        )
        return {"type": "ok", "report": report.to_dict()}
    except EngineError as exc:
        return {"type": "error", "reason": exc.reason, "message": exc.message}
    except MemoryError:
        return {"type": "error", "reason": OUT_OF_MEMORY, "message": _OUT_OF_MEMORY_MESSAGE}
    except Exception as exc:  # noqa: BLE001 - any other failure is reported by reason code, its text only logged
        text = traceback.format_exc()
        # The exception's own text, not the traceback's source lines (which may quote `except MemoryError`).
        if any(m in "".join(traceback.format_exception_only(exc)) for m in _OOM_MARKERS):
            return {"type": "error", "reason": OUT_OF_MEMORY, "message": _OUT_OF_MEMORY_MESSAGE}
        logging.getLogger("services.compressor.engine").error("engine crashed:\n%s", text)
        return {"type": "error", "reason": ENGINE_CRASHED, "message": "The compression engine failed."}


def main() -> int:
    child = sandbox.enter_child(prepare=_load_libraries)  # returns once the job arrived
    child.apply_limits()  # the soft CPU limit sends SIGXCPU
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    child.finish(_compress(child))  # exits without the interpreter's teardown


if __name__ == "__main__":
    sys.exit(main())
