"""Fixtures of the jobs tests: a migrated fresh database per test and a repository on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from psycopg_pool import ConnectionPool

from services.jobs.db import migrate, open_pool
from services.jobs.repository import JobRepository


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
