"""A private clamd (Debian's clamav-daemon) for `make run` and the tests.

Writes `clamd.conf` into its data directory and runs `/usr/sbin/clamd` in the
foreground on 127.0.0.1 (TCP). Its signature directory is private too
(`<data_dir>/db`): it always holds a tiny test database that detects the EICAR
test file (a .hdb of the file's md5 and an .ndb body signature, so EICAR is
also found inside PDF streams and large uploads), and, when the official
database exists in /var/lib/clamav, symlinks to those files. Without the
official files clamd detects only EICAR: `test_signatures_only` is then True,
and the stack says so loudly. No freshclam is run.

clamd runs as the current user: it does not refuse root (no `User` directive,
so it never tries to drop privileges), unlike PostgreSQL.

    with ClamdServer(Path(".data/clamd"), port=0) as address:
        ...  # address == "127.0.0.1:PORT"
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from devtools.servers.processes import launch_on_port, listens_on, log_tail, stop_process

log = logging.getLogger(__name__)

CLAMD_BINARY = Path("/usr/sbin/clamd")
OFFICIAL_DB_DIR = Path("/var/lib/clamav")
OFFICIAL_DB_FILES = ("main.cvd", "main.cld", "daily.cvd", "daily.cld", "bytecode.cvd", "bytecode.cld")
# Written to the data dir when only the test signatures are loaded (for humans and scripts).
TEST_SIGNATURES_MARKER = "TEST_SIGNATURES_ONLY"

# The EICAR anti-virus test file, kept as hex so this source file itself is never flagged.
EICAR_HEX = (
    "58354f2150254041505b345c505a58353428505e2937434329377d2445494341522d5354414e44415244"
    "2d414e544956495255532d544553542d46494c452124482b482a"
)
EICAR_MD5 = "44d88612fea8a8f36de82e1278abb02f"
# Both names are reported with clamd's ".UNOFFICIAL" suffix.
HDB_SIGNATURE_NAME = "PdfSmaller.Test.EICAR-HDB"
NDB_SIGNATURE_NAME = "PdfSmaller.Test.EICAR-NDB"

# Above the 100 MiB upload cap, so a maximal upload is scanned whole rather than refused or cut.
STREAM_MAX = "200M"
SCAN_MAX = "400M"


def eicar_bytes() -> bytes:
    return bytes.fromhex(EICAR_HEX)


class ClamdServerError(RuntimeError):
    """clamd could not be started."""


class ClamdServer:
    """One clamd process; config, log, temporary files and signatures in `data_dir`."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        *,
        use_official_db: bool = True,
        binary: Path | None = None,
        start_timeout: float | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.port = port
        self.host = "127.0.0.1"
        self.binary = binary or CLAMD_BINARY
        official = [OFFICIAL_DB_DIR / name for name in OFFICIAL_DB_FILES if (OFFICIAL_DB_DIR / name).is_file()]
        self.official_files = official if use_official_db else []
        self.test_signatures_only = not any(path.name.startswith(("main.", "daily.")) for path in self.official_files)
        # Loading the official database takes tens of seconds and about 1 GiB; the test one is instant.
        self.start_timeout = start_timeout or (30.0 if self.test_signatures_only else 180.0)
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        """Whether clamd is installed here."""
        return CLAMD_BINARY.is_file() or shutil.which("clamd") is not None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "clamd.conf"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "clamd.log"

    @property
    def db_dir(self) -> Path:
        return self.data_dir / "db"

    def _prepare(self) -> None:
        (self.data_dir / "tmp").mkdir(parents=True, exist_ok=True)
        if self.db_dir.exists():
            shutil.rmtree(self.db_dir)
        self.db_dir.mkdir()
        eicar = eicar_bytes()
        (self.db_dir / "pdfsmaller-test.hdb").write_text(f"{EICAR_MD5}:{len(eicar)}:{HDB_SIGNATURE_NAME}\n")
        # Target type 0 (any file), any offset: finds EICAR inside decoded PDF streams and large files.
        (self.db_dir / "pdfsmaller-test.ndb").write_text(f"{NDB_SIGNATURE_NAME}:0:*:{EICAR_HEX}\n")
        for path in self.official_files:
            (self.db_dir / path.name).symlink_to(path)
        marker = self.data_dir / TEST_SIGNATURES_MARKER
        if self.test_signatures_only:
            marker.write_text("clamd loads only the EICAR test signatures; it detects no real malware.\n")
        else:
            marker.unlink(missing_ok=True)

    def _write_config(self) -> None:
        self.config_path.write_text(
            "\n".join(
                [
                    "# Written by devtools/servers/clamd.py; regenerated on every start.",
                    f"TCPAddr {self.host}",
                    f"TCPSocket {self.port}",
                    "Foreground yes",
                    f"DatabaseDirectory {self.db_dir}",
                    f"TemporaryDirectory {self.data_dir / 'tmp'}",
                    f"LogFile {self.log_path}",
                    "LogTime yes",
                    "LogFileMaxSize 10M",
                    f"StreamMaxLength {STREAM_MAX}",
                    f"MaxFileSize {STREAM_MAX}",
                    f"MaxScanSize {SCAN_MAX}",
                    # One database in memory at a time when SelfCheck reloads it.
                    "ConcurrentDatabaseReload no",
                    "",
                ]
            )
        )

    def start(self) -> str:
        """Start and wait until it answers PING with PONG; returns "127.0.0.1:PORT"."""
        if self._process is not None:
            return self.address
        if not self.binary.is_file():
            raise ClamdServerError(f"{self.binary} not found: install Debian's clamav-daemon")
        self._prepare()

        def launch(port: int) -> None:
            self.port = port
            self._write_config()
            self._launch()

        self.port = launch_on_port("clamd", self.host, self.port, launch, self.stop, self.log_path)
        log.info(
            "clamd ready on %s (%s)",
            self.address,
            "TEST signatures only" if self.test_signatures_only else "official database",
        )
        return self.address

    def _launch(self) -> None:
        self.log_path.touch()
        log_offset = self.log_path.stat().st_size
        self._process = subprocess.Popen(
            [str(self.binary), "--config-file", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                tail = log_tail(self.log_path, log_offset)
                raise ClamdServerError(f"clamd exited with {self._process.returncode}: {stderr.strip()} {tail}")
            if ping(self.address) and listens_on(self._process.pid, self.port):
                return  # (a PONG from another clamd on our port does not count)
            if time.monotonic() > deadline:
                raise ClamdServerError(f"clamd did not answer PING within {self.start_timeout} s")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit; always leaves no process behind."""
        process, self._process = self._process, None
        stop_process(process, "clamd", timeout=timeout)
        if process is not None and process.stderr:
            process.stderr.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# The name the task brief uses.
ClamdLauncher = ClamdServer


def ping(address: str, timeout: float = 1.0) -> bool:
    """Whether clamd at host:port answers PING with PONG."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as conn:
            conn.sendall(b"zPING\0")
            return conn.recv(16).rstrip(b"\0\n") == b"PONG"
    except OSError:
        return False
