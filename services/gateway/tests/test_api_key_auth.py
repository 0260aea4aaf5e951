"""The gateway's API-key checks without servers: API_KEYS, keys checked by a fake jobs service and cached
by digest, refusals cached briefly and bounded, the jobs service down, and the scope each RPC needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, fields
from unittest import mock

import grpc
import pytest
from google.protobuf import timestamp_pb2
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.jobs.v1 import api_keys_pb2 as keys_pb
from prometheus_client import CollectorRegistry

from libs.errors import PermissionDenied, ServiceError, Unauthenticated
from services.gateway.auth import (
    ALL_SCOPES,
    ANONYMOUS_TENANT,
    MAX_CACHE_SECONDS,
    NEGATIVE_CACHE_SECONDS,
    Authenticator,
    Scope,
)
from services.gateway.security_events import SecurityEvents
from services.gateway.servicer import Dependencies, GatewayServicer
from services.gateway.tests.upload_fakes import FakeRpcError, upload_messages

BOOTSTRAP_KEY = "acme-bootstrap-key-0123456789"
STORED_KEY = "pdfs_0123456789abcdef_" + "s" * 43
OTHER_KEY = "pdfs_fedcba9876543210_" + "t" * 43
START = 1_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class FakeKeyChecks:
    """JobsService.AuthenticateApiKey as the jobs service answers it; counts the calls."""

    def __init__(self, clock: Clock, cache_seconds: float = 5.0) -> None:
        self.clock = clock
        self.cache_seconds = cache_seconds
        self.known: dict[str, tuple[str, list[int]]] = {STORED_KEY: ("acme", [keys_pb.API_KEY_SCOPE_READ])}
        self.down = False
        self.calls: list[str] = []

    def AuthenticateApiKey(self, request: keys_pb.AuthenticateApiKeyRequest, timeout: float) -> keys_pb.ApiKeyIdentity:
        self.calls.append(request.api_key)
        if self.down:
            raise FakeRpcError(grpc.StatusCode.UNAVAILABLE)
        if request.api_key not in self.known:
            raise FakeRpcError(grpc.StatusCode.UNAUTHENTICATED)
        tenant, scopes = self.known[request.api_key]
        until = timestamp_pb2.Timestamp()
        until.FromNanoseconds(int((self.clock() + self.cache_seconds) * 1e9))
        return keys_pb.ApiKeyIdentity(key_id=request.api_key[5:21], tenant=tenant, scopes=scopes, cache_until=until)


def _context(key: str | None) -> mock.Mock:
    context = mock.Mock()
    context.invocation_metadata.return_value = (("x-api-key", key),) if key is not None else ()
    context.peer.return_value = "ipv4:10.1.2.3:41000"
    return context


def _auth(checks: FakeKeyChecks, clock: Clock, **options: object) -> Authenticator:
    return Authenticator({"acme": BOOTSTRAP_KEY}, checks, clock=clock, wall_clock=clock, **options)  # type: ignore[arg-type]


def _refused(auth: Authenticator, key: str | None) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        auth.caller_of(_context(key))
    return caught.value


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def checks(clock: Clock) -> FakeKeyChecks:
    return FakeKeyChecks(clock)


def test_a_bootstrap_key_has_every_scope_and_asks_nobody(checks: FakeKeyChecks, clock: Clock) -> None:
    caller = _auth(checks, clock).caller_of(_context(BOOTSTRAP_KEY))
    assert (caller.tenant, caller.scopes) == ("acme", ALL_SCOPES)
    assert BOOTSTRAP_KEY not in caller.limiter_id
    assert checks.calls == []


def test_a_stored_key_is_asked_once_then_cached_until_the_jobs_service_says(
    checks: FakeKeyChecks, clock: Clock
) -> None:
    auth = _auth(checks, clock)
    caller = auth.caller_of(_context(STORED_KEY))
    assert (caller.tenant, caller.scopes) == ("acme", frozenset({Scope.READ}))
    assert caller.limiter_id.startswith("key:")
    assert STORED_KEY not in caller.limiter_id
    clock.now += 4.9
    assert auth.caller_of(_context(STORED_KEY)) == caller
    assert len(checks.calls) == 1
    # Revoked meanwhile: seen once the answer's cache_until has passed.
    del checks.known[STORED_KEY]
    clock.now += 0.2
    assert _refused(auth, STORED_KEY).reason == "API_KEY_INVALID"
    assert len(checks.calls) == 2


def test_a_long_cache_until_is_capped(checks: FakeKeyChecks, clock: Clock) -> None:
    checks.cache_seconds = 3600
    auth = _auth(checks, clock)
    auth.caller_of(_context(STORED_KEY))
    clock.now += MAX_CACHE_SECONDS + 0.1
    auth.caller_of(_context(STORED_KEY))
    assert len(checks.calls) == 2


def test_a_refusal_is_cached_briefly(checks: FakeKeyChecks, clock: Clock) -> None:
    auth = _auth(checks, clock)
    for _ in range(50):
        assert _refused(auth, OTHER_KEY).reason == "API_KEY_INVALID"
    assert checks.calls == [OTHER_KEY]
    # Created meanwhile: accepted once the refusal has expired.
    checks.known[OTHER_KEY] = ("globex", [keys_pb.API_KEY_SCOPE_UPLOAD])
    clock.now += NEGATIVE_CACHE_SECONDS + 0.1
    assert auth.caller_of(_context(OTHER_KEY)).tenant == "globex"


def test_the_caches_are_bounded_and_bad_keys_do_not_push_good_ones_out(checks: FakeKeyChecks, clock: Clock) -> None:
    auth = _auth(checks, clock, max_cached=3)
    auth.caller_of(_context(STORED_KEY))
    bad_keys = [f"pdfs_{n:016x}_" + "b" * 43 for n in range(1, 11)]
    for key in bad_keys:
        _refused(auth, key)
    assert len(auth._refused) == 3  # the bound is what this test is about
    _refused(auth, bad_keys[0])  # dropped from the cache: asked again
    assert checks.calls.count(bad_keys[0]) == 2
    auth.caller_of(_context(STORED_KEY))
    assert checks.calls.count(STORED_KEY) == 1


def test_jobs_unreachable_is_unavailable_not_a_refusal_and_not_cached(checks: FakeKeyChecks, clock: Clock) -> None:
    auth = _auth(checks, clock)
    checks.down = True
    refused = _refused(auth, STORED_KEY)
    assert refused.code == grpc.StatusCode.UNAVAILABLE
    assert not isinstance(refused, Unauthenticated)
    checks.down = False
    assert auth.caller_of(_context(STORED_KEY)).tenant == "acme"
    # A key cached before the outage keeps working through it.
    checks.down = True
    assert auth.caller_of(_context(STORED_KEY)).tenant == "acme"


def test_keys_not_shaped_like_stored_keys_are_refused_without_asking(checks: FakeKeyChecks, clock: Clock) -> None:
    auth = _auth(checks, clock)
    for key in ("nope", "pdfs_short", STORED_KEY + "x", "x" + STORED_KEY[1:]):
        assert _refused(auth, key).reason == "API_KEY_INVALID"
    assert checks.calls == []


def test_anonymous_mode_still_checks_a_presented_key(checks: FakeKeyChecks, clock: Clock) -> None:
    auth = Authenticator({}, checks, clock=clock, wall_clock=clock)  # type: ignore[arg-type]
    assert not auth.enabled
    assert auth.caller_of(_context(None)).tenant == ANONYMOUS_TENANT
    assert auth.caller_of(_context(STORED_KEY)).scopes == frozenset({Scope.READ})
    assert _refused(auth, OTHER_KEY).reason == "API_KEY_INVALID"


def test_without_anonymous_mode_a_key_is_needed_even_with_api_keys_empty(checks: FakeKeyChecks, clock: Clock) -> None:
    auth = Authenticator({}, checks, anonymous=False, clock=clock, wall_clock=clock)  # type: ignore[arg-type]
    assert auth.enabled
    assert _refused(auth, None).reason == "API_KEY_MISSING"
    assert auth.caller_of(_context(STORED_KEY)).tenant == "acme"


def test_scopes_this_gateway_does_not_know_grant_nothing(checks: FakeKeyChecks, clock: Clock) -> None:
    checks.known[OTHER_KEY] = ("acme", [keys_pb.API_KEY_SCOPE_UPLOAD, 99])
    assert _auth(checks, clock).caller_of(_context(OTHER_KEY)).scopes == frozenset({Scope.UPLOAD})


# --- each public RPC needs its scope -----------------------------------------------------------------

RPCS: dict[str, tuple[Scope, Callable[[GatewayServicer, mock.Mock], object]]] = {
    "CreateJob": (Scope.UPLOAD, lambda s, c: s.CreateJob(iter(upload_messages([b"%PDF-1.7\n"])), c)),
    "GetJob": (Scope.READ, lambda s, c: s.GetJob(public.GetJobRequest(id="j"), c)),
    "ListJobs": (Scope.READ, lambda s, c: s.ListJobs(public.ListJobsRequest(), c)),
    "WatchJob": (Scope.READ, lambda s, c: list(s.WatchJob(public.WatchJobRequest(id="j"), c))),
    "GetJobResult": (Scope.READ, lambda s, c: list(s.GetJobResult(public.GetJobResultRequest(id="j"), c))),
    "CancelJob": (Scope.DELETE, lambda s, c: s.CancelJob(public.CancelJobRequest(id="j"), c)),
    "DeleteJob": (Scope.DELETE, lambda s, c: s.DeleteJob(public.DeleteJobRequest(id="j"), c)),
}


@pytest.mark.parametrize("rpc", sorted(RPCS))
def test_each_rpc_needs_its_scope(rpc: str, checks: FakeKeyChecks, clock: Clock) -> None:
    scope, call = RPCS[rpc]
    checks.known[OTHER_KEY] = ("acme", [other.value for other in Scope if other != scope])
    required = {f.name: mock.Mock() for f in fields(Dependencies) if f.default is MISSING}
    registry = CollectorRegistry()
    deps = {
        **required,
        "authenticator": _auth(checks, clock),
        "security_events": SecurityEvents(registry),
        "max_upload_bytes": 10**6,
        "call_timeout_seconds": 5.0,
    }
    servicer = GatewayServicer(Dependencies(**deps), registry)
    with pytest.raises(PermissionDenied) as refused:
        call(servicer, _context(OTHER_KEY))
    assert (refused.value.reason, refused.value.metadata) == ("API_KEY_SCOPE_MISSING", {"scope": scope.name.lower()})
    # A security event, counted under the missing scope.
    events = {
        reason: registry.get_sample_value(
            "pdfsmaller_gateway_security_events_total", {"event": "permission_denied", "reason": reason}
        )
        for reason in ("upload", "read", "delete")
    }
    assert events == {other.label: float(other == scope) for other in Scope}
    # Refused before anything was asked or spent.
    for name in ("jobs", "storage", "scanner", "rate_limiter", "quotas"):
        assert getattr(deps[name], "mock_calls", []) == [], name
