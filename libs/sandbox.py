"""Run a Python module in a child process with CPU, memory and wall-clock limits; the one sandbox of the project.

The child is a fresh interpreter (``python -m <module>``), never a fork: callers are threaded (gRPC), and a fresh
process does not re-import the caller's ``__main__`` either. It runs in its own session (a kill reaches only it
and its own children) and dies with its parent. The job goes in on stdin as JSON; the child's messages come back
as JSON lines on a private pipe (stdout stays free for anything a C library might print). Messages of type
``progress`` go to a callback; the last other message is the result.

Parent side: ``run_child`` returns an ``Outcome`` that says why the child ended; each caller keeps its own policy
for what an ending means. A child may also be started before its job exists (``start_child``, a warm spare:
libs/spares.py) and handed the job later (``run_started``); it still runs exactly one job. Child side:
``enter_child`` loads the libraries (``prepare``) and then reads the job, and the child calls ``apply_limits`` before
it touches the job's input (so a low memory limit fails on the work, not on importing code).

The child dies with the thread that started it (PR_SET_PDEATHSIG, libs/parent_death.py says why a thread): a SIGKILLed
worker leaves no child running, unseen. The worker's threads, which start the children, live as long as the worker,
and the CLI calls from its main thread.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
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
from typing import Any, BinaryIO, NoReturn

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


class StartedChild:
    """A child interpreter started ahead of its job: it loads what it needs, then waits for the job on stdin.

    Each one runs one job (``run_started``) or is killed (``kill``); it is never reused.
    """

    def __init__(self, proc: subprocess.Popen[bytes], read_fd: int, channel_fd: int) -> None:
        self.proc = proc
        self.read_fd = read_fd  # the parent's end of the message channel
        self.channel_fd = channel_fd  # the number of the child's end, in the child

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        """Still waiting (or working); a child that died is reaped by asking."""
        return self.proc.poll() is None

    def kill(self) -> None:
        """Kill the child and its own children, reap it and close the pipes (safe to call twice)."""
        if self.proc.returncode is None:  # once reaped, its pid (and group id) may be another process's
            _kill(self.proc)
            with contextlib.suppress(ChildProcessError):
                self.proc.wait()
        self._close()

    def _close(self) -> None:
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1
        _close_pipes(self.proc)


def start_child(
    module: str, *, args: Sequence[str] = (), env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> StartedChild:
    """Start ``python -m module *args``; it waits for its job until ``run_started`` hands it over.

    Start it from a thread that lives as long as the child may run: the child dies with that thread
    (libs/parent_death.py)."""
    read_fd, write_fd = os.pipe()
    try:
        proc = _spawn(module, args, env, cwd, write_fd)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)  # the child holds the only write end: its exit ends the channel
    return StartedChild(proc, read_fd, write_fd)


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
    child = start_child(module, args=args, env=env, cwd=cwd)
    return run_started(child, job, limits, on_progress=on_progress, max_output_bytes=max_output_bytes)


def run_started(
    child: StartedChild,
    job: Any,
    limits: ChildLimits,
    *,
    on_progress: Callable[[Message], None] | None = None,
    max_output_bytes: int = MAX_OUTPUT_BYTES,
) -> Outcome:
    """Hand ``job`` to a started child and run it to its end, like ``run_child``; the wall-clock timeout
    counts from the handover."""
    proc = child.proc
    messages = _Messages(on_progress, max_output_bytes)
    stderr = _Tail(STDERR_TAIL_BYTES)
    stopped: Ending | None = None
    streams_ended = False  # a child stopped early, or by an exception here, is killed
    envelope = {"job": job, "limits": asdict(limits), "channel_fd": child.channel_fd, "parent_pid": os.getpid()}
    try:
        deadline = time.monotonic() + limits.wall_seconds
        _send_job(proc, envelope)
        stopped = _pump(proc, child.read_fd, deadline, messages, stderr)
        streams_ended = stopped is None
    finally:
        if not streams_ended:
            _kill(proc)
        usage = _reap(proc, REAP_SECONDS)
        child._close()
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
    if _says_out_of_memory(stderr):
        return Ending.MEMORY_LIMIT
    return Ending.SIGNALLED if returncode is not None and returncode < 0 else Ending.EXITED


def _says_out_of_memory(stderr: str) -> bool:
    """Whether a message of the child's own says it ran out of memory. Indented lines are skipped: a traceback's
    source lines may quote `except MemoryError:` whatever the exception was."""
    return any(marker in line for line in stderr.splitlines() if not line[:1].isspace() for marker in _OOM_MARKERS)


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
        """Set the CPU and address-space rlimits (call it once the libraries the work needs are loaded).

        RLIMIT_CPU counts the process's CPU time since it started, so the limit is set above what starting,
        importing and (for a spare) waiting already used: the job gets its whole ``cpu_seconds``."""
        if self.limits.cpu_seconds is not None:
            cpu = int(self.limits.cpu_seconds) + math.ceil(_cpu_seconds_used())
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + _CPU_HARD_MARGIN_SECONDS))
        if self.limits.memory_bytes is not None:
            memory = int(self.limits.memory_bytes)
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    def send(self, message: Message) -> None:
        self._channel.write(json.dumps(message).encode() + b"\n")
        self._channel.flush()

    def finish(self, result: Message) -> NoReturn:
        """Send the result and exit at once: tearing down an interpreter with large libraries loaded takes
        a few hundred milliseconds, which the parent would wait for (it reaps the child before it answers)."""
        self.send(result)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(0)


def _cpu_seconds_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def enter_child(prepare: Callable[[], object] | None = None) -> ChildSide:
    """In the child, first: arrange to die with the parent, run ``prepare`` (load the libraries the work needs;
    a spare does it before its job exists), then wait for the job on stdin.

    A child whose parent closed stdin without a job (a spare the parent no longer needs) exits quietly.
    """
    arrange = kill_when_parent_dies()
    if arrange is not None:
        arrange()
    if prepare is not None:
        prepare()
    data = sys.stdin.buffer.read()
    if not data:
        os._exit(0)
    envelope = json.loads(data)
    if os.getppid() != int(envelope["parent_pid"]):  # the parent died before the request took effect
        os._exit(1)
    return ChildSide(envelope)
