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

pytest_plugins = [
    f"tests.plugins.{module.name}"
    for module in pkgutil.iter_modules([str(Path(__file__).parent / "tests" / "plugins")])
]
