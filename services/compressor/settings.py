"""Compressor worker settings, read once from the environment."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from libs.settings import EnvReader, common_ports, local_address


@dataclass(frozen=True)
class CompressorSettings:
    listen: str
    metrics_port: int
    jobs_addr: str
    storage_addr: str
    worker_id: str
    # Where the worker runs, as OperatorService.ListWorkers shows it: the node in Kubernetes (WORKER_HOST
    # from spec.nodeName, so on-call sees which workers a node drain takes), else this host's name.
    worker_host: str
    concurrency: int
    lease_seconds: int
    lease_wait_seconds: int
    engine_cpu_seconds: int
    engine_memory_bytes: int
    work_dir: Path
    call_timeout_seconds: float
    # How long a finished job's outcome is re-sent while the jobs service is unreachable.
    finish_retry_seconds: float = 600.0
    # One engine child per worker thread started ahead of its job (ENGINE_WARM_SPARES): saves a job the
    # interpreter's start and imports, for ~60 MiB resident (~35 MiB proportional) per thread while waiting.
    engine_warm_spares: bool = True
    # Written with the bound ports once serving (COMPRESSOR_ADDRESS_FILE), for launchers using port 0.
    address_file: Path | None = None
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CompressorSettings:
        env = EnvReader(environ)
        listen, metrics_port, address_file = common_ports(env, "compressor")
        settings = cls(
            listen=listen,
            metrics_port=metrics_port,
            address_file=address_file,
            jobs_addr=env.address("JOBS_ADDR", local_address("jobs")),
            storage_addr=env.address("STORAGE_ADDR", local_address("storage")),
            worker_id=env.str("WORKER_ID", f"{socket.gethostname()}-{os.getpid()}"),
            worker_host=env.str("WORKER_HOST", socket.gethostname()),
            concurrency=env.int("WORKER_CONCURRENCY", 1, minimum=1),
            lease_seconds=env.int("LEASE_SECONDS", 60, minimum=5),
            lease_wait_seconds=env.int("LEASE_WAIT_SECONDS", 20, minimum=1),
            engine_cpu_seconds=env.int("ENGINE_CPU_SECONDS", 300, minimum=1),
            engine_memory_bytes=env.int("ENGINE_MEMORY_BYTES", 2 * 1024**3, minimum=64 * 1024**2),
            work_dir=Path(env.str("WORK_DIR", tempfile.gettempdir())),
            call_timeout_seconds=env.float("CALL_TIMEOUT_SECONDS", 30.0),
            finish_retry_seconds=env.float("FINISH_RETRY_SECONDS", 600.0),
            engine_warm_spares=env.bool("ENGINE_WARM_SPARES", True),
            log_level=env.log_level(),
        )
        if settings.finish_retry_seconds < 0:
            env.problem(f"FINISH_RETRY_SECONDS={settings.finish_retry_seconds} must not be negative")
        env.done()
        return settings
