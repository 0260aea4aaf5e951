"""API-key authentication and per-key rate limiting."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Mapping

import grpc
import redis

from libs.errors import ResourceExhausted, Unauthenticated

log = logging.getLogger(__name__)

ANONYMOUS_TENANT = "public"
API_KEY_HEADER = "x-api-key"


class Authenticator:
    """Maps the `x-api-key` metadata to a tenant.

    With no keys configured every caller is the anonymous tenant: the embedded
    development default, reported by the health page.
    """

    def __init__(self, api_keys: Mapping[str, str]) -> None:
        # Compare digests so the comparison time does not depend on the key's length.
        self._digests = {tenant: hashlib.sha256(key.encode()).digest() for tenant, key in api_keys.items()}

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def tenant_of(self, context: grpc.ServicerContext) -> str:
        if not self._digests:
            return ANONYMOUS_TENANT
        presented = next((value for key, value in context.invocation_metadata() if key == API_KEY_HEADER), None)
        if not presented:
            raise Unauthenticated("API_KEY_MISSING", f"send your API key in the {API_KEY_HEADER} header")
        digest = hashlib.sha256(str(presented).encode()).digest()
        match = None
        for tenant, expected in self._digests.items():
            if hmac.compare_digest(digest, expected):
                match = tenant
        if match is None:
            raise Unauthenticated("API_KEY_INVALID", "the API key is not valid")
        return match


class RateLimiter:
    """Fixed one-minute windows per tenant, counted in Redis so replicas share them.

    Redis being down lets requests through (logged): losing the limiter must not
    take the whole API down; Envoy's coarse local limit still applies.
    """

    def __init__(self, client: redis.Redis, per_minute: int) -> None:
        self._redis = client
        self._per_minute = per_minute

    def check(self, tenant: str) -> None:
        window = int(time.time() // 60)
        key = f"ratelimit:{tenant}:{window}"
        try:
            pipe = self._redis.pipeline()
            pipe.incr(key)
            pipe.expire(key, 120)
            count = int(pipe.execute()[0])
        except redis.RedisError:
            log.warning("rate limiter unavailable; request allowed", exc_info=True)
            return
        if count > self._per_minute:
            raise ResourceExhausted(
                "RATE_LIMITED",
                f"more than {self._per_minute} requests this minute; retry after the minute ends",
                metadata={"retry_after_seconds": str(60 - int(time.time()) % 60)},
            )
