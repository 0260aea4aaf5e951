"""Fixtures of the jobs tests: a migrated fresh database per test, a repository on it, a probe of idle waiters."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg_pool import ConnectionPool

from services.jobs.db import migrate, open_pool
from services.jobs.events import Waiter
from services.jobs.repository import JobRepository
from services.jobs.settings import JobsSettings


def service_settings(database_url: str, redis_url: str, storage_address: str, **overrides: Any) -> JobsSettings:
    """A jobs service under test: gRPC on port 0, no metrics port, sweeps left to the test (it runs them)."""
    base = JobsSettings(
        listen="127.0.0.1:0",
        metrics_port=0,
        database_url=database_url,
        redis_url=redis_url,
        storage_addr=storage_address,
        retention_hours=168,
        max_attempts=3,
        sweep_interval_seconds=3600,
        database_pool_size=10,
        max_workers=64,
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture
def jobs_database_url(fresh_database_url: str) -> str:
    migrate(fresh_database_url)
    return fresh_database_url


@pytest.fixture
def pool(jobs_database_url: str) -> Iterator[ConnectionPool]:
    pool = open_pool(jobs_database_url, max_size=8)
    pool.wait(timeout=10)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def repo(pool: ConnectionPool) -> JobRepository:
    return JobRepository(pool, retention_hours=168, max_attempts=3)


class ParkedCalls:
    """How many LeaseJob/WatchJob calls of this process sit in `Waiter.wait`, idle until an event or a re-check.

    Lets a test act once a call is really parked instead of sleeping and hoping it is: a call counted
    here has already read the database and found nothing to do, so only a wake-up brings it back.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._changed = threading.Condition()
        self._parked = 0
        original = Waiter.wait

        def wait(waiter: Waiter, timeout: float) -> bool:
            self._add(1)
            try:
                return original(waiter, timeout)
            finally:
                self._add(-1)

        monkeypatch.setattr(Waiter, "wait", wait)

    def _add(self, delta: int) -> None:
        with self._changed:
            self._parked += delta
            self._changed.notify_all()

    def wait_for(self, count: int = 1, timeout: float = 20.0) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self._parked >= count, timeout), f"fewer than {count} call(s) parked"


@pytest.fixture
def parked(monkeypatch: pytest.MonkeyPatch) -> ParkedCalls:
    return ParkedCalls(monkeypatch)
