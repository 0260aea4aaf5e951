"""Root pytest configuration: loads every fixture plugin under tests/plugins.

Each plugin starts one real server (PostgreSQL, Valkey, clamd, Envoy, the
services) on loopback for the session and stops it in `finally`. No port is
picked free and handed to another process: our servers, Envoy, moto and the
OTLP receiver bind port 0 and report what they bound; PostgreSQL, Valkey and
clamd get ports outside the kernel's ephemeral range, retried on a bind
failure (libs/ports.py).
Set TEST_DATABASE_URL / TEST_REDIS_URL / TEST_CLAMD_ADDR to use servers that
already run instead.
"""

import pkgutil
from pathlib import Path

import pytest

pytest_plugins = [
    f"tests.plugins.{module.name}"
    for module in pkgutil.iter_modules([str(Path(__file__).parent / "tests" / "plugins")])
]

# Fixtures that start a real server: a test using one is an integration test whatever its marks say,
# so `make test-unit` (-m "not integration") never starts a server.
SERVER_FIXTURES = frozenset(
    {
        "postgres_url",
        "fresh_database_url",
        "redis_url",
        "clamd_addr",
        "s3_endpoint",
        "stack",
        "envoy_factory",
        "envoy_server_factory",
        "storage_server",
        "service_starter",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
