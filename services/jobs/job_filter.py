"""OperatorService's JobFilter: checked once, then turned into a parameterised WHERE clause.

Each condition is a fixed SQL fragment with a named parameter; nothing from the request is ever part of
the SQL text. The fragments are shaped for the indexes of migration 0007 (newest first over every job,
by state, by worker) and 0001 (by tenant).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, LiteralString

from google.protobuf import duration_pb2, timestamp_pb2
from pdfsmaller.jobs.v1 import jobs_service_pb2 as jobs_pb
from pdfsmaller.jobs.v1 import operator_service_pb2 as pb
from psycopg import sql

from libs import compression
from libs.errors import InvalidArgument

MAX_IDS = 10000
MAX_TEXT = 1024
_STATE_PREFIX = "JOB_STATE_"


@dataclass(frozen=True)
class JobSelection:
    """A validated JobFilter; empty fields select everything."""

    states: tuple[str, ...] = ()
    reason: str = ""
    tenant: str = ""
    worker_id: str = ""
    level: str = ""
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    not_updated_for_seconds: float | None = None
    ids: tuple[uuid.UUID, ...] = ()

    def where(self) -> tuple[sql.Composable, dict[str, Any]]:
        """The SQL condition (over table `jobs`, unaliased) and its parameters; `true` for no condition."""
        conditions: list[sql.Composable] = []
        params: dict[str, Any] = {}

        def add(fragment: LiteralString, name: str, value: Any) -> None:
            conditions.append(sql.SQL(fragment))
            params[name] = value

        if len(self.states) == 1:
            # Equality, not ANY: jobs_state_created then yields the rows in order, no sort.
            add("state = %(f_state)s", "f_state", self.states[0])
        elif self.states:
            add("state = ANY(%(f_states)s)", "f_states", list(self.states))
        if self.reason:
            add("error_reason = %(f_reason)s", "f_reason", self.reason)
        if self.tenant:
            add("tenant = %(f_tenant)s", "f_tenant", self.tenant)
        if self.worker_id:
            add("worker_id = %(f_worker)s", "f_worker", self.worker_id)
        if self.level:
            add("level = %(f_level)s", "f_level", self.level)
        if self.created_after is not None:
            add("created_at > %(f_created_after)s", "f_created_after", self.created_after)
        if self.created_before is not None:
            add("created_at < %(f_created_before)s", "f_created_before", self.created_before)
        if self.updated_after is not None:
            add("updated_at > %(f_updated_after)s", "f_updated_after", self.updated_after)
        if self.updated_before is not None:
            add("updated_at < %(f_updated_before)s", "f_updated_before", self.updated_before)
        if self.not_updated_for_seconds is not None:
            add(
                "updated_at <= now() - make_interval(secs => %(f_idle)s)",
                "f_idle",
                self.not_updated_for_seconds,
            )
        if self.ids:
            add("id = ANY(%(f_ids)s)", "f_ids", list(self.ids))
        return (sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true")), params


def state_name(state: int) -> str:
    """'FAILED' for JOB_STATE_FAILED."""
    return jobs_pb.JobState.Name(state).removeprefix(_STATE_PREFIX)


def _time(message: Any, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, field)
    return stamp.ToDatetime(tzinfo=UTC)


def _seconds(duration: duration_pb2.Duration) -> float:
    seconds = duration.ToTimedelta().total_seconds()
    if seconds < 0:
        raise InvalidArgument("INVALID_FILTER", "filter.not_updated_for must not be negative")
    return seconds


def parse_filter(
    message: pb.JobFilter,
    *,
    allowed_states: Collection[str] | None = None,
    default_states: tuple[str, ...] = (),
    refused_reason: str = "STATE_NOT_ALLOWED",
) -> JobSelection:
    """Check a JobFilter: states outside `allowed_states` (None: any) are INVALID_ARGUMENT with `refused_reason`;
    no states means `default_states`."""
    states: list[str] = []
    for value in message.states:
        if value == jobs_pb.JOB_STATE_UNSPECIFIED or value not in jobs_pb.JobState.values():
            raise InvalidArgument("INVALID_FILTER", "filter.states must name job states")
        name = state_name(value)
        if name not in states:
            states.append(name)
    if allowed_states is not None:
        refused = [name for name in states if name not in allowed_states]
        if refused:
            raise InvalidArgument(
                refused_reason,
                f"filter.states may hold only {', '.join(sorted(allowed_states))}, not {', '.join(refused)}",
            )
    for name in ("reason", "tenant", "worker_id", "level"):
        if len(getattr(message, name)) > MAX_TEXT:
            raise InvalidArgument("FIELD_TOO_LONG", f"filter.{name} is limited to {MAX_TEXT} characters")
    if message.level and message.level not in compression.LEVEL_NAMES:
        raise InvalidArgument("INVALID_LEVEL", compression.LEVEL_MESSAGE)
    if len(message.ids) > MAX_IDS:
        raise InvalidArgument("TOO_MANY_IDS", f"filter.ids holds at most {MAX_IDS} ids")
    try:
        ids = tuple(dict.fromkeys(uuid.UUID(value) for value in message.ids))
    except ValueError:
        raise InvalidArgument("INVALID_JOB_ID", "filter.ids must be job ids (UUIDs)") from None
    return JobSelection(
        states=tuple(states) or default_states,
        reason=message.reason,
        tenant=message.tenant,
        worker_id=message.worker_id,
        level=message.level,
        created_after=_time(message, "created_after"),
        created_before=_time(message, "created_before"),
        updated_after=_time(message, "updated_after"),
        updated_before=_time(message, "updated_before"),
        not_updated_for_seconds=_seconds(message.not_updated_for) if message.HasField("not_updated_for") else None,
        ids=ids,
    )
