"""Whether the worker's dependencies (jobs, storage) answer, so it leases only work it can finish.

A worker that leases while storage is down would fail every job it takes; so
before each lease it asks both services' gRPC health and, while one is not
SERVING, waits with backoff instead. The answer is cached briefly so worker
threads and the readiness probe share one check, and each change of state is
logged once (which dependency, and why) rather than a traceback every probe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from prometheus_client import CollectorRegistry, Gauge

from libs.health import serving_problem

log = logging.getLogger(__name__)

# Longest pause between checks while a dependency is down: bounds how late a worker notices it is back.
MAX_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class Dependency:
    name: str
    channel: grpc.Channel
    # Its health service name, SERVING when it is ready.
    service: str


class DependencyGate:
    def __init__(
        self,
        dependencies: Sequence[Dependency],
        registry: CollectorRegistry,
        *,
        check_timeout: float = 2.0,
        cache_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dependencies = list(dependencies)
        self._check_timeout = check_timeout
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._problem: str | None = None
        self._up = Gauge(
            "compressor_dependency_up",
            "1 while the dependency answers its health check SERVING (the worker leases only then).",
            ["dependency"],
            registry=registry,
        )

    def _ask(self, dependency: Dependency) -> str | None:
        """None when SERVING, else why not. Never raises: a check that fails is a problem like any other."""
        try:
            problem = serving_problem(dependency.channel, dependency.service, self._check_timeout)
        except Exception as error:  # noqa: BLE001 - e.g. a closed channel (ValueError); logged by problem()
            problem = f"cannot be checked ({type(error).__name__})"
        return None if problem is None else f"{dependency.name} {problem}"

    def problem(self) -> str | None:
        """Why the worker should not lease now (None: every dependency is ready)."""
        with self._lock:
            now = self._clock()
            if self._checked_at is not None and now - self._checked_at < self._cache_seconds:
                return self._problem
            problems = []
            for dependency in self._dependencies:
                problem = self._ask(dependency)
                self._up.labels(dependency.name).set(0 if problem else 1)
                if problem:
                    problems.append(problem)
            current = "; ".join(problems) or None
            if current != self._problem:
                if current:
                    log.warning("not leasing jobs: %s", current)
                else:
                    log.info("dependencies ready again (%s); leasing jobs", self._problem)
            self._problem, self._checked_at = current, self._clock()
            return current

    def ready(self) -> bool:
        return self.problem() is None

    def wait_until_ready(self, stop: threading.Event) -> bool:
        """Block, with backoff, until every dependency is ready; False if `stop` was set first."""
        wait = 0.5
        while not stop.is_set():
            if self.problem() is None:
                return True
            stop.wait(wait)
            wait = min(wait * 2, MAX_WAIT_SECONDS)
        return False
