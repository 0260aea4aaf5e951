"""API-key authentication: who is calling (tenant) and with which key (for the rate limits)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from libs.errors import Unauthenticated

ANONYMOUS_TENANT = "public"
API_KEY_HEADER = "x-api-key"


@dataclass(frozen=True)
class Caller:
    tenant: str
    # Names the caller's rate-limit budget: a short digest of the API key (never the key), or the
    # tenant in anonymous development mode.
    limiter_id: str


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
        return self.caller_of(context).tenant

    def caller_of(self, context: grpc.ServicerContext) -> Caller:
        if not self._digests:
            return Caller(ANONYMOUS_TENANT, f"tenant:{ANONYMOUS_TENANT}")
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
        # Redis key names (and dumps, and MONITOR) show this digest of the digest, never the key.
        return Caller(match, "key:" + hashlib.sha256(b"ratelimit:" + digest).hexdigest()[:16])
