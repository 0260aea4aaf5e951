"""Benchmark: backup sizes and times, RTO and RPO of `pdfsmaller-ops`, against a real, durable PostgreSQL.

    python -m bench.backup_recovery [--jobs 100000] [--out bench/results/backup_recovery.txt]

One PostgreSQL 18 (devtools.servers, port 0, fsync on) archives its WAL through this venv's
`pdfsmaller-ops archive-wal` into a backup folder (archive_timeout 10 s, summarize_wal on), migrated
by the jobs service. Then, each figure printed and written to --out:

1. N jobs created through the jobs service's repository (JobRepository.create, one transaction each),
   by --writers threads sharing one pool: the rate.
2. `backup --full`: time and stored size. 3. 1,000 more jobs, then `backup --incremental`: time and size.
4. WAL per hour of activity: the WAL written during step 1 (LSN difference) and the archive's stored
   (gzipped) bytes of the segments archived for it, each divided by step 1's seconds and times 3600.
5. RTO, database only: `restore --start-and-check` into a new folder, until the restored server answers
   with the source's job count.
6. Recovery test: a few hundred jobs leased and completed through the repository with their objects in a
   local store, `backup-files`, then `recovery-test` (restore, checks, services, one PDF compressed).
7. RPO, last because it kills the source, first with receive-wal on a second server, then with archive-wal,
   three kills each (PostgreSQL restarted between them): a thread creates jobs steadily, recording each commit's time;
   PostgreSQL's postmaster gets SIGKILL; the latest point of the archive is restored into a new folder
   and started: RPO = kill time - commit time of the newest recorded job present; jobs lost = recorded
   commits absent.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench.latency import load, machine
from devtools.servers.postgres import PostgresServer
from libs.errors import Unavailable
from ops import cli
from ops.backup_catalog import WAL_PREFIX
from ops.postgres_tools import PostgresTools, ScratchServer
from services.jobs.db import migrate, open_pool
from services.jobs.repository import JobRepository
from services.jobs.tests.test_repository import new_job
from services.storage.backends.local import LocalBackend

ROOT = Path(__file__).resolve().parents[1]
RETENTION_HOURS = 168
ARCHIVE_TIMEOUT_SECONDS = 10
INCREMENTAL_JOBS = 1000
ARCHIVE_WAIT_SECONDS = 120.0
RECEIVER_PARTIAL_SECONDS = 5.0


@dataclass
class Figure:
    name: str
    value: str
    how: str


@dataclass
class Bench:
    """The source server, its backup folder and what has been measured so far."""

    server: PostgresServer
    url: str
    work: Path
    figures: list[Figure] = field(default_factory=list)

    @property
    def backup_dir(self) -> Path:
        return self.work / "backups"

    def add(self, name: str, value: str, how: str) -> None:
        self.figures.append(Figure(name, value, how))
        print(f"{name}: {value}", flush=True)

    def query(self, sql: str) -> Any:
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(sql.encode()).fetchone()
        return None if row is None else row[0]


# -- helpers ------------------------------------------------------------------------------------------------


def archive_command(backup_dir: Path) -> str:
    script = Path(sys.executable).parent / "pdfsmaller-ops"
    return shlex.join([str(script), "archive-wal", "--backup-dir", str(backup_dir)]) + " %p %f"


def ops(*argv: str) -> tuple[dict[str, Any], float]:
    """`pdfsmaller-ops --json ARGV` in-process: its results and wall time; a failure stops the benchmark."""
    captured = io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(captured):
        status = cli.main(["--json", *argv])
    seconds = time.monotonic() - started
    document = json.loads(captured.getvalue())
    if status != 0:
        failed = [step for step in document["steps"] if not step["ok"]]
        raise RuntimeError(f"pdfsmaller-ops {argv[0]} failed: {failed}")
    return document["results"], seconds


@contextlib.contextmanager
def repository(url: str, connections: int) -> Iterator[JobRepository]:
    pool = open_pool(url, max_size=connections)
    pool.wait(timeout=30)
    try:
        yield JobRepository(pool, retention_hours=RETENTION_HOURS)
    finally:
        pool.close()


def create_job(jobs: JobRepository, tenant: str) -> uuid.UUID:
    """One job as the jobs service creates it (its request id set, as CreateJob calls carry one)."""
    new = new_job(tenant=tenant)
    return jobs.create(dataclasses.replace(new, request_id=str(new.id)))[0].id


def generate_jobs(url: str, count: int, writers: int, tenant: str) -> float:
    """`count` jobs by `writers` threads (one transaction per job, commits grouped by the server); seconds."""
    shares = [count // writers + (1 if index < count % writers else 0) for index in range(writers)]
    started = time.monotonic()
    with repository(url, writers) as jobs, ThreadPoolExecutor(writers) as executor:
        done = executor.map(lambda share: [create_job(jobs, tenant) for _ in range(share)], shares)
        created = sum(len(ids) for ids in done)
    assert created == count
    return time.monotonic() - started


def wait_until_archived(bench: Bench) -> None:
    """Switch to a new WAL segment and wait until the one holding everything so far is archived."""
    # A record first: after an idle spell (archive_timeout switched already) pg_switch_wal does nothing
    # and names a segment that no write will complete.
    bench.query("SELECT pg_logical_emit_message(false, 'bench', 'archive now')")
    segment = bench.query("SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + ARCHIVE_WAIT_SECONDS
    while time.monotonic() < deadline:
        if str(bench.query("SELECT last_archived_wal FROM pg_stat_archiver")) >= segment:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{segment} not archived within {ARCHIVE_WAIT_SECONDS} s")


def archived_wal(backup_dir: Path) -> dict[str, int]:
    """Stored bytes of each archived WAL file (gzipped), read through the backup location's backend."""
    if not backup_dir.is_dir():
        return {}
    store = LocalBackend(backup_dir)
    return {key: store.stat(key).size_bytes for key in store.keys(WAL_PREFIX)}


def mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


# -- the steps ----------------------------------------------------------------------------------------------


def measure_generation(bench: Bench, count: int, writers: int) -> None:
    before_files = archived_wal(bench.backup_dir)
    lsn_before = int(bench.query("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
    seconds = generate_jobs(bench.url, count, writers, "bench")
    written = int(bench.query("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")) - lsn_before
    wait_until_archived(bench)
    new_files = {name: size for name, size in archived_wal(bench.backup_dir).items() if name not in before_files}
    stored = sum(new_files.values())
    bench.add(
        "generate jobs",
        f"{count} in {seconds:.1f} s = {count / seconds:.0f} jobs/s",
        f"JobRepository.create, one transaction per job, {writers} threads on one pool, fsync on",
    )
    per_hour = 3600 / seconds
    bench.add(
        "WAL per hour of activity",
        f"{mib(written * per_hour)} written, {mib(stored * per_hour)} archived (gzipped)",
        f"at the generation's rate ({count / seconds:.0f} jobs/s): WAL written = LSN difference over the "
        f"generation ({mib(written)} in {seconds:.1f} s), archived = stored bytes of the {len(new_files)} "
        f"segments archived for it ({mib(stored)}), each x 3600 / {seconds:.1f} s; "
        f"{written / count:.0f} B of WAL per job",
    )


def measure_backups(bench: Bench, writers: int) -> None:
    results, seconds = ops("backup", "--full", "--database-url", bench.url, "--backup-dir", str(bench.backup_dir))
    bench.add(
        "full backup",
        f"{seconds:.1f} s, {mib(results['stored_bytes'])} stored",
        f"backup --full: pg_basebackup, pg_verifybackup, tar+gzip; {results['job_count']} jobs",
    )
    generate_jobs(bench.url, INCREMENTAL_JOBS, writers, "bench")
    results, seconds = ops("backup", "--database-url", bench.url, "--backup-dir", str(bench.backup_dir))
    bench.add(
        "incremental backup",
        f"{seconds:.1f} s, {mib(results['stored_bytes'])} stored ({results['kind']})",
        f"backup after {INCREMENTAL_JOBS} more jobs: pg_basebackup --incremental against the full one",
    )


def measure_database_rto(bench: Bench) -> None:
    wait_until_archived(bench)
    expected = int(bench.query("SELECT count(*) FROM jobs"))
    target = bench.work / "rto" / "pgdata"
    results, seconds = ops(
        "restore", "--target-dir", str(target), "--scratch", "--start-and-check", "--backup-dir", str(bench.backup_dir)
    )
    if results["job_count"] != expected:
        raise RuntimeError(f"the restore holds {results['job_count']} jobs, the source {expected}")
    bench.add(
        "RTO, database only",
        f"{seconds:.1f} s",
        f"restore --start-and-check: fetch, verify and combine {results['backup_used']}, fetch "
        f"{results.get('wal_segments_fetched', 0)} WAL segments, replay, start, count {expected} jobs (= source)",
    )
    shutil.rmtree(target.parent)


def complete_jobs(url: str, count: int, objects: Path) -> None:
    """Lease and complete `count` jobs through the repository, their input and output in a local store."""
    store = LocalBackend(objects)
    with repository(url, 1) as jobs:
        for _ in range(count):
            lease = jobs.lease("bench-worker", 60)
            assert lease is not None
            job = lease.job
            store.put(job.input_key, "application/pdf", [b"%PDF-1.4 input " + job.id.bytes], 0)
            output = store.put(f"jobs/{job.id}/output.pdf", "application/pdf", [b"%PDF-1.4 out " + job.id.bytes], 0)
            done = jobs.complete(
                job.id,
                lease.token,
                output_key=output.key,
                output_size_bytes=output.size_bytes,
                output_sha256=output.sha256,
                report=None,
            )
            assert done is not None


def measure_recovery_test(bench: Bench, succeeded: int) -> None:
    objects, scratch = bench.work / "objects", bench.work / "scratch"
    scratch.mkdir()
    complete_jobs(bench.url, succeeded, objects)
    location = ["--backup-dir", str(bench.backup_dir)]
    files, seconds = ops("backup-files", "--database-url", bench.url, "--storage-dir", str(objects), *location)
    bench.add(
        "file backup",
        f"{seconds:.1f} s, {files.get('objects_copied', '?')} objects copied",
        f"backup-files of {succeeded} SUCCEEDED jobs' inputs and outputs ({2 * succeeded} objects); "
        f"the generated jobs' inputs were never stored: {files.get('objects_missing', '?')} reported missing",
    )
    wait_until_archived(bench)
    results, seconds = ops("recovery-test", "--work-dir", str(scratch), *location)
    bench.add(
        "recovery-test wall time",
        f"{seconds:.1f} s (its RTO: database {results['rto_database_seconds']} s, "
        f"full system {results['rto_seconds']} s)",
        f"recovery-test: {results['job_count']} jobs, {results['succeeded_jobs_checked']} SUCCEEDED outputs "
        f"checked, {results['objects_restored']} objects restored, five services started, one PDF compressed",
    )


# -- RPO ----------------------------------------------------------------------------------------------------


@dataclass
class WriteLoad:
    """A thread creating jobs steadily, recording each committed job's id and commit time (time.time())."""

    url: str
    interval: float
    committed: dict[uuid.UUID, float] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    ended_by: str = "stopped"

    def run(self) -> None:
        # A job counts as committed once create() has returned: the time is taken right after, so it is
        # at most one round trip later than the commit itself.
        try:
            with repository(self.url, 1) as jobs:
                while not self.stop.is_set():
                    job_id = create_job(jobs, "bench-rpo")
                    self.committed[job_id] = time.time()
                    self.stop.wait(self.interval)
        except (Unavailable, psycopg.Error) as error:  # the kill ends it: the database is gone
            self.ended_by = type(error).__name__


def restored_job_ids(target: Path, backup_dir: Path) -> set[uuid.UUID]:
    """Restore the archive's latest point into `target` (a new folder), start it, read its job ids."""
    ops("restore", "--target-dir", str(target), "--scratch", "--backup-dir", str(backup_dir))
    with ScratchServer(PostgresTools.locate(), target, superuser="postgres") as server:
        server.wait_for_promotion()
        with psycopg.connect(server.conninfo("pdfsmaller")) as conn:
            return {row[0] for row in conn.execute("SELECT id FROM jobs WHERE tenant = 'bench-rpo'").fetchall()}


@dataclass(frozen=True)
class Kill:
    """One kill -9 under write load, and what the restore of the archive's latest point found."""

    committed: int
    lost: int
    rpo_seconds: float | None  # None: no job of the load survived

    def describe(self) -> str:
        rpo = "no job survived" if self.rpo_seconds is None else f"{self.rpo_seconds:.1f} s"
        return f"{rpo} ({self.lost} of {self.committed} lost)"


def kill_under_load(
    server: PostgresServer, url: str, load_seconds: float, rate: float, also_kill: list[subprocess.Popen[bytes]]
) -> tuple[dict[uuid.UUID, float], float]:
    """Write jobs for `load_seconds`, then SIGKILL `also_kill` and the postmaster at the same moment."""
    load_ = WriteLoad(url, 1 / rate)
    writer = threading.Thread(target=load_.run, name="rpo-writer")
    writer.start()
    try:
        time.sleep(load_seconds)
        postmaster = server._process  # unshare execs it
        assert postmaster is not None
        killed_at = time.time()
        for process in [*also_kill, postmaster]:
            os.kill(process.pid, signal.SIGKILL)
        for process in [*also_kill, postmaster]:
            process.wait()
    finally:
        load_.stop.set()
        writer.join()
    committed = {job_id: at for job_id, at in load_.committed.items() if at <= killed_at}
    if not committed:
        raise RuntimeError(f"the write load committed nothing (ended by {load_.ended_by})")
    return committed, killed_at


def judge(committed: dict[uuid.UUID, float], killed_at: float, present: set[uuid.UUID]) -> Kill:
    newest = max((committed[job_id] for job_id in present if job_id in committed), default=None)
    lost = len(set(committed) - present)
    return Kill(len(committed), lost, None if newest is None else killed_at - newest)


def summary(kills: list[Kill]) -> str:
    """The worst kill first (what the objective is about), then every kill."""
    worst = max(kills, key=lambda kill: float("inf") if kill.rpo_seconds is None else kill.rpo_seconds)
    return f"worst {worst.describe()}; kills: " + ", ".join(kill.describe() for kill in kills)


def measure_rpo(bench: Bench, rounds: int, load_seconds: float, rate: float) -> None:
    kills = []
    for round_ in range(rounds):
        if round_:  # crash recovery after the previous kill, then archiving goes on
            bench.server.stop()
            bench.url = bench.server.start()
        # Kills a few seconds apart in the archive_timeout cycle: the bound, not one sample.
        seconds = load_seconds + round_ * ARCHIVE_TIMEOUT_SECONDS / rounds
        committed, killed_at = kill_under_load(bench.server, bench.url, seconds, rate, [])
        present = restored_job_ids(bench.work / f"rpo-{round_}" / "pgdata", bench.backup_dir)
        kills.append(judge(committed, killed_at, present))
    bench.add(
        "RPO, archive_command (kill -9 under write load)",
        summary(kills),
        f"{rounds} kills, each after {load_seconds:.0f} s or more of ~{rate:.0f} jobs/s by one thread: SIGKILL to "
        "the postmaster, restore of the archive's latest point, kill time - commit time of the newest job present; "
        "PostgreSQL restarted (crash recovery) between kills. The archive holds the WAL up to the last segment "
        f"switch, at most archive_timeout ({ARCHIVE_TIMEOUT_SECONDS} s) plus one archive-wal run before the kill, "
        "so a kill lands anywhere between 0 and that bound (goal < 60 s)",
    )


def start_receiver(url: str, spool: Path, backup_dir: Path, partial_seconds: float) -> subprocess.Popen[bytes]:
    """`pdfsmaller-ops receive-wal`, once PostgreSQL shows its stream."""
    receiver = subprocess.Popen(
        [
            *[sys.executable, "-m", "ops", "receive-wal", "--database-url", url, "--spool", str(spool)],
            *["--partial-seconds", str(partial_seconds), "--backup-dir", str(backup_dir)],
        ],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + ARCHIVE_WAIT_SECONDS
    while time.monotonic() < deadline and receiver.poll() is None:
        with psycopg.connect(url, autocommit=True) as conn:
            if conn.execute("SELECT count(*) FROM pg_stat_replication").fetchone() == (1,):
                return receiver
        time.sleep(0.2)
    receiver.kill()
    raise RuntimeError("receive-wal did not start streaming")


def measure_rpo_streaming(bench: Bench, rounds: int, load_seconds: float, rate: float) -> None:
    """RPO of receive-wal: its own PostgreSQL (no archive_command), receiver and server killed together."""
    folder = bench.work / "streaming"
    backup_dir, spool = folder / "backups", folder / "spool"
    server = PostgresServer(folder / "source", port=0, durable=True)
    kills = []
    try:
        url = server.start()
        migrate(url)
        ops("backup", "--full", "--database-url", url, "--backup-dir", str(backup_dir))
        for round_ in range(rounds):
            if round_:
                server.stop()
                url = server.start()
            receiver = start_receiver(url, spool, backup_dir, RECEIVER_PARTIAL_SECONDS)
            seconds = load_seconds + round_ * RECEIVER_PARTIAL_SECONDS / rounds
            committed, killed_at = kill_under_load(server, url, seconds, rate, [receiver])
            present = restored_job_ids(folder / f"restored-{round_}" / "pgdata", backup_dir)
            kills.append(judge(committed, killed_at, present))
    finally:
        server.stop()
    bench.add(
        "RPO, receive-wal (kill -9 under write load)",
        summary(kills),
        f"a second PostgreSQL without archive_command, full backup, then {rounds} rounds: receive-wal "
        f"(--partial-seconds {RECEIVER_PARTIAL_SECONDS:g}) streaming, {load_seconds:.0f} s or more of ~{rate:.0f} "
        "jobs/s, SIGKILL to the receiver and the postmaster at the same moment (the worst case: nothing is stored "
        "after the kill), restore of the archive's latest point (the partial segment included). The bound is "
        "one --partial-seconds plus one store (goal < 60 s)",
    )


# -- the run ------------------------------------------------------------------------------------------------


def source_server(work: Path) -> PostgresServer:
    """Durable, archiving its WAL through pdfsmaller-ops into work/backups, summarizing it for incrementals."""
    settings = {
        "archive_mode": "on",
        "archive_command": archive_command(work / "backups"),
        "archive_timeout": f"{ARCHIVE_TIMEOUT_SECONDS}s",
        "summarize_wal": "on",
    }
    return PostgresServer(work / "source", port=0, durable=True, settings=settings)


def run(args: argparse.Namespace, work: Path) -> tuple[list[Figure], str]:
    server = source_server(work)
    try:
        url = server.start()
        migrate(url)
        bench = Bench(server, url, work)
        version = str(bench.query("SHOW server_version"))
        measure_generation(bench, args.jobs, args.writers)
        measure_backups(bench, args.writers)
        measure_database_rto(bench)
        if args.succeeded:
            measure_recovery_test(bench, args.succeeded)
        measure_rpo_streaming(bench, args.rpo_kills, args.rpo_seconds, args.rpo_rate)
        measure_rpo(bench, args.rpo_kills, args.rpo_seconds, args.rpo_rate)
        return bench.figures, version
    finally:
        server.stop()


def report(figures: list[Figure], header: list[str]) -> str:
    width = max(len(figure.name) for figure in figures)
    lines = [*header, ""]
    lines += [f"{figure.name:<{width}}  {figure.value}" for figure in figures]
    lines += ["", "How each figure is measured:"]
    lines += [f"- {figure.name}: {figure.how}." for figure in figures]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100_000, help="jobs generated before the full backup (%(default)s)")
    ap.add_argument("--writers", type=int, default=4, help="threads creating them (%(default)s)")
    ap.add_argument("--succeeded", type=int, default=300, help="jobs completed, 0: no recovery-test")
    ap.add_argument("--rpo-seconds", type=float, default=25.0, help="write load before the kill (%(default)s)")
    ap.add_argument("--rpo-kills", type=int, default=3, help="kills per RPO figure (%(default)s)")
    ap.add_argument("--rpo-rate", type=float, default=50.0, help="jobs per second of that load (%(default)s)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "backup_recovery.txt")
    ap.add_argument("--note", default="", help="a line about the run, added to the header")
    args = ap.parse_args(argv)
    load_before, started = load(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pdfsmaller-backup-bench-") as work:
        figures, version = run(args, Path(work))
    header = [
        "Backup and recovery figures (python -m bench.backup_recovery)",
        f"Machine: {machine()}; {os.cpu_count()} cores. PostgreSQL {version} (fsync on, WAL archived by "
        f"pdfsmaller-ops archive-wal into a local folder, archive_timeout {ARCHIVE_TIMEOUT_SECONDS} s; a second "
        "server's streamed by pdfsmaller-ops receive-wal).",
        f"Jobs: {args.jobs} generated + {INCREMENTAL_JOBS} before the incremental backup.",
        f"Load average (1/5/15 min) before {load_before}, after {load()}; {time.monotonic() - started:.0f} s in all.",
        *([args.note] if args.note else []),
    ]
    text = report(figures, header)
    print("\n" + text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
