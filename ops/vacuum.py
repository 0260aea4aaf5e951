"""`pdfsmaller-ops vacuum`: VACUUM (ANALYZE) of the jobs database's tables, with what it found and did.

    pdfsmaller-ops vacuum                 # every table of the public schema
    pdfsmaller-ops --json vacuum          # per table: dead rows before and after, seconds, last autovacuum

Autovacuum does this by itself and is what keeps the tables healthy between runs; this is the
guide's weekly maintenance on top, and the check that autovacuum is on and keeping up: the run
fails (exit 1) when `autovacuum` is off, after vacuuming, so the schedule shows it. The jobs table
is written on every state change (a job is updated 4 to 6 times), so its dead rows grow fastest.
VACUUM (not FULL) takes no lock that blocks reads or writes.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ops.database import add_database_argument, connect
from ops.locks import RunLock
from ops.report import OpsError, Reporter

_TABLES = "SELECT relname FROM pg_stat_user_tables WHERE schemaname = 'public' ORDER BY relname"
_STATS = """
    SELECT n_live_tup, n_dead_tup, last_autovacuum, last_autoanalyze
    FROM pg_stat_user_tables WHERE schemaname = 'public' AND relname = %s
"""


@dataclass(frozen=True)
class TableStats:
    live_rows: int
    dead_rows: int
    last_autovacuum: Any
    last_autoanalyze: Any


def _stats(conn: psycopg.Connection, table: str) -> TableStats:
    row = conn.execute(_STATS, (table,)).fetchone()
    if row is None:
        raise OpsError(f"table {table} has no statistics")
    return TableStats(int(row[0]), int(row[1]), row[2], row[3])


def vacuum_tables(conn: psycopg.Connection, timeout_seconds: float, reporter: Reporter) -> dict[str, dict[str, Any]]:
    """VACUUM (ANALYZE) each table; per table its rows and dead rows before and after, and the seconds."""
    done: dict[str, dict[str, Any]] = {}
    conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(f"{int(timeout_seconds * 1000)}ms")))
    for (table,) in conn.execute(_TABLES).fetchall():
        before = _stats(conn, table)
        started = time.monotonic()
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
        seconds = time.monotonic() - started
        # The statistics collector reports the vacuum's effect asynchronously; this reads it now.
        conn.execute("SELECT pg_stat_force_next_flush()")
        after = _stats(conn, table)
        done[table] = {
            "live_rows": after.live_rows,
            "dead_rows_before": before.dead_rows,
            "dead_rows_after": after.dead_rows,
            "seconds": round(seconds, 3),
            "last_autovacuum": after.last_autovacuum,
            "last_autoanalyze": after.last_autoanalyze,
        }
        reporter.progress(f"{table}: {before.dead_rows} dead rows, {after.dead_rows} after ({seconds:.1f} s)")
    return done


def autovacuum_setting(conn: psycopg.Connection) -> str:
    row = conn.execute("SHOW autovacuum").fetchone()
    return str(row[0]) if row else "unknown"


def run_vacuum(args: argparse.Namespace, reporter: Reporter) -> int:
    with reporter.step("take the vacuum lock"):
        lock = RunLock.take(args.database_url, "vacuum")
    with lock:
        with reporter.step("VACUUM (ANALYZE) every table"), connect(args.database_url) as conn:
            tables = vacuum_tables(conn, args.timeout, reporter)
            # Read on the vacuum's connection, after vacuuming; the step below checks it.
            setting = autovacuum_setting(conn)
        reporter.result("tables", tables)
        with reporter.step("autovacuum is on"):
            reporter.result("autovacuum", setting)
            if setting != "on":
                raise OpsError("autovacuum is off: dead rows grow between runs; set autovacuum = on on the server")
    return reporter.finish()


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    vacuum = subcommands.add_parser(
        "vacuum",
        help="VACUUM (ANALYZE) the jobs database's tables and check autovacuum (weekly maintenance)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_database_argument(vacuum)
    vacuum.add_argument("--timeout", type=float, default=3600.0, help="seconds one table's VACUUM may take")
    vacuum.set_defaults(run=run_vacuum)
