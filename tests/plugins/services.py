"""Any service of ours, started in-process from its real wiring: `build(settings)` of its app.py.

`in_process(build, settings, **overrides)` starts the service `build` makes (on the settings'
listen address: 127.0.0.1:0 in tests, see `loopback_env`) and stops it in `finally`;
`service_starter` (per test) is the same as a factory, stopping everything it started at the end of
the test, newest first. `local_storage(folder)` is the storage most tests need, and `storage_server`
(per test) one with its objects under the test's tmp_path/objects.
/metrics is off unless asked for: its HTTP server takes 0.5 s to stop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest

from libs.service import RunningService, Service
from services.storage.app import build as build_storage
from services.storage.app import local_settings as local_storage_settings


def loopback_env(service: str) -> dict[str, str]:
    """Environment that puts `service` on a free loopback port, for its settings' `from_env`."""
    upper = service.upper()
    return {f"{upper}_LISTEN": "127.0.0.1:0", f"{upper}_METRICS_PORT": "0"}


@contextmanager
def in_process(
    build: Callable[..., Service], settings: Any, *, metrics: bool = False, grace: float = 0, **overrides: Any
) -> Iterator[RunningService]:
    """`build(settings, **overrides)`, started; stopped with `grace` when the block ends."""
    service = build(settings, **overrides)
    if not metrics:
        service.spec.metrics_port = None
    running = service.start()
    try:
        yield running
    finally:
        running.stop(grace)


@contextmanager
def local_storage(directory: str, listen: str = "127.0.0.1:0") -> Iterator[RunningService]:
    """A storage service with the local backend in `directory` (pass `listen` to come back on an address)."""
    with in_process(build_storage, local_storage_settings(directory, listen)) as storage:
        yield storage


@pytest.fixture
def storage_server(tmp_path: Path) -> Iterator[RunningService]:
    with local_storage(str(tmp_path / "objects")) as server:
        yield server


class StartService(Protocol):
    def __call__(
        self, build: Callable[..., Service], settings: Any, *, metrics: bool = False, grace: float = 0, **overrides: Any
    ) -> RunningService: ...


@pytest.fixture
def service_starter() -> Iterator[StartService]:
    """Start services for this test (as `in_process`); all are stopped when it ends, newest first."""
    with ExitStack() as started:

        def start(
            build: Callable[..., Service], settings: Any, *, metrics: bool = False, grace: float = 0, **overrides: Any
        ) -> RunningService:
            return started.enter_context(in_process(build, settings, metrics=metrics, grace=grace, **overrides))

        yield start
