"""Per-tenant daily upload quotas counted in a real Valkey."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import redis

from services.gateway.quotas import QuotaLimits, Quotas
from services.gateway.ratelimit import LimitExceeded

pytestmark = pytest.mark.integration

NOON = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def _tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def _quotas(redis_url: str, when: dt.datetime = NOON, **limits: int) -> Quotas:
    return Quotas(redis.Redis.from_url(redis_url), QuotaLimits(**limits), clock=lambda: when)


def test_files_per_day_refused_with_what_and_when(redis_url: str) -> None:
    quotas, tenant = _quotas(redis_url, files_per_day=2), _tenant()
    quotas.reserve(tenant, 10)
    quotas.reserve(tenant, 10)
    with pytest.raises(LimitExceeded) as caught:
        quotas.reserve(tenant, 10)
    refused = caught.value
    assert (refused.reason, refused.code.name) == ("QUOTA_EXCEEDED", "RESOURCE_EXHAUSTED")
    assert refused.metadata == {
        "quota": "files",
        "limit": "2",
        "used": "2",
        "reset_time": "2026-12-02T00:00:00Z",
        "retry_after_seconds": "43201",
    }
    assert dict(refused.headers) == {"retry-after": "43201"}
    assert "2026-12-02T00:00:00Z" in refused.message
    with pytest.raises(LimitExceeded):
        quotas.ensure_room(tenant)  # before the next upload's body is even read
    usage = quotas.usage(tenant)
    assert (usage.files, usage.bytes) == (2, 20)


def test_bytes_per_day_counts_the_upload_that_would_cross_it(redis_url: str) -> None:
    quotas, tenant = _quotas(redis_url, bytes_per_day=100), _tenant()
    quotas.reserve(tenant, 60)
    with pytest.raises(LimitExceeded) as caught:
        quotas.reserve(tenant, 41)
    assert (caught.value.metadata["quota"], caught.value.metadata["used"]) == ("bytes", "60")
    quotas.reserve(tenant, 40)  # exactly the limit is allowed
    assert quotas.usage(tenant).bytes == 100


def test_refund_gives_the_upload_back_once(redis_url: str) -> None:
    quotas, tenant = _quotas(redis_url, files_per_day=1), _tenant()
    reservation = quotas.reserve(tenant, 5)
    reservation.refund()
    reservation.refund()  # a second refund is a no-op, not a negative count
    assert (quotas.usage(tenant).files, quotas.usage(tenant).bytes) == (0, 0)
    quotas.reserve(tenant, 5)


def test_a_new_utc_day_starts_from_zero(redis_url: str) -> None:
    tenant = _tenant()
    _quotas(redis_url, files_per_day=1).reserve(tenant, 1)
    tomorrow = _quotas(redis_url, NOON + dt.timedelta(days=1), files_per_day=1)
    assert tomorrow.usage(tenant).files == 0
    tomorrow.reserve(tenant, 1)


def test_unlimited_counts_nothing(redis_url: str) -> None:
    quotas, tenant = _quotas(redis_url), _tenant()
    quotas.reserve(tenant, 5)
    quotas.ensure_room(tenant)
    assert quotas.usage(tenant).files == 0


def test_redis_down_lets_uploads_through(closed_address: str) -> None:
    host, port = closed_address.rsplit(":", 1)
    unreachable = redis.Redis(host=host, port=int(port), socket_connect_timeout=0.2)
    quotas = Quotas(unreachable, QuotaLimits(files_per_day=1))
    quotas.ensure_room("acme")
    quotas.reserve("acme", 1).refund()
    quotas.reserve("acme", 1)
