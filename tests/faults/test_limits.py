"""Rate limits and quotas, end to end: the RateLimit headers a REST client sees through the real Envoy,
Retry-After that is right, a daily quota refused and shown, and the boundary burst figure.

A gateway of its own beside the session stack (tests/plugins/stack.py `gateway_beside`) with small
limits and fresh API keys, an Envoy from `envoy_factory` in front.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import limits
import pytest
import redis
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.gateway.v1 import gateway_service_pb2_grpc as public_grpc

from devtools.stack.stack import Stack
from services.gateway.ratelimit import Budget, LimitExceeded, Policy, RateLimiter
from services.scanner.tests import pdfs
from tests.e2e_client import Reply, RestClient
from tests.plugins.figures import Figures
from tests.plugins.stack import gateway_beside, stored_objects

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent.parent / "data"
GATEWAY_DOMAIN = "gateway.pdfsmaller"
LIMITS = {"RATE_LIMIT": "3/minute", "RATE_LIMIT_BURST": "0", "RATE_LIMIT_READ": "4/minute"}
LIMITS |= {"RATE_LIMIT_READ_BURST": "0", "QUOTA_FILES_PER_DAY": "1"}


@contextmanager
def _edge(stack: Stack, envoy_factory: Callable[..., str], **env: str) -> Iterator[tuple[str, str]]:
    """Envoy's URL in front of a gateway with `env`, and a fresh API key of a fresh tenant."""
    run = uuid.uuid4().hex[:12]
    tenant, key = f"limits-{run}", f"limits-key-{run}-0123456789"
    with gateway_beside(stack, API_KEYS=f"{tenant}:{key}", **env) as gateway:
        yield envoy_factory(gateway.address), key


def _state(reply: Reply) -> tuple[str, int, int]:
    """(policy, remaining, reset) from a reply's RateLimit header."""
    match = re.fullmatch(r'"([a-z-]+)";r=(\d+);t=(\d+)', reply.headers.get("ratelimit", ""))
    assert match, reply.headers
    return match.group(1), int(match.group(2)), int(match.group(3))


def test_rate_limit_headers_on_success_and_429_through_envoy(
    stack: Stack, envoy_factory: Callable[..., str], figures: Figures
) -> None:
    with _edge(stack, envoy_factory, **LIMITS) as (url, key):
        client = RestClient(url, key)
        polls = [client.request("GET", "/v1/jobs") for _ in range(4)]
        limited = client.request("GET", "/v1/jobs")
        delete = client.request("DELETE", f"/v1/jobs/{uuid.uuid4()}")  # the other budget is untouched
        health = client.request("GET", "/v1/health")

    assert [reply.status for reply in polls] == [200] * 4, [reply.body for reply in polls]
    for reply in polls:
        assert reply.headers["ratelimit-policy"] == '"read";q=4;w=60'
    assert [_state(reply)[:2] for reply in polls] == [("read", 3), ("read", 2), ("read", 1), ("read", 0)]
    assert _state(polls[0])[2] == 60

    info = limited.assert_error(429, 8, "RATE_LIMITED", GATEWAY_DOMAIN)
    retry_after = int(limited.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert info["metadata"]["retry_after_seconds"] == str(retry_after)
    assert limited.headers["ratelimit-policy"] == '"read";q=4;w=60'
    assert _state(limited) == ("read", 0, retry_after)

    assert delete.status == 404, delete.body  # JOB_NOT_FOUND, counted in "default", not refused
    assert delete.headers["ratelimit-policy"] == '"default";q=3;w=60'
    assert health.status == 200
    assert "ratelimit" not in health.headers  # health needs no key and is not counted
    figures.add("rate limit headers", f"present on 4 of 4 successes and on the 429 (Retry-After {retry_after} s)")


def test_grpc_clients_get_the_headers_as_metadata(stack: Stack) -> None:
    run = uuid.uuid4().hex[:12]
    key = f"grpc-key-{run}-0123456789"
    env = {"API_KEYS": f"grpc-{run}:{key}", "RATE_LIMIT_READ": "1/minute", "RATE_LIMIT_READ_BURST": "0"}
    with gateway_beside(stack, **env) as gateway, grpc.insecure_channel(gateway.address) as channel:
        stub = public_grpc.GatewayServiceStub(channel)
        metadata = (("x-api-key", key),)
        _, call = stub.GetQuota.with_call(public.GetQuotaRequest(), metadata=metadata, timeout=10)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListJobs(public.ListJobsRequest(), metadata=metadata, timeout=10)
    initial = dict(call.initial_metadata())
    assert (initial["ratelimit-policy"], initial["ratelimit"]) == ('"read";q=1;w=60', '"read";r=0;t=60')
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailing = dict(error.trailing_metadata() or ())
    assert 1 <= int(trailing["retry-after"]) <= 60
    assert trailing["ratelimit"] == f'"read";r=0;t={trailing["retry-after"]}'


def test_retry_after_is_right_through_envoy(stack: Stack, envoy_factory: Callable[..., str]) -> None:
    with _edge(stack, envoy_factory, RATE_LIMIT_READ="2/3second", RATE_LIMIT_READ_BURST="0") as (url, key):
        client = RestClient(url, key)
        for _ in range(2):
            assert client.request("GET", "/v1/jobs").status == 200
        limited = client.request("GET", "/v1/jobs")
        assert limited.status == 429, limited.body
        retry_after = int(limited.headers["retry-after"])
        assert 1 <= retry_after <= 3
        time.sleep(retry_after)
        again = client.request("GET", "/v1/jobs")
    assert again.status == 200, again.body


def _inputs(stack: Stack) -> set[str]:
    """Uploads in storage (the worker adds outputs meanwhile)."""
    return {name for name in stored_objects(stack) if name.startswith("inputs/")}


def test_daily_quota_refused_and_shown(stack: Stack, envoy_factory: Callable[..., str], figures: Figures) -> None:
    source = (DATA / "pypdf__libreoffice-form.pdf").read_bytes()
    env = {**LIMITS, "RATE_LIMIT": "100/minute", "RATE_LIMIT_READ": "1000/minute"}
    with _edge(stack, envoy_factory, **env) as (url, key):
        client = RestClient(url, key)
        # Refused after it was stored and charged (the scan): refunded, so it must not eat the quota.
        launch = client.upload(pdfs.with_launch_action(), filename="launch.pdf")
        accepted = client.upload(source, filename="one.pdf")
        inputs_before = _inputs(stack)
        refused = client.upload(source, filename="two.pdf")
        inputs_after = _inputs(stack)
        shown = client.request("GET", "/v1/quota")
        job = client.wait(accepted.json()["id"])
        download = client.request("GET", f"/v1/jobs/{job['id']}/result")

    launch.assert_error(400, 3, "ACTIVE_CONTENT_REFUSED", GATEWAY_DOMAIN)
    assert accepted.status == 200, accepted.body
    assert accepted.headers["ratelimit-policy"] == '"default";q=100;w=60'
    info = refused.assert_error(429, 8, "QUOTA_EXCEEDED", GATEWAY_DOMAIN)
    assert (info["metadata"]["quota"], info["metadata"]["limit"], info["metadata"]["used"]) == ("files", "1", "1")
    assert info["metadata"]["reset_time"].endswith("T00:00:00Z")
    assert 0 < int(refused.headers["retry-after"]) <= 86401
    assert _state(refused)[:2] == ("default", 97)  # the RateLimit headers too: three uploads so far
    assert inputs_after == inputs_before  # refused before the body was stored

    assert shown.status == 200, shown.body
    quota = shown.json()
    assert quota["files"] == {"limit": "1", "used": "1", "remaining": "0", "unlimited": False}
    assert quota["bytes"]["unlimited"] is True
    assert quota["bytes"]["used"] == str(len(source))
    assert quota["reset_time"].endswith("T00:00:00Z")
    assert {w["policy"] for w in quota["rate_limits"]} == {"default", "read"}
    # A download sends its own initial metadata: the RateLimit headers ride along.
    assert job["state"] == "JOB_STATE_SUCCEEDED", job
    assert download.status == 200
    assert download.headers["ratelimit-policy"] == '"read";q=1000;w=60'
    figures.add("daily quota", f"1 file a day: upload 2 refused QUOTA_EXCEEDED, reset {quota['reset_time']}")


def test_refusals_after_the_body_carry_the_headers_to_rest_clients(
    stack: Stack, envoy_factory: Callable[..., str]
) -> None:
    """Refusals decided once the body is in (the bytes quota, active content) are trailers-only, so
    Envoy hands their Retry-After and RateLimit headers to HTTP clients too."""
    source = (DATA / "pypdf__libreoffice-form.pdf").read_bytes()
    env = {"RATE_LIMIT": "100/minute", "RATE_LIMIT_BURST": "0", "QUOTA_BYTES_PER_DAY": str(len(source) + 1)}
    with _edge(stack, envoy_factory, **env) as (url, key):
        client = RestClient(url, key)
        launch = client.upload(pdfs.with_launch_action(), filename="launch.pdf")
        accepted = client.upload(source, filename="one.pdf")
        crossing = client.upload(source, filename="two.pdf")

    launch.assert_error(400, 3, "ACTIVE_CONTENT_REFUSED", GATEWAY_DOMAIN)
    assert _state(launch)[:2] == ("default", 99)
    assert accepted.status == 200, accepted.body
    assert _state(accepted)[:2] == ("default", 98)
    info = crossing.assert_error(429, 8, "QUOTA_EXCEEDED", GATEWAY_DOMAIN)
    assert info["metadata"]["quota"] == "bytes"
    assert crossing.headers["retry-after"] == info["metadata"]["retry_after_seconds"]
    assert _state(crossing)[:2] == ("default", 97)


def _next_boundary(*, seconds: int, lead: float) -> float:
    """The next multiple of `seconds` on the clock at least `lead` seconds away."""
    boundary = (time.time() // seconds + 1) * seconds
    return boundary if boundary - time.time() >= lead else boundary + seconds


def _fixed_window_allows(client: redis.Redis, caller: str, *, limit: int, seconds: int) -> bool:
    """The old limiter: a counter per clock-aligned window."""
    key = f"oldlimit:{caller}:{int(time.time() // seconds)}"
    pipe = client.pipeline()
    pipe.incr(key)
    pipe.expire(key, 2 * seconds)
    return int(pipe.execute()[0]) <= limit


def test_boundary_burst_figure(redis_url: str, figures: Figures) -> None:
    # The same requests against clock-aligned fixed windows (the old limiter's algorithm) and the
    # moving window: 20 just before a boundary of the clock, 20 just after, limit 10 per 2 s.
    limit = limits.RateLimitItemPerSecond(10, 2)
    client = redis.Redis.from_url(redis_url)
    moving = RateLimiter(client, {budget: Policy("default", limit) for budget in Budget})
    caller = f"key:{uuid.uuid4().hex[:16]}"
    boundary = _next_boundary(seconds=2, lead=0.3)
    fixed_allowed, moving_allowed = 0, []
    for starts in (boundary - 0.3, boundary + 0.05):  # just before the boundary, just after
        time.sleep(max(0.0, starts - time.time()))
        for _ in range(20):
            fixed_allowed += _fixed_window_allows(client, caller, limit=10, seconds=2)
            try:
                moving.check(caller, Budget.UPLOADS)
            except LimitExceeded:
                continue
            moving_allowed.append(time.time())
    # Whatever the timing: no 2-second interval holds more than the limit.
    most = max(sum(1 for t in moving_allowed if start <= t < start + 2) for start in moving_allowed)
    figures.add(
        "boundary burst",
        f"{len(moving_allowed)} allowed of 40 over the boundary (at most {most} in any 2 s), limit 10; "
        f"fixed windows allowed {fixed_allowed}",
    )
    assert most <= 10


def test_default_policy_burst_figure(redis_url: str, figures: Figures) -> None:
    # The shipped default, 100 an hour with bursts of 20: 30 requests back to back.
    policy = Policy("default", limits.parse("100/hour"), burst=20)
    limiter = RateLimiter(redis.Redis.from_url(redis_url), dict.fromkeys(Budget, policy))
    caller, allowed, refusal = f"key:{uuid.uuid4().hex[:16]}", 0, None
    for _ in range(30):
        try:
            limiter.check(caller, Budget.UPLOADS)
            allowed += 1
        except LimitExceeded as refused:
            refusal = refused
    assert refusal is not None
    retry_after = int(dict(refusal.headers)["retry-after"])
    assert allowed == 20
    assert 700 <= retry_after <= 720
    figures.add("default policy", f"100/hour burst 20: {allowed} of 30 back to back, Retry-After {retry_after} s")
