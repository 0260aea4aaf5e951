"""`pdfsmaller-ops`: one command, a subcommand per operator task. Exit status 0, or 1 on the first failure.

    pdfsmaller-ops --help
    pdfsmaller-ops smoke --url http://127.0.0.1:8080
    pdfsmaller-ops --json backup

Each subcommand module has `register(subcommands)`, which adds its parser and sets `run`: a function
of (arguments, Reporter) returning the exit status. Without arguments the commands work against
`make run`'s defaults (ops/defaults.py).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from types import ModuleType

from ops.report import Failed, Reporter
from ops.run_record import record_run

Command = Callable[[argparse.Namespace, Reporter], int]


# The module of ops/ that registers each subcommand, in the order --help lists them.
SUBCOMMANDS: dict[str, str] = {
    "smoke": "smoke",
    "backup": "db_backup",
    "archive-wal": "db_backup",
    "receive-wal": "wal_receiver",
    "restore": "db_restore",
    "fetch-wal": "db_restore",
    "backup-files": "files_backup",
    "restore-files": "files_backup",
    "recovery-test": "recovery_test",
    "sweep-orphans": "orphans",
    "vacuum": "vacuum",
    "rollout-guard": "rollout_guard",
}


def _subcommand_modules(argv: list[str]) -> list[ModuleType]:
    """Only the named subcommand's module when there is one: PostgreSQL starts archive-wal and fetch-wal
    once per WAL file, so they must not pay for the others' imports (minio, pikepdf)."""
    named = next((arg for arg in argv if not arg.startswith("-")), None)
    names = [SUBCOMMANDS[named]] if named in SUBCOMMANDS else list(dict.fromkeys(SUBCOMMANDS.values()))
    return [importlib.import_module(f"ops.{name}") for name in names]


def parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="pdfsmaller-ops", description=__doc__.split("\n", 1)[0])
    root.add_argument("--json", action="store_true", help="print one JSON document (steps, results) on stdout")
    root.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    subcommands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _subcommand_modules(sys.argv[1:] if argv is None else argv):
        module.register(subcommands)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser(argv).parse_args(argv)
    reporter = Reporter(as_json=args.json, debug=args.debug)
    run: Command = args.run
    started_at = datetime.now(UTC)
    try:
        status = run(args, reporter)
    except Failed:
        status = reporter.finish()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    # The scheduled commands' runs, for the jobs service's gauges and the alerts (ops/run_record.py).
    record_run(args, reporter, started_at, datetime.now(UTC), status)
    return status


if __name__ == "__main__":
    sys.exit(main())
