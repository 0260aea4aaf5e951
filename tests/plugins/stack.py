"""The whole system, started once per session for end-to-end tests.

Every part is real (PostgreSQL, Valkey, clamd when installed, the five
services as processes, Envoy) on random loopback ports, in a temporary
folder, stopped in `finally`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from deploy.monitoring import rules
from devtools.stack.stack import Ports, Stack
from libs.service import RunningService
from services.gateway.app import build as build_gateway
from services.gateway.settings import GatewaySettings
from tests.plugins.otlp import OtlpReceiver
from tests.plugins.services import in_process, loopback_env

ALERT_FOR_SCALE = 1 / 60
# For stacks whose tests poll and retry rather than test the limits (tests/test_envoy_edge.py and
# tests/faults do that on gateways of their own): the default read burst (120) runs out within a
# minute of polling a slow job on a loaded machine.
GENEROUS_RATE_LIMITS = {"RATE_LIMIT_PER_MINUTE": "100000"}
# Keys the end-to-end tests use; two tenants to check isolation.
API_KEYS = {"acme": "acme-key-0123456789abcdef", "globex": "globex-key-0123456789abcdef"}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, otlp_receiver: OtlpReceiver) -> Iterator[Stack]:
    data_dir: Path = tmp_path_factory.mktemp("stack")
    system = Stack(
        data_dir=data_dir,
        ports=Ports.any(),
        durable=False,
        with_prometheus=True,
        scrape_interval="1s",
        prometheus_rule_files=fast_rules(tmp_path_factory.mktemp("rules")),
        extra_env={
            "API_KEYS": ",".join(f"{tenant}:{key}" for tenant, key in API_KEYS.items()),
            "LEASE_WAIT_SECONDS": "5",
            **GENEROUS_RATE_LIMITS,
            # Every process exports its spans to the test receiver, quickly.
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        },
    )
    try:
        system.start(timeout=90)
        yield system
    finally:
        system.stop()


def fast_rules(folder: Path) -> list[Path]:
    """The shipped rules with every `for:` 60 times shorter (5m -> 5s), so a live test sees an alert
    turn pending in seconds; the expressions are the committed ones, rendered from the same source."""
    paths = []
    for name, text in rules.render(for_scale=ALERT_FOR_SCALE).items():
        (folder / name).write_text(text)
        paths.append(folder / name)
    return paths


def stored_objects(stack: Stack) -> set[str]:
    """Every object the stack's local storage holds, by its path under the objects folder."""
    root = stack.data_dir / "objects"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@contextmanager
def gateway_beside(stack: Stack, **env: str) -> Iterator[RunningService]:
    """A real gateway in this process (port 0, read back) on the stack's jobs, storage, scanner and
    Redis, configured by `env` on top: for tests that need the gateway with other settings."""
    assert stack.redis is not None
    settings = GatewaySettings.from_env(
        {
            **loopback_env("gateway"),
            "JOBS_ADDR": stack.service("jobs").address,
            "STORAGE_ADDR": stack.service("storage").address,
            "SCANNER_ADDR": stack.service("scanner").address,
            "REDIS_URL": stack.redis.url,
            **env,
        }
    )
    with in_process(build_gateway, settings) as gateway:
        yield gateway
