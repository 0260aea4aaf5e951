"""Entry point of the isolated child process (see isolation.py). Not a public interface."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import resource
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, BinaryIO


def _send(out: BinaryIO, msg: dict[str, Any]) -> None:
    out.write(json.dumps(msg).encode() + b"\n")
    out.flush()


_OOM_MARKERS = ("MemoryError", "bad_alloc", "Cannot allocate memory", "failed to map segment", "out of memory")


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """Be killed when the worker dies (a SIGKILLed worker must not leave engines running, unseen).

    Linux sends the signal when the *thread* that started the child ends; the worker's
    threads live as long as the worker, and the CLI calls from its main thread.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def main() -> int:
    job = json.loads(sys.stdin.buffer.read())
    _die_with_parent(int(job["parent_pid"]))
    limits_d = job["limits"]
    # Every library is loaded before the limits apply, so a low memory limit fails on the PDF's work (where it
    # can be reported as OUT_OF_MEMORY), not on loading code. The soft CPU limit sends SIGXCPU.
    import numpy  # noqa: F401
    import pikepdf  # noqa: F401
    import pypdf  # noqa: F401
    import pypdfium2  # noqa: F401
    from PIL import Image  # noqa: F401

    from . import pipeline  # noqa: F401

    cpu = int(limits_d["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    mem = int(limits_d["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    out = os.fdopen(int(job["result_fd"]), "wb")

    from .errors import ENGINE_CRASHED, OUT_OF_MEMORY, EngineError
    from .options import CompressOptions, Limits
    from .pipeline import compress

    def progress(pct: int) -> None:
        with contextlib.suppress(OSError):
            _send(out, {"type": "progress", "pct": pct})

    try:
        report = compress(
            Path(job["input"]),
            Path(job["output"]),
            CompressOptions(**job["options"]),
            progress=progress,
            limits=Limits(**limits_d),
        )
        _send(out, {"type": "ok", "report": report.to_dict()})
    except EngineError as exc:
        _send(out, {"type": "error", "reason": exc.reason, "message": exc.message})
    except MemoryError:
        _send(out, {"type": "error", "reason": OUT_OF_MEMORY, "message": "The PDF needs more memory than allowed."})
    except Exception:  # noqa: BLE001 - any other failure is reported by reason code, its text only logged
        text = traceback.format_exc()
        if any(m in text for m in _OOM_MARKERS):
            _send(out, {"type": "error", "reason": OUT_OF_MEMORY, "message": "The PDF needs more memory than allowed."})
        else:
            logging.getLogger("services.compressor.engine").error("engine crashed:\n%s", text)
            _send(out, {"type": "error", "reason": ENGINE_CRASHED, "message": "The compression engine failed."})
    return 0


if __name__ == "__main__":
    sys.exit(main())
