"""JobEvents against a real Valkey reached through a unix:// REDIS_URL (a Unix domain socket)."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from devtools.servers.redis import RedisServer
from services.jobs.events import JobEvents
from services.jobs.metrics import JobsMetrics

pytestmark = pytest.mark.integration

WAIT_SECONDS = 10.0


class UnixSocketRedisServer(RedisServer):
    """The devtools Valkey, also listening on a Unix socket (its loopback port stays: the launcher's
    readiness check pings it)."""

    def __init__(self, data_dir: Path, socket_path: Path) -> None:
        super().__init__(data_dir, port=0)
        self.socket_path = socket_path

    def _argv(self, binary: Path) -> list[str]:
        return [*super()._argv(binary), "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]


@pytest.fixture
def unix_redis_url(tmp_path: Path) -> Iterator[str]:
    # A short directory of its own: a Unix socket path must stay under ~107 bytes, pytest's tmp_path may not.
    with tempfile.TemporaryDirectory(prefix="valkey-") as socket_dir:
        server = UnixSocketRedisServer(tmp_path / "valkey", Path(socket_dir) / "valkey.sock")
        server.start()
        try:
            yield f"unix://{server.socket_path}?db=0"
        finally:
            server.stop()


def test_events_flow_over_a_unix_socket_redis_url(unix_redis_url: str) -> None:
    events = JobEvents(unix_redis_url, JobsMetrics(CollectorRegistry()), prefix=f"test-{uuid.uuid4().hex[:8]}")
    try:
        events.start(wait_seconds=WAIT_SECONDS)
        assert events.healthy, "the subscriber never subscribed"
        with events.waiter("job-1") as waiter:
            events.job_changed("job-1", "RUNNING")
            assert waiter.wait(WAIT_SECONDS), "the published event did not wake the waiter"
    finally:
        events.close()
