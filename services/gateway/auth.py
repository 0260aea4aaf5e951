"""API-key authentication: who is calling (tenant), what the key may do (scopes), and which key it is
(for the rate limits).

Two sources of keys: API_KEYS (`tenant:key`, a development bootstrap; such a key has every scope) and
the keys operators manage through ApiKeyService, which the jobs service checks (AuthenticateApiKey).
Its answers are cached per key, by the key's digest (the key itself is never kept nor logged): a good
answer until the `cache_until` the jobs service gives (a few seconds: how late a revocation is seen), a
refusal for NEGATIVE_CACHE_SECONDS, so a flood of one bad key costs PostgreSQL one lookup per interval.
Each cache holds at most `max_cached` keys (least recently used dropped first), the refusals apart, so
bad keys cannot push good ones out.
"""

from __future__ import annotations

import enum
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc
from pdfsmaller.jobs.v1 import api_keys_pb2 as keys_pb
from pdfsmaller.jobs.v1 import jobs_service_pb2_grpc as jobs_grpc

from libs.errors import PermissionDenied, Unauthenticated, from_rpc
from libs.named_secrets import NamedSecrets, secret_digest

ANONYMOUS_TENANT = "public"
API_KEY_HEADER = "x-api-key"
# The shape of the keys ApiKeyService makes (services/jobs/api_keys.py: `pdfs_<16 hex>_<43 base64url>`);
# anything else is refused here without asking the jobs service.
STORED_KEY_PREFIX = "pdfs_"
STORED_KEY_CHARS = len(STORED_KEY_PREFIX) + 16 + 1 + 43
NEGATIVE_CACHE_SECONDS = 2.0
# A good answer is reused at most this long whatever `cache_until` says (clocks of two hosts may disagree).
MAX_CACHE_SECONDS = 10.0
DEFAULT_MAX_CACHED = 10_000
DEFAULT_CHECK_TIMEOUT_SECONDS = 5.0


class Scope(enum.Enum):
    """What a key may do (ApiKeyScope): upload creates jobs; read gets, lists, watches and downloads
    them; delete cancels and deletes them."""

    UPLOAD = keys_pb.API_KEY_SCOPE_UPLOAD
    READ = keys_pb.API_KEY_SCOPE_READ
    DELETE = keys_pb.API_KEY_SCOPE_DELETE

    @property
    def label(self) -> str:
        return self.name.lower()


ALL_SCOPES = frozenset(Scope)
_SCOPES = {scope.value: scope for scope in Scope}


@dataclass(frozen=True)
class Caller:
    tenant: str
    # Names the caller's rate-limit budget: a short digest of the API key (never the key), or the
    # tenant in anonymous development mode.
    limiter_id: str
    scopes: frozenset[Scope] = ALL_SCOPES

    def require(self, scope: Scope) -> None:
        if scope not in self.scopes:
            raise PermissionDenied(
                "API_KEY_SCOPE_MISSING",
                f"this API key does not have the {scope.label} scope",
                metadata={"scope": scope.label},
            )


Value = TypeVar("Value")


class ExpiringCache(Generic[Value]):
    """At most `max_entries` values, each until its own expiry (a `clock` time); least recently used
    dropped first. Thread-safe."""

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self._max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, tuple[float, Value]] = OrderedDict()

    def get(self, key: bytes) -> Value | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: bytes, value: Value, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._lock:
            self._entries[key] = (self._clock() + seconds, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def _invalid() -> Unauthenticated:
    return Unauthenticated("API_KEY_INVALID", "the API key is not valid")


class Authenticator:
    """Maps the `x-api-key` metadata to a Caller.

    `anonymous` (default: no API_KEYS) is development mode: a call without a key is the anonymous
    tenant with every scope, reported by the health page; a call with a key is still checked.
    Otherwise (production always) every call needs a key. Without `jobs`, only API_KEYS are known.
    """

    def __init__(
        self,
        api_keys: Mapping[str, str],
        jobs: jobs_grpc.JobsServiceStub | None = None,
        *,
        anonymous: bool | None = None,
        check_timeout_seconds: float = DEFAULT_CHECK_TIMEOUT_SECONDS,
        max_cached: int = DEFAULT_MAX_CACHED,
        negative_cache_seconds: float = NEGATIVE_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._bootstrap = NamedSecrets(api_keys)
        self._jobs = jobs
        self._anonymous = not api_keys if anonymous is None else anonymous
        self._timeout = check_timeout_seconds
        self._negative_seconds = negative_cache_seconds
        self._wall_clock = wall_clock
        self._accepted: ExpiringCache[Caller] = ExpiringCache(max_cached, clock)
        self._refused: ExpiringCache[bool] = ExpiringCache(max_cached, clock)

    @property
    def enabled(self) -> bool:
        """Every call needs a key (false in anonymous development mode)."""
        return not self._anonymous

    def tenant_of(self, context: grpc.ServicerContext) -> str:
        return self.caller_of(context).tenant

    def caller_of(self, context: grpc.ServicerContext) -> Caller:
        presented = next((value for key, value in context.invocation_metadata() if key == API_KEY_HEADER), None)
        if not presented:
            if self._anonymous:
                return Caller(ANONYMOUS_TENANT, f"tenant:{ANONYMOUS_TENANT}")
            raise Unauthenticated("API_KEY_MISSING", f"send your API key in the {API_KEY_HEADER} header")
        key = str(presented)
        digest = secret_digest(key)
        # Redis key names (and dumps, and MONITOR) show this digest of the digest, never the key.
        limiter_id = "key:" + hashlib.sha256(b"ratelimit:" + digest).hexdigest()[:16]
        match = self._bootstrap.name_of(digest)
        if match is not None:
            return Caller(match, limiter_id)
        if self._jobs is None or len(key) != STORED_KEY_CHARS or not key.startswith(STORED_KEY_PREFIX):
            raise _invalid()
        return self._stored_key(key, digest, limiter_id)

    def _stored_key(self, key: str, digest: bytes, limiter_id: str) -> Caller:
        cached = self._accepted.get(digest)
        if cached is not None:
            return cached
        if self._refused.get(digest):
            raise _invalid()
        assert self._jobs is not None
        try:
            identity = self._jobs.AuthenticateApiKey(
                keys_pb.AuthenticateApiKeyRequest(api_key=key), timeout=self._timeout
            )
        except grpc.RpcError as error:
            if isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.UNAUTHENTICATED:
                self._refused.put(digest, True, self._negative_seconds)
                raise _invalid() from None
            # Not known to be bad: the caller may retry (503), and nothing is cached.
            raise from_rpc(error, "jobs") from None
        # A scope this gateway does not know yet grants nothing here.
        scopes = frozenset(_SCOPES[number] for number in identity.scopes if number in _SCOPES)
        caller = Caller(identity.tenant, limiter_id, scopes)
        seconds = identity.cache_until.ToNanoseconds() / 1e9 - self._wall_clock()
        self._accepted.put(digest, caller, min(seconds, MAX_CACHE_SECONDS))
        return caller
