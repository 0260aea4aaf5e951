"""One log line when Redis becomes unreachable and one when it is back, not one per request."""

from __future__ import annotations

import logging
import threading

from prometheus_client import Gauge


class OutageLog:
    """Tracks whether a Redis-backed feature (`what`) is in an outage, logging only the changes.

    The limiter and the quotas fail open when Redis is down: every request would otherwise log the
    same warning and drown the log during exactly the incident someone is reading it for.
    """

    def __init__(self, what: str, log: logging.Logger, up: Gauge | None = None) -> None:
        """`up`, when given, is set to 0 during an outage and 1 otherwise (assumed up until a call fails)."""
        self._what = what
        self._log = log
        self._lock = threading.Lock()
        self._down = False
        self._up = up
        if up is not None:
            up.set(1)

    @property
    def down(self) -> bool:
        return self._down

    def failed(self, error: BaseException) -> None:
        with self._lock:
            if self._down:
                return
            self._down = True
        if self._up is not None:
            self._up.set(0)
        self._log.warning(
            "%s unavailable (Redis: %s); requests allowed until it is back", self._what, type(error).__name__
        )

    def succeeded(self) -> None:
        if not self._down:  # the common case: no lock taken
            return
        with self._lock:
            if not self._down:
                return
            self._down = False
        if self._up is not None:
            self._up.set(1)
        self._log.info("%s available again", self._what)
