"""What a service is, and the one way every service runs.

A `Service` is its gRPC server (a `libs.grpc_server.ServerSpec`: servicers, health
and readiness, metrics registry), the loops it runs beside the server (the jobs
sweeper and event subscriber, the compressor's worker threads) and what it holds
open (channels, pools). Each `services/<name>/app.py` builds one from its settings
(`build(settings) -> Service`); each `__main__` hands that to `run`, and tests start
the same wiring in-process (tests/plugins/services.py).

Stopping always goes the same way: readiness turns NOT_SERVING (balancers and the
compressor's peers stop sending work), the loops stop newest first (a worker stops
leasing and finishes the job in hand), the server drains the calls in flight, then
the resources close. The loops and the server share one grace period.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from libs.grpc_server import RunningServer, ServerSpec
from libs.logs import setup_logging
from libs.telemetry import init_telemetry

log = logging.getLogger(__name__)

# Set by a development launcher (devtools/stack) to its pid: the service stops when that process is gone,
# so a launcher killed with SIGKILL (a test run cut short) leaves no service behind. Production never sets it.
PARENT_PID_VARIABLE = "PDFSMALLER_PARENT_PID"
ORPHAN_CHECK_SECONDS = 1.0


class BackgroundLoop(Protocol):
    def start(self) -> None: ...

    def stop(self, grace: float) -> None:
        """Stop within `grace` seconds (what is left of the service's grace period)."""


class Closeable(Protocol):
    def close(self) -> None: ...


@dataclass(frozen=True)
class Loop:
    """A background loop made of two callables, for parts whose methods are named otherwise."""

    on_start: Callable[[], None]
    on_stop: Callable[[], None]

    def start(self) -> None:
        self.on_start()

    def stop(self, grace: float) -> None:
        self.on_stop()


@dataclass
class Service:
    spec: ServerSpec
    # Started after the server, in this order; stopped before it drains, newest first.
    background: Sequence[BackgroundLoop] = ()
    # Closed last, in this order: what `build` opened (channels, pools, clients).
    resources: Sequence[Closeable] = ()

    def start(self) -> RunningService:
        """Serve and start the loops; whatever started is stopped again if a later step fails."""
        try:
            server = RunningServer(self.spec).start()
        except BaseException:
            _close_all(self.resources)
            raise
        running = RunningService(self, server)
        try:
            for loop in self.background:
                loop.start()
                running.started.append(loop)
        except BaseException:
            running.stop(0)
            raise
        return running


@dataclass
class RunningService:
    service: Service
    server: RunningServer
    # The loops that started, in order (all of them once `Service.start` returned).
    started: list[BackgroundLoop] = field(default_factory=list, init=False)
    _stopped: bool = field(default=False, init=False)

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def metrics_port(self) -> int | None:
        return self.server.metrics_port

    def stop(self, grace: float | None = None) -> None:
        """Stop gracefully within `grace` seconds (default: the spec's); a second call does nothing."""
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + (self.service.spec.grace_seconds if grace is None else grace)

        def remaining() -> float:
            return max(0.0, deadline - time.monotonic())

        self.server.health.enter_graceful_shutdown()
        for loop in reversed(self.started):
            try:
                loop.stop(remaining())
            except Exception:  # the server must still drain and the resources close
                log.exception("%s: stopping %r failed", self.service.spec.name, loop)
        self.server.stop(remaining())
        _close_all(self.service.resources)


def _close_all(resources: Sequence[Closeable]) -> None:
    for resource in resources:
        try:
            resource.close()
        except Exception:
            log.exception("closing %r failed", resource)


class ServiceSettings(Protocol):
    @property
    def log_level(self) -> str: ...


Settings = TypeVar("Settings", bound=ServiceSettings)


def run(name: str, settings_from_env: Callable[[], Settings], build: Callable[[Settings], Service]) -> None:
    """A service's whole process: settings, logging, telemetry, serve until SIGTERM/SIGINT, stop gracefully."""
    settings = settings_from_env()
    setup_logging(name, settings.log_level)
    tracer_provider = init_telemetry(name)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("%s received signal %d, shutting down", name, signum)
        stop_requested.set()

    # Installed before starting, so a signal during the start still ends in a graceful stop.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    parent = os.environ.get(PARENT_PID_VARIABLE, "")
    if parent.isdigit():
        stop_when_orphaned(int(parent), stop_requested)
    running = build(settings).start()
    stop_requested.wait()
    running.stop()
    if tracer_provider is not None:
        tracer_provider.shutdown()  # flushes the spans of the last calls


def stop_when_orphaned(parent_pid: int, stop: threading.Event, interval: float = ORPHAN_CHECK_SECONDS) -> None:
    """Set `stop` once `parent_pid` is no longer this process's parent (it died; the process was re-parented).

    Polling the parent pid, unlike PR_SET_PDEATHSIG, does not depend on which of the launcher's threads
    started the process (a test restarting a service from a short-lived thread).
    """

    def watch() -> None:
        while not stop.wait(interval):
            if os.getppid() != parent_pid:
                log.warning("the process that started this service (pid %d) is gone; stopping", parent_pid)
                stop.set()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
