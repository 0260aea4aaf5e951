"""Per-key rate limits counted in a real Valkey, shared by every gateway replica."""

from __future__ import annotations

import logging
import time
import uuid

import limits
import pytest
import redis

from services.gateway.ratelimit import Budget, Decision, LimitExceeded, Policy, RateLimiter, WindowState

pytestmark = pytest.mark.integration

# Short windows so a test can watch one pass; every assertion holds however slow the machine is.
TINY = Policy("default", limits.parse("3/minute"))


def _caller() -> str:
    return f"key:{uuid.uuid4().hex[:16]}"


def _limiter(redis_url: str, uploads: Policy = TINY, reads: Policy | None = None) -> RateLimiter:
    return RateLimiter(redis.Redis.from_url(redis_url), {Budget.UPLOADS: uploads, Budget.READS: reads or uploads})


def _allowed_at(limiter: RateLimiter, caller: str, count: int, budget: Budget = Budget.UPLOADS) -> list[float]:
    """Send `count` requests; the times of those allowed."""
    allowed = []
    for _ in range(count):
        try:
            limiter.check(caller, budget)
        except LimitExceeded:
            continue
        allowed.append(time.time())
    return allowed


def _most_in_any_window(times: list[float], seconds: float) -> int:
    """The most allowed requests any `seconds`-long interval holds."""
    return max((sum(1 for t in times if start <= t < start + seconds) for start in times), default=0)


def test_limit_is_per_caller_and_shared_between_replicas(redis_url: str) -> None:
    replica_a, replica_b = _limiter(redis_url), _limiter(redis_url)
    caller, other = _caller(), _caller()
    first = replica_a.check(caller, Budget.UPLOADS)
    replica_b.check(caller, Budget.UPLOADS)
    replica_a.check(caller, Budget.UPLOADS)
    with pytest.raises(LimitExceeded) as caught:
        replica_b.check(caller, Budget.UPLOADS)
    refused = caught.value
    assert refused.reason == "RATE_LIMITED"
    retry_after = int(refused.metadata["retry_after_seconds"])
    assert 0 < retry_after <= 60
    headers = dict(refused.headers)
    assert headers["ratelimit-policy"] == '"default";q=3;w=60'
    assert headers["ratelimit"] == f'"default";r=0;t={retry_after}'
    assert headers["retry-after"] == str(retry_after)
    # The first success: 2 left, a whole window until its request ages out.
    assert dict(first.headers()) == {"ratelimit-policy": '"default";q=3;w=60', "ratelimit": '"default";r=2;t=60'}
    replica_a.check(other, Budget.UPLOADS)  # another key has its own budget


def test_reads_have_their_own_budget(redis_url: str) -> None:
    limiter = _limiter(redis_url, uploads=TINY, reads=Policy("read", limits.parse("10/minute")))
    caller = _caller()
    assert len(_allowed_at(limiter, caller, 5, Budget.UPLOADS)) == 3
    decision = limiter.check(caller, Budget.READS)  # polling still works with uploads used up
    assert dict(decision.headers())["ratelimit"] == '"read";r=9;t=60'


def test_moving_window_never_lets_more_than_the_limit_through_a_boundary(redis_url: str) -> None:
    # 5 per 2 s: requests just before and just after a 2-second boundary of the clock. Fixed windows
    # would allow 5 + 5; the moving window allows at most 5 in any 2 seconds, whatever the timing.
    policy = Policy("default", limits.RateLimitItemPerSecond(5, 2))
    limiter, caller = _limiter(redis_url, policy), _caller()
    boundary = (time.time() // 2 + 1) * 2
    boundary += 2 if boundary - time.time() < 0.2 else 0
    time.sleep(max(0.0, boundary - 0.2 - time.time()))
    allowed = _allowed_at(limiter, caller, 10)
    time.sleep(max(0.0, boundary + 0.05 - time.time()))  # just past the boundary
    allowed += _allowed_at(limiter, caller, 10)
    assert _most_in_any_window(allowed, 2) <= 5, allowed


def test_burst_window_spreads_the_quota(redis_url: str) -> None:
    # 10 per 4 s with bursts of 2: 2 at once, 2 more every 0.8 s (rounded up to 1 s) -> never more
    # than limit + burst in any window, and only the burst back to back.
    policy = Policy("default", limits.RateLimitItemPerSecond(10, 4), burst=2)
    limiter, caller = _limiter(redis_url, policy), _caller()
    back_to_back = _allowed_at(limiter, caller, 6)
    assert len(back_to_back) == 2
    with pytest.raises(LimitExceeded) as caught:
        limiter.check(caller, Budget.UPLOADS)
    headers = dict(caught.value.headers)
    assert headers["ratelimit-policy"] == '"default-burst";q=2;w=1, "default";q=10;w=4'
    assert headers["ratelimit"].startswith('"default-burst";r=0;t=1, "default";r=8;t=')
    assert headers["retry-after"] == "1"


def test_retry_after_is_when_the_next_request_is_allowed(redis_url: str) -> None:
    policy = Policy("default", limits.RateLimitItemPerSecond(2, 2))
    limiter, caller = _limiter(redis_url, policy), _caller()
    _allowed_at(limiter, caller, 2)
    with pytest.raises(LimitExceeded) as caught:
        limiter.check(caller, Budget.UPLOADS)
    retry_after = int(caught.value.headers[-1][1])
    assert caught.value.headers[-1][0] == "retry-after"
    assert 1 <= retry_after <= 3
    time.sleep(retry_after)
    limiter.check(caller, Budget.UPLOADS)  # allowed again, as promised


def test_redis_down_allows_and_logs_once_per_outage(closed_address: str, caplog: pytest.LogCaptureFixture) -> None:
    host, port = closed_address.rsplit(":", 1)
    unreachable = redis.Redis(host=host, port=int(port), socket_connect_timeout=0.2)
    limiter = RateLimiter(unreachable, {Budget.UPLOADS: TINY, Budget.READS: TINY})
    with caplog.at_level(logging.WARNING, logger="services.gateway.ratelimit"):
        decisions = [limiter.check("key:x", Budget.UPLOADS) for _ in range(5)]  # more than the limit
    assert all(d.allowed and d.unknown for d in decisions)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1, caplog.records
    # Nothing is known about the budget: the policy is sent, no RateLimit state.
    assert dict(decisions[0].headers()) == {"ratelimit-policy": '"default";q=3;w=60'}
    assert limiter.peek("key:x") is None


def test_peek_reports_every_budget_without_spending(redis_url: str) -> None:
    limiter = _limiter(redis_url, uploads=TINY, reads=Policy("read", limits.parse("10/minute"), burst=4))
    caller = _caller()
    limiter.check(caller, Budget.UPLOADS)
    first, second = limiter.peek(caller), limiter.peek(caller)
    assert first == second
    assert first is not None
    assert {(w.name, w.remaining) for w in first} == {("default", 2), ("read-burst", 4), ("read", 10)}


def test_headers_follow_the_ietf_draft() -> None:
    states = (WindowState("default", 100, 3600, 0, 17),)
    assert Decision(False, states).headers() == (
        ("ratelimit-policy", '"default";q=100;w=3600'),
        ("ratelimit", '"default";r=0;t=17'),
        ("retry-after", "17"),
    )
