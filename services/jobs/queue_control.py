"""The queue's pause switch (PauseQueue / ResumeQueue), and why a worker's lease call got no job.

The switch is the one row of `queue_control`; the lease statement itself reads it (and the worker's
`draining`), so a pause holds from the moment it commits, on every replica, and running jobs finish.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.jobs.metrics import JobsMetrics
from services.jobs.statements import Statements

MAX_REASON_CHARS = 1024


@dataclass(frozen=True)
class QueueControlState:
    paused: bool
    reason: str
    paused_by: str
    paused_at: datetime | None


@dataclass(frozen=True)
class LeaseGate:
    """Why LeaseJob gives a worker nothing even when jobs are due."""

    paused: bool
    draining: bool


class QueueControl:
    def __init__(self, statements: Statements, metrics: JobsMetrics) -> None:
        self._db = statements
        self._metrics = metrics

    def pause(self, reason: str, paused_by: str) -> QueueControlState:
        """Pause (again: the reason and who paused are replaced, the pause time kept)."""
        return self._set(
            "UPDATE queue_control SET paused = true, reason = %s, paused_by = %s,"
            " paused_at = CASE WHEN paused THEN paused_at ELSE now() END"
            " RETURNING paused, reason, paused_by, paused_at",
            (reason, paused_by),
        )

    def resume(self) -> QueueControlState:
        return self._set(
            "UPDATE queue_control SET paused = false, reason = '', paused_by = '', paused_at = NULL"
            " RETURNING paused, reason, paused_by, paused_at"
        )

    def get(self) -> QueueControlState:
        return self._set("SELECT paused, reason, paused_by, paused_at FROM queue_control")

    def paused(self) -> bool:
        return self.get().paused

    def _set(self, query: str, params: tuple[str, ...] = ()) -> QueueControlState:
        (row,) = self._db.fetch(query, params)
        state = QueueControlState(**row)
        self._metrics.queue_paused.set(1 if state.paused else 0)
        return state

    def lease_gate(self, worker_id: str) -> LeaseGate:
        """Whether the queue is paused and whether this worker is draining, in one read."""
        (row,) = self._db.fetch(
            "SELECT (SELECT paused FROM queue_control) AS paused,"
            " EXISTS (SELECT FROM workers WHERE id = %s AND draining) AS draining",
            (worker_id,),
        )
        self._metrics.queue_paused.set(1 if row["paused"] else 0)
        return LeaseGate(paused=bool(row["paused"]), draining=bool(row["draining"]))
