"""What every launcher of a local server needs: a port it can keep, a log tail, a sure stop."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from libs.ports import PortInUse, candidate_ports

log = logging.getLogger(__name__)

# What servers print when their port is taken (PostgreSQL, Valkey, clamd, Envoy all say the errno text).
BIND_FAILURE_MARKERS = ("Address already in use", "could not bind", "Cannot bind")
LAUNCH_ATTEMPTS = 6


def launch_on_port(
    what: str,
    host: str,
    port: int,
    launch: Callable[[int], None],
    stop: Callable[[], None],
    log_path: Path,
    *,
    markers: Sequence[str] = BIND_FAILURE_MARKERS,
    attempts: int = LAUNCH_ATTEMPTS,
) -> int:
    """Start a server that cannot pick its own port and report it; returns the port it listens on.

    `launch(port)` starts it on that port and returns once it answers, or raises; `stop()` then
    ends whatever it started before the next try. With port 0, ports outside the kernel's ephemeral range are tried (see
    libs.ports: nothing but another server can take them), a new one after each bind failure, so
    there is no pick-then-bind race with outgoing connections. A fixed port that is taken raises
    PortInUse naming it.
    """
    ports = [port] if port else [p for p, _ in zip(candidate_ports(), range(attempts), strict=False)]
    for number, candidate in enumerate(ports, 1):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.touch()
        offset = log_path.stat().st_size
        try:
            launch(candidate)
        except BaseException as error:
            stop()  # also on Ctrl-C: a half-started server never outlives its launcher
            said = f"{log_tail(log_path, offset)}\n{error}"
            if not isinstance(error, Exception) or not any(marker in said for marker in markers):
                raise
            if port:
                raise PortInUse(what, f"{host}:{port}") from error
            if number == len(ports):
                raise
            log.info("%s: port %d is taken; trying another", what, candidate)
        else:
            return candidate
    raise RuntimeError(f"{what}: no port to try")  # only when the whole port space is ephemeral


def listens_on(pid: int, port: int, proc: Path = Path("/proc")) -> bool:
    """Whether process `pid` itself holds a listening TCP socket on `port`.

    A launcher polling "does something answer on the port?" must not take another server's answer
    for its own (our process then fails to bind and exits a moment later). True when /proc cannot
    tell (not Linux), so the check never blocks a start it cannot judge.
    """
    listening: set[str] = set()
    readable = False
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 is the socket's inode.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                listening.add(fields[9])
    if not readable:
        return True
    try:
        descriptors = list((proc / str(pid) / "fd").iterdir())
    except OSError:
        return False  # gone (or not ours to read): it does not hold the port
    for descriptor in descriptors:
        with contextlib.suppress(OSError):
            target = os.readlink(descriptor)
            if target.startswith("socket:[") and target[8:-1] in listening:
                return True
    return False


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


def local_get(url: str, timeout: float = 5.0) -> bytes | None:
    """The body of GET `url` on a server this launcher started (loopback, http), or None when it does not
    answer (yet): what launchers poll while a server starts, and read its admin or API with."""
    try:
        # Our own server on loopback over http: no user-controlled scheme.
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310  # nosec B310
            return bytes(response.read())
    except (urllib.error.URLError, OSError):
        return None
