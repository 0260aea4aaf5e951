"""The real gateway behind Envoy, configured for one situation: rate limits, clamd down.

Each test runs its own gateway in this process (port 0, read back) against the session stack's
jobs, storage and Redis, with an Envoy from `envoy_factory` in front: only the setting under test
differs from the stack's, and no second system is started.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devtools.stack.stack import Stack
from services.scanner.app import build as build_scanner
from services.scanner.settings import ScannerSettings
from tests.e2e_client import Reply, RestClient
from tests.plugins.stack import gateway_beside, stored_objects

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data"
GATEWAY_DOMAIN = "gateway.pdfsmaller"


@contextmanager
def _gateway(stack: Stack, envoy_factory: Callable[..., str], **env: str) -> Iterator[str]:
    """A gateway of its own, configured like the stack's but for `env`; yields Envoy's URL in front of it."""
    with gateway_beside(stack, **env) as gateway:
        yield envoy_factory(gateway.address)


def _keys(*tenants: str) -> dict[str, str]:
    """Fresh tenants (never seen by this Redis or database) and their API keys."""
    run = uuid.uuid4().hex[:12]
    return {f"{tenant}-{run}": f"{tenant}-key-{run}-0123456789" for tenant in tenants}


# --- the per-key rate limit ---------------------------------------------------------------------

LIMIT = 3


def test_rate_limit_per_key_is_429_json_through_envoy(stack: Stack, envoy_factory: Callable[..., str]) -> None:
    # Two pairs of fresh tenants: the limit counts in fixed one-minute windows, so a run that a minute
    # boundary cuts through proves nothing and is repeated once with the second pair (two boundaries
    # cannot fall within one short run).
    keys = _keys("busy0", "quiet0", "busy1", "quiet1")
    source = (DATA / "pypdf__libreoffice-form.pdf").read_bytes()
    env = {"RATE_LIMIT_PER_MINUTE": str(LIMIT), "API_KEYS": ",".join(f"{t}:{k}" for t, k in keys.items())}
    with _gateway(stack, envoy_factory, **env) as url:
        pairs = list(zip(list(keys.values())[0::2], list(keys.values())[1::2], strict=True))
        for busy_key, quiet_key in pairs:
            busy, quiet = RestClient(url, busy_key), RestClient(url, quiet_key)
            objects_before = stored_objects(stack)
            window = int(time.time() // 60)
            allowed = [busy.request("GET", "/v1/jobs") for _ in range(LIMIT)]
            limited = busy.request("GET", "/v1/jobs")
            limited_upload = busy.upload(source, filename="form.pdf")
            other_key = quiet.request("GET", "/v1/jobs")
            health = busy.request("GET", "/v1/health")
            if int(time.time() // 60) == window:
                break
        else:
            pytest.fail("a minute boundary fell inside both runs")

    assert [reply.status for reply in allowed] == [200] * LIMIT, [reply.body for reply in allowed]
    for reply in (limited, limited_upload):
        # The gateway's own answer (RESOURCE_EXHAUSTED -> 429), not Envoy's coarse edge limit.
        info = reply.assert_error(429, 8, "RATE_LIMITED", GATEWAY_DOMAIN)
        assert 0 < int(info["metadata"]["retry_after_seconds"]) <= 60
    assert stored_objects(stack) == objects_before  # a refused upload is not stored
    assert other_key.status == 200, other_key.body  # another key has its own budget
    assert health.status == 200  # health needs no key and is not counted


# --- clamd down ---------------------------------------------------------------------------------


@contextmanager
def _scanner_without_clamd(stack: Stack, clamd_addr: str) -> Iterator[str]:
    """A real scanner whose clamd address (`closed_address`) refuses every connection; yields its address."""
    settings = ScannerSettings.from_env(
        {
            "SCANNER_LISTEN": "127.0.0.1:0",
            "SCANNER_METRICS_PORT": "0",
            "STORAGE_ADDR": stack.service("storage").address,
            "CLAMD_ADDR": clamd_addr,
            "CLAMD_TIMEOUT_SECONDS": "10",
        }
    )
    scanner = build_scanner(settings).start()
    try:
        yield scanner.address
    finally:
        scanner.stop(grace=0)


def _jobs_of(client: RestClient) -> list[dict[str, object]]:
    reply: Reply = client.request("GET", "/v1/jobs")
    assert reply.status == 200, reply.body
    jobs: list[dict[str, object]] = reply.json().get("jobs", [])
    return jobs


def test_clamd_down_is_503_and_nothing_is_kept(
    stack: Stack, envoy_factory: Callable[..., str], closed_address: str
) -> None:
    keys = _keys("clamdless")
    env = {"API_KEYS": ",".join(f"{t}:{k}" for t, k in keys.items())}
    with (
        _scanner_without_clamd(stack, closed_address) as scanner_addr,
        _gateway(stack, envoy_factory, SCANNER_ADDR=scanner_addr, **env) as url,
    ):
        client = RestClient(url, next(iter(keys.values())))
        before = stored_objects(stack)
        refused = client.upload((DATA / "pypdf__libreoffice-form.pdf").read_bytes(), filename="form.pdf")
        info = refused.assert_error(503, 14, "CLAMD_UNAVAILABLE", GATEWAY_DOMAIN)
        assert info["metadata"]["dependency"] == "malware-scanning"
        assert stored_objects(stack) == before  # the upload was stored for the scan, then deleted
        assert _jobs_of(client) == []  # and no job was created
        health = {d["name"]: d["status"] for d in client.request("GET", "/v1/health").json()["dependencies"]}
        assert health["malware-scanning"] == "SERVING_STATUS_NOT_SERVING"
