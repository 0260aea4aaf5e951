"""PostgreSQL for the tests.

`postgres_url` (session): `TEST_DATABASE_URL` if set, else a private server
(devtools.servers.postgres, fsync off) on a random loopback port in a temporary
directory, stopped when the session ends.

`fresh_database_url` (per test): a new, empty database on that server, dropped
after the test, so every test starts from a clean schema (about 0.1 s each;
the role in `TEST_DATABASE_URL` needs CREATEDB). Use it when a test writes;
tests that only need "a database" can share `postgres_url`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import conninfo, sql

from devtools.servers.postgres import PostgresServer


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("TEST_DATABASE_URL", "").strip()
    if external:
        yield external
        return
    server = PostgresServer(tmp_path_factory.mktemp("postgres"), port=0, durable=False)
    try:
        yield server.start()
    finally:
        server.stop()


def _with_database(url: str, database: str) -> str:
    """The same server with another database; stays a URL when given one."""
    if url.startswith(("postgresql://", "postgres://")):
        return urlsplit(url)._replace(path=f"/{database}").geturl()
    params = conninfo.conninfo_to_dict(url)
    params["dbname"] = database
    return conninfo.make_conninfo(**params)


@pytest.fixture
def fresh_database_url(postgres_url: str) -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(postgres_url, name)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            # FORCE: a pool the test forgot to close must not keep the database alive.
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
