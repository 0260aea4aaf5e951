"""PostgreSQL access: the connection pool, schema migrations, error translation.

Migrations are the numbered `migrations/NNNN_name.sql` files, applied in order,
each in its own transaction, and recorded in `schema_migrations`. A session
advisory lock serialises replicas starting at the same time: the first applies
them, the others wait and then find nothing left to do.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg_pool import ConnectionPool

from libs.errors import Unavailable

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Arbitrary constant naming the "jobs schema migration" advisory lock.
_MIGRATION_LOCK = 0x6A6F62735F6D6967
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.iterdir()):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            continue
        migrations.append(Migration(int(match.group(1)), path.name, path.read_text()))
    versions = [migration.version for migration in migrations]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {directory}")
    return migrations


def apply_migrations(conn: psycopg.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply pending migrations on an autocommit connection; returns the names applied."""
    pending_all = load_migrations() if migrations is None else migrations
    applied_now: list[str] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations").fetchall()}
        for migration in pending_all:
            if migration.version in done:
                continue
            with conn.transaction():
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
            log.info("applied migration %s", migration.name)
            applied_now.append(migration.name)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied_now


def migrate(database_url: str) -> list[str]:
    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        return apply_migrations(conn)


def pending_migrations(conn: psycopg.Connection) -> list[str]:
    """Names of migrations not yet applied (all of them on an empty database)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    done: set[int] = set()
    if exists and exists[0]:
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations").fetchall()}
    return [migration.name for migration in load_migrations() if migration.version not in done]


def open_pool(database_url: str, max_size: int = 10) -> ConnectionPool:
    """A pool that opens without waiting, so the service starts (not ready) while the database is down.

    Connections are checked when taken from the pool, so after a database
    restart the first request gets a fresh connection instead of an error.
    A failed reconnect is given up at once instead of retried with exponential
    backoff (up to minutes between tries): requests and the readiness probe
    (every 2 s) grow the pool again on demand, so service resumes as soon as
    the database is back. While it is down, a request fails after `timeout`.
    """
    pool = ConnectionPool(
        database_url,
        min_size=1,
        max_size=max_size,
        timeout=3.0,
        kwargs={"connect_timeout": 3},
        check=ConnectionPool.check_connection,
        reconnect_timeout=0,
        open=False,
        name="jobs",
    )
    pool.open(wait=False)
    return pool


DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """Turn connection-level failures into UNAVAILABLE (DATABASE_UNAVAILABLE); the log keeps the cause."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.UndefinedTable) as error:
        log.warning("database unavailable: %s: %s", type(error).__name__, error)
        raise Unavailable(DATABASE_UNAVAILABLE, "the job database is unavailable; retry later") from error
