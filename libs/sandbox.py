"""Run a Python module in a child process with CPU, memory and wall-clock limits; the one sandbox of the project.

The child is a fresh interpreter (``python -m <module>``), never a fork: callers are threaded (gRPC), and a fresh
process does not re-import the caller's ``__main__`` either. It runs in its own session (a kill reaches only it
and its own children) and dies with its parent. The job goes in on stdin as JSON; the child's messages come back
as JSON lines on a private pipe (stdout stays free for anything a C library might print). Messages of type
``progress`` go to a callback; the last other message is the result.

Parent side: ``run_child`` returns an ``Outcome`` that says why the child ended; each caller keeps its own policy
for what an ending means. Child side: ``enter_child`` reads the job, and the child calls ``apply_limits`` once it
has loaded its libraries (so a low memory limit fails on the work, not on importing code).
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from libs.parent_death import kill_when_parent_dies

Message = dict[str, Any]

# After the child closed its streams, how long it may take to exit before it is killed.
REAP_SECONDS = 10.0
STDERR_TAIL_BYTES = 4000
# Bytes of messages a child may send in all; more is not a report but a runaway.
MAX_OUTPUT_BYTES = 16 << 20
_READ_CHUNK = 65536
# Longest wait in one select, so the wall deadline is checked at least this often.
_POLL_SECONDS = 1.0
# The soft CPU limit sends SIGXCPU; the hard one, this much later, SIGKILL.
_CPU_HARD_MARGIN_SECONDS = 5
# What a child that could not allocate leaves in its stderr (Python, C++ and C libraries).
_OOM_MARKERS = ("MemoryError", "bad_alloc", "Cannot allocate memory", "out of memory")


@dataclass(frozen=True)
class ChildLimits:
    """Limits of one child: CPU seconds and address-space bytes (rlimits, None: unlimited) and wall seconds."""

    wall_seconds: float
    cpu_seconds: int | None = None
    memory_bytes: int | None = None


class Ending(enum.Enum):
    """Why a child ended."""

    FINISHED = "finished"  # it sent its result
    EXITED = "exited"  # it exited without a result (any exit code)
    SIGNALLED = "signalled"  # a signal no limit explains ended it
    CPU_LIMIT = "cpu limit"
    MEMORY_LIMIT = "memory limit"
    WALL_TIMEOUT = "wall timeout"  # it was still running at the deadline and was killed
    UNREADABLE_OUTPUT = "unreadable output"  # a message that is not a JSON object, or too many bytes: killed


@dataclass(frozen=True)
class Outcome:
    ending: Ending
    result: Message | None  # the last message that is not progress (set only when FINISHED)
    returncode: int | None  # as subprocess reports it: negative is the signal that ended the child
    stderr_tail: str
    problem: str = ""  # what was unreadable (UNREADABLE_OUTPUT)


def run_child(
    module: str,
    job: Any,
    limits: ChildLimits,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    on_progress: Callable[[Message], None] | None = None,
    max_output_bytes: int = MAX_OUTPUT_BYTES,
) -> Outcome:
    """Run ``python -m module *args`` with ``job`` (JSON-serialisable) on its stdin; the child is always gone
    (reaped, killed if need be) when this returns or raises."""
    read_fd, write_fd = os.pipe()
    try:
        proc = _spawn(module, args, env, cwd, write_fd)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    messages = _Messages(on_progress, max_output_bytes)
    stderr = _Tail(STDERR_TAIL_BYTES)
    stopped: Ending | None = None
    streams_ended = False  # a child stopped early, or by an exception here, is killed
    try:
        _send_job(proc, {"job": job, "limits": asdict(limits), "channel_fd": write_fd, "parent_pid": os.getpid()})
        stopped = _pump(proc, read_fd, time.monotonic() + limits.wall_seconds, messages, stderr)
        streams_ended = stopped is None
    finally:
        os.close(read_fd)
        if not streams_ended:
            _kill(proc)
        usage = _reap(proc, REAP_SECONDS)
        _close_pipes(proc)
    ending = stopped or _ending(messages.result, proc.returncode, limits, usage, stderr.text())
    result = messages.result if ending is Ending.FINISHED else None
    return Outcome(ending, result, proc.returncode, stderr.text(), messages.problem)


def _spawn(
    module: str, args: Sequence[str], env: Mapping[str, str] | None, cwd: Path | None, channel_fd: int
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        pass_fds=(channel_fd,),
        env=dict(env) if env is not None else None,
        cwd=str(cwd) if cwd is not None else None,
        start_new_session=True,  # a kill reaches only the child and its own children
    )


def _send_job(proc: subprocess.Popen[bytes], envelope: Message) -> None:
    assert proc.stdin is not None
    # A child that died at once leaves a broken pipe; its exit status tells why.
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.write(json.dumps(envelope).encode())
        proc.stdin.close()


def _pump(
    proc: subprocess.Popen[bytes], channel_fd: int, deadline: float, messages: _Messages, stderr: _Tail
) -> Ending | None:
    """Read messages and stderr until the child closes both; an Ending when it must be stopped first."""
    assert proc.stderr is not None
    sinks: dict[int, Callable[[bytes], bool]] = {channel_fd: messages.feed, proc.stderr.fileno(): stderr.feed}
    with selectors.DefaultSelector() as selector:
        for fd in sinks:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Ending.WALL_TIMEOUT
            if not _read_ready(selector, sinks, min(remaining, _POLL_SECONDS)):
                return Ending.UNREADABLE_OUTPUT
    return None


def _read_ready(selector: selectors.BaseSelector, sinks: dict[int, Callable[[bytes], bool]], timeout: float) -> bool:
    """One read from every stream that has data (a stream at its end is dropped); False when a sink refuses."""
    for key, _ in selector.select(timeout=timeout):
        chunk = os.read(key.fd, _READ_CHUNK)
        if not chunk:
            selector.unregister(key.fd)
        elif not sinks[key.fd](chunk):
            return False
    return True


class _Messages:
    """The child's JSON lines, within a byte budget: progress to the callback, the rest kept as the result."""

    def __init__(self, on_progress: Callable[[Message], None] | None, max_bytes: int) -> None:
        self.on_progress = on_progress
        self.budget = max_bytes
        self.pending = bytearray()
        self.result: Message | None = None
        self.problem = ""

    def feed(self, chunk: bytes) -> bool:
        self.budget -= len(chunk)
        if self.budget < 0:
            self.problem = "more output than allowed"
            return False
        self.pending += chunk
        # Bounded: each pass removes one line from what the budget let in. A last line without its newline
        # (a child cut short mid-write) is never read: the exit status says what happened.
        while (end := self.pending.find(b"\n")) >= 0:
            line = bytes(self.pending[:end])
            del self.pending[: end + 1]
            if not self._take(line):
                return False
        return True

    def _take(self, line: bytes) -> bool:
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self.problem = f"not a JSON object: {line[:80]!r}"
            return False
        if message.get("type") != "progress":
            self.result = message
        elif self.on_progress is not None:
            self.on_progress(message)
        return True


class _Tail:
    """The last bytes of a stream."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data = b""

    def feed(self, chunk: bytes) -> bool:
        self.data = (self.data + chunk)[-self.size :]
        return True

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def _ending(result: Message | None, returncode: int | None, limits: ChildLimits, usage: Any, stderr: str) -> Ending:
    """Why a child whose streams ended stopped: its result, else what its exit status and usage point to."""
    if result is not None:
        return Ending.FINISHED
    cpu_used = (usage.ru_utime + usage.ru_stime) if usage is not None else 0.0
    peak_rss = usage.ru_maxrss * 1024 if usage is not None else 0  # Linux reports KiB
    if returncode is not None and returncode < 0:
        killed_by = _limit_signal(-returncode, limits, cpu_used, peak_rss)
        if killed_by is not None:
            return killed_by
    if any(marker in stderr for marker in _OOM_MARKERS):
        return Ending.MEMORY_LIMIT
    return Ending.SIGNALLED if returncode is not None and returncode < 0 else Ending.EXITED


def _limit_signal(sig: int, limits: ChildLimits, cpu_used: float, peak_rss: int) -> Ending | None:
    """The limit a deadly signal points to, if any."""
    cpu_spent = limits.cpu_seconds is not None and cpu_used >= limits.cpu_seconds - 1
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_spent):
        return Ending.CPU_LIMIT
    if limits.memory_bytes is None:
        return None
    if sig == signal.SIGKILL:
        # With RLIMIT_AS set, a SIGKILL we did not send is the kernel OOM killer.
        return Ending.MEMORY_LIMIT
    if sig in (signal.SIGABRT, signal.SIGSEGV) and peak_rss >= limits.memory_bytes // 2:
        # A C++ library that cannot allocate aborts (uncaught std::bad_alloc) near the address-space limit.
        return Ending.MEMORY_LIMIT
    return None


def _reap(proc: subprocess.Popen[bytes], seconds: float) -> Any:
    """Wait for the child (killing it after ``seconds``) and return its own resource usage."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage
        time.sleep(0.01)
    _kill(proc)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _close_pipes(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


class ChildSide:
    """The child's end: its job, its limits and the channel its messages go out on."""

    def __init__(self, envelope: Message) -> None:
        self.job: Any = envelope["job"]
        self.limits = ChildLimits(**envelope["limits"])
        self._channel: BinaryIO = os.fdopen(int(envelope["channel_fd"]), "wb")

    def apply_limits(self) -> None:
        """Set the CPU and address-space rlimits (call it once the libraries the work needs are loaded)."""
        if self.limits.cpu_seconds is not None:
            cpu = int(self.limits.cpu_seconds)
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + _CPU_HARD_MARGIN_SECONDS))
        if self.limits.memory_bytes is not None:
            memory = int(self.limits.memory_bytes)
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    def send(self, message: Message) -> None:
        self._channel.write(json.dumps(message).encode() + b"\n")
        self._channel.flush()


def enter_child() -> ChildSide:
    """In the child, first: read the job from stdin and arrange to die with the parent."""
    envelope = json.loads(sys.stdin.buffer.read())
    _die_with_parent(int(envelope["parent_pid"]))
    return ChildSide(envelope)


def _die_with_parent(parent_pid: int) -> None:
    """Be killed when the parent dies (a SIGKILLed worker must not leave children running, unseen).

    The worker's threads, which start the children, live as long as the worker, and the CLI calls from its main
    thread (libs/parent_death.py says why that matters).
    """
    arrange = kill_when_parent_dies()
    if arrange is not None:
        arrange()
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)
