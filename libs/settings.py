"""Reading settings from environment variables, reporting every problem at once.

Each service declares a frozen dataclass of its settings and builds it with an
`EnvReader`; `EnvReader.done()` raises one `SettingsError` listing every missing
or malformed variable, so an operator fixes them in one go.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from pathlib import Path

from libs.tls import read_tls

# Accepted LOG_LEVEL values: the logging module's level names.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SettingsError(Exception):
    """One or more environment variables are missing or malformed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


# PDFSMALLER_ENV: `development` (the default: `make run`, tests) or `production` (the Kubernetes base).
DEVELOPMENT = "development"
PRODUCTION = "production"


class EnvReader:
    """Typed accessors over an environment mapping that collect problems."""

    def __init__(self, environ: Mapping[builtins.str, builtins.str] | None = None) -> None:
        self._env = os.environ if environ is None else environ
        self._problems: list[builtins.str] = []
        self.environment = self._env.get("PDFSMALLER_ENV", "").strip().lower() or DEVELOPMENT
        if self.environment not in (DEVELOPMENT, PRODUCTION):
            self._problems.append(f"PDFSMALLER_ENV={self.environment!r} is neither {DEVELOPMENT} nor {PRODUCTION}")
            # Unknown means someone meant something stricter than the default: fail closed.
            self.environment = PRODUCTION

    @property
    def production(self) -> builtins.bool:
        return self.environment == PRODUCTION

    def require_in_production(self, ok: builtins.bool, message: builtins.str) -> None:
        """In production mode, `message` is a problem unless `ok`: unsafe defaults refuse to start there."""
        if self.production and not ok:
            self._problems.append(f"PDFSMALLER_ENV=production: {message}")

    def str(self, name: builtins.str, default: builtins.str | None = None) -> builtins.str:
        value = self._env.get(name, "").strip()
        if value:
            return value
        if default is None:
            self._problems.append(f"{name} is required")
            return ""
        return default

    def optional(self, name: builtins.str) -> builtins.str | None:
        value = self._env.get(name, "").strip()
        return value or None

    def int(self, name: builtins.str, default: builtins.int, *, minimum: builtins.int | None = None) -> builtins.int:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            self._problems.append(f"{name}={raw!r} is not an integer")
            return default
        if minimum is not None and value < minimum:
            self._problems.append(f"{name}={value} is below the minimum {minimum}")
            return default
        return value

    def float(self, name: builtins.str, default: builtins.float) -> builtins.float:
        raw = self._env.get(name, "").strip()
        if not raw:
            return default
        try:
            return float(raw)
        except ValueError:
            self._problems.append(f"{name}={raw!r} is not a number")
            return default

    def bool(self, name: builtins.str, default: builtins.bool) -> builtins.bool:
        raw = self._env.get(name, "").strip().lower()
        if not raw:
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        self._problems.append(f"{name}={raw!r} is not a boolean (true/false)")
        return default

    def address(self, name: builtins.str, default: builtins.str | None = None) -> builtins.str:
        """A host:port address."""
        value = self.str(name, default)
        if value and (":" not in value or not value.rsplit(":", 1)[1].isdigit()):
            self._problems.append(f"{name}={value!r} is not host:port")
        return value

    def log_level(self) -> builtins.str:
        """LOG_LEVEL, one of Python's level names (checked here: a bad one would fail at logging set-up)."""
        value = self.str("LOG_LEVEL", "INFO").strip().upper()
        if value not in LOG_LEVELS:
            self._problems.append(f"LOG_LEVEL={value!r} is not one of {', '.join(LOG_LEVELS)}")
            return "INFO"
        return value

    def problem(self, message: builtins.str) -> None:
        """Record a cross-field problem found by the caller."""
        self._problems.append(message)

    def done(self) -> None:
        if self._problems:
            raise SettingsError(self._problems)

    def named_secrets(self, name: builtins.str, *, min_length: builtins.int = 16) -> dict[builtins.str, builtins.str]:
        """`name:secret,name:secret` (API_KEYS, OPERATOR_TOKENS) -> {name: secret}; a name given twice is a
        problem, not a silent replacement. Names are letters, digits, - or _; problems never quote a secret."""
        secrets: dict[builtins.str, builtins.str] = {}
        for entry in filter(None, (part.strip() for part in (self.optional(name) or "").split(","))):
            label, sep, secret = entry.partition(":")
            if not sep or not label or len(secret) < min_length:
                self.problem(f"{name} entries must be name:secret with a secret of at least {min_length} characters")
            elif any(char.isspace() for char in secret):
                # A header value cannot carry it as configured, so that entry could never match.
                self.problem(f"{name} entry {label!r} has a secret with white space")
            elif not label.replace("-", "").replace("_", "").isalnum():
                self.problem(f"{name} name {label!r} must be letters, digits, - or _")
            elif label in secrets:
                self.problem(f"{name} names {label!r} twice")
            else:
                secrets[label] = secret
        return secrets


# Where each service listens when nothing is configured (`make run`, a service started by hand):
# below Linux's ephemeral range (32768-60999), so an outgoing connection can never hold one of them.
LOCAL_GRPC_PORTS = {"gateway": 8051, "jobs": 8052, "storage": 8053, "scanner": 8054, "compressor": 8055}
LOCAL_METRICS_PORTS = {"gateway": 9101, "jobs": 9102, "storage": 9103, "scanner": 9104, "compressor": 9105}


def local_address(service: str) -> str:
    """The default address of a service on this machine, e.g. "127.0.0.1:8052" for jobs."""
    return f"127.0.0.1:{LOCAL_GRPC_PORTS[service]}"


def common_ports(env: EnvReader, service: str) -> tuple[str, int, Path | None]:
    """The gRPC listen address, metrics port and address-report file every service has.

    Port 0 means any free port; the service then writes the ports it bound, as JSON, to
    `<SERVICE>_ADDRESS_FILE` (see libs.grpc_server), which is how a launcher learns them.
    """
    upper = service.upper()
    listen = env.address(f"{upper}_LISTEN", local_address(service))
    metrics_port = env.int(f"{upper}_METRICS_PORT", LOCAL_METRICS_PORTS[service], minimum=0)
    address_file = env.optional(f"{upper}_ADDRESS_FILE")
    # Checked here so a bad TLS_* trio is reported with the rest; libs.grpc_server/_client read it (libs.tls).
    read_tls(env)
    return listen, metrics_port, Path(address_file) if address_file else None
