"""JobEvents against a real Valkey reached through a unix:// REDIS_URL (a Unix domain socket)."""

from __future__ import annotations

import tempfile
import time
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


def test_an_unexpected_error_in_the_subscriber_is_logged_once_and_the_thread_goes_on(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    events = JobEvents(redis_url, JobsMetrics(CollectorRegistry()), prefix=f"test-{uuid.uuid4().hex[:8]}")
    handle = events._handle
    failures = []

    def fail_on_the_first_two_events(message: dict[str, object]) -> None:
        if message.get("type") in ("message", "pmessage") and len(failures) < 2:
            failures.append(message)
            raise TypeError("a bug in handling an event")
        handle(message)

    events._handle = fail_on_the_first_two_events  # type: ignore[method-assign]
    try:
        events.start(wait_seconds=WAIT_SECONDS)
        # Each failure ends one subscription and the thread subscribes again; events published while it
        # is away are missed (as in an outage), so publish until both failures happened.
        deadline = time.monotonic() + WAIT_SECONDS
        while len(failures) < 2:
            assert time.monotonic() < deadline, "the subscriber did not come back after the first failure"
            events.job_changed("job-0", "RUNNING")
            time.sleep(0.1)
        # The thread goes on: a later event still wakes its waiter (without the thread, nothing would).
        with events.waiter("job-1") as waiter:
            while not waiter.wait(0.2):
                assert time.monotonic() < deadline + WAIT_SECONDS, "the thread did not go on after the errors"
                events.job_changed("job-1", "RUNNING")
    finally:
        events.close()
    errors = [record for record in caplog.records if "job events subscriber failed" in record.getMessage()]
    assert len(failures) == 2
    # Once per streak: each failure came after a working subscription.
    assert len(errors) == 2
    assert errors[0].exc_info is not None
