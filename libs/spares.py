"""Warm spares: sandboxed children (libs/sandbox.py) started before their jobs exist, so a job does not wait for
a fresh interpreter to start and import its libraries.

A pool keeps ``size`` children of one module waiting (one per worker thread that takes from it). ``take`` hands
out a waiting child that is still alive, or starts one on the spot when none is, and has the pool start the next
at once. A child still runs exactly one job and is never reused: a spare only moves its start earlier. Its limits
are set when its job arrives (``sandbox.enter_child``), so waiting and importing count against neither the job's
CPU limit nor its wall-clock timeout.

The spares are started by the pool's own thread, which lives until ``close``: a child dies with the thread that
started it (libs/parent_death.py), so no worker thread's end can kill a spare another thread took. ``close`` kills
the waiting spares and ends that thread, which also ends any child it started that is still running a job (past
a stop's grace period, its lease expires and it is retried elsewhere); nothing is left behind.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path

from libs import sandbox
from libs.sandbox import StartedChild

log = logging.getLogger(__name__)

# After a child failed to start, how long before the pool tries again (a missing interpreter must not spin).
RESTART_BACKOFF_SECONDS = 1.0


class SparePool:
    """``size`` started children of ``python -m module``, waiting for their jobs; safe to share between threads."""

    def __init__(
        self, module: str, size: int, *, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        if size < 1:
            raise ValueError(f"a spare pool needs at least one spare, not {size}")
        self.module = module
        self.size = size
        self._env = env
        self._cwd = cwd
        self._waiting: list[StartedChild] = []
        self._changed = threading.Condition()
        self._closed = False
        self._starter = threading.Thread(target=self._keep_full, name=f"spares-{module}", daemon=True)
        # Taken spares and children started on the spot, for tests and the benchmark.
        self.warm_taken = 0
        self.cold_started = 0

    def start(self) -> None:
        """Start the pool's thread, which starts the spares and replaces each one taken."""
        self._starter.start()

    def take(self) -> StartedChild:
        """A waiting spare that is still alive (dead ones are dropped and replaced), else a child started now;
        either way the pool starts a replacement at once. The caller runs one job in it (sandbox.run_started)."""
        with self._changed:
            child = self._pop_alive()
            if child is not None:
                self.warm_taken += 1
            else:
                self.cold_started += 1
            self._changed.notify_all()
        if child is not None:
            return child
        # No spare (the pool is closed, or its spares are all in use or died): this thread starts its own.
        return sandbox.start_child(self.module, env=self._env, cwd=self._cwd)

    def waiting_pids(self) -> list[int]:
        with self._changed:
            return [child.pid for child in self._waiting]

    def close(self) -> None:
        """Kill the waiting spares and end the pool's thread; a later ``take`` starts a child on the spot."""
        with self._changed:
            self._closed = True
            waiting, self._waiting = self._waiting, []
            self._changed.notify_all()
        for child in waiting:
            child.kill()
        if self._starter.is_alive():
            self._starter.join()

    def _pop_alive(self) -> StartedChild | None:
        """The oldest waiting spare still alive (the most likely to have finished importing); dead ones are
        reaped on the way. Bounded: each pass removes one of at most ``size`` spares."""
        while self._waiting:
            child = self._waiting.pop(0)
            if child.alive():
                return child
            log.warning("a spare %s child (pid %d) died while waiting; replacing it", self.module, child.pid)
            child.kill()
        return None

    def _keep_full(self) -> None:
        """The pool's thread: start a spare whenever fewer than ``size`` wait, until closed."""
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._closed or len(self._waiting) < self.size)
                if self._closed:
                    return
            child = self._start_one()
            if child is None:
                with self._changed:
                    self._changed.wait_for(lambda: self._closed, timeout=RESTART_BACKOFF_SECONDS)
                continue
            with self._changed:
                if self._closed:
                    child.kill()  # closed while it started
                    return
                self._waiting.append(child)

    def _start_one(self) -> StartedChild | None:
        try:
            return sandbox.start_child(self.module, env=self._env, cwd=self._cwd)
        except OSError:
            log.exception("could not start a spare %s child", self.module)
            return None
