"""What every launcher of a local server needs: a free port, a log tail, a sure stop."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def log_tail(path: Path, offset: int = 0, limit: int = 2000) -> str:
    """The end of a log file from `offset` on, for error messages ("" if unreadable)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")[-limit:].strip()
    except OSError:
        return ""


def stop_process(
    process: subprocess.Popen[bytes] | None,
    name: str,
    *,
    stop_signal: int = signal.SIGTERM,
    timeout: float = 10.0,
    kill_group: bool = False,
) -> None:
    """Ask a server to stop, then SIGKILL it (or its whole process group) if it does not exit in time.

    Never raises and never leaves the process running: a crashed test must not leak servers.
    """
    if process is None:
        return
    try:
        if process.poll() is None:
            process.send_signal(stop_signal)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", name, timeout)
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if kill_group:
                    os.killpg(process.pid, signal.SIGKILL)
                else:
                    process.kill()
            process.wait()
