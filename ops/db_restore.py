"""`pdfsmaller-ops restore` and `fetch-wal`: a database back from the backup location, to a point in time.

    pdfsmaller-ops restore                                  # the latest point: newest backup + all archived WAL
    pdfsmaller-ops restore --to-time '2026-12-01 12:00:00+00'
    pdfsmaller-ops restore --to-lsn 0/3000028 --target-dir /srv/pgdata --start-and-check
    pdfsmaller-ops restore --logical --database-url postgresql://.../empty   # the newest pg_dump

It takes the newest full backup (and the incrementals on it, combined with pg_combinebackup) that
ended before the target, checks each stored archive's sha256 and runs pg_verifybackup (a damaged
backup is refused), and puts the data folder in place: by default make run's. A non-empty target
folder is refused unless --force, which moves it aside (never deletes it); one a server runs on is
always refused. With archived WAL (archive-wal) it writes recovery.signal and a restore_command
calling `fetch-wal`, so PostgreSQL replays the WAL up to the target and is promoted. The server
then starts as usual (make run); --start-and-check starts it here once, on a private socket,
waits for recovery to end, prints the point replayed to and the job count, and stops it.
--logical restores the newest pg_dump into an empty database instead (refusing one that is not).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import re
import shlex
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from libs.errors import NotFound
from ops import defaults
from ops.backup_catalog import (
    WAL_PREFIX,
    BackupCatalog,
    BackupRecord,
    lsn_value,
    newest_logical,
    newest_restorable,
)
from ops.database import add_database_argument, connect
from ops.db_backup import (
    PARTIAL_SUFFIX,
    SEGMENT_NAME,
    location_arguments,
    ops_command,
    sha256_of,
    wal_key,
)
from ops.location import BackupLocation
from ops.postgres_tools import PostgresTools, ScratchServer, ToolFailed, split_password
from ops.report import OpsError, Reporter

# A packed backup holds the files of one data folder: far fewer than this.
MAX_ARCHIVE_MEMBERS = 2_000_000
# The largest WAL segment PostgreSQL makes is 1 GiB.
MAX_WAL_BYTES = 1024**3
_CHUNK = 1024 * 1024
# restore_command's exit status for a failure that must stop recovery (PostgreSQL: above 125).
ABORT_RECOVERY = 255
_LAST_TRANSACTION = re.compile(r"last completed transaction was at log time ([0-9: .+-]+)")


@dataclass(frozen=True)
class Target:
    time: datetime | None = None
    lsn: str | None = None

    @property
    def given(self) -> bool:
        return self.time is not None or self.lsn is not None


def parse_time(text: str) -> datetime:
    """An ISO time; without a zone it is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise OpsError(f"--to-time {text!r} is not a time (use ISO 8601, e.g. 2026-12-01T12:00:00+00:00)") from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _time_argument(text: str) -> datetime:
    try:
        return parse_time(text)
    except OpsError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _lsn_argument(text: str) -> str:
    try:
        lsn_value(text)
    except OpsError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return text.strip()


def _server_pid(pgdata: Path) -> int | None:
    """The pid in postmaster.pid when that process is alive."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def check_target(target: Path, force: bool) -> bool:
    """Whether the target folder holds something to move aside; refuses a live server, or without --force
    a non-empty folder."""
    pid = _server_pid(target)
    if pid is not None:
        raise OpsError(f"a PostgreSQL server (pid {pid}) runs on {target}: stop it before restoring")
    if not target.exists() or not any(target.iterdir()):
        return False
    if not force:
        raise OpsError(f"{target} is not empty: pass --force to move it aside (it is never deleted) and restore")
    return True


def move_aside(target: Path, now: datetime) -> Path:
    aside = target.with_name(f"{target.name}.before-restore-{now.strftime('%Y%m%dT%H%M%SZ')}")
    target.rename(aside)
    return aside


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    for count, member in enumerate(tar, 1):
        if count > MAX_ARCHIVE_MEMBERS:
            raise OpsError(f"the backup archive has more than {MAX_ARCHIVE_MEMBERS} files: not one of ours")
        yield member


def fetch_backup(location: BackupLocation, record: BackupRecord, staging: Path) -> Path:
    """Download and unpack one backup; OpsError when the stored archive is not the one recorded."""
    stored = record.files["archive"]
    archive = staging / f"{record.id}.tar.gz"
    location.get_file(stored.key, archive)
    actual = sha256_of(archive)
    if actual != stored.sha256:
        raise OpsError(
            f"backup {record.id} is damaged: {stored.key} has sha256 {actual[:16]}..., "
            f"its record says {stored.sha256[:16]}...; refusing to restore it"
        )
    unpacked = staging / record.id
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(unpacked, members=_members(tar), filter="data")
    archive.unlink()
    return unpacked / "backup"


def verify_backup(tools: PostgresTools, folder: Path, what: str, timeout: float) -> None:
    try:
        tools.run("pg_verifybackup", ["--quiet", str(folder)], timeout=timeout)
    except ToolFailed as error:
        raise OpsError(f"{what} fails pg_verifybackup, refusing to restore it: {error.stderr[-1500:]}") from error


def assemble(tools: PostgresTools, folders: list[Path], output: Path, timeout: float) -> None:
    """The data folder of the chain: the full backup itself, or pg_combinebackup of full + incrementals."""
    if len(folders) == 1:
        folders[0].rename(output)
        return
    tools.run("pg_combinebackup", [*map(str, folders), "-o", str(output), "--no-sync"], timeout=timeout)
    verify_backup(tools, output, "the combined backup", timeout)


def _conf_value(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def append_settings(pgdata: Path, settings: dict[str, str]) -> None:
    """Settings appended last to postgresql.auto.conf, so they win over what the backup brought."""
    lines = [f"{name} = {_conf_value(value)}" for name, value in settings.items()]
    with (pgdata / "postgresql.auto.conf").open("a") as conf:
        conf.write("\n# pdfsmaller-ops restore\n" + "\n".join(lines) + "\n")


def configure_recovery(pgdata: Path, restore_command: str, target: Target) -> None:
    """recovery.signal and the recovery settings: replay the archived WAL up to the target, then promote."""
    settings = {
        "restore_command": restore_command,
        "recovery_target_timeline": "latest",
        "recovery_target_action": "promote",
    }
    # Every target is set, the unused ones empty and first (PostgreSQL refuses a second target set
    # after one): a backup of a restored server carries its own restore's target, which must not apply.
    for name in ("recovery_target", "recovery_target_name", "recovery_target_xid"):
        settings[name] = ""
    chosen = {
        "recovery_target_time": target.time.isoformat(sep=" ") if target.time else "",
        "recovery_target_lsn": target.lsn or "",
    }
    settings.update(sorted(chosen.items(), key=lambda item: item[1] != ""))
    append_settings(pgdata, settings)
    (pgdata / "recovery.signal").write_text("")


def restore_command(args: argparse.Namespace, prefetched: Path | None, gzip_program: str) -> str:
    """Serve WAL from the prefetched folder with gzip (no program start per segment), else fetch-wal.

    Exit status: 1 means "not archived" (PostgreSQL then ends recovery); a failure that is not a
    missing file exits ABORT_RECOVERY (above 125: PostgreSQL stops instead of ending recovery early).
    """
    fetch = shlex.join([*ops_command(), "fetch-wal", *location_arguments(args)]) + ' %f "%p"'
    if prefetched is None:
        return fetch
    folder, gunzip = shlex.quote(str(prefetched)), shlex.quote(gzip_program)
    serve = f'{gunzip} -dc "$f" > "%p" || exit {ABORT_RECOVERY}'
    return f'f={folder}/%f.gz; if [ -f "$f" ]; then {serve}; else {fetch}; fi'


def wal_file_name(key: str) -> str:
    """PostgreSQL's name of an archived WAL key (its hex upper-case again): 00000001000000000000000A."""
    parts = key.removeprefix(WAL_PREFIX).removesuffix(".gz").split(".")
    return ".".join(part.upper() if re.fullmatch(r"[0-9a-f]+", part) else part for part in parts)


def segments_to_replay(wal_keys: list[str], start_wal_file: str | None) -> dict[str, str]:
    """Segment name -> archived key, for the segments from `start_wal_file` on: the complete segment, or
    where there is none the partial one receive-wal stored (PostgreSQL replays it to its last record)."""
    start = (start_wal_file or "0" * 24).upper()[8:24]
    chosen: dict[str, str] = {}
    for key in sorted(wal_keys):
        name = wal_file_name(key)
        segment = name.removesuffix(PARTIAL_SUFFIX)
        if SEGMENT_NAME.match(segment) and segment[8:24] >= start and (segment == name or segment not in chosen):
            chosen[segment] = key
    return chosen


def prefetch_wal(catalog: BackupCatalog, record: BackupRecord, folder: Path, reporter: Reporter) -> int:
    """Copy the archived segments a recovery from `record` replays (as stored, gzipped) into `folder`."""
    segments = segments_to_replay(catalog.wal_keys(), record.start_wal_file)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for count, (name, key) in enumerate(sorted(segments.items()), 1):
        catalog.location.get_file(key, folder / (name + ".gz"))
        if count % 100 == 0:
            reporter.progress(f"{count} of {len(segments)} WAL segments fetched")
    return len(segments)


@dataclass(frozen=True)
class CheckResult:
    replayed_to_lsn: str | None
    last_transaction_time: str | None
    job_count: int | None


def start_and_check(tools: PostgresTools, pgdata: Path, record: BackupRecord, timeout: float) -> CheckResult:
    """Start the restored server on a private socket, wait until recovery ends, count the jobs, stop it."""
    with ScratchServer(tools, pgdata, superuser=record.superuser, start_timeout=timeout) as server:
        server.wait_for_promotion()
        replayed = server.query("SELECT pg_last_wal_replay_lsn()::text")
        has_jobs = server.query("SELECT to_regclass('jobs') IS NOT NULL", database=record.database)
        jobs = server.query("SELECT count(*) FROM jobs", database=record.database) if has_jobs else None
        last = _LAST_TRANSACTION.findall(server.log_tail(20_000))
    return CheckResult(replayed, last[-1].strip() if last else None, jobs)


def choose_chain(catalog: BackupCatalog, target: Target) -> list[BackupRecord]:
    before_lsn = lsn_value(target.lsn) if target.lsn is not None else None
    return newest_restorable(catalog.records(), before_time=target.time, before_lsn=before_lsn)


def _unpack_chain(
    tools: PostgresTools,
    args: argparse.Namespace,
    chain: list[BackupRecord],
    location: BackupLocation,
    staging: Path,
    reporter: Reporter,
) -> Path:
    folders = []
    for record in chain:
        with reporter.step(f"fetch and verify {record.id}"):
            folder = fetch_backup(location, record, staging)
            verify_backup(tools, folder, f"backup {record.id}", args.timeout)
            folders.append(folder)
    assembled = staging / "pgdata"
    with reporter.step("pg_combinebackup" if len(folders) > 1 else "assemble the data folder"):
        assemble(tools, folders, assembled, args.timeout)
    return assembled


def run_restore(args: argparse.Namespace, reporter: Reporter) -> int:
    if args.logical:
        return run_logical_restore(args, reporter)
    target = Target(args.to_time, args.to_lsn)
    pgdata = Path(args.target_dir).absolute()
    with reporter.step("choose the backup"):
        catalog = BackupCatalog(BackupLocation.from_args(args))
        tools = PostgresTools.locate()
        chain = choose_chain(catalog, target)
        has_wal = bool(catalog.wal_keys())
        if target.given and not has_wal:
            raise OpsError(f"no archived WAL in {catalog.location.description}: a point in time needs archive-wal")
        reporter.progress("backups: " + " + ".join(record.id for record in chain))
    with reporter.step(f"check {pgdata}"):
        occupied = check_target(pgdata, args.force)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{pgdata.name}.restoring-", dir=pgdata.parent))
    try:
        assembled = _unpack_chain(tools, args, chain, catalog.location, staging, reporter)
        if has_wal:
            _prepare_recovery(args, catalog, chain[-1], assembled, target, reporter)
        if args.scratch:
            append_settings(assembled, {"archive_mode": "off"})  # a throw-away copy never archives into the location
        with reporter.step("put the data folder in place"):
            if occupied and check_target(pgdata, args.force):
                reporter.result("moved_aside", str(move_aside(pgdata, datetime.now(UTC))))
            with contextlib.suppress(FileNotFoundError):
                pgdata.rmdir()  # empty (check_target said so)
            assembled.rename(pgdata)
            pgdata.chmod(0o700)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _report_restore(tools, args, chain, pgdata, has_wal, target, reporter)
    return reporter.finish()


def prefetch_folder(pgdata: Path) -> Path:
    return pgdata.with_name(pgdata.name + ".restore-wal")


def _prepare_recovery(
    args: argparse.Namespace,
    catalog: BackupCatalog,
    newest: BackupRecord,
    assembled: Path,
    target: Target,
    reporter: Reporter,
) -> None:
    gzip_program = shutil.which("gzip")
    prefetched = prefetch_folder(Path(args.target_dir).absolute()) if gzip_program else None
    if prefetched is not None:
        with reporter.step("fetch the archived WAL"):
            reporter.result("wal_segments_fetched", prefetch_wal(catalog, newest, prefetched, reporter))
    with reporter.step("configure the recovery"):
        command = restore_command(args, prefetched, gzip_program or "")
        configure_recovery(assembled, command, target)


def _report_restore(
    tools: PostgresTools,
    args: argparse.Namespace,
    chain: list[BackupRecord],
    pgdata: Path,
    has_wal: bool,
    target: Target,
    reporter: Reporter,
) -> None:
    newest = chain[-1]
    reporter.result("backup_used", " + ".join(record.id for record in chain))
    reporter.result("backup_end_lsn", newest.end_lsn)
    reporter.result("backup_job_count", newest.job_count)
    reporter.result("data_folder", str(pgdata))
    point = target.time or target.lsn or ("the end of the archived WAL" if has_wal else "the end of the backup")
    reporter.result("recovery_target", str(point))
    if not args.start_and_check:
        if not has_wal:
            reporter.result("next", "start PostgreSQL on it (make run)")
            return
        reporter.result("next", "start PostgreSQL on it (make run): it replays the archived WAL, then is promoted")
        reporter.result("after_recovery", f"delete {prefetch_folder(pgdata)} (the WAL fetched for the recovery)")
        return
    with reporter.step("start the restored server and check it"):
        checked = start_and_check(tools, pgdata, newest, args.timeout)
        shutil.rmtree(prefetch_folder(pgdata), ignore_errors=True)
    reporter.result("wal_replayed_to", checked.replayed_to_lsn)
    reporter.result("last_transaction_time", checked.last_transaction_time)
    reporter.result("job_count", checked.job_count)


# Tables, sequences, views... outside the system schemas: a database holding any is not empty.
_USER_RELATIONS = """
    SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
"""


def _check_empty_database(url: str) -> None:
    with connect(url) as conn:
        row = conn.execute(_USER_RELATIONS).fetchone()
    if row is None or row[0]:
        raise OpsError(f"the target database holds {row[0] if row else '?'} relations: restore into an empty one")


def _count_jobs(url: str) -> int | None:
    with connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('jobs') IS NOT NULL").fetchone()
        row = conn.execute("SELECT count(*) FROM jobs").fetchone() if exists and exists[0] else None
    return None if row is None else int(row[0])


def run_logical_restore(args: argparse.Namespace, reporter: Reporter) -> int:
    """A pg_dump backup into an empty database (what a managed database, with no data folder, restores)."""
    if args.to_lsn:
        raise OpsError("--to-lsn needs a physical backup: a logical one restores as a whole")
    conninfo, env = split_password(args.database_url)
    with reporter.step("choose the logical backup"):
        location = BackupLocation.from_args(args)
        tools = PostgresTools.locate()
        record = newest_logical(BackupCatalog(location).records(), before_time=args.to_time)
    with reporter.step("check the target database is empty"):
        _check_empty_database(args.database_url)
    with tempfile.TemporaryDirectory(prefix="pdfsmaller-restore-") as work:
        dump = Path(work) / "database.dump"
        with reporter.step(f"fetch and verify {record.id}"):
            stored = record.files["dump"]
            location.get_file(stored.key, dump)
            if sha256_of(dump) != stored.sha256:
                raise OpsError(f"backup {record.id} is damaged: {stored.key} is not what was stored; refusing it")
            tools.run("pg_restore", ["--list", str(dump)], timeout=args.timeout)
        with reporter.step(f"pg_restore {record.id}"):
            restore_args = ["--exit-on-error", "--single-transaction", "--no-owner", "-d", conninfo, str(dump)]
            tools.run("pg_restore", restore_args, timeout=args.timeout, env=env)
    reporter.result("backup_used", record.id)
    reporter.result("backup_job_count", record.job_count)
    reporter.result("job_count", _count_jobs(args.database_url))
    return reporter.finish()


def fetch_wal(location: BackupLocation, name: str, destination: Path) -> None:
    """Copy one archived WAL file to `destination` (gunzipped, size bounded, written beside it then renamed)."""
    packed = destination.with_name(destination.name + ".gz.partial")
    partial = destination.with_name(destination.name + ".partial")
    try:
        try:
            location.get_file(wal_key(name), packed)
        except NotFound:
            if not SEGMENT_NAME.match(name):
                raise
            location.get_file(wal_key(name + PARTIAL_SUFFIX), packed)  # receive-wal's newest, as it stood
        with gzip.open(packed, "rb") as source, partial.open("wb") as out:
            for _ in range(MAX_WAL_BYTES // _CHUNK + 1):
                chunk = source.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
            else:
                raise OpsError(f"{name} is larger than a WAL file can be ({MAX_WAL_BYTES} bytes)")
        partial.replace(destination)
    finally:
        packed.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)


def run_fetch_wal(args: argparse.Namespace, reporter: Reporter) -> int:
    """PostgreSQL's restore_command: exit 0 (fetched), 1 (not archived: the end of the archive), or
    ABORT_RECOVERY on any other failure, so that a broken location stops recovery instead of ending it."""
    try:
        fetch_wal(BackupLocation.from_args(args), args.wal_name, Path(args.destination))
    except NotFound:
        # PostgreSQL asks for files past the end of the archive on every recovery: no failure to report.
        print(f"fetch-wal: {args.wal_name} is not archived", file=sys.stderr)
        return 1
    except Exception as error:  # noqa: BLE001 - every other failure must stop the recovery
        print(f"fetch-wal: {args.wal_name}: {type(error).__name__}: {error}", file=sys.stderr)
        return ABORT_RECOVERY
    return reporter.finish()


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    restore = subcommands.add_parser(
        "restore",
        help="restore the database from the backup location, to a point in time",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    targets = restore.add_mutually_exclusive_group()
    targets.add_argument(
        "--to-time", type=_time_argument, help="recover up to this time (ISO 8601; UTC without a zone)"
    )
    targets.add_argument("--to-lsn", type=_lsn_argument, help="recover up to this WAL position (e.g. 0/3000028)")
    restore.add_argument("--logical", action="store_true", help="the newest pg_dump, into an empty database")
    add_database_argument(restore, help_text="for --logical: the empty database")
    restore.add_argument("--target-dir", default=str(defaults.PGDATA), help="the data folder (default: %(default)s)")
    restore.add_argument("--force", action="store_true", help="move a non-empty target folder aside first")
    restore.add_argument("--start-and-check", action="store_true", help="start it once here, count jobs, stop it")
    restore.add_argument("--scratch", action="store_true", help="a throw-away copy: it never archives WAL")
    restore.add_argument("--timeout", type=float, default=3600.0, help="seconds each step may take")
    BackupLocation.add_arguments(restore, defaults.BACKUP_DIR)
    restore.set_defaults(run=run_restore)

    fetch = subcommands.add_parser("fetch-wal", help="PostgreSQL's restore_command: fetch one archived WAL file")
    fetch.add_argument("wal_name", help="%%f: the file's name")
    fetch.add_argument("destination", help="%%p: where PostgreSQL wants it")
    BackupLocation.add_arguments(fetch, defaults.BACKUP_DIR)
    fetch.set_defaults(run=run_fetch_wal)
