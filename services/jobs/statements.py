"""Statements on the jobs database: JobRepository's and its neighbours' (workers, queue control, admin).

A connection from the pool per call, PostgreSQL errors as Unavailable, and every outcome told to
DatabaseOutages, so the sweeper's lease grace knows of an outage whoever met it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from libs.errors import Unavailable
from services.jobs.db import database_errors
from services.jobs.outages import DatabaseOutages

Params = dict[str, Any] | tuple[Any, ...]
# Text is fixed SQL; a Composable is built with psycopg.sql from fixed fragments (never from input).
Query = str | sql.SQL | sql.Composed


class Statements:
    def __init__(self, pool: ConnectionPool, outages: DatabaseOutages) -> None:
        self._pool = pool
        self._outages = outages

    def fetch(self, query: Query, params: Params = ()) -> list[dict[str, Any]]:
        """One statement in its own transaction; its rows (none for a statement without RETURNING)."""
        with self.transaction() as cur:
            cur.execute(query.encode() if isinstance(query, str) else query, params)
            return cur.fetchall() if cur.description is not None else []

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Cursor[dict[str, Any]]]:
        """A cursor whose statements commit together when the block ends (roll back on an exception)."""
        try:
            with database_errors(), self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                yield cur
        except Unavailable:
            self._outages.failed()
            raise
        self._outages.succeeded()
