"""An outage of a Redis-backed feature: logged once per change, and shown on its gauge."""

from __future__ import annotations

import logging

import limits
import pytest
import redis
from prometheus_client import CollectorRegistry, Gauge

from services.gateway.quotas import QuotaLimits, Quotas
from services.gateway.ratelimit import Budget, Policy, RateLimiter
from services.gateway.redis_outage import OutageLog


def _gauge() -> tuple[CollectorRegistry, Gauge]:
    registry = CollectorRegistry()
    return registry, Gauge("redis_up", "test", ["feature"], registry=registry)


def test_the_gauge_follows_the_outage(caplog: pytest.LogCaptureFixture) -> None:
    registry, gauge = _gauge()
    outage = OutageLog("feature", logging.getLogger("test.outage"), gauge.labels("f"))
    value = lambda: registry.get_sample_value("redis_up", {"feature": "f"})  # noqa: E731
    assert value() == 1  # assumed up until a call fails
    with caplog.at_level(logging.INFO, logger="test.outage"):
        outage.failed(redis.ConnectionError("refused"))
        outage.failed(redis.ConnectionError("refused"))
        assert value() == 0
        outage.succeeded()
        outage.succeeded()
        assert value() == 1
    assert [r.getMessage() for r in caplog.records] == [
        "feature unavailable (Redis: ConnectionError); requests allowed until it is back",
        "feature available again",
    ]


def test_the_rate_limiter_and_quotas_report_redis_down_on_the_gauge(closed_address: str) -> None:
    host, port = closed_address.rsplit(":", 1)
    unreachable = redis.Redis(host=host, port=int(port), socket_connect_timeout=0.2)
    registry, gauge = _gauge()
    limiter = RateLimiter(
        unreachable, dict.fromkeys(Budget, Policy("default", limits.parse("3/minute"))), gauge.labels("rate_limits")
    )
    quotas = Quotas(unreachable, QuotaLimits(files_per_day=1), redis_up=gauge.labels("quotas"))
    assert limiter.check("key:x", Budget.UPLOADS).allowed
    quotas.ensure_room("acme")
    assert registry.get_sample_value("redis_up", {"feature": "rate_limits"}) == 0
    assert registry.get_sample_value("redis_up", {"feature": "quotas"}) == 0
