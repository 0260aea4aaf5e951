"""Per-tenant daily upload quotas (files and bytes per UTC day), counted in Redis.

An upload reserves its file and bytes atomically once its size is known (so concurrent uploads
cannot overshoot), and the reservation is refunded when the upload is then refused or fails, or
turns out to be an idempotent retry: only accepted uploads count. Redis being down lets uploads
through (logged once per outage), like the rate limiter.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

import redis
from prometheus_client import Gauge

from libs.errors import Unavailable
from services.gateway.ratelimit import LimitExceeded
from services.gateway.redis_outage import OutageLog

log = logging.getLogger(__name__)

# Counters outlive their day a little, so a refund just after midnight still finds its key.
KEY_TTL_SECONDS = 2 * 86400

# KEYS[1] the tenant's day hash; ARGV: files limit, bytes limit (0 = unlimited), size, ttl.
# Returns {1, files, bytes} once charged, or {0, files, bytes} when it would exceed a limit.
_RESERVE = """
local files = tonumber(redis.call('HGET', KEYS[1], 'files') or '0')
local bytes = tonumber(redis.call('HGET', KEYS[1], 'bytes') or '0')
local max_files, max_bytes, size = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if (max_files > 0 and files + 1 > max_files) or (max_bytes > 0 and bytes + size > max_bytes) then
  return {0, files, bytes}
end
files = redis.call('HINCRBY', KEYS[1], 'files', 1)
bytes = redis.call('HINCRBY', KEYS[1], 'bytes', size)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return {1, files, bytes}
"""


@dataclass(frozen=True)
class QuotaLimits:
    # 0 = unlimited.
    files_per_day: int = 0
    bytes_per_day: int = 0

    @property
    def unlimited(self) -> bool:
        return not (self.files_per_day or self.bytes_per_day)


@dataclass(frozen=True)
class QuotaUsage:
    limits: QuotaLimits
    files: int
    bytes: int
    reset_time: dt.datetime

    def exceeded_by(self, files: int, size: int) -> str | None:
        """ "files" or "bytes" when `files` more files of `size` bytes would go over a limit."""
        if self.limits.files_per_day and self.files + files > self.limits.files_per_day:
            return "files"
        if self.limits.bytes_per_day and self.bytes + size > self.limits.bytes_per_day:
            return "bytes"
        return None


class Reservation:
    """One upload's charge; `refund()` gives it back (at most once)."""

    def __init__(self, refund: Callable[[], None] | None) -> None:
        self._refund = refund

    def refund(self) -> None:
        refund, self._refund = self._refund, None
        if refund is not None:
            refund()


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Quotas:
    def __init__(
        self,
        client: redis.Redis,
        limits: QuotaLimits,
        clock: Callable[[], dt.datetime] = utc_now,
        redis_up: Gauge | None = None,
    ) -> None:
        """`redis_up`: a gauge set to 0 while Redis fails the quotas, 1 otherwise."""
        self._redis = client
        self._limits = limits
        self._clock = clock
        self._reserve = client.register_script(_RESERVE)
        self._outage = OutageLog("upload quotas", log, redis_up)

    @property
    def limits(self) -> QuotaLimits:
        return self._limits

    def usage(self, tenant: str) -> QuotaUsage:
        """Today's usage; Redis down is DEPENDENCY_UNAVAILABLE here (nothing to show)."""
        now = self._clock()
        try:
            counts = self._redis.hmget(_key(tenant, now), ["files", "bytes"])
        except redis.RedisError as error:
            self._outage.failed(error)
            raise Unavailable(
                "DEPENDENCY_UNAVAILABLE",
                "quota counters are unavailable; retry later",
                metadata={"dependency": "redis"},
            ) from None
        self._outage.succeeded()
        files, size = (int(value or 0) for value in counts)
        return QuotaUsage(self._limits, files, size, _next_midnight(now))

    def ensure_room(self, tenant: str) -> None:
        """Before an upload is received: refuse at once when today's files or bytes are used up."""
        if self._limits.unlimited:
            return
        try:
            usage = self.usage(tenant)
        except Unavailable:
            return  # fail open; reserve() is the one that counts
        exceeded = usage.exceeded_by(1, 1 if self._limits.bytes_per_day else 0)
        if exceeded:
            raise quota_exceeded(usage, exceeded, self._clock())

    def reserve(self, tenant: str, size: int) -> Reservation:
        """Charge one file of `size` bytes to today, or raise QUOTA_EXCEEDED."""
        if self._limits.unlimited:
            return Reservation(None)
        now = self._clock()
        key = _key(tenant, now)
        try:
            charged, files, used = self._reserve(
                keys=[key],
                args=[self._limits.files_per_day, self._limits.bytes_per_day, size, KEY_TTL_SECONDS],
            )
        except redis.RedisError as error:
            self._outage.failed(error)
            return Reservation(None)
        self._outage.succeeded()
        if not charged:
            usage = QuotaUsage(self._limits, int(files), int(used), _next_midnight(now))
            raise quota_exceeded(usage, usage.exceeded_by(1, size) or "files", now)
        return Reservation(lambda: self._refund(key, size))

    def _refund(self, key: str, size: int) -> None:
        try:
            pipe = self._redis.pipeline()
            pipe.hincrby(key, "files", -1)
            pipe.hincrby(key, "bytes", -size)
            pipe.execute()
        except redis.RedisError:
            # The tenant is charged for an upload that did not count: say so, it is theirs to ask back.
            log.warning("could not refund a quota reservation of %d bytes", size, exc_info=True)


def quota_exceeded(usage: QuotaUsage, exceeded: str, now: dt.datetime) -> LimitExceeded:
    limit = usage.limits.files_per_day if exceeded == "files" else usage.limits.bytes_per_day
    used = usage.files if exceeded == "files" else usage.bytes
    unit = "files" if exceeded == "files" else "bytes"
    reset = usage.reset_time.isoformat().replace("+00:00", "Z")
    retry_after = str(max(1, int((usage.reset_time - now).total_seconds()) + 1))
    return LimitExceeded(
        "QUOTA_EXCEEDED",
        f"the daily upload quota of {limit} {unit} is used up ({used} used); it resets at {reset}",
        headers=(("retry-after", retry_after),),
        metadata={
            "quota": exceeded,
            "limit": str(limit),
            "used": str(used),
            "reset_time": reset,
            "retry_after_seconds": retry_after,
        },
    )


def _key(tenant: str, now: dt.datetime) -> str:
    return f"quota:{tenant}:{now.astimezone(dt.UTC).strftime('%Y%m%d')}"


def _next_midnight(now: dt.datetime) -> dt.datetime:
    today = now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + dt.timedelta(days=1)
