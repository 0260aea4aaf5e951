"""Valkey (Redis) for the tests.

`redis_url` (session): `TEST_REDIS_URL` if set, else a private valkey-server
(devtools.servers.redis, no persistence) on a random loopback port in a
temporary directory, stopped when the session ends. Pub/sub channels are
server-wide, so tests that publish use unique channel names or ids.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from devtools.servers.redis import RedisServer


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("TEST_REDIS_URL", "").strip()
    if external:
        yield external
        return
    server = RedisServer(tmp_path_factory.mktemp("valkey"), port=0)
    try:
        yield server.start()
    finally:
        server.stop()
