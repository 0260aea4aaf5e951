"""`pdfsmaller-ops receive-wal`: continuous WAL archiving from outside the database server.

    pdfsmaller-ops receive-wal --database-url postgresql://backup@db/pdfsmaller --spool /spool \\
        --backup-s3-bucket pdf-smaller-backups --backup-s3-prefix pdf-smaller

For a PostgreSQL whose host cannot run `archive-wal` as its archive_command (a database in its own
pod, a host we do not install on): PostgreSQL's `pg_receivewal` streams the WAL over a replication
connection into the spool folder, through a physical replication slot (created when missing) so the
server keeps what has not been received yet. This command supervises it (restarting it with a
bounded backoff when the connection drops) and, every --partial-seconds:

- stores each completed segment (and timeline history file) in the backup location exactly as
  `archive-wal` does (database/wal/<segment>.gz; the same name with other bytes is refused), then
  removes it from the spool;
- stores the segment being written, as it stands, as database/wal/<segment>.partial.gz (replaced as
  it grows; removed once the segment is complete). A restore replays it when the complete segment is
  missing, so the recovery point is --partial-seconds behind, whatever archive_timeout says.

The spool must survive a restart of this command (a persistent volume): pg_receivewal tells the
slot what it has written to the spool, and the server may then recycle that WAL. The user needs the
REPLICATION privilege. A slot holds WAL on the server while nobody receives it: set
`max_slot_wal_keep_size` on the server to bound that, and alert on the metrics (--metrics-port).
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from libs.parent_death import kill_when_parent_dies
from ops import defaults
from ops.database import add_database_argument, connect
from ops.db_backup import (
    PARTIAL_SUFFIX,
    SEGMENT_NAME,
    WAL_NAME,
    WalConflict,
    archive_wal,
    store_partial_wal,
    wal_key,
)
from ops.location import BackupLocation
from ops.postgres_tools import PostgresTools, split_password
from ops.report import OpsError, Reporter

DEFAULT_SLOT = "pdfsmaller_wal"
DEFAULT_PARTIAL_SECONDS = 5.0
SLOT_NAME = re.compile(r"^[a-z0-9_]{1,63}$")
# pg_receivewal restarts after a failure: 1 s, doubling up to this.
MAX_BACKOFF_SECONDS = 30.0
# Entries of the spool looked at per pass: it holds a few segments normally; more waits for the next pass.
MAX_SPOOL_ENTRIES = 1000
_STOP_SECONDS = 10.0


@dataclass
class ReceiverMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        prefix = "pdfsmaller_wal_receiver"
        self.streaming = Gauge(f"{prefix}_streaming", "1 while pg_receivewal runs", registry=self.registry)
        self.restarts = Counter(f"{prefix}_restarts", "pg_receivewal exits that were restarted", registry=self.registry)
        self.archived = Counter(
            f"{prefix}_files_archived", "completed WAL segments and history files stored", registry=self.registry
        )
        self.partial_uploads = Counter(
            f"{prefix}_partial_uploads", "stores of the segment being written", registry=self.registry
        )
        self.failures = Counter(f"{prefix}_store_failures", "stores that failed (retried)", registry=self.registry)
        self.slot_lost = Gauge(
            f"{prefix}_slot_lost", "1 when the server invalidated the slot: take a full backup", registry=self.registry
        )
        self.last_stored = Gauge(
            f"{prefix}_last_stored_timestamp_seconds",
            "when WAL was last stored in the backup location (the recovery point reached)",
            registry=self.registry,
        )


class SlotLost(OpsError):
    """The server invalidated the slot (it passed max_slot_wal_keep_size): the archive has a gap."""


def ensure_slot(url: str, slot: str) -> bool:
    """Create the physical replication slot when it is missing, reserving WAL from now; True when created.
    Raises SlotLost when the server has invalidated it: WAL we never received is gone."""
    with connect(url) as conn:
        row = conn.execute("SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()
        if row is not None:
            if row[0] == "lost":
                raise SlotLost(
                    f"the server invalidated replication slot {slot} (max_slot_wal_keep_size): WAL is missing "
                    f"from the archive. Take a full backup (pdfsmaller-ops backup --full), then drop the slot "
                    f"(SELECT pg_drop_replication_slot('{slot}')); the receiver then creates it again"
                )
            return False
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
        return True


class WalReceiver:
    def __init__(
        self,
        tools: PostgresTools,
        url: str,
        slot: str,
        spool: Path,
        location: BackupLocation,
        *,
        work_dir: str | None,
        reporter: Reporter,
        metrics: ReceiverMetrics,
    ) -> None:
        self._tools = tools
        self._url = url
        self._slot = slot
        self._spool = spool
        self._location = location
        self._work_dir = work_dir
        self._reporter = reporter
        self.metrics = metrics
        self._child: subprocess.Popen[bytes] | None = None
        self._restart_at = 0.0
        self._backoff = 1.0
        self._started_at = 0.0
        # (size, mtime) of each .partial when it was last stored: store again only when it changed.
        self._stored_partials: dict[str, tuple[int, int]] = {}
        self.files_archived = 0
        self.partial_uploads = 0

    def run(self, stop: threading.Event, partial_seconds: float) -> None:
        """Receive and store until `stop` is set; then stop pg_receivewal and store what it left."""
        self._spool.mkdir(parents=True, exist_ok=True)
        try:
            while not stop.is_set():
                self._keep_child_running()
                self.sweep()
                stop.wait(partial_seconds)
        finally:
            self._stop_child()
            self.sweep()

    def _keep_child_running(self) -> None:
        if self._child is not None:
            code = self._child.poll()
            if code is None:
                if time.monotonic() - self._started_at > MAX_BACKOFF_SECONDS:
                    self._backoff = 1.0  # it has been streaming a while: the next failure starts over
                return
            self._child = None
            self.metrics.streaming.set(0)
            self.metrics.restarts.inc()
            self._restart_at = time.monotonic() + self._backoff
            self._reporter.progress(f"pg_receivewal exited with {code}; restarting in {self._backoff:.0f} s")
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_SECONDS)
        if time.monotonic() < self._restart_at or not self._slot_ready():
            return
        conninfo, env = split_password(self._url)
        argv = [
            str(self._tools.path("pg_receivewal")),
            "--directory",
            str(self._spool),
            "--slot",
            self._slot,
            "--no-loop",  # this loop restarts it, with a backoff and a metric
            "--no-password",
            "--status-interval",
            "5",
            "--dbname",
            conninfo,
        ]
        # Its few lines (errors, "starting log streaming at") go to our stderr, the pod's log. It dies with us:
        # a SIGKILLed receiver must not leave it holding the slot, where the next receiver cannot use it.
        self._child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, env={**os.environ, **env}, preexec_fn=kill_when_parent_dies()
        )
        self._started_at = time.monotonic()
        self.metrics.streaming.set(1)

    def _slot_ready(self) -> bool:
        """The slot exists (created when missing); otherwise say why and try again after the backoff."""
        try:
            if ensure_slot(self._url, self._slot):
                self._reporter.progress(f"created replication slot {self._slot}")
                self._start_afresh()
            self.metrics.slot_lost.set(0)
            return True
        except (psycopg.Error, OpsError) as error:
            self.metrics.slot_lost.set(1 if isinstance(error, SlotLost) else 0)
            self._reporter.progress(f"replication slot {self._slot}: {error}; retrying in {self._backoff:.0f} s")
            self._restart_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_SECONDS)
            return False

    def _start_afresh(self) -> None:
        """A new slot starts where the server is now: a partial segment left in the spool belongs to an
        earlier stream (a server restored to an earlier point, a slot dropped), and pg_receivewal would
        resume from it. It is stored (as it was) and removed, so streaming starts at the slot."""
        self.sweep()
        for leftover in self._spool.glob("*" + PARTIAL_SUFFIX):
            self._reporter.progress(f"{leftover.name} is of an earlier stream: stored, removed from the spool")
            leftover.unlink()
        self._stored_partials.clear()

    def _stop_child(self) -> None:
        child, self._child = self._child, None
        self.metrics.streaming.set(0)
        if child is None or child.poll() is not None:
            return
        # SIGINT: pg_receivewal flushes what it has received and exits.
        child.send_signal(signal.SIGINT)
        try:
            child.wait(_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def sweep(self) -> None:
        """Store what the spool holds: completed files once (then removed), the partial segment when it grew."""
        try:
            with os.scandir(self._spool) as entries:
                names = sorted(entry.name for entry in itertools.islice(entries, MAX_SPOOL_ENTRIES))
        except FileNotFoundError:
            return
        for name in names:
            path = self._spool / name
            try:
                if name.endswith(PARTIAL_SUFFIX) and SEGMENT_NAME.match(name.removesuffix(PARTIAL_SUFFIX)):
                    self._store_partial(path, name)
                elif WAL_NAME.match(name) and not name.endswith(PARTIAL_SUFFIX):
                    self._store_complete(path, name)
            except FileNotFoundError:
                continue  # pg_receivewal renamed it (the segment completed) meanwhile: the next pass stores it
            except WalConflict:
                raise  # another server's WAL under these names: storing nothing more is the only safe answer
            except Exception as error:  # noqa: BLE001 - a store that failed is retried on the next pass
                self.metrics.failures.inc()
                self._reporter.progress(f"storing {name} failed ({type(error).__name__}: {error}); retrying")

    def _store_complete(self, path: Path, name: str) -> None:
        outcome = archive_wal(self._location, path, name, self._work_dir)
        if SEGMENT_NAME.match(name):
            self._location.delete(wal_key(name + PARTIAL_SUFFIX))
        self._stored_partials.pop(name + PARTIAL_SUFFIX, None)
        path.unlink()
        self.files_archived += 1
        self.metrics.archived.inc()
        self.metrics.last_stored.set_to_current_time()
        self._reporter.progress(f"{name}: {outcome}")

    def _store_partial(self, path: Path, name: str) -> None:
        status = path.stat()
        signature = (status.st_size, status.st_mtime_ns)
        if self._stored_partials.get(name) == signature:
            self.metrics.last_stored.set_to_current_time()  # nothing new: the archive is as recent as the server
            return
        store_partial_wal(self._location, path, name, self._work_dir)
        self._stored_partials[name] = signature
        self.partial_uploads += 1
        self.metrics.partial_uploads.inc()
        self.metrics.last_stored.set_to_current_time()


def run_receive_wal(args: argparse.Namespace, reporter: Reporter) -> int:
    if not SLOT_NAME.match(args.slot):
        raise SystemExit(f"--slot must be 1 to 63 of a-z, 0-9 and _: {args.slot!r}")
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    metrics = ReceiverMetrics()
    if args.metrics_port:
        # First: a receiver that cannot reach the database yet shows it in its metrics.
        start_http_server(args.metrics_port, addr=args.metrics_host, registry=metrics.registry)
        reporter.progress(f"metrics on {args.metrics_host}:{args.metrics_port}/metrics")
    with reporter.step("locate PostgreSQL's programs"):
        tools = PostgresTools.locate()
        tools.path("pg_receivewal")
    location = BackupLocation.from_args(args)
    receiver = WalReceiver(
        tools,
        args.database_url,
        args.slot,
        Path(args.spool),
        location,
        work_dir=args.work_dir,
        reporter=reporter,
        metrics=metrics,
    )
    reporter.progress(f"receiving WAL into {args.spool}, storing it in {location.description}; stop with SIGTERM")
    with reporter.step("receive WAL until stopped"):
        receiver.run(stop, args.partial_seconds)
    reporter.result("files_archived", receiver.files_archived)
    reporter.result("partial_uploads", receiver.partial_uploads)
    return reporter.finish()


def register(subcommands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    receive = subcommands.add_parser(
        "receive-wal",
        help="stream WAL with pg_receivewal and store it continuously (no archive_command on the server)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_database_argument(receive)
    receive.add_argument("--slot", default=DEFAULT_SLOT, help="physical replication slot (default: %(default)s)")
    receive.add_argument(
        "--spool", default=str(defaults.DATA_DIR / "wal-spool"), help="pg_receivewal's folder (default: %(default)s)"
    )
    receive.add_argument(
        "--partial-seconds",
        type=float,
        default=DEFAULT_PARTIAL_SECONDS,
        help="how often the spool is stored: the recovery point's lag (default: %(default)s)",
    )
    receive.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus metrics here (0: none)")
    receive.add_argument("--metrics-host", default="127.0.0.1", help="the metrics address (default: %(default)s)")
    receive.add_argument("--work-dir", default=None, help="where temporary copies go (default: the system's)")
    BackupLocation.add_arguments(receive, defaults.BACKUP_DIR)
    receive.set_defaults(run=run_receive_wal)
