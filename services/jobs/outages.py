"""When this replica could not reach PostgreSQL, so leases that lapsed meanwhile are not the job's fault.

While the database is away no worker can renew a lease, so a lease that ran
out then says nothing about the job or its worker. The repository reports
every query's outcome here; the sweeper asks for the last outage to hold
such leases for a grace period (workers renew or finish once they can) and
then requeues them without using an attempt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Outage:
    started: datetime
    ended: datetime


class DatabaseOutages:
    def __init__(self, clock: Callable[[], datetime] = _utc_now, merge_gap: timedelta = timedelta(minutes=1)) -> None:
        """Outages less than `merge_gap` apart count as one (a restart often ends with a stale connection
        failing once more), so the last outage still covers the whole time workers could not renew."""
        self._clock = clock
        self._merge_gap = merge_gap
        self._lock = threading.Lock()
        self._down_since: datetime | None = None
        self._last: Outage | None = None

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self) -> None:
        with self._lock:
            if self._down_since is None:
                self._down_since = self._clock()

    def succeeded(self) -> None:
        if self._down_since is None:  # the hot path: no lock while all is well
            return
        with self._lock:
            if self._down_since is not None:
                started = self._down_since
                if self._last is not None and started - self._last.ended < self._merge_gap:
                    started = self._last.started
                self._last = Outage(started, self._clock())
                self._down_since = None

    def last(self) -> Outage | None:
        """The most recent outage that has ended (None if none was seen)."""
        return self._last

    def now(self) -> datetime:
        return self._clock()
