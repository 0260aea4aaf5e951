"""`pdfsmaller-ops sweep-orphans`: delete stored objects no job references.

    pdfsmaller-ops sweep-orphans --dry-run        # count them, delete nothing
    pdfsmaller-ops sweep-orphans                  # delete those older than an hour
    pdfsmaller-ops sweep-orphans --database-url URL --storage-backend s3

Orphans come from a database restored to an earlier point (the objects of the jobs created after it),
an upload interrupted between storing its file and creating its job, and the outputs of earlier
attempts of a job (`outputs/<job id>-<attempt>.pdf`; the job names only its last). An object is an
orphan when the job its key names (`inputs/<job id>.pdf`, `outputs/<job id>-<n>.pdf`) does not exist
or references another key. Objects younger than --older-than-minutes (60) are spared: an upload
stores its file before it creates its job, and a worker its output before it completes the job.
Keys of any other shape are counted (`objects_unrecognised`) and left alone.

The store is listed once, lazily; jobs are looked up by primary key in batches, so memory stays
bounded whatever the number of objects or jobs.
"""

from __future__ import annotations

import argparse
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ops.database import add_database_argument, connect
from ops.locks import RunLock
from ops.object_store import add_storage_arguments, storage_backend
from ops.report import Reporter
from services.storage.backends import Backend

# The keys the gateway and the compressor write (services/gateway/servicer.py, services/compressor/worker.py).
PREFIXES = ("inputs/", "outputs/")
_JOB_KEY = re.compile(r"^(?:inputs/(?P<input>[0-9a-f-]{36})\.pdf|outputs/(?P<output>[0-9a-f-]{36})-\d+\.pdf)$")
BATCH = 500
DEFAULT_GRACE_MINUTES = 60


def job_id_of(key: str) -> uuid.UUID | None:
    match = _JOB_KEY.match(key)
    if match is None:
        return None
    try:
        return uuid.UUID(match.group("input") or match.group("output"))
    except ValueError:
        return None


@dataclass
class Sweep:
    listed: int = 0
    recent: int = 0
    unrecognised: int = 0
    referenced: int = 0
    orphans: int = 0
    deleted: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "objects_listed": self.listed,
            "objects_recent": self.recent,
            "objects_unrecognised": self.unrecognised,
            "objects_referenced": self.referenced,
            "orphans": self.orphans,
            "orphans_deleted": self.deleted,
        }


def _batches(items: Iterable[tuple[str, uuid.UUID]], size: int) -> Iterator[list[tuple[str, uuid.UUID]]]:
    batch: list[tuple[str, uuid.UUID]] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class OrphanSweeper:
    def __init__(self, store: Backend, database_url: str, grace: timedelta, *, dry_run: bool, reporter: Reporter):
        self._store = store
        self._database_url = database_url
        self._grace = grace
        self._dry_run = dry_run
        self._reporter = reporter

    def sweep(self, now: datetime) -> Sweep:
        outcome = Sweep()
        candidates = self._candidates(outcome, now - self._grace)
        with connect(self._database_url) as conn:
            for batch in _batches(candidates, BATCH):
                ids = sorted({job_id for _key, job_id in batch})
                rows = conn.execute("SELECT input_key, output_key FROM jobs WHERE id = ANY(%s)", (ids,)).fetchall()
                referenced = {key for row in rows for key in row if key}
                for key, _job_id in batch:
                    if key in referenced:
                        outcome.referenced += 1
                    else:
                        self._orphan(outcome, key)
        return outcome

    def _candidates(self, outcome: Sweep, cutoff: datetime) -> Iterator[tuple[str, uuid.UUID]]:
        for prefix in PREFIXES:
            for listed in self._store.listing(prefix):
                outcome.listed += 1
                job_id = job_id_of(listed.key)
                if job_id is None:
                    outcome.unrecognised += 1
                elif listed.modified_at > cutoff:
                    outcome.recent += 1
                else:
                    yield listed.key, job_id

    def _orphan(self, outcome: Sweep, key: str) -> None:
        outcome.orphans += 1
        if outcome.orphans <= 20:
            self._reporter.progress(f"orphan: {key}" + (" (kept: --dry-run)" if self._dry_run else ""))
        if not self._dry_run:
            self._store.delete(key)
            outcome.deleted += 1


def run_sweep(args: argparse.Namespace, reporter: Reporter) -> int:
    with reporter.step("open the object store"):
        store = storage_backend(args)
    # One sweep at a time: a scheduled one and one started by hand would race on the same objects.
    with reporter.step("take the sweep-orphans lock"):
        lock = RunLock.take(args.database_url, "sweep-orphans")
    sweeper = OrphanSweeper(
        store, args.database_url, timedelta(minutes=args.older_than_minutes), dry_run=args.dry_run, reporter=reporter
    )
    verb = "find" if args.dry_run else "delete"
    with lock, reporter.step(f"{verb} the objects no job references (older than {args.older_than_minutes} min)"):
        outcome = sweeper.sweep(datetime.now(UTC))
    for name, value in outcome.counts().items():
        reporter.result(name, value)
    return reporter.finish()


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sweep = subcommands.add_parser(
        "sweep-orphans",
        help="delete stored objects no job references (after a restore, interrupted uploads, old attempts)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_database_argument(sweep)
    sweep.add_argument(
        "--older-than-minutes",
        type=int,
        default=DEFAULT_GRACE_MINUTES,
        help="spare objects written more recently (default: %(default)s)",
    )
    sweep.add_argument("--dry-run", action="store_true", help="count and list the orphans, delete nothing")
    add_storage_arguments(sweep)
    sweep.set_defaults(run=run_sweep)
