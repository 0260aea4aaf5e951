"""Scanner service settings, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from libs.settings import EnvReader, common_ports
from services.scanner.clamd import parse_address
from services.scanner.pdf_checks import IncompleteCheckPolicy


@dataclass(frozen=True)
class ScannerSettings:
    listen: str
    metrics_port: int
    storage_addr: str
    # host:port, /path/to/clamd.sock or unix:/path; None = no malware engine (degraded).
    clamd_addr: str | None
    clamd_timeout_seconds: float
    # Limits for the PDF structure check's child process.
    pdf_check_timeout_seconds: float = 60.0
    pdf_check_memory_bytes: int = 1024 * 1024 * 1024
    # A structure check that could not finish: refuse the upload, or accept it with all content assumed.
    incomplete_check: IncompleteCheckPolicy = IncompleteCheckPolicy.REFUSE
    log_level: str = "INFO"
    # Written with the bound ports once serving (SCANNER_ADDRESS_FILE), for launchers using port 0.
    address_file: Path | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ScannerSettings:
        env = EnvReader(os.environ if environ is None else environ)
        listen, metrics_port, address_file = common_ports(env, "scanner")
        storage_addr = env.address("STORAGE_ADDR")
        clamd_addr = env.optional("CLAMD_ADDR")
        env.require_in_production(
            clamd_addr is not None, "CLAMD_ADDR is not set, so uploads would not be malware-scanned"
        )
        if clamd_addr is not None:
            try:
                parse_address(clamd_addr)
            except ValueError:
                env.problem(f"CLAMD_ADDR={clamd_addr!r} is neither host:port nor a unix socket path")
        clamd_timeout = env.float("CLAMD_TIMEOUT_SECONDS", 60.0)
        if clamd_timeout <= 0:
            env.problem("CLAMD_TIMEOUT_SECONDS must be positive")
        pdf_timeout = env.float("PDF_CHECK_TIMEOUT_SECONDS", 60.0)
        pdf_memory_mib = env.int("PDF_CHECK_MEMORY_MIB", 1024, minimum=64)
        incomplete_check = _incomplete_check_policy(env)
        log_level = env.log_level()
        env.done()
        return cls(
            listen=listen,
            metrics_port=metrics_port,
            address_file=address_file,
            storage_addr=storage_addr,
            clamd_addr=clamd_addr,
            clamd_timeout_seconds=clamd_timeout,
            pdf_check_timeout_seconds=pdf_timeout,
            pdf_check_memory_bytes=pdf_memory_mib * 1024 * 1024,
            incomplete_check=incomplete_check,
            log_level=log_level,
        )


def _incomplete_check_policy(env: EnvReader) -> IncompleteCheckPolicy:
    value = env.str("SCANNER_INCOMPLETE_CHECK", IncompleteCheckPolicy.REFUSE.value).lower()
    try:
        return IncompleteCheckPolicy(value)
    except ValueError:
        choices = " or ".join(policy.value for policy in IncompleteCheckPolicy)
        env.problem(f"SCANNER_INCOMPLETE_CHECK={value!r} is neither {choices}")
        return IncompleteCheckPolicy.REFUSE
