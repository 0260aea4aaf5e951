"""One run at a time per database: a PostgreSQL session advisory lock, held by a connection of its own.

    with reporter.step("take the backup lock"):
        lock = RunLock.take(database_url, "backup")   # OpsError when another run holds it
    with lock:
        ...                                            # released when the connection closes, or the process dies

Two backups at once would race on the catalog's retention and double the load; a CronJob's
concurrencyPolicy only keeps one CronJob from overlapping itself, not a full backup from an
incremental one or a hand-started run. The lock lives in the database both talk to, so it needs no
state in the backup location and never outlives a killed run.
"""

from __future__ import annotations

from types import TracebackType

import psycopg

from ops.database import connect
from ops.report import OpsError


class RunLock:
    def __init__(self, conn: psycopg.Connection, name: str) -> None:
        self._conn = conn
        self.name = name

    @classmethod
    def take(cls, database_url: str, name: str) -> RunLock:
        conn = connect(database_url)
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (f"pdfsmaller-ops {name}",))
            taken = row.fetchone()
        except BaseException:
            conn.close()
            raise
        if taken is None or not taken[0]:
            conn.close()
            raise OpsError(f"another `pdfsmaller-ops {name}` is running on this database: try again once it ends")
        return cls(conn, name)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._conn.close()  # a session lock ends with its session
