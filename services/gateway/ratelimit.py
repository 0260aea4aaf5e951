"""Per-API-key rate limits over Redis (the `limits` library), with IETF RateLimit headers.

Each budget has a policy: a sustained quota per window (e.g. 100/hour) counted in a moving window
(an exact sliding log, so no boundary lets more than the quota through), plus an optional burst
window: at most `burst` requests back to back, one burst's worth coming back every
burst x window / quota seconds — the emission interval of a GCRA with that burst. Every replica
counts in the same Redis keys. The headers follow draft-ietf-httpapi-ratelimit-headers:
`RateLimit-Policy: "default";q=100;w=3600` and `RateLimit: "default";r=42;t=17`.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import redis
from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from prometheus_client import Gauge

from libs.errors import ResourceExhausted
from services.gateway.redis_outage import OutageLog

log = logging.getLogger(__name__)

Metadata = tuple[tuple[str, str], ...]
# Redis failures as the limits library raises them (unwrapped redis errors, or its own wrapper).
STORAGE_ERRORS = (redis.RedisError, StorageError)


class Budget(enum.Enum):
    """Which budget a call spends: polling must not use up the budget for uploads."""

    UPLOADS = "uploads"  # CreateJob and the calls that change a job
    READS = "reads"  # GetJob, ListJobs, WatchJob, GetJobResult, GetQuota


@dataclass(frozen=True)
class Window:
    """One counted window of a policy, named as in the headers."""

    name: str
    item: RateLimitItem

    @property
    def quota(self) -> int:
        return int(self.item.amount)

    @property
    def seconds(self) -> int:
        return int(self.item.get_expiry())


@dataclass(frozen=True)
class Policy:
    name: str
    # The sustained quota and its window, e.g. limits.parse("100/hour").
    limit: RateLimitItem
    # Requests allowed back to back; 0 (or >= the quota) means the whole quota may come at once.
    burst: int = 0

    def windows(self) -> tuple[Window, ...]:
        sustained = Window(self.name, self.limit)
        quota, seconds = int(self.limit.amount), int(self.limit.get_expiry())
        if not 0 < self.burst < quota:
            return (sustained,)
        burst_seconds = math.ceil(self.burst * seconds / quota)
        return (Window(f"{self.name}-burst", RateLimitItemPerSecond(self.burst, burst_seconds)), sustained)


@dataclass(frozen=True)
class WindowState:
    name: str
    quota: int
    window_seconds: int
    remaining: int
    # Seconds until a request in this window is allowed again (its oldest entry ages out).
    reset_seconds: int


@dataclass(frozen=True)
class Decision:
    allowed: bool
    states: tuple[WindowState, ...]
    # True when Redis could not be asked: allowed, and no RateLimit header (nothing is known).
    unknown: bool = False

    @property
    def retry_after_seconds(self) -> int:
        return max((s.reset_seconds for s in self.states if s.remaining <= 0), default=0)

    def headers(self) -> Metadata:
        policy = ", ".join(f'"{s.name}";q={s.quota};w={s.window_seconds}' for s in self.states)
        headers: list[tuple[str, str]] = [("ratelimit-policy", policy)]
        if not self.unknown:
            headers.append(
                ("ratelimit", ", ".join(f'"{s.name}";r={s.remaining};t={s.reset_seconds}' for s in self.states))
            )
        if not self.allowed:
            headers.append(("retry-after", str(self.retry_after_seconds)))
        return tuple(headers)


class LimitExceeded(ResourceExhausted):
    """RESOURCE_EXHAUSTED with response headers (Retry-After, RateLimit) for the client."""

    def __init__(self, reason: str, message: str, *, headers: Metadata, metadata: Mapping[str, str]) -> None:
        super().__init__(reason, message, metadata=metadata)
        self.headers = headers


class RateLimiter:
    """Moving-window limits per caller (a digest of the API key, never the key) and budget.

    Redis being down lets requests through, logged once per outage: losing the limiter must not
    take the whole API down; Envoy's per-client edge limit still applies.
    """

    def __init__(self, client: redis.Redis, policies: Mapping[Budget, Policy], redis_up: Gauge | None = None) -> None:
        """`redis_up`: a gauge set to 0 while Redis fails the limiter, 1 otherwise."""
        storage = RedisStorage("redis://", connection_pool=client.connection_pool, key_prefix="ratelimit")
        self._strategy = MovingWindowRateLimiter(storage)
        self._policies = dict(policies)
        self._outage = OutageLog("rate limiter", log, redis_up)

    def policy(self, budget: Budget) -> Policy:
        return self._policies[budget]

    def check(self, caller: str, budget: Budget) -> Decision:
        """Spend one request of `caller`'s `budget`; raises LimitExceeded (RATE_LIMITED) when none is left."""
        policy = self._policies[budget]
        try:
            decision = self._spend(caller, policy.windows())
        except STORAGE_ERRORS as error:
            self._outage.failed(error)
            return self._unknown(policy)
        self._outage.succeeded()
        if not decision.allowed:
            raise LimitExceeded(
                "RATE_LIMITED",
                f"rate limit {policy.name!r} exceeded ({_describe(policy)}); "
                f"retry after {decision.retry_after_seconds} s",
                headers=decision.headers(),
                metadata={"retry_after_seconds": str(decision.retry_after_seconds), "policy": policy.name},
            )
        return decision

    def peek(self, caller: str) -> tuple[WindowState, ...] | None:
        """Every budget's state for `caller` without spending anything; None when Redis is down."""
        windows = {w.name: w for p in self._policies.values() for w in p.windows()}  # shared policies once
        try:
            return tuple(self._state(caller, window) for window in windows.values())
        except STORAGE_ERRORS as error:
            self._outage.failed(error)
            return None

    def _spend(self, caller: str, windows: Sequence[Window]) -> Decision:
        # Look before spending: a request refused by one window must not use up another.
        before = [self._state(caller, window) for window in windows]
        if any(state.remaining <= 0 for state in before):
            return Decision(False, tuple(before))
        for window in windows:
            if not self._strategy.hit(window.item, caller):  # another replica took the last one
                return Decision(False, tuple(self._state(caller, w) for w in windows))
        return Decision(True, tuple(_spent(state) for state in before))

    def _state(self, caller: str, window: Window) -> WindowState:
        stats = self._strategy.get_window_stats(window.item, caller)
        # reset_time is when the oldest entry ages out (now + window for an empty window).
        reset = max(0.0, stats.reset_time - time.time())  # the library's own clock
        remaining = max(0, stats.remaining)
        return WindowState(
            name=window.name,
            quota=window.quota,
            window_seconds=window.seconds,
            remaining=remaining,
            # The limiter refuses until strictly after that moment: round up past it.
            reset_seconds=int(reset) + 1 if remaining == 0 else math.ceil(reset),
        )

    def _unknown(self, policy: Policy) -> Decision:
        states = tuple(WindowState(w.name, w.quota, w.seconds, w.quota, 0) for w in policy.windows())
        return Decision(True, states, unknown=True)


def _spent(state: WindowState) -> WindowState:
    """The state after one more request, known without asking Redis again."""
    reset = state.reset_seconds if state.remaining < state.quota else state.window_seconds
    return WindowState(state.name, state.quota, state.window_seconds, state.remaining - 1, reset)


def _describe(policy: Policy) -> str:
    text = f"{policy.limit.amount} per {policy.limit.get_expiry()} s"
    return f"{text}, bursts of {policy.burst}" if 0 < policy.burst < policy.limit.amount else text
