"""Reading settings from environment variables, reporting every problem at once.

Each service declares a frozen dataclass of its settings and builds it with an
`EnvReader`; `EnvReader.done()` raises one `SettingsError` listing every missing
or malformed variable, so an operator fixes them in one go.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping


class SettingsError(Exception):
    """One or more environment variables are missing or malformed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


class EnvReader:
    """Typed accessors over an environment mapping that collect problems."""

    def __init__(self, environ: Mapping[builtins.str, builtins.str] | None = None) -> None:
        self._env = os.environ if environ is None else environ
        self._problems: list[builtins.str] = []

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

    def problem(self, message: builtins.str) -> None:
        """Record a cross-field problem found by the caller."""
        self._problems.append(message)

    def done(self) -> None:
        if self._problems:
            raise SettingsError(self._problems)


def common_ports(env: EnvReader, service: str, grpc_default: int, metrics_default: int) -> tuple[str, int]:
    """The gRPC listen address and metrics port every service has."""
    upper = service.upper()
    listen = env.address(f"{upper}_LISTEN", f"127.0.0.1:{grpc_default}")
    metrics_port = env.int(f"{upper}_METRICS_PORT", metrics_default, minimum=0)
    return listen, metrics_port
