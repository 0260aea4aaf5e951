"""The operator commands' connection to the jobs database: autocommit, bounded, failing with a clear message."""

from __future__ import annotations

import argparse

import psycopg

from ops import defaults
from ops.report import OpsError


def add_database_argument(
    parser: argparse.ArgumentParser, *, help_text: str = "the jobs database (default: $DATABASE_URL or make run's)"
) -> None:
    """`--database-url`, defaulting to $DATABASE_URL, else the development stack's database."""
    parser.add_argument("--database-url", default=defaults.database_url(), help=help_text)


def connect(url: str) -> psycopg.Connection:
    """Connect within 10 s; every statement may take 5 minutes at most (a backup's queries are short)."""
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10, options="-c statement_timeout=300000")
    except psycopg.OperationalError as error:
        raise OpsError(f"cannot connect to the database: {str(error).strip()}") from error
