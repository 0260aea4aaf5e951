"""Start and stop the whole system on loopback: `make run` and the end-to-end tests.

Order: PostgreSQL, Valkey, clamd (when installed) -> storage -> jobs, scanner
-> gateway, compressor -> Envoy -> Prometheus (when installed, scraping all of them).
Each service is a real `python -m services.X` process configured only through
environment variables, exactly as deployed;
the stack waits for each one's gRPC readiness before starting the next.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO

import grpc

from devtools.servers.clamd import ClamdServer
from devtools.servers.envoy import EnvoyServer, EnvoySettings
from devtools.servers.postgres import PostgresServer
from devtools.servers.processes import log_tail, stop_process
from devtools.servers.prometheus import PrometheusServer, committed_rule_files, stack_targets
from devtools.servers.redis import RedisServer
from libs.health import serving_problem
from libs.ports import PortInUse
from libs.service import PARENT_PID_VARIABLE
from libs.settings import DEVELOPMENT, LOCAL_GRPC_PORTS, LOCAL_METRICS_PORTS, EnvReader, SettingsError

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The operator token of the embedded system (OperatorService, ApiKeyService), kept in the data folder so
# the runbook's grpcurl commands read it: -H "authorization: Bearer $(cat .data/operator-token)".
# A file name, not a secret.
OPERATOR_TOKEN_FILE = "operator-token"  # noqa: S105  # nosec B105
OPERATOR_NAME = "oncall"


# Start order: each service needs only those before it.
SERVICES = (
    ("storage", "pdfsmaller.storage.v1.StorageService"),
    ("jobs", "pdfsmaller.jobs.v1.JobsService"),
    ("scanner", "pdfsmaller.scanner.v1.ScannerService"),
    ("gateway", "pdfsmaller.gateway.v1.GatewayService"),
    ("compressor", "pdfsmaller.compressor.v1.Worker"),
)
PORT_OFFSET_SETTING = "PDFSMALLER_PORT_OFFSET"


@dataclass(frozen=True)
class Ports:
    """Where everything listens. The defaults are `make run`'s, all below the kernel's ephemeral
    range so no outgoing connection can hold one; `Ports.any()` lets every server take a free port
    of its own (tests, also beside `make run`); 0 means exactly that for any one field."""

    envoy: int = 8080
    envoy_admin: int = 9901
    gateway: int = LOCAL_GRPC_PORTS["gateway"]
    jobs: int = LOCAL_GRPC_PORTS["jobs"]
    storage: int = LOCAL_GRPC_PORTS["storage"]
    scanner: int = LOCAL_GRPC_PORTS["scanner"]
    compressor: int = LOCAL_GRPC_PORTS["compressor"]
    postgres: int = 5433
    redis: int = 6380
    clamd: int = 3310
    prometheus: int = 9090
    # Added to every service's default metrics port (LOCAL_METRICS_PORTS); None: any free port.
    metrics_offset: int | None = 0

    @classmethod
    def any(cls) -> Ports:
        return cls(**{f.name: 0 for f in fields(cls) if f.name != "metrics_offset"}, metrics_offset=None)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Ports:
        """`make run`'s ports, all shifted by PDFSMALLER_PORT_OFFSET when another program holds one."""
        env = EnvReader(environ)
        offset = env.int(PORT_OFFSET_SETTING, 0, minimum=0)
        env.done()
        defaults = cls()
        shifted = {f.name: getattr(defaults, f.name) + offset for f in fields(cls) if f.name != "metrics_offset"}
        if max(shifted.values()) > 65535:
            raise SettingsError([f"{PORT_OFFSET_SETTING}={offset} takes ports beyond 65535"])
        return cls(**shifted, metrics_offset=offset)

    def grpc(self, service: str) -> int:
        return int(getattr(self, service))

    def metrics(self, service: str) -> int:
        return 0 if self.metrics_offset is None else LOCAL_METRICS_PORTS[service] + self.metrics_offset


@dataclass
class ServiceProcess:
    name: str
    module: str
    # host:port; the port the service reported once it started with port 0.
    address: str
    health_name: str
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    metrics_port: int | None = None

    @property
    def address_file(self) -> Path:
        return Path(self.env[f"{self.name.upper()}_ADDRESS_FILE"])


@dataclass
class Stack:
    data_dir: Path
    ports: Ports = field(default_factory=Ports)
    # Extra environment for every service (API_KEYS, RETENTION_HOURS, ...).
    extra_env: Mapping[str, str] = field(default_factory=dict)
    with_clamd: bool = True
    # `make run` and the session stack of the tests; other stacks of the tests need none.
    with_prometheus: bool = False
    # How often the stack's Prometheus scrapes and evaluates its rules.
    scrape_interval: str = "5s"
    # None: the committed rules of deploy/monitoring/prometheus/ (tests pass a copy with short `for:`).
    prometheus_rule_files: Sequence[Path] | None = None
    durable: bool = True
    postgres: PostgresServer | None = None
    redis: RedisServer | None = None
    clamd: ClamdServer | None = None
    envoy: EnvoyServer | None = None
    prometheus: PrometheusServer | None = None
    services: list[ServiceProcess] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _log_files: list[IO[bytes]] = field(default_factory=list)

    @property
    def operator_token(self) -> str:
        """The token the operator APIs accept (made once, then kept with the data)."""
        path = self.data_dir / OPERATOR_TOKEN_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32))
        return path.read_text().strip()

    @property
    def url(self) -> str:
        return self.envoy.url if self.envoy else ""

    def start(self, timeout: float = 60.0) -> Stack:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        base_env = self._service_env(*self._start_data_servers())
        for name, health_name in SERVICES:
            self.services.append(self._service_process(name, health_name, base_env))
            self.start_service(name, timeout)
        self._start_envoy()
        self._start_prometheus()

    def _start_data_servers(self) -> tuple[str, str, str]:
        """PostgreSQL, Valkey and clamd (when installed); their addresses ("" for no clamd)."""
        # A replication slot left behind by a stopped `pdfsmaller-ops receive-wal` keeps WAL: at most this much.
        settings = {"max_slot_wal_keep_size": "2GB"}
        self.postgres = PostgresServer(
            self.data_dir / "postgres", self.ports.postgres, durable=self.durable, settings=settings
        )
        database_url = self.postgres.start()
        self.redis = RedisServer(self.data_dir / "valkey", self.ports.redis, persist=self.durable)
        redis_url = self.redis.start()
        return database_url, redis_url, self._start_clamd()

    def _start_clamd(self) -> str:
        if not (self.with_clamd and ClamdServer.available()):
            self.notes.append(
                "clamd is not installed: uploads get PDF structure checks only (DEGRADED in /v1/health). "
                "Install Debian's clamav-daemon to scan for malware."
            )
            return ""
        self.clamd = ClamdServer(self.data_dir / "clamd", self.ports.clamd)
        clamd_addr = self.clamd.start()
        if self.clamd.test_signatures_only:
            self.notes.append(
                "clamd runs with TEST signatures only (no official database in /var/lib/clamav): "
                "it detects the EICAR test file, not real malware. Run freshclam for the real database."
            )
        return clamd_addr

    def _service_env(self, database_url: str, redis_url: str, clamd_addr: str) -> dict[str, str]:
        """The environment every service process shares."""
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            # The embedded system is the development mode whatever the shell says (tests override it).
            "PDFSMALLER_ENV": DEVELOPMENT,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "STORAGE_BACKEND": "local",
            "STORAGE_DIR": str(self.data_dir / "objects"),
            "WORK_DIR": str(self.data_dir / "work"),
            # Services stop by themselves if this launcher dies without stopping them (libs/service.py).
            PARENT_PID_VARIABLE: str(os.getpid()),
        }
        # The shell's OPERATOR_TOKENS, when set, wins (extra_env is applied after this).
        env.setdefault("OPERATOR_TOKENS", f"{OPERATOR_NAME}:{self.operator_token}")
        env.pop("CLAMD_ADDR", None)  # only the stack's own clamd, never one from the shell
        if clamd_addr:
            env["CLAMD_ADDR"] = clamd_addr
        return env

    def _service_process(self, name: str, health_name: str, base_env: Mapping[str, str]) -> ServiceProcess:
        """One service, told where the services started before it listen (as each reported it)."""
        upper = name.upper()
        known = {f"{s.name.upper()}_ADDR": s.address for s in self.services}
        return ServiceProcess(
            name,
            f"services.{name}",
            f"127.0.0.1:{self.ports.grpc(name)}",
            health_name,
            env={
                **base_env,
                **known,
                **self.extra_env,
                f"{upper}_LISTEN": f"127.0.0.1:{self.ports.grpc(name)}",
                f"{upper}_METRICS_PORT": str(self.ports.metrics(name)),
                f"{upper}_ADDRESS_FILE": str(self.data_dir / "run" / f"{name}.json"),
            },
        )

    def _start_envoy(self) -> None:
        self.envoy = EnvoyServer(
            self.data_dir / "envoy",
            EnvoySettings.from_env(
                {
                    **os.environ,
                    "PDFSMALLER_ENV": DEVELOPMENT,
                    **self.extra_env,
                    "ENVOY_LISTEN": f"127.0.0.1:{self.ports.envoy}",
                    "ENVOY_ADMIN_PORT": str(self.ports.envoy_admin),
                    "GATEWAY_ADDR": self.service("gateway").address,
                }
            ),
        )
        self.envoy.start()

    def _start_prometheus(self) -> None:
        if not self.with_prometheus:
            return
        if not PrometheusServer.available():
            self.notes.append("Prometheus is not installed: no metrics server (Debian: apt-get install prometheus).")
            return
        assert self.envoy is not None
        self.prometheus = PrometheusServer(
            self.data_dir / "prometheus",
            stack_targets(
                {s.name: s.metrics_port for s in self.services}, self.envoy.admin_url.removeprefix("http://")
            ),
            listen=f"127.0.0.1:{self.ports.prometheus}",
            scrape_interval=self.scrape_interval,
            rule_files=committed_rule_files() if self.prometheus_rule_files is None else self.prometheus_rule_files,
        )
        try:
            self.prometheus.start()
        except PortInUse as taken:  # optional: the system runs without it (often another Prometheus)
            self.prometheus = None
            self.notes.append(f"no Prometheus: {taken.address} is taken ({PORT_OFFSET_SETTING} moves every port)")

    def service(self, name: str) -> ServiceProcess:
        return next(s for s in self.services if s.name == name)

    def start_service(self, name: str, timeout: float = 60.0) -> None:
        """(Re)start one service process and wait until it is ready.

        The first start may use port 0: the service binds a port of its own choosing (outside the
        ephemeral range) and reports it in its address file. The stack keeps that port for every
        restart, so the services that talk to this one find it again.
        """
        service = self.service(name)
        service.address_file.unlink(missing_ok=True)
        log_path = self.data_dir / "logs" / f"{name}.log"
        log_offset = log_path.stat().st_size if log_path.exists() else 0
        service.process = subprocess.Popen(
            [sys.executable, "-m", service.module],
            env=service.env,
            cwd=PROJECT_ROOT,
            stdout=self._log_for(name),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the stack, which stops services in order
        )
        try:
            self._wait_reported(service, timeout, log_path, log_offset)
            self._wait_ready(service, timeout)
        except BaseException:
            stop_process(service.process, name, timeout=5)
            raise

    def kill_service(self, name: str) -> None:
        """SIGKILL one service process, as a crash or an OOM kill would."""
        process = self.service(name).process
        if process is not None:
            process.kill()
            process.wait()

    def _log_for(self, name: str) -> IO[bytes]:
        handle = (self.data_dir / "logs" / f"{name}.log").open("ab")
        self._log_files.append(handle)
        return handle

    def _wait_reported(self, service: ServiceProcess, timeout: float, log_path: Path, log_offset: int) -> None:
        """Wait for the addresses the service bound, then pin them for restarts."""
        deadline = time.monotonic() + timeout
        assert service.process is not None
        while not service.address_file.exists():
            if service.process.poll() is not None:
                raise self._exit_error(service, log_path, log_offset)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service.name} did not report its address within {timeout:.0f}s; see {log_path}")
            time.sleep(0.05)
        reported = json.loads(service.address_file.read_text())
        service.address = reported["grpc"]
        service.metrics_port = reported.get("metrics_port")
        upper = service.name.upper()
        service.env[f"{upper}_LISTEN"] = service.address
        if service.metrics_port:
            service.env[f"{upper}_METRICS_PORT"] = str(service.metrics_port)

    def _exit_error(self, service: ServiceProcess, log_path: Path, log_offset: int) -> Exception:
        """Why a service exited at start: PortInUse when its log says so, else its last log line."""
        assert service.process is not None
        tail = log_tail(log_path, log_offset, limit=20_000).splitlines()
        for line in tail:
            with contextlib.suppress(ValueError, AttributeError):
                entry = json.loads(line)
                if entry.get("event") == "port_in_use":
                    return PortInUse(service.name, entry.get("address", service.address))
        last = tail[-1] if tail else "(no output)"
        return RuntimeError(f"{service.name} exited with {service.process.returncode}: {last} (log: {log_path})")

    def _wait_ready(self, service: ServiceProcess, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(service.address) as channel:
            while (problem := serving_problem(channel, service.health_name, timeout=1)) is not None:
                assert service.process is not None
                if service.process.poll() is not None:
                    raise RuntimeError(f"{service.name} exited with {service.process.returncode}; see its log")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{service.name} {problem} after {timeout:.0f}s; see its log")
                time.sleep(0.1)

    def check_alive(self) -> None:
        """Raise if a service process died (make run then stops the rest and says so)."""
        for service in self.services:
            if service.process is not None and service.process.poll() is not None:
                raise RuntimeError(f"{service.name} exited with {service.process.returncode}; see its log")

    def stop(self) -> None:
        """Stop everything started, newest first; never raises."""
        if self.prometheus is not None:
            self.prometheus.stop()
        if self.envoy is not None:
            self.envoy.stop()
        for service in reversed(self.services):
            stop_process(service.process, service.name, timeout=15)
        self.services.clear()
        for server in (self.clamd, self.redis, self.postgres):
            if server is not None:
                try:
                    server.stop()
                except Exception:
                    log.exception("stopping %s failed", type(server).__name__)
        for handle in self._log_files:
            handle.close()
        self._log_files.clear()
