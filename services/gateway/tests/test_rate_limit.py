"""Per-key rate limits counted in a real Valkey, shared by every gateway replica."""

import time
import uuid

import pytest
import redis

from libs.errors import ResourceExhausted
from services.gateway.auth import RateLimiter

pytestmark = pytest.mark.integration


def test_limit_is_per_tenant_and_shared_between_replicas(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    replica_a, replica_b = RateLimiter(client, per_minute=3), RateLimiter(client, per_minute=3)
    tenant, other = f"t-{uuid.uuid4().hex}", f"t-{uuid.uuid4().hex}"
    if time.time() % 60 > 58:  # stay inside one one-minute window
        time.sleep(60 - time.time() % 60 + 0.1)
    replica_a.check(tenant)
    replica_b.check(tenant)
    replica_a.check(tenant)
    with pytest.raises(ResourceExhausted) as caught:
        replica_b.check(tenant)
    assert caught.value.reason == "RATE_LIMITED"
    assert 0 < int(caught.value.metadata["retry_after_seconds"]) <= 60
    replica_a.check(other)  # another key has its own budget
