"""`pdfsmaller-ops backup-files` and `restore-files`: the object store's inputs and outputs of the jobs
still within retention, copied to the backup location, incrementally and content-addressed.

    pdfsmaller-ops backup-files                  # make run's .data/objects into .data/backups
    pdfsmaller-ops backup-files --database-url URL --storage-backend s3 --backup-s3-bucket B
    pdfsmaller-ops restore-files --storage-dir /srv/objects

Runs older than --retention-days (30) are pruned after a run, never the latest complete one, and
then every stored object no kept run lists: a database restored to any point within retention
finds its objects in the run of that day.

A run reads the job list first (one query: the jobs not expired), then copies each job's objects that
exist, so the copy is consistent with that list: an object deleted meanwhile (its job was deleted) is
reported missing, not a failure; an object that exists but cannot be read fails the run (exit 1).

In the location, bytes are stored once under their sha256 (`files/objects/<sha[:2]>/<sha>`): an object
whose sha256 is stored already is not copied again, so a second run with nothing new copies nothing,
and an object rewritten under the same key is copied again. Each run writes `files/runs/<run id>.json`
(key -> sha256, size, stored key, job ids; counts, bytes, times); `files/latest.json` names the last
run that read every object. The source is read through the storage service's own backends.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from libs.errors import InvalidArgument, NotFound, ServiceError
from ops import defaults
from ops.database import add_database_argument
from ops.location import BackupLocation
from ops.locks import RunLock
from ops.object_store import add_storage_arguments, storage_backend
from ops.report import OpsError, Reporter
from services.storage.backends import Backend, ObjectMeta, copy_hashed
from services.storage.backends.local import CorruptObject
from services.storage.keys import validate_key

OBJECTS_PREFIX = "files/objects/"
RUNS_PREFIX = "files/runs/"
LATEST_KEY = "files/latest.json"
MANIFEST_FORMAT = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Jobs whose objects the product still serves: not expired, retention not yet over (the sweeper may lag).
LIVE_JOBS_QUERY = """
    SELECT id::text, input_key, output_key FROM jobs
    WHERE state <> 'EXPIRED' AND expire_at > now()
    ORDER BY created_at, id
"""


class SourceReadError(Exception):
    """Reading an object of the source store failed (as opposed to writing it to the location)."""


# -- what to back up --------------------------------------------------------------------------------------


def read_live_objects(database_url: str) -> tuple[int, dict[str, list[str]]]:
    """(jobs within retention, object key -> ids of the jobs owning it), as of one moment."""
    try:
        with psycopg.connect(database_url, connect_timeout=10) as conn:
            rows = conn.execute(LIVE_JOBS_QUERY).fetchall()
    except psycopg.errors.UndefinedTable as error:
        raise OpsError("the database has no jobs table: is this the jobs database, migrated?") from error
    except psycopg.OperationalError as error:
        raise OpsError(f"cannot read the jobs from the database (--database-url): {error}".strip()) from error
    owners: dict[str, list[str]] = {}
    for job_id, input_key, output_key in rows:
        for key in dict.fromkeys(k for k in (input_key, output_key) if k):
            owners.setdefault(key, []).append(job_id)
    return len(rows), owners


def stored_key(sha256: str) -> str:
    return f"{OBJECTS_PREFIX}{sha256[:2]}/{sha256}"


def stored_hashes(location: BackupLocation) -> set[str]:
    """The sha256 of every object the location holds already (a put is atomic: listed means complete)."""
    return {key.rsplit("/", 1)[1] for key in location.keys(OBJECTS_PREFIX)}


# -- one run ----------------------------------------------------------------------------------------------


@dataclass
class FilesRun:
    """What one backup run saw and did; `manifest()` is the JSON document stored for it."""

    run_id: str
    started_at: datetime
    source: str
    jobs_considered: int = 0
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    copied: int = 0
    skipped: int = 0
    bytes_copied: int = 0

    @property
    def bytes_total(self) -> int:
        return sum(entry["size_bytes"] for entry in self.objects.values())

    def record(self, meta: ObjectMeta, job_ids: list[str], copied: bool) -> None:
        self.objects[meta.key] = {
            "sha256": meta.sha256,
            "size_bytes": meta.size_bytes,
            "content_type": meta.content_type,
            "stored_key": stored_key(meta.sha256),
            "job_ids": job_ids,
        }
        if copied:
            self.copied += 1
            self.bytes_copied += meta.size_bytes
        else:
            self.skipped += 1

    def counts(self) -> dict[str, int]:
        return {
            "jobs_considered": self.jobs_considered,
            "objects_copied": self.copied,
            "objects_skipped": self.skipped,
            "objects_missing": len(self.missing),
            "objects_failed": len(self.failed),
            "bytes_copied": self.bytes_copied,
            "bytes_total": self.bytes_total,
        }

    def manifest(self, finished_at: datetime) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "run_id": self.run_id,
            "started_at": self.started_at.isoformat(),
            "finished_at": finished_at.isoformat(),
            "source": self.source,
            **self.counts(),
            "objects": self.objects,
            "missing": self.missing,
            "failed": self.failed,
        }


def new_run_id(now: datetime) -> str:
    """Sortable, unique per microsecond, and a valid storage key segment."""
    return now.strftime("%Y%m%dt%H%M%S.%fz")


class FilesBackup:
    """Copies the objects of a job list from the source store to the location, skipping stored bytes."""

    def __init__(
        self,
        source: Backend,
        location: BackupLocation,
        stored: set[str],
        progress: Callable[[str], None],
        progress_every: int = 200,
    ) -> None:
        self._source = source
        self._location = location
        self._stored = stored
        self._progress = progress
        self._progress_every = max(1, progress_every)

    def copy_all(self, run: FilesRun, owners: dict[str, list[str]]) -> None:
        for done, (key, job_ids) in enumerate(owners.items(), start=1):
            self._copy_one(run, key, job_ids)
            if done % self._progress_every == 0 or done == len(owners):
                self._progress(
                    f"{done}/{len(owners)} objects: {run.copied} copied, {run.skipped} already stored, "
                    f"{len(run.missing)} missing, {len(run.failed)} failed"
                )

    def _copy_one(self, run: FilesRun, key: str, job_ids: list[str]) -> None:
        try:
            meta, copied = self._copy_if_new(validate_key(key))
        except (NotFound, InvalidArgument):
            # Deleted since the job list was read (its job was deleted), or never stored.
            run.missing[key] = job_ids
            return
        except SourceReadError as error:
            run.failed[key] = str(error)
            self._progress(f"cannot read {key}: {error}")
            return
        run.record(meta, job_ids, copied)

    def _copy_if_new(self, key: str) -> tuple[ObjectMeta, bool]:
        """Copy the object unless its bytes are stored already; (its metadata, whether it was copied)."""
        with _source_errors():
            meta = self._source.stat(key)
        if meta.sha256 in self._stored:
            return meta, False
        with tempfile.TemporaryDirectory(prefix="pdfsmaller-files-backup-") as scratch:
            spool = Path(scratch) / "object"
            # Spooled and hashed first: the stored key is the hash of the bytes read, whatever the
            # metadata says, and the object may have been rewritten since the stat.
            meta = self._spool(key, spool)
            if meta.sha256 in self._stored:
                return meta, False
            self._location.put_file(stored_key(meta.sha256), spool, meta.content_type)
        self._stored.add(meta.sha256)
        return meta, True

    def _spool(self, key: str, spool: Path) -> ObjectMeta:
        """Copy the object into `spool`; its metadata with the sha256 and size of the bytes read."""
        with contextlib.ExitStack() as opened:
            with _source_errors():
                meta, chunks = opened.enter_context(self._source.open(key))
            with spool.open("wb") as sink:
                size, sha256 = copy_hashed(_guarded(chunks), sink, 0)
        if meta.sha256 and meta.sha256 != sha256:
            raise SourceReadError(f"its bytes hash to {sha256}, its metadata says {meta.sha256} (corrupt?)")
        return ObjectMeta(key=key, size_bytes=size, sha256=sha256, content_type=meta.content_type)


@contextlib.contextmanager
def _source_errors() -> Iterator[None]:
    """A failure to read the source store (other than NotFound) raised as SourceReadError, so it is told
    apart from a failure to write the copy, which stops the run."""
    try:
        yield
    except NotFound:
        raise
    except (ServiceError, CorruptObject, OSError, ValueError) as error:
        raise SourceReadError(_describe(error)) from error


def _guarded(chunks: Iterable[bytes]) -> Iterator[bytes]:
    with _source_errors():
        yield from chunks


def _describe(error: Exception) -> str:
    if isinstance(error, ServiceError):
        return f"{error.reason}: {error.message}"
    return f"{type(error).__name__}: {error}"


def run_started_at(run_id: str) -> datetime | None:
    try:
        return datetime.strptime(run_id, "%Y%m%dt%H%M%S.%fz").replace(tzinfo=UTC)
    except ValueError:
        return None


@dataclass(frozen=True)
class FilesPruned:
    runs: int
    objects: int


def prune_files(location: BackupLocation, retention_days: int, now: datetime, latest_run_id: str) -> FilesPruned:
    """Delete the runs older than the retention (never the latest), then the stored objects no kept run
    lists. Manifests go first: stopped half-way, only unlisted objects are left, for the next prune."""
    cutoff = now - timedelta(days=retention_days)
    kept: list[str] = []
    expired: list[str] = []
    for key in location.keys(RUNS_PREFIX):
        run_id = key.removeprefix(RUNS_PREFIX).removesuffix(".json")
        started = run_started_at(run_id)
        old = started is not None and started < cutoff
        (expired if old and run_id != latest_run_id else kept).append(key)
    listed: set[str] = set()
    for key in kept:  # a manifest that is not one of ours keeps everything: nothing is deleted on a guess
        document = location.get_json(key)
        objects = document.get("objects") if isinstance(document, dict) else None
        if not isinstance(objects, dict):
            return FilesPruned(0, 0)
        listed.update(str(entry.get("stored_key")) for entry in objects.values() if isinstance(entry, dict))
    for key in expired:
        location.delete(key)
    unlisted = [key for key in location.keys(OBJECTS_PREFIX) if key not in listed]
    for key in unlisted:
        location.delete(key)
    return FilesPruned(len(expired), len(unlisted))


def write_run_manifest(location: BackupLocation, run: FilesRun) -> str:
    key = f"{RUNS_PREFIX}{run.run_id}.json"
    location.put_json(key, run.manifest(datetime.now(UTC)))
    return key


# -- restore ----------------------------------------------------------------------------------------------


@dataclass
class FilesRestore:
    """What a restore did, per object of the manifest."""

    restored: int = 0
    present: int = 0
    bytes_restored: int = 0
    conflicts: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {
            "objects_restored": self.restored,
            "objects_already_present": self.present,
            "objects_conflicting": len(self.conflicts),
            "objects_failed": len(self.failed),
            "bytes_restored": self.bytes_restored,
        }


def read_manifest(location: BackupLocation, run_id: str = "") -> tuple[str, dict[str, Any]]:
    """(key, document) of the run's manifest: `run_id`'s, else the one files/latest.json names."""
    try:
        key = f"{RUNS_PREFIX}{run_id}.json" if run_id else str(location.get_json(LATEST_KEY)["manifest"])
        document = location.get_json(key)
    except NotFound as error:
        what = f"run {run_id}" if run_id else "file backup"
        raise OpsError(f"no {what} in {location.description}: run `pdfsmaller-ops backup-files` first") from error
    if (
        not isinstance(document, dict)
        or document.get("format") != MANIFEST_FORMAT
        or not isinstance(document.get("objects"), dict)
    ):
        raise OpsError(f"{key} is not a files manifest of format {MANIFEST_FORMAT}")
    return key, document


class FilesRestorer:
    """Puts the objects of a manifest back into a store, each verified against its sha256."""

    def __init__(
        self,
        location: BackupLocation,
        target: Backend,
        progress: Callable[[str], None],
        *,
        overwrite: bool = False,
        progress_every: int = 200,
    ) -> None:
        self._location = location
        self._target = target
        self._progress = progress
        self._overwrite = overwrite
        self._progress_every = max(1, progress_every)

    def restore_all(self, objects: Mapping[str, Mapping[str, Any]]) -> FilesRestore:
        outcome = FilesRestore()
        for done, (key, entry) in enumerate(objects.items(), start=1):
            sha256 = str(entry.get("sha256", "")) if isinstance(entry, Mapping) else ""
            if _SHA256.fullmatch(sha256) is None:
                outcome.failed[key] = f"the manifest's sha256 {sha256!r} is not one"
            else:
                self._restore_one(outcome, validate_key(key), sha256, str(entry.get("content_type", "")))
            if done % self._progress_every == 0 or done == len(objects):
                self._progress(f"{done}/{len(objects)} objects: {outcome.restored} restored, {outcome.present} present")
        return outcome

    def _restore_one(self, outcome: FilesRestore, key: str, sha256: str, content_type: str) -> None:
        existing = self._existing_sha256(key)
        if existing == sha256:
            outcome.present += 1
            return
        if existing and not self._overwrite:
            outcome.conflicts[key] = f"the store holds other bytes ({existing}); --overwrite replaces them"
            return
        with tempfile.TemporaryDirectory(prefix="pdfsmaller-files-restore-") as scratch:
            spool = Path(scratch) / "object"
            try:
                self._location.get_file(stored_key(sha256), spool)
            except NotFound:
                outcome.failed[key] = f"the backup has no copy of it ({stored_key(sha256)})"
                return
            with spool.open("rb") as handle:
                meta = self._target.put(key, content_type, iter(lambda: handle.read(1 << 20), b""), 0)
        if meta.sha256 != sha256:
            self._target.delete(key)
            outcome.failed[key] = f"the backup's bytes hash to {meta.sha256}, the manifest says {sha256}"
            self._progress(f"{key}: {outcome.failed[key]}")
            return
        outcome.restored += 1
        outcome.bytes_restored += meta.size_bytes

    def _existing_sha256(self, key: str) -> str:
        try:
            return self._target.stat(key).sha256
        except NotFound:
            return ""


# -- the subcommands --------------------------------------------------------------------------------------


def _source_description(args: argparse.Namespace) -> str:
    if args.storage_backend == "s3":
        return f"s3://{os.environ.get('S3_BUCKET', '')}"
    return str(Path(args.storage_dir).resolve())


def run_backup(args: argparse.Namespace, reporter: Reporter) -> int:
    with reporter.step("take the backup-files lock"):
        lock = RunLock.take(args.database_url, "backup-files")
    with lock:
        return _backup(args, reporter)


def _backup(args: argparse.Namespace, reporter: Reporter) -> int:
    started = datetime.now(UTC)
    run = FilesRun(new_run_id(started), started, source=_source_description(args))
    with reporter.step("open the object store and the backup location"):
        source = storage_backend(args)
        location = BackupLocation.from_args(args)
        stored = stored_hashes(location)
    with reporter.step("read the jobs within retention"):
        run.jobs_considered, owners = read_live_objects(args.database_url)
    reporter.result("jobs_considered", run.jobs_considered)
    copier = FilesBackup(source, location, stored, reporter.progress, args.progress_every)
    with reporter.step(f"copy the {len(owners)} objects of those jobs"):
        copier.copy_all(run, owners)
        manifest_key = write_run_manifest(location, run)
        for name, value in {**run.counts(), "manifest": manifest_key}.items():
            reporter.result(name, value)
        for key in list(run.missing)[:10]:
            reporter.progress(f"missing (deleted since the job list was read?): {key}")
        if run.failed:
            first = next(iter(run.failed.items()))
            raise OpsError(
                f"{len(run.failed)} object(s) could not be read, first {first[0]}: {first[1]}; "
                f"{manifest_key} lists them, {LATEST_KEY} still names the last complete run"
            )
    with reporter.step("record the run as the latest"):
        location.put_json(LATEST_KEY, {"run_id": run.run_id, "manifest": manifest_key, **run.counts()})
    with reporter.step(f"prune what is older than {args.retention_days} days"):
        pruned = prune_files(location, args.retention_days, datetime.now(UTC), run.run_id)
        reporter.result("runs_pruned", pruned.runs)
        reporter.result("objects_pruned", pruned.objects)
    return reporter.finish()


def run_restore(args: argparse.Namespace, reporter: Reporter) -> int:
    with reporter.step("open the backup location and the object store"):
        location = BackupLocation.from_args(args)
        manifest_key, manifest = read_manifest(location, args.run_id)
        target = storage_backend(args, create=True)
    reporter.result("manifest", manifest_key)
    restorer = FilesRestorer(
        location, target, reporter.progress, overwrite=args.overwrite, progress_every=args.progress_every
    )
    with reporter.step(f"restore the {len(manifest['objects'])} objects of run {manifest['run_id']}"):
        outcome = restorer.restore_all(manifest["objects"])
        for name, value in outcome.counts().items():
            reporter.result(name, value)
        problems = {**outcome.conflicts, **outcome.failed}
        if problems:
            first = next(iter(problems.items()))
            raise OpsError(f"{len(problems)} object(s) not restored, first {first[0]}: {first[1]}")
    return reporter.finish()


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    add_storage_arguments(parser)
    BackupLocation.add_arguments(parser, defaults.BACKUP_DIR)
    parser.add_argument(
        "--progress-every", type=int, default=200, metavar="N", help="a progress line every N objects (%(default)s)"
    )


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = subcommands.add_parser(
        "backup-files",
        help="copy the objects of the jobs within retention to the backup location (incremental)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_database_argument(backup)
    backup.add_argument(
        "--retention-days",
        type=int,
        default=defaults.BACKUP_RETENTION_DAYS,
        help="keep the runs of this many days, and the objects they list (default: %(default)s)",
    )
    _add_common_arguments(backup)
    backup.set_defaults(run=run_backup)
    restore = subcommands.add_parser(
        "restore-files",
        help="put the objects of the latest file backup back into the object store, verified",
        description="Restore every object of the latest backup-files run (or --run), each checked against its "
        "sha256; objects already present with the same bytes are left alone.",
    )
    restore.add_argument(
        "--run", dest="run_id", default="", metavar="RUN_ID", help="a run id of files/runs/ instead of the latest"
    )
    restore.add_argument("--overwrite", action="store_true", help="replace objects the store holds with other bytes")
    _add_common_arguments(restore)
    restore.set_defaults(run=run_restore)
