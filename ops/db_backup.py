"""`pdfsmaller-ops backup` and `archive-wal`: the database's backups, with PostgreSQL's own programs.

    pdfsmaller-ops backup                  # incremental when a full backup of the last day exists, else full
    pdfsmaller-ops backup --full           # pg_basebackup, verified with pg_verifybackup, packed (tar + gzip)
    pdfsmaller-ops backup --incremental    # PostgreSQL 17+: only the blocks changed since the previous backup
    pdfsmaller-ops backup --logical        # pg_dump -Fc, verified with pg_restore --list

Each backup is stored under database/ of the backup location with a manifest (ops/backup_catalog.py),
then backups older than --retention-days are pruned (never the newest full backup nor what a kept
incremental needs). Incrementals need `summarize_wal=on`: when it is off and we are superuser, it is
turned on (ALTER SYSTEM, reload) and the command says so.

Continuous WAL archiving, so a restore reaches the last seconds instead of the last backup, is
PostgreSQL's `archive_command` calling `archive-wal` (archive_mode needs a server restart):

    ALTER SYSTEM SET archive_mode = on;
    ALTER SYSTEM SET archive_timeout = '30s';
    ALTER SYSTEM SET archive_command = '<venv>/bin/pdfsmaller-ops archive-wal --backup-dir <dir> %p %f';

`pdfsmaller-ops archive-wal --enable` runs those statements for this installation's command and location.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import shlex
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from psycopg import sql

from libs.errors import NotFound
from ops import defaults
from ops.backup_catalog import (
    BASE_PREFIX,
    FULL,
    INCREMENTAL,
    LOGICAL,
    LOGICAL_PREFIX,
    PHYSICAL_KINDS,
    WAL_PREFIX,
    BackupCatalog,
    BackupRecord,
    StoredFile,
    backups_to_prune,
    wal_to_prune,
)
from ops.database import add_database_argument, connect
from ops.location import BackupLocation
from ops.locks import RunLock
from ops.postgres_tools import PostgresTools, ToolFailed, split_password
from ops.report import OpsError, Reporter

# The guide's schedule: a full backup daily, incrementals in between.
FULL_BACKUP_INTERVAL = timedelta(days=1)
FIRST_INCREMENTAL_VERSION = 17
_HASH_CHUNK = 1024 * 1024
# WAL file names PostgreSQL archives: segments, timeline history, backup history, partial segments.
WAL_NAME = re.compile(r"^[0-9A-F]{8}([0-9A-F]{16})?(\.[0-9A-F]{8}\.backup|\.history|\.partial)?$")
# A WAL segment's own name (timeline, then position), and the suffix of one still being written.
SEGMENT_NAME = re.compile(r"^[0-9A-F]{24}$")
PARTIAL_SUFFIX = ".partial"
ARCHIVE_TIMEOUT = "30s"


@dataclass(frozen=True)
class DatabaseFacts:
    version: str
    version_num: int
    database: str
    bootstrap_superuser: str
    is_superuser: bool
    size_bytes: int
    job_count: int | None
    system_identifier: str
    summarize_wal: bool


def inspect_database(url: str) -> DatabaseFacts:
    with connect(url) as conn:

        def one(query: str) -> object:
            row = conn.execute(query.encode()).fetchone()
            return None if row is None else row[0]

        has_jobs = one("SELECT to_regclass('jobs') IS NOT NULL")
        version_num = int(str(one("SHOW server_version_num")))
        return DatabaseFacts(
            version=str(one("SHOW server_version")),
            version_num=version_num,
            database=str(one("SELECT current_database()")),
            bootstrap_superuser=str(one("SELECT rolname FROM pg_roles WHERE oid = 10")),
            is_superuser=bool(one("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")),
            size_bytes=int(str(one("SELECT pg_database_size(current_database())"))),
            job_count=int(str(one("SELECT count(*) FROM jobs"))) if has_jobs else None,
            system_identifier=str(one("SELECT system_identifier FROM pg_control_system()")),
            summarize_wal=version_num >= FIRST_INCREMENTAL_VERSION * 10000 and one("SHOW summarize_wal") == "on",
        )


def ensure_wal_summaries(url: str, facts: DatabaseFacts, reporter: Reporter) -> bool:
    """Whether the server summarizes WAL (what incrementals need), turning it on when we may."""
    if facts.summarize_wal or facts.version_num < FIRST_INCREMENTAL_VERSION * 10000:
        return facts.summarize_wal
    if not facts.is_superuser:
        reporter.progress("summarize_wal is off and we are not superuser: only full backups until it is turned on")
        return False
    with connect(url) as conn:
        conn.execute("ALTER SYSTEM SET summarize_wal = on")
        conn.execute("SELECT pg_reload_conf()")
    reporter.progress("turned summarize_wal on (ALTER SYSTEM, reload) so that the next backups can be incremental")
    reporter.result("summarize_wal", "turned on")
    return True


@dataclass(frozen=True)
class Plan:
    kind: str
    parent: BackupRecord | None = None
    why: str = ""


def _chain_root(record: BackupRecord, by_id: dict[str, BackupRecord]) -> BackupRecord | None:
    seen = 0
    while record.kind == INCREMENTAL and seen < len(by_id):
        if record.parent_id not in by_id:
            return None
        record = by_id[record.parent_id]
        seen += 1
    return record if record.kind == FULL else None


def plan_backup(requested: str, records: list[BackupRecord], facts: DatabaseFacts, now: datetime) -> Plan:
    """What to take: the kind asked for, or (no flag) incremental on a full backup younger than a day."""
    if requested in (FULL, LOGICAL):
        return Plan(requested)
    mine = [r for r in records if r.kind in PHYSICAL_KINDS and r.system_identifier == facts.system_identifier]
    by_id = {record.id: record for record in mine}
    newest = mine[-1] if mine else None
    root = _chain_root(newest, by_id) if newest is not None else None
    if facts.version_num < FIRST_INCREMENTAL_VERSION * 10000:
        return Plan(FULL, why=f"PostgreSQL {facts.version} has no incremental backups (17 and later have)")
    if not facts.summarize_wal:
        return Plan(FULL, why="summarize_wal is off on the server")
    if newest is None or root is None:
        return Plan(FULL, why="there is no full backup of this database in the location yet")
    if requested != INCREMENTAL and now - root.end_time > FULL_BACKUP_INTERVAL:
        return Plan(FULL, why=f"the newest full backup ({root.id}) is older than a day")
    return Plan(INCREMENTAL, parent=newest)


def new_backup_id(now: datetime, kind: str) -> str:
    return now.strftime("%Y%m%dt%H%M%S.") + f"{now.microsecond // 1000:03d}z-{kind}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def store_files(location: BackupLocation, prefix: str, files: dict[str, Path]) -> dict[str, StoredFile]:
    """Put each file under `prefix` and check what the location stored is what we hashed."""
    stored = {}
    for role, path in files.items():
        expected = sha256_of(path)
        meta = location.put_file(prefix + path.name, path)
        if meta.sha256 != expected or meta.size_bytes != path.stat().st_size:
            raise OpsError(f"{location.description} stored {prefix + path.name} with another sha256 or size")
        stored[role] = StoredFile(prefix + path.name, meta.size_bytes, meta.sha256)
    return stored


def read_backup_label(folder: Path) -> dict[str, str]:
    """backup_label's "NAME: value" lines (START WAL LOCATION, START TIME, START TIMELINE...)."""
    label = {}
    for line in (folder / "backup_label").read_text().splitlines()[:100]:
        name, _, value = line.partition(": ")
        label[name.strip()] = value.strip()
    return label


def end_lsn_of(folder: Path) -> str:
    """The end of the WAL the backup needs, from its backup_manifest's WAL-Ranges."""
    manifest = json.loads((folder / "backup_manifest").read_text())
    ranges = manifest.get("WAL-Ranges") or []
    if not ranges:
        raise OpsError("the backup_manifest has no WAL-Ranges")
    return str(ranges[-1]["End-LSN"])


def pack(folder: Path, archive: Path) -> int:
    """Tar and gzip `folder` as `archive`; returns the bytes of the files packed."""
    total = 0

    def count(member: tarfile.TarInfo) -> tarfile.TarInfo:
        nonlocal total
        total += member.size
        return member

    with tarfile.open(archive, "w:gz", compresslevel=6) as tar:
        tar.add(str(folder), arcname="backup", filter=count)
    return total


class PhysicalBackup:
    """One pg_basebackup into a work folder, verified, packed and stored."""

    def __init__(self, tools: PostgresTools, url: str, work: Path, timeout: float, reporter: Reporter) -> None:
        self.tools = tools
        self.conninfo, self.env = split_password(url)
        self.work = work
        self.timeout = timeout
        self.reporter = reporter

    def base_backup(self, backup_id: str, parent_manifest: Path | None) -> Path:
        folder = self.work / backup_id
        args = ["-d", self.conninfo, "-D", str(folder), "-Fp", "-X", "stream", "--checkpoint=fast", "--no-sync"]
        args += ["-l", f"pdfsmaller-ops {backup_id}"]
        if parent_manifest is not None:
            args += ["--incremental", str(parent_manifest)]
        self.tools.run("pg_basebackup", args, timeout=self.timeout, env=self.env)
        return folder

    def verify(self, folder: Path) -> None:
        self.tools.run("pg_verifybackup", ["--quiet", str(folder)], timeout=self.timeout)

    def store(self, location: BackupLocation, backup_id: str, folder: Path) -> tuple[dict[str, StoredFile], int]:
        archive = self.work / "base.tar.gz"
        self.reporter.progress(f"packing {folder.name} (tar + gzip)")
        data_size = pack(folder, archive)
        manifest_copy = self.work / "backup_manifest"
        shutil.copyfile(folder / "backup_manifest", manifest_copy)
        self.reporter.progress(f"storing {archive.stat().st_size} bytes in {location.description}")
        files = store_files(
            location, BASE_PREFIX + backup_id + "/", {"archive": archive, "backup_manifest": manifest_copy}
        )
        return files, data_size


def _fetch_parent_manifest(location: BackupLocation, parent: BackupRecord, work: Path) -> Path:
    destination = work / f"parent-{parent.id}.backup_manifest"
    stored = parent.files["backup_manifest"]
    location.get_file(stored.key, destination)
    if sha256_of(destination) != stored.sha256:
        raise OpsError(f"the backup_manifest of {parent.id} does not match its record: the location is damaged")
    return destination


def take_physical(
    tools: PostgresTools,
    args: argparse.Namespace,
    plan: Plan,
    facts: DatabaseFacts,
    location: BackupLocation,
    reporter: Reporter,
) -> BackupRecord:
    with tempfile.TemporaryDirectory(prefix="pdfsmaller-backup-", dir=args.work_dir) as work_dir:
        backup = PhysicalBackup(tools, args.database_url, Path(work_dir), args.timeout, reporter)
        start = datetime.now(UTC)
        folder, plan = _base_backup_with_fallback(backup, plan, location, start, reporter)
        backup_id = folder.name
        with reporter.step(f"pg_verifybackup {backup_id}"):
            backup.verify(folder)
        with reporter.step(f"store {backup_id}"):
            label = read_backup_label(folder)
            end_time = datetime.now(UTC)
            files, data_size = backup.store(location, backup_id, folder)
        start_wal = re.search(r"file ([0-9A-F]{24})", label.get("START WAL LOCATION", ""))
        return BackupRecord(
            id=backup_id,
            kind=plan.kind,
            parent_id=plan.parent.id if plan.parent else None,
            start_time=start,
            end_time=end_time,
            start_lsn=label.get("START WAL LOCATION", "").split(" ")[0] or None,
            end_lsn=end_lsn_of(folder),
            timeline=int(label.get("START TIMELINE", "0")) or None,
            start_wal_file=start_wal.group(1) if start_wal else None,
            system_identifier=facts.system_identifier,
            postgres_version=facts.version,
            database=facts.database,
            superuser=facts.bootstrap_superuser,
            database_size_bytes=facts.size_bytes,
            data_size_bytes=data_size,
            job_count=facts.job_count,
            files=files,
            notes=[plan.why] if plan.why else [],
        )


def _base_backup_with_fallback(
    backup: PhysicalBackup, plan: Plan, location: BackupLocation, start: datetime, reporter: Reporter
) -> tuple[Path, Plan]:
    """The incremental the plan asks for, or a full backup when PostgreSQL cannot make it (and why)."""
    if plan.kind == INCREMENTAL and plan.parent is not None:
        backup_id = new_backup_id(start, INCREMENTAL)
        # "ok" means the attempt ran: when PostgreSQL cannot make the incremental, a full backup follows.
        with reporter.step(f"try pg_basebackup --incremental {backup_id} (on {plan.parent.id})"):
            parent_manifest = _fetch_parent_manifest(location, plan.parent, backup.work)
            try:
                return backup.base_backup(backup_id, parent_manifest), plan
            except ToolFailed as error:
                plan = Plan(FULL, why=f"PostgreSQL could not take the incremental backup: {error.stderr[-500:]}")
        reporter.progress(f"taking a full backup instead: {plan.why}")
    if plan.why:
        reporter.result("full_because", plan.why)
    backup_id = new_backup_id(datetime.now(UTC), FULL)
    with reporter.step(f"pg_basebackup {backup_id}"):
        return backup.base_backup(backup_id, None), plan


def take_logical(
    tools: PostgresTools, args: argparse.Namespace, facts: DatabaseFacts, location: BackupLocation, reporter: Reporter
) -> BackupRecord:
    conninfo, env = split_password(args.database_url)
    start = datetime.now(UTC)
    backup_id = new_backup_id(start, LOGICAL)
    with tempfile.TemporaryDirectory(prefix="pdfsmaller-backup-", dir=args.work_dir) as work_dir:
        dump = Path(work_dir) / "database.dump"
        with reporter.step(f"pg_dump -Fc {backup_id}"):
            tools.run("pg_dump", ["-Fc", "-d", conninfo, "-f", str(dump)], timeout=args.timeout, env=env)
            end_time = datetime.now(UTC)
        with reporter.step(f"pg_restore --list {backup_id}"):
            listing = tools.run("pg_restore", ["--list", str(dump)], timeout=args.timeout).stdout
            entries = sum(1 for line in listing.splitlines() if line and not line.startswith(";"))
            reporter.progress(f"{entries} entries in the dump")
        with reporter.step(f"store {backup_id}"):
            files = store_files(location, LOGICAL_PREFIX + backup_id + "/", {"dump": dump})
    return BackupRecord(
        id=backup_id,
        kind=LOGICAL,
        start_time=start,
        end_time=end_time,
        postgres_version=facts.version,
        database=facts.database,
        superuser=facts.bootstrap_superuser,
        database_size_bytes=facts.size_bytes,
        job_count=facts.job_count,
        files=files,
        system_identifier=facts.system_identifier,
    )


def prune(catalog: BackupCatalog, retention_days: int, reporter: Reporter) -> None:
    records = catalog.records()
    doomed = backups_to_prune(records, datetime.now(UTC), timedelta(days=retention_days))
    for record in doomed:
        reporter.progress(f"deleting {record.id} (older than {retention_days} days)")
        catalog.delete(record)
    kept = [record for record in records if record not in doomed]
    old_wal = wal_to_prune(catalog.wal_keys(), kept)
    for key in old_wal:
        catalog.location.delete(key)
    reporter.result("pruned_backups", [record.id for record in doomed])
    reporter.result("pruned_wal_segments", len(old_wal))


def run_backup(args: argparse.Namespace, reporter: Reporter) -> int:
    with reporter.step("take the backup lock"):
        lock = RunLock.take(args.database_url, "backup")
    with lock:
        return _backup(args, reporter)


def _backup(args: argparse.Namespace, reporter: Reporter) -> int:
    with reporter.step("inspect the database"):
        location = BackupLocation.from_args(args)
        catalog = BackupCatalog(location)
        tools = PostgresTools.locate()
        facts = inspect_database(args.database_url)
        if args.kind != LOGICAL:
            facts = replace(facts, summarize_wal=ensure_wal_summaries(args.database_url, facts, reporter))
        plan = plan_backup(args.kind, catalog.records(), facts, datetime.now(UTC))
        reporter.progress(f"PostgreSQL {facts.version}, {facts.size_bytes} bytes, {facts.job_count} jobs")
    if plan.kind == LOGICAL:
        record = take_logical(tools, args, facts, location, reporter)
    else:
        record = take_physical(tools, args, plan, facts, location, reporter)
    with reporter.step(f"record {record.id}"):
        catalog.save(record)
    with reporter.step(f"retention ({args.retention_days} days)"):
        prune(catalog, args.retention_days, reporter)
    reporter.result("backup_id", record.id)
    reporter.result("kind", record.kind)
    reporter.result("end_lsn", record.end_lsn)
    reporter.result("stored_bytes", sum(stored.size_bytes for stored in record.files.values()))
    reporter.result("job_count", record.job_count)
    reporter.result("location", location.description)
    return reporter.finish()


def wal_key(name: str) -> str:
    """The location key of an archived WAL file (keys are lower-case; PostgreSQL names are upper-case hex)."""
    if not WAL_NAME.match(name):
        raise OpsError(f"not a WAL file name: {name!r}")
    return f"{WAL_PREFIX}{name.lower()}.gz"


class WalConflict(OpsError):
    """A WAL file name already archived with other bytes: the archive belongs to another server's history."""


def _gzipped(source: Path, name: str, work: str, level: int) -> Path:
    packed = Path(work) / (name.lower() + ".gz")
    with source.open("rb") as raw, gzip.GzipFile(packed, "wb", compresslevel=level, mtime=0) as out:
        shutil.copyfileobj(raw, out, _HASH_CHUNK)
    return packed


def archive_wal(location: BackupLocation, source: Path, name: str, work_dir: str | None) -> str:
    """Store one WAL file, gzipped; the same file archived again is fine, another under its name is not."""
    key = wal_key(name)
    with tempfile.TemporaryDirectory(prefix="pdfsmaller-wal-", dir=work_dir) as work:
        packed = _gzipped(source, name, work, level=6)
        try:
            existing = location.stat(key)
        except NotFound:
            location.put_file(key, packed, "application/gzip")
            return "archived"
        if existing.sha256 != sha256_of(packed):
            raise WalConflict(f"{key} is already archived with other content: refusing to overwrite it")
        return "already archived"


def store_partial_wal(location: BackupLocation, source: Path, name: str, work_dir: str | None) -> None:
    """Store the segment being received (`<segment>.partial`) as it stands, replacing the previous copy.

    Level 1: it is stored every few seconds, and the unwritten end of the segment is zeros."""
    if not name.endswith(PARTIAL_SUFFIX):
        raise OpsError(f"not a partial WAL segment: {name!r}")
    with tempfile.TemporaryDirectory(prefix="pdfsmaller-wal-", dir=work_dir) as work:
        location.put_file(wal_key(name), _gzipped(source, name, work, level=1), "application/gzip")


def run_archive_wal(args: argparse.Namespace, reporter: Reporter) -> int:
    if args.enable:
        return run_enable_archiving(args, reporter)
    if not args.wal_path or not args.wal_name:
        raise SystemExit("archive-wal needs %p and %f (or --enable)")
    with reporter.step(f"archive {args.wal_name}"):
        location = BackupLocation.from_args(args)
        reporter.result("wal", archive_wal(location, Path(args.wal_path), args.wal_name, args.work_dir))
    return reporter.finish()


def ops_command() -> list[str]:
    """How PostgreSQL runs this installation's pdfsmaller-ops (the script beside our Python, else -m ops)."""
    script = Path(sys.executable).parent / "pdfsmaller-ops"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ops"]


def location_arguments(args: argparse.Namespace) -> list[str]:
    if args.backup_s3_bucket:
        return ["--backup-s3-bucket", args.backup_s3_bucket, "--backup-s3-prefix", args.backup_s3_prefix]
    return ["--backup-dir", str(Path(args.backup_dir).absolute())]


def archive_command(args: argparse.Namespace) -> str:
    return shlex.join([*ops_command(), "archive-wal", *location_arguments(args)]) + " %p %f"


def run_enable_archiving(args: argparse.Namespace, reporter: Reporter) -> int:
    command = archive_command(args)
    with reporter.step("enable WAL archiving"), connect(args.database_url) as conn:
        conn.execute("ALTER SYSTEM SET archive_mode = on")
        conn.execute(f"ALTER SYSTEM SET archive_timeout = '{ARCHIVE_TIMEOUT}'".encode())
        # ALTER SYSTEM takes no parameters: the command is quoted as a literal by psycopg.
        conn.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(sql.Literal(command)))
        conn.execute("SELECT pg_reload_conf()")
        running = conn.execute("SHOW archive_mode").fetchone()
    reporter.result("archive_command", command)
    if running is None or running[0] != "on":
        reporter.result("restart_needed", "archive_mode takes effect when PostgreSQL restarts (make run: restart it)")
    return reporter.finish()


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = subcommands.add_parser(
        "backup",
        help="back up the database (full, incremental or logical)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_database_argument(backup)
    kinds = backup.add_mutually_exclusive_group()
    kinds.add_argument("--full", dest="kind", action="store_const", const=FULL, help="a full pg_basebackup")
    kinds.add_argument(
        "--incremental",
        dest="kind",
        action="store_const",
        const=INCREMENTAL,
        help="an incremental on the newest backup (full when there is none)",
    )
    kinds.add_argument("--logical", dest="kind", action="store_const", const=LOGICAL, help="a pg_dump -Fc")
    backup.set_defaults(kind="")
    backup.add_argument(
        "--retention-days", type=int, default=defaults.BACKUP_RETENTION_DAYS, help="default: %(default)s"
    )
    _add_common(backup)
    backup.set_defaults(run=run_backup)

    archive = subcommands.add_parser("archive-wal", help="PostgreSQL's archive_command: store one WAL file")
    archive.add_argument("wal_path", nargs="?", help="%%p: the file's path (relative to the data folder)")
    archive.add_argument("wal_name", nargs="?", help="%%f: the file's name")
    archive.add_argument(
        "--enable",
        action="store_true",
        help="set archive_mode, archive_command and archive_timeout on the server (ALTER SYSTEM)",
    )
    add_database_argument(archive, help_text="for --enable: the database to set up")
    _add_common(archive)
    archive.set_defaults(run=run_archive_wal)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds each PostgreSQL program may take")
    parser.add_argument("--work-dir", default=None, help="where temporary copies go (default: the system's)")
    BackupLocation.add_arguments(parser, defaults.BACKUP_DIR)
