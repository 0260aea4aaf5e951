"""Run ``compress`` in a child process with CPU-time and memory limits and a wall-clock timeout.

The child is a fresh interpreter (``python -m services.compressor.engine.child``), never a fork: the worker is
threaded (gRPC), and a fresh process does not re-import the caller's ``__main__`` either. The job goes in on
stdin as JSON; progress and the result come back as JSON lines on a private pipe (stdout stays free for
anything a C library might print).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .errors import ENGINE_CRASHED, OUT_OF_MEMORY, TIMEOUT, EngineError
from .options import CompressOptions, Limits
from .report import Report

Progress = Callable[[int], None]

_REAP_SECONDS = 10.0
# Bytes of the child's stderr kept for the log when it crashes.
_STDERR_TAIL = 4000


_OOM_MARKERS = ("MemoryError", "bad_alloc", "Cannot allocate memory", "out of memory")


def _exit_error(returncode: int | None, limits: Limits, usage: Any, stderr_tail: str) -> EngineError:
    cpu_used = (usage.ru_utime + usage.ru_stime) if usage is not None else 0.0
    peak_rss = usage.ru_maxrss * 1024 if usage is not None else 0  # Linux reports KiB
    if returncode is not None and returncode < 0:
        sig = -returncode
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_used >= limits.cpu_seconds - 1):
            return EngineError(TIMEOUT, "Compression took longer than allowed.")
        if sig == signal.SIGKILL:
            # With RLIMIT_AS set, a SIGKILL we did not send is the kernel OOM killer.
            return EngineError(OUT_OF_MEMORY, "The PDF needs more memory than allowed.")
        if sig in (signal.SIGABRT, signal.SIGSEGV) and peak_rss >= limits.memory_bytes // 2:
            # A C++ library that cannot allocate aborts (uncaught std::bad_alloc) near the address-space limit.
            return EngineError(OUT_OF_MEMORY, "The PDF needs more memory than allowed.")
    if any(m in stderr_tail for m in _OOM_MARKERS):
        return EngineError(OUT_OF_MEMORY, "The PDF needs more memory than allowed.")
    return EngineError(ENGINE_CRASHED, "The compression engine failed on this PDF.")


def _reap(proc: subprocess.Popen[bytes], seconds: float) -> Any:
    """Wait for the child (killing it after ``seconds``) and return its own resource usage."""
    deadline = time.monotonic() + seconds
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage
        if time.monotonic() >= deadline:
            _kill(proc)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage
        time.sleep(0.01)


def compress_isolated(
    input_path: Path,
    output_path: Path,
    options: CompressOptions,
    limits: Limits | None = None,
    progress: Progress | None = None,
) -> Report:
    """``compress`` in a child process. Raises EngineError: TIMEOUT, OUT_OF_MEMORY or ENGINE_CRASHED when the
    child is stopped or dies, or the engine's own reason codes (MALFORMED_PDF, ENCRYPTED_PDF, ...)."""
    limits = limits or Limits()
    options.validate()
    read_fd, write_fd = os.pipe()
    job = {
        "input": str(Path(input_path).resolve()),
        "output": str(Path(output_path).resolve()),
        "options": asdict(options),
        "limits": asdict(limits),
        "result_fd": write_fd,
        "parent_pid": os.getpid(),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.compressor.engine.child"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=(write_fd,),
        cwd=str(Path(__file__).resolve().parents[3]),  # the project root, so the module always imports
        start_new_session=True,  # a kill reaches only the child and its own children
    )
    os.close(write_fd)
    assert proc.stdin is not None
    assert proc.stderr is not None
    try:
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    deadline = time.monotonic() + limits.wall_timeout()
    result: dict[str, Any] | None = None
    buf = b""
    err_tail = b""
    timed_out = False
    sel = selectors.DefaultSelector()
    reader = os.fdopen(read_fd, "rb", buffering=0)
    sel.register(reader, selectors.EVENT_READ, "result")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    open_streams = 2
    try:
        while open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in sel.select(timeout=min(remaining, 1.0)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                if key.data == "stderr":
                    err_tail = (err_tail + chunk)[-_STDERR_TAIL:]
                    continue
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    msg = json.loads(line)
                    if msg["type"] == "progress":
                        if progress is not None:
                            progress(int(msg["pct"]))
                    else:
                        result = msg
    finally:
        sel.close()
        reader.close()
        if timed_out:
            _kill(proc)
        usage = _reap(proc, _REAP_SECONDS)
        proc.stderr.close()
    if timed_out:
        raise EngineError(TIMEOUT, "Compression took longer than allowed.")
    if result is None:
        raise _exit_error(proc.returncode, limits, usage, err_tail.decode("utf-8", "replace"))
    if result["type"] == "ok":
        return Report.from_dict(result["report"])
    raise EngineError(result["reason"], result["message"])


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
