"""`pdfsmaller-ops recovery-test`: the guide's monthly recovery test, automated, with the RTO it measured.

    pdfsmaller-ops recovery-test                          # make run's backup folder
    pdfsmaller-ops recovery-test --backup-s3-bucket B     # production's backups (S3_* settings)

Everything happens in a scratch folder, removed at the end whatever happened:
1. the newest database backup (its incremental chain combined) restored into a scratch PostgreSQL on a
   private socket, with the archived WAL replayed to its end when there is some; archiving is off there;
2. its integrity: the migrations recorded, the job count against the backup's record (equal without WAL
   replay; with it, both are reported), every SUCCEEDED job's output object in the latest file backup;
3. the latest file backup restored (each object checked against its sha256) into a scratch object folder,
   the five services started in this process against the scratch database and folder (port 0, no clamd,
   no Redis: the health report is DEGRADED for those, which passes), the gateway's deep health checked
   over gRPC, the shipped PDF uploaded, compressed and downloaded (sha256 and page count checked).
The restored queue is held first (its jobs' not_before and leases moved to infinity, in the scratch copy
only) so the scratch worker compresses the test's PDF, not a backlog.

RTO is restore + start + healthy (the integrity checks are the test's, not a recovery's); the recovery
point is the last replayed transaction (its time and LSN) and how old it is. Exit 1 on the first failure.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import psycopg
from google.api import httpbody_pb2
from pdfsmaller.gateway.v1 import gateway_service_pb2 as public
from pdfsmaller.gateway.v1 import gateway_service_pb2_grpc as public_grpc

from libs.grpc_client import open_channel
from libs.service import RunningService, Service
from ops import defaults
from ops.backup_catalog import BackupCatalog, BackupRecord
from ops.database import add_database_argument
from ops.db_restore import (
    Target,
    append_settings,
    assemble,
    choose_chain,
    configure_recovery,
    fetch_backup,
    prefetch_wal,
    restore_command,
    verify_backup,
)
from ops.files_backup import FilesRestorer, read_manifest, stored_hashes
from ops.location import BackupLocation
from ops.postgres_tools import PostgresTools, ScratchServer
from ops.report import OpsError, Reporter
from ops.smoke import Sample, page_count
from services.compressor.app import build as build_compressor
from services.compressor.settings import CompressorSettings
from services.gateway.app import build as build_gateway
from services.gateway.settings import GatewaySettings
from services.jobs.app import build as build_jobs
from services.jobs.db import pending_migrations
from services.jobs.settings import JobsSettings
from services.scanner.app import build as build_scanner
from services.scanner.settings import ScannerSettings
from services.storage.app import build as build_storage
from services.storage.app import local_settings as local_storage_settings
from services.storage.backends.local import LocalBackend

# The steps a real recovery would also take: their times add up to the RTO.
DATABASE_RTO_STEPS = ("restore the database", "start the restored PostgreSQL")
SYSTEM_RTO_STEPS = (*DATABASE_RTO_STEPS, "restore the file backup", "start the services", "healthy")
HEALTHY = frozenset({public.SERVING_STATUS_SERVING, public.SERVING_STATUS_DEGRADED})
TERMINAL = frozenset(
    {public.JOB_STATE_SUCCEEDED, public.JOB_STATE_FAILED, public.JOB_STATE_CANCELLED, public.JOB_STATE_EXPIRED}
)
UPLOAD_CHUNK_BYTES = 64 * 1024
# The shipped PDF's result is smaller than the PDF; a download larger than this is not it.
MAX_RESULT_BYTES = 16 * 1024 * 1024
CALL_TIMEOUT_SECONDS = 30.0
# The worker's long poll is kept short so that, stopped, its thread ends within the grace period (a thread
# left waiting would hold the process open until the jobs service ends the poll).
LEASE_WAIT_SECONDS = 2
STOP_GRACE_SECONDS = 5.0
HEALTH_POLL_SECONDS = 0.25
# At most this many missing outputs are named in the failure (all are counted).
NAMED_PROBLEMS = 5
# SUCCEEDED jobs the file backup had to hold: those still within retention when it started.
# Jobs that had succeeded when the file backup started (updated_at is their completion): later ones,
# which the WAL replay brings back too, cannot be in it.
SUCCEEDED_OUTPUTS = """
    SELECT id::text, output_key FROM jobs
    WHERE state = 'SUCCEEDED' AND expire_at > %(started)s AND updated_at < %(started)s
    ORDER BY created_at, id
"""
SUCCEEDED_SINCE = "SELECT count(*) FROM jobs WHERE state = 'SUCCEEDED' AND updated_at >= %(started)s"
# The scratch copy's backlog, held so its worker takes only the test's job (the copy is thrown away).
HOLD_QUEUE = (
    "UPDATE jobs SET not_before = 'infinity' WHERE state = 'QUEUED'",
    "UPDATE jobs SET lease_expires_at = 'infinity' WHERE state = 'RUNNING'",
)
# Loggers of the services run here; their expected warnings (no Redis, no clamd) would bury the report.
SERVICE_LOGGERS = ("services", "libs")


@dataclass(frozen=True)
class ScratchFolders:
    root: Path

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def wal(self) -> Path:
        return self.root / "wal"

    @property
    def objects(self) -> Path:
        return self.root / "objects"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @classmethod
    def create(cls, parent: str | None) -> ScratchFolders:
        folders = cls(Path(tempfile.mkdtemp(prefix="pdfsmaller-recovery-test-", dir=parent)))
        for folder in (folders.staging, folders.objects, folders.work):
            folder.mkdir()
        return folders


# -- 1. the database --------------------------------------------------------------------------------------


def restore_database(
    tools: PostgresTools, args: argparse.Namespace, catalog: BackupCatalog, folders: ScratchFolders, reporter: Reporter
) -> tuple[list[BackupRecord], int]:
    """The newest chain assembled into folders.pgdata, set to replay the archived WAL when there is some;
    (the chain, the WAL segments fetched)."""
    chain = choose_chain(catalog, Target())
    reporter.progress("backups: " + " + ".join(record.id for record in chain))
    unpacked = []
    for record in chain:
        folder = fetch_backup(catalog.location, record, folders.staging)
        verify_backup(tools, folder, f"backup {record.id}", args.timeout)
        unpacked.append(folder)
    assemble(tools, unpacked, folders.pgdata, args.timeout)
    segments = 0
    if catalog.wal_keys():
        segments = prefetch_wal(catalog, chain[-1], folders.wal, reporter)
        gzip_program = shutil.which("gzip")
        command = restore_command(args, folders.wal if gzip_program else None, gzip_program or "")
        configure_recovery(folders.pgdata, command, Target())
    # A scratch copy never archives into the location, never listens on TCP.
    append_settings(folders.pgdata, {"archive_mode": "off"})
    shutil.rmtree(folders.staging, ignore_errors=True)
    return chain, segments


@dataclass(frozen=True)
class RecoveryPoint:
    lsn: str | None
    time: datetime | None
    source: str

    def age_seconds(self, now: datetime) -> float | None:
        return None if self.time is None else round((now - self.time).total_seconds(), 1)


def recovery_point(server: ScratchServer, newest: BackupRecord) -> RecoveryPoint:
    """The last transaction the restored server replayed (the backup's end when it replayed none)."""
    lsn = server.query("SELECT pg_last_wal_replay_lsn()::text")
    replayed_at = server.query("SELECT pg_last_xact_replay_timestamp()")
    if replayed_at is not None:
        return RecoveryPoint(lsn or newest.end_lsn, replayed_at, "the last replayed transaction")
    return RecoveryPoint(newest.end_lsn, newest.end_time, "the end of the backup (no transaction replayed)")


# -- 2. integrity -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Integrity:
    migrations_recorded: int
    migrations_pending: list[str]
    job_count: int
    succeeded_checked: int
    succeeded_since_file_backup: int


def check_migrations(conn: psycopg.Connection) -> tuple[int, list[str]]:
    """(migrations recorded, this release's migrations not recorded: the jobs service applies them)."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    recorded = conn.execute("SELECT count(*) FROM schema_migrations").fetchone() if exists and exists[0] else None
    if recorded is None or not recorded[0]:
        raise OpsError("the restored database records no migrations (schema_migrations): not a jobs database?")
    return int(recorded[0]), pending_migrations(conn)


def check_job_count(conn: psycopg.Connection, record: BackupRecord, wal_replayed: bool) -> int:
    """The jobs restored: exactly as many as the backup recorded when only the backup was restored. With
    WAL replayed past it the count may differ either way (jobs created, or deleted by users and the
    retention sweep, since), so it is reported beside the recorded one, not checked."""
    row = conn.execute("SELECT count(*) FROM jobs").fetchone()
    count = int(row[0]) if row else 0
    if record.job_count is not None and not wal_replayed and count != record.job_count:
        raise OpsError(
            f"the restored database holds {count} jobs; backup {record.id} recorded {record.job_count}, "
            "so it should hold exactly that many"
        )
    return count


def missing_outputs(
    rows: list[tuple[str, str]], objects: dict[str, Any], stored: set[str]
) -> list[tuple[str, str, str]]:
    """(job id, output key, why) of each SUCCEEDED job whose output the file backup cannot give back."""
    problems = []
    for job_id, key in rows:
        entry = objects.get(key)
        if not isinstance(entry, dict):
            problems.append((job_id, key, "not in the file backup"))
        elif entry.get("sha256") not in stored:
            problems.append((job_id, key, f"listed, but its bytes ({entry.get('stored_key')}) are not stored"))
    return problems


def check_outputs(conn: psycopg.Connection, location: BackupLocation, manifest: dict[str, Any]) -> tuple[int, int]:
    """Every job that had SUCCEEDED, within retention, when the file backup started has its output in that
    backup. Returns (jobs checked, jobs that succeeded since: their outputs are in no backup yet)."""
    started = {"started": datetime.fromisoformat(str(manifest["started_at"]))}
    rows = [(str(job_id), str(key)) for job_id, key in conn.execute(SUCCEEDED_OUTPUTS, started).fetchall()]
    since_row = conn.execute(SUCCEEDED_SINCE, started).fetchone()
    problems = missing_outputs(rows, manifest["objects"], stored_hashes(location))
    if problems:
        named = "; ".join(f"job {job_id}: {key} {why}" for job_id, key, why in problems[:NAMED_PROBLEMS])
        raise OpsError(
            f"{len(problems)} SUCCEEDED job(s) of {len(rows)} have no output in file backup run "
            f"{manifest['run_id']} (their downloads would fail after a restore): {named}"
        )
    return len(rows), int(since_row[0]) if since_row else 0


def check_integrity(
    server: ScratchServer, record: BackupRecord, wal_replayed: bool, location: BackupLocation, manifest: dict[str, Any]
) -> Integrity:
    with psycopg.connect(server.conninfo(record.database), autocommit=True, connect_timeout=10) as conn:
        recorded, pending = check_migrations(conn)
        count = check_job_count(conn, record, wal_replayed)
        checked, since = check_outputs(conn, location, manifest)
    return Integrity(recorded, pending, count, checked, since)


def hold_restored_queue(url: str) -> int:
    """Hold the restored QUEUED and RUNNING jobs (scratch copy only); how many were held."""
    held = 0
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        for statement in HOLD_QUEUE:
            held += conn.execute(statement.encode()).rowcount
    return held


# -- 3. the files and the services ------------------------------------------------------------------------


def restore_files(location: BackupLocation, manifest: dict[str, Any], objects: Path, reporter: Reporter) -> int:
    outcome = FilesRestorer(location, LocalBackend(objects), reporter.progress).restore_all(manifest["objects"])
    problems = {**outcome.conflicts, **outcome.failed}
    if problems:
        key, why = next(iter(problems.items()))
        raise OpsError(f"{len(problems)} object(s) of the file backup not restored, first {key}: {why}")
    return outcome.restored


class ScratchStack:
    """The five services in this process on loopback port 0, against the scratch database and folders.

    No clamd (structure checks only) and no Redis, which holds nothing a restore brings back: its
    address is a loopback port bound here and never listened on, so connections are refused at once and
    no other program can take it meanwhile (job events are polled, rate limits and quotas off). The
    report is DEGRADED for both. Stopped newest first.
    """

    def __init__(self, database_url: str, folders: ScratchFolders) -> None:
        self._database_url = database_url
        self._folders = folders
        self._running: list[RunningService] = []
        self._no_redis = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    def _serve(self, service: Service) -> str:
        service.spec.metrics_port = None
        if service.spec.tls is not None:  # one plaintext health port per process would collide
            service.spec.tls = replace(service.spec.tls, plaintext_health_port=None)
        running = service.start()
        self._running.append(running)
        return running.address

    def start(self) -> str:
        """Start storage, jobs, scanner, compressor and gateway; the gateway's address."""
        common = {"PDFSMALLER_ENV": "development", "LOG_LEVEL": "WARNING"}
        self._no_redis.bind(("127.0.0.1", 0))
        redis_url = f"redis://127.0.0.1:{self._no_redis.getsockname()[1]}"
        storage = self._serve(build_storage(local_storage_settings(str(self._folders.objects))))
        addresses = {**common, "STORAGE_ADDR": storage, "REDIS_URL": redis_url}
        jobs_env = {**addresses, "JOBS_LISTEN": "127.0.0.1:0", "DATABASE_URL": self._database_url}
        addresses["JOBS_ADDR"] = self._serve(build_jobs(JobsSettings.from_env({**jobs_env, "DATABASE_POOL_SIZE": "4"})))
        addresses["SCANNER_ADDR"] = self._serve(
            build_scanner(ScannerSettings.from_env({**addresses, "SCANNER_LISTEN": "127.0.0.1:0"}))
        )
        compressor_env = {
            "COMPRESSOR_LISTEN": "127.0.0.1:0",
            "WORK_DIR": str(self._folders.work),
            "LEASE_WAIT_SECONDS": str(LEASE_WAIT_SECONDS),
        }
        self._serve(build_compressor(CompressorSettings.from_env({**addresses, **compressor_env})))
        return self._serve(build_gateway(GatewaySettings.from_env({**addresses, "GATEWAY_LISTEN": "127.0.0.1:0"})))

    def stop(self) -> None:
        while self._running:
            self._running.pop().stop(STOP_GRACE_SECONDS)
        self._no_redis.close()


@contextlib.contextmanager
def quiet_service_logs(keep: bool) -> Iterator[None]:
    """Only errors of the in-process services reach the operator (unless `keep`, with --debug)."""
    loggers = [logging.getLogger(name) for name in SERVICE_LOGGERS]
    levels = [logger.level for logger in loggers]
    if not keep:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def wait_until_healthy(gateway: public_grpc.GatewayServiceStub, timeout: float) -> public.Health:
    """GetHealth until SERVING or DEGRADED, within `timeout`; OpsError with the last report otherwise."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:  # bounded by the deadline
        try:
            health = gateway.GetHealth(public.GetHealthRequest(), timeout=CALL_TIMEOUT_SECONDS)
            if health.status in HEALTHY:
                return health
            last = describe_health(health)
        except grpc.RpcError as error:
            last = f"{error.code().name}: {error.details()}"
        if time.monotonic() > deadline:
            raise OpsError(f"the scratch gateway was not healthy within {timeout:g} s: {last}")
        time.sleep(HEALTH_POLL_SECONDS)


def describe_health(health: public.Health) -> str:
    unwell = [
        f"{d.name} {public.ServingStatus.Name(d.status).removeprefix('SERVING_STATUS_')} ({d.detail})"
        for d in health.dependencies
        if d.status != public.SERVING_STATUS_SERVING
    ]
    return public.ServingStatus.Name(health.status).removeprefix("SERVING_STATUS_") + (
        ": " + "; ".join(unwell) if unwell else ""
    )


def upload(gateway: public_grpc.GatewayServiceStub, sample: Sample) -> public.Job:
    def messages() -> Iterator[public.CreateJobRequest]:
        yield public.CreateJobRequest(filename="pdfsmaller-ops-recovery-test.pdf", level="medium")
        for start in range(0, len(sample.data), UPLOAD_CHUNK_BYTES):
            yield public.CreateJobRequest(
                file=httpbody_pb2.HttpBody(data=sample.data[start : start + UPLOAD_CHUNK_BYTES])
            )

    try:
        job: public.Job = gateway.CreateJob(messages(), timeout=CALL_TIMEOUT_SECONDS)
    except grpc.RpcError as error:
        raise OpsError(f"the upload was refused: {error.code().name}: {error.details()}") from error
    return job


def watch(gateway: public_grpc.GatewayServiceStub, job_id: str, timeout: float) -> public.Job:
    """The job's updates until it ends, within `timeout`; it must succeed."""
    last = public.Job(id=job_id)
    try:
        for update in gateway.WatchJob(public.WatchJobRequest(id=job_id), timeout=timeout):
            last = update
            if update.state in TERMINAL:
                break
    except grpc.RpcError as error:
        state = public.JobState.Name(last.state)
        raise OpsError(f"job {job_id} is {state} after {timeout:g} s ({error.code().name})") from error
    if last.state != public.JOB_STATE_SUCCEEDED:
        state = public.JobState.Name(last.state)
        raise OpsError(f"job {job_id} ended {state}: {last.error.reason}: {last.error.message}")
    return last


def download(gateway: public_grpc.GatewayServiceStub, job: public.Job, sample: Sample) -> int:
    """The result, checked against the job's sha256 and the sample's page count; its size."""
    data = bytearray()
    for chunk in gateway.GetJobResult(public.GetJobResultRequest(id=job.id), timeout=CALL_TIMEOUT_SECONDS):
        data += chunk.data
        if len(data) > MAX_RESULT_BYTES:
            raise OpsError(f"the result of job {job.id} is larger than {MAX_RESULT_BYTES} bytes")
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 != job.output_sha256:
        raise OpsError(f"the download's sha256 is {sha256}, job {job.id} records {job.output_sha256}")
    pages = page_count(bytes(data))
    if pages != sample.pages:
        raise OpsError(f"the result has {pages} pages, the uploaded PDF {sample.pages}")
    return len(data)


# -- the subcommand ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Restored:
    """The scratch PostgreSQL serving the restored database, and the backup it came from."""

    server: ScratchServer
    record: BackupRecord


def rto_seconds(reporter: Reporter, steps: tuple[str, ...]) -> float:
    return round(sum(step.seconds for step in reporter.steps if step.name in steps), 1)


def run(args: argparse.Namespace, reporter: Reporter) -> int:
    with quiet_service_logs(args.debug), contextlib.ExitStack() as cleanup:
        with reporter.step("read the catalog and the file backup"):
            location = BackupLocation.from_args(args)
            catalog = BackupCatalog(location)
            tools = PostgresTools.locate()
            manifest_key, manifest = read_manifest(location)
            folders = ScratchFolders.create(args.work_dir)
            cleanup.callback(shutil.rmtree, folders.root, ignore_errors=True)
        reporter.result("file_backup", manifest_key)
        restored = _restore_and_check(tools, args, catalog, manifest, folders, cleanup, reporter)
        _start_and_compress(args, restored, catalog.location, manifest, folders, cleanup, reporter)
        with reporter.step("tear down"):
            cleanup.close()
    reporter.result("rto_database_seconds", rto_seconds(reporter, DATABASE_RTO_STEPS))
    reporter.result("rto_seconds", rto_seconds(reporter, SYSTEM_RTO_STEPS))
    return reporter.finish()


def _restore_and_check(
    tools: PostgresTools,
    args: argparse.Namespace,
    catalog: BackupCatalog,
    manifest: dict[str, Any],
    folders: ScratchFolders,
    cleanup: contextlib.ExitStack,
    reporter: Reporter,
) -> Restored:
    with reporter.step("restore the database"):
        chain, segments = restore_database(tools, args, catalog, folders, reporter)
    newest = chain[-1]
    reporter.result("backup_used", " + ".join(record.id for record in chain))
    reporter.result("wal_segments_fetched", segments)
    with reporter.step("start the restored PostgreSQL"):
        server = ScratchServer(tools, folders.pgdata, superuser=newest.superuser, start_timeout=args.timeout)
        cleanup.enter_context(server)
        server.wait_for_promotion()
        point = recovery_point(server, newest)
    reporter.result("recovery_point_lsn", point.lsn)
    reporter.result("recovery_point_time", point.time.isoformat() if point.time else None)
    reporter.result("recovery_point_age_seconds", point.age_seconds(datetime.now(UTC)))
    reporter.result("recovery_point", point.source)
    with reporter.step("check integrity"):
        integrity = check_integrity(server, newest, segments > 0, catalog.location, manifest)
    reporter.result("migrations_recorded", integrity.migrations_recorded)
    if integrity.migrations_pending:
        reporter.result("migrations_pending", integrity.migrations_pending)
    reporter.result("backup_job_count", newest.job_count)
    reporter.result("job_count", integrity.job_count)
    reporter.result("succeeded_jobs_checked", integrity.succeeded_checked)
    reporter.result("succeeded_since_file_backup", integrity.succeeded_since_file_backup)
    return Restored(server, newest)


def _start_and_compress(
    args: argparse.Namespace,
    restored: Restored,
    location: BackupLocation,
    manifest: dict[str, Any],
    folders: ScratchFolders,
    cleanup: contextlib.ExitStack,
    reporter: Reporter,
) -> None:
    database_url = restored.server.conninfo(restored.record.database)
    with reporter.step("hold the restored queue"):
        reporter.result("restored_jobs_held", hold_restored_queue(database_url))
    with reporter.step("restore the file backup"):
        reporter.result("objects_restored", restore_files(location, manifest, folders.objects, reporter))
    with reporter.step("start the services"):
        stack = ScratchStack(database_url, folders)
        cleanup.callback(stack.stop)
        channel = open_channel(stack.start())
        cleanup.callback(channel.close)
        gateway = public_grpc.GatewayServiceStub(channel)
    with reporter.step("healthy"):
        health = wait_until_healthy(gateway, args.service_timeout)
    reporter.result("health", describe_health(health))
    with reporter.step("upload and compress one PDF"):
        sample = Sample.shipped()
        job = watch(gateway, upload(gateway, sample).id, args.service_timeout)
    with reporter.step("download it"):
        reporter.result("output_bytes", download(gateway, job, sample))


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subcommands.add_parser(
        "recovery-test",
        help="restore the latest backups into scratch servers, check them, run the system on them, time it",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds each PostgreSQL step may take")
    parser.add_argument(
        "--service-timeout",
        type=float,
        default=120.0,
        help="seconds the services may take to be healthy, and the PDF to be compressed (default %(default)s)",
    )
    parser.add_argument("--work-dir", default=None, help="where the scratch folder goes (default: the system's)")
    add_database_argument(
        parser, help_text="the jobs database this run is recorded in (maintenance_runs); the test reads only backups"
    )
    BackupLocation.add_arguments(parser, defaults.BACKUP_DIR)
    parser.set_defaults(run=run)
