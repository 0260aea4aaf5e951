"""Start and stop the whole system on loopback: `make run` and the end-to-end tests.

Order: PostgreSQL, Valkey, clamd (when installed) -> storage -> jobs, scanner
-> gateway, compressor -> Envoy. Each service is a real `python -m services.X`
process configured only through environment variables, exactly as deployed;
the stack waits for each one's gRPC readiness before starting the next.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from libs.devservers.clamd import ClamdServer
from libs.devservers.envoy import EnvoyServer, EnvoySettings
from libs.devservers.postgres import PostgresServer
from libs.devservers.processes import free_port, stop_process
from libs.devservers.redis import RedisServer

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Ports:
    """Where everything listens; `Ports.random()` for tests running beside `make run`."""

    envoy: int = 8080
    envoy_admin: int = 9901
    gateway: int = 50051
    jobs: int = 50052
    storage: int = 50053
    scanner: int = 50054
    compressor: int = 50055
    metrics_base: int = 9101
    postgres: int = 5433
    redis: int = 6380
    clamd: int = 3310

    @classmethod
    def random(cls) -> Ports:
        return cls(
            envoy=free_port(),
            envoy_admin=free_port(),
            gateway=free_port(),
            jobs=free_port(),
            storage=free_port(),
            scanner=free_port(),
            compressor=free_port(),
            metrics_base=0,
            postgres=0,
            redis=0,
            clamd=0,
        )

    def metrics(self, index: int) -> int:
        return self.metrics_base + index if self.metrics_base else 0


@dataclass
class ServiceProcess:
    name: str
    module: str
    address: str
    health_name: str
    env: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None


@dataclass
class Stack:
    data_dir: Path
    ports: Ports = field(default_factory=Ports)
    # Extra environment for every service (API_KEYS, RETENTION_HOURS, ...).
    extra_env: Mapping[str, str] = field(default_factory=dict)
    with_clamd: bool = True
    durable: bool = True
    postgres: PostgresServer | None = None
    redis: RedisServer | None = None
    clamd: ClamdServer | None = None
    envoy: EnvoyServer | None = None
    services: list[ServiceProcess] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _log_files: list[IO[bytes]] = field(default_factory=list)

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
        self.postgres = PostgresServer(self.data_dir / "postgres", self.ports.postgres, durable=self.durable)
        database_url = self.postgres.start()
        self.redis = RedisServer(self.data_dir / "valkey", self.ports.redis, persist=self.durable)
        redis_url = self.redis.start()
        clamd_addr = ""
        if self.with_clamd and ClamdServer.available():
            self.clamd = ClamdServer(self.data_dir / "clamd", self.ports.clamd)
            clamd_addr = self.clamd.start()
            if self.clamd.test_signatures_only:
                self.notes.append(
                    "clamd runs with TEST signatures only (no official database in /var/lib/clamav): "
                    "it detects the EICAR test file, not real malware. Run freshclam for the real database."
                )
        else:
            self.notes.append(
                "clamd is not installed: uploads get PDF structure checks only (DEGRADED in /v1/health). "
                "Install Debian's clamav-daemon to scan for malware."
            )
        addr = {
            name: f"127.0.0.1:{getattr(self.ports, name)}"
            for name in ("gateway", "jobs", "storage", "scanner", "compressor")
        }
        common = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "STORAGE_ADDR": addr["storage"],
            "JOBS_ADDR": addr["jobs"],
            "SCANNER_ADDR": addr["scanner"],
            "STORAGE_BACKEND": "local",
            "STORAGE_DIR": str(self.data_dir / "objects"),
            "WORK_DIR": str(self.data_dir / "work"),
            **({"CLAMD_ADDR": clamd_addr} if clamd_addr else {}),
            **self.extra_env,
        }
        if not clamd_addr:
            common.pop("CLAMD_ADDR", None)
        order = [
            ("storage", "pdfsmaller.storage.v1.StorageService"),
            ("jobs", "pdfsmaller.jobs.v1.JobsService"),
            ("scanner", "pdfsmaller.scanner.v1.ScannerService"),
            ("gateway", "pdfsmaller.gateway.v1.GatewayService"),
            ("compressor", "pdfsmaller.compressor.v1.Worker"),
        ]
        for index, (name, health_name) in enumerate(order):
            service = ServiceProcess(
                name,
                f"services.{name}",
                addr[name],
                health_name,
                env={
                    **common,
                    f"{name.upper()}_LISTEN": addr[name],
                    f"{name.upper()}_METRICS_PORT": str(self.ports.metrics(index)),
                },
            )
            self.services.append(service)
            self.start_service(name, timeout)
        self.envoy = EnvoyServer(
            self.data_dir / "envoy",
            EnvoySettings.from_env(
                {
                    **os.environ,
                    **self.extra_env,
                    "ENVOY_LISTEN": f"127.0.0.1:{self.ports.envoy}",
                    "ENVOY_ADMIN_PORT": str(self.ports.envoy_admin),
                    "GATEWAY_ADDR": addr["gateway"],
                }
            ),
        )
        self.envoy.start()

    def service(self, name: str) -> ServiceProcess:
        return next(s for s in self.services if s.name == name)

    def start_service(self, name: str, timeout: float = 60.0) -> None:
        """(Re)start one service process and wait until it is ready."""
        service = self.service(name)
        service.process = subprocess.Popen(
            [sys.executable, "-m", service.module],
            env=service.env,
            cwd=PROJECT_ROOT,
            stdout=self._log_for(name),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the stack, which stops services in order
        )
        self._wait_ready(service, timeout)

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

    def _wait_ready(self, service: ServiceProcess, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        request = health_pb2.HealthCheckRequest(service=service.health_name)
        with grpc.insecure_channel(service.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                assert service.process is not None
                if service.process.poll() is not None:
                    raise RuntimeError(f"{service.name} exited with {service.process.returncode}; see its log")
                try:
                    if stub.Check(request, timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{service.name} not ready after {timeout:.0f}s; see its log")
                time.sleep(0.1)

    def check_alive(self) -> None:
        """Raise if a service process died (make run then stops the rest and says so)."""
        for service in self.services:
            if service.process is not None and service.process.poll() is not None:
                raise RuntimeError(f"{service.name} exited with {service.process.returncode}; see its log")

    def stop(self) -> None:
        """Stop everything started, newest first; never raises."""
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
