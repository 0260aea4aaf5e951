"""The record of each scheduled command's run in the jobs database, which the jobs service exports as gauges.

    pdfsmaller-ops --json vacuum      # prints its document, then writes one row of maintenance_runs

`vacuum`, `sweep-orphans`, `backup`, `backup-files` and `recovery-test` record every run as it ends, success
or failure, in the table `maintenance_runs` of the jobs database (their --database-url: the one they work on;
for `recovery-test`, which works on scratch servers, only where its run is recorded): the task, when it
started and finished, whether it succeeded, the step that failed and why, the results of the --json
document, and their numeric figures. The jobs service exports the newest run of each task
(services/jobs/maintenance_metrics.py) and deploy/monitoring/rules.py alerts when one has not
succeeded for too long: no Pushgateway, no kube-state-metrics. Each run keeps its task's newest
KEEP_RUNS rows and its newest success, and deletes the rest.

Recording is best effort: when it fails (the database is down, which may be why the run failed, or
not migrated yet) it prints one line on stderr and the exit status stays the command's.

A variant that must not stand for the scheduled run is a task of its own: `sweep-orphans --dry-run`
(deletes nothing) is `sweep-orphans-dry-run`, `backup --logical` is `backup-logical`; `backup`
is the physical backups, full and incremental alike.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TextIO

import psycopg
from psycopg.types.json import Jsonb

from ops.backup_catalog import LOGICAL
from ops.report import Reporter

RECORDED_COMMANDS = frozenset({"vacuum", "sweep-orphans", "backup", "backup-files", "recovery-test"})
# Rows kept per task: a year of weekly vacuums, 50 days of daily sweeps, 12 days of 6-hourly backups.
KEEP_RUNS = 50
# The figures exported per run: the label set of pdfsmaller_maintenance_last_run_items stays small.
MAX_ITEMS = 24
_ITEM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_ERROR_CHARS = 500
# A run's record is written after its work: waiting long for a database that is down helps nobody.
_CONNECT_TIMEOUT_SECONDS = 5
_STATEMENT_TIMEOUT = "-c statement_timeout=5000"

_INSERT = """
    INSERT INTO maintenance_runs (task, started_at, finished_at, ok, failed_step, error, results, items)
    VALUES (%(task)s, %(started_at)s, %(finished_at)s, %(ok)s, %(failed_step)s, %(error)s, %(results)s, %(items)s)
"""
# Everything of the task but its newest KEEP_RUNS rows and its newest success (what the success gauge reads).
_PRUNE = """
    DELETE FROM maintenance_runs
    WHERE task = %(task)s
      AND id NOT IN (SELECT id FROM maintenance_runs WHERE task = %(task)s
                     ORDER BY finished_at DESC, id DESC LIMIT %(keep)s)
      AND id NOT IN (SELECT id FROM maintenance_runs WHERE task = %(task)s AND ok
                     ORDER BY finished_at DESC, id DESC LIMIT 1)
"""


def task_of(args: argparse.Namespace) -> str | None:
    """The task a command's run is recorded as, or None for a command that records nothing."""
    command = getattr(args, "command", None)
    if command not in RECORDED_COMMANDS:
        return None
    if command == "sweep-orphans" and args.dry_run:
        return "sweep-orphans-dry-run"
    if command == "backup" and args.kind == LOGICAL:
        return "backup-logical"
    return str(command)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def numeric_items(results: Mapping[str, Any]) -> dict[str, float]:
    """The figures of a run's results: each number; a list's length (`pruned_backups`); for a mapping of
    mappings (vacuum's `tables`), their count and the sum of each numeric field (`tables_dead_rows_after`).
    Strings, nulls and names that are not lower_snake are left out; at most MAX_ITEMS figures."""
    items: dict[str, float] = {}

    def add(name: str, value: float | None) -> None:
        if value is not None and len(items) < MAX_ITEMS and _ITEM_NAME.match(name):
            items.setdefault(name, value)

    for key, value in results.items():
        if isinstance(value, list | tuple):
            add(key, float(len(value)))
        elif isinstance(value, Mapping) and value and all(isinstance(part, Mapping) for part in value.values()):
            add(key, float(len(value)))
            sums: dict[str, float] = {}
            for part in value.values():
                for field_name, field_value in part.items():
                    number = _number(field_value)
                    if number is not None:
                        sums[field_name] = sums.get(field_name, 0.0) + number
            for field_name, total in sums.items():
                add(f"{key}_{field_name}", round(total, 6))
        else:
            add(key, _number(value))
    return items


@dataclass(frozen=True)
class RunRecord:
    task: str
    started_at: datetime
    finished_at: datetime
    ok: bool
    failed_step: str
    error: str
    results: dict[str, Any]

    @classmethod
    def of(cls, task: str, reporter: Reporter, started_at: datetime, finished_at: datetime, status: int) -> RunRecord:
        failed = next((step for step in reporter.steps if not step.ok), None)
        return cls(
            task=task,
            started_at=started_at,
            finished_at=finished_at,
            ok=status == 0,
            failed_step=failed.name if failed else "",
            error=failed.error[:_ERROR_CHARS] if failed else "",
            results=dict(reporter.results),
        )


def save_run(database_url: str, record: RunRecord, keep: int = KEEP_RUNS) -> None:
    """Insert the run and prune its task, in one transaction."""
    # Results hold timestamps (vacuum's last_autovacuum): printed as the --json document prints them.
    dumps = partial(json.dumps, default=str)
    with psycopg.connect(database_url, connect_timeout=_CONNECT_TIMEOUT_SECONDS, options=_STATEMENT_TIMEOUT) as conn:
        conn.execute(
            _INSERT,
            {
                "task": record.task,
                "started_at": record.started_at,
                "finished_at": record.finished_at,
                "ok": record.ok,
                "failed_step": record.failed_step,
                "error": record.error,
                "results": Jsonb(record.results, dumps=dumps),
                "items": Jsonb(numeric_items(record.results)),
            },
        )
        conn.execute(_PRUNE, {"task": record.task, "keep": keep})


def record_run(
    args: argparse.Namespace,
    reporter: Reporter,
    started_at: datetime,
    finished_at: datetime,
    status: int,
    err: TextIO | None = None,
) -> None:
    """Record the run of a recorded command; a failure to is one line on `err` (stderr), nothing more."""
    task = task_of(args)
    if task is None:
        return
    try:
        save_run(args.database_url, RunRecord.of(task, reporter, started_at, finished_at, status))
    except Exception as error:  # noqa: BLE001 - best effort: the run's own outcome is what counts
        first_line = (str(error).strip().splitlines() or [""])[0]
        message = f"could not record the run in maintenance_runs ({type(error).__name__}: {first_line})"
        print(f"pdfsmaller-ops {args.command}: {message}", file=err if err is not None else sys.stderr)
