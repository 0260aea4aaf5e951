"""Prometheus collectors more than one service uses: process and container figures, volume usage, time
spent busy.

Each reads what it reports when scraped (a `statvfs`, a clock), so a value is never older than the
scrape and costs nothing between scrapes.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from libs import cgroup

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def register_process_collectors(registry: CollectorRegistry) -> None:
    """CPU seconds, resident memory, open files (process_*), the Python version (python_info) and the
    garbage collector (python_gc_*): what prometheus-client puts on its global registry, on ours."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(ContainerResources(cgroup.find()))


class ContainerResources(Collector):
    """Memory and CPU of the process's cgroup (the container, children included) and its limits.

    The limits are left out when there are none, so an alert on usage / limit has no series to fire
    on rather than a ratio against infinity. Nothing is reported when the machine has no readable
    cgroup; a read that fails leaves that half out of the scrape (logged once per run of failures).
    """

    def __init__(self, group: cgroup.Cgroup | None) -> None:
        self._group = group
        self._failing: set[str] = set()

    def collect(self) -> Iterable[Metric]:
        if self._group is None:
            return []
        families: list[Metric] = []
        memory = self._read("memory", self._group.memory)
        if memory is not None:
            working_set, memory_limit = memory
            families.append(
                GaugeMetricFamily(
                    "pdfsmaller_container_memory_working_set_bytes",
                    "Memory of this process's cgroup (container) less inactive file cache, children included.",
                    value=working_set,
                )
            )
            if memory_limit is not None:
                families.append(
                    GaugeMetricFamily(
                        "pdfsmaller_container_memory_limit_bytes", "Memory limit of that cgroup.", value=memory_limit
                    )
                )
        cpu = self._read("cpu", self._group.cpu)
        if cpu is not None:
            used, cpu_limit = cpu
            families.append(
                CounterMetricFamily(
                    "pdfsmaller_container_cpu_usage_seconds", "CPU seconds used by that cgroup.", value=used
                )
            )
            if cpu_limit is not None:
                families.append(
                    GaugeMetricFamily(
                        "pdfsmaller_container_cpu_limit_cores", "CPU quota of that cgroup, in cores.", value=cpu_limit
                    )
                )
        return families

    def _read(self, part: str, read: Callable[[], _T]) -> _T | None:
        try:
            value = read()
        except (OSError, ValueError, KeyError) as error:
            if part not in self._failing:
                log.warning("cannot read the cgroup's %s figures: %s", part, error)
            self._failing.add(part)
            return None
        self._failing.discard(part)
        return value


class VolumeUsage(Collector):
    """Size, available and used bytes of the filesystem holding each named folder.

    `volumes` maps a short, fixed name ("objects", "work") to a folder. Available is what an
    unprivileged process can still write (df's Avail); used excludes the blocks reserved for root,
    so used / (used + available) is df's Use%. A folder that cannot be read is left out of the
    scrape (logged once per run of failures), so an alert on absence notices it.
    """

    def __init__(self, volumes: Mapping[str, Path], statvfs: Callable[[Path], os.statvfs_result] = os.statvfs) -> None:
        self._volumes = dict(volumes)
        self._statvfs = statvfs
        self._failing: set[str] = set()

    def collect(self) -> Iterable[Metric]:
        size = GaugeMetricFamily(
            "pdfsmaller_volume_size_bytes", "Size of the filesystem holding the folder.", labels=["volume"]
        )
        available = GaugeMetricFamily(
            "pdfsmaller_volume_available_bytes",
            "Bytes the service can still write on that filesystem.",
            labels=["volume"],
        )
        used = GaugeMetricFamily(
            "pdfsmaller_volume_used_bytes", "Bytes in use on that filesystem (any user's).", labels=["volume"]
        )
        for name, folder in self._volumes.items():
            stats = self._stat(name, folder)
            if stats is None:
                continue
            size.add_metric([name], stats.f_blocks * stats.f_frsize)
            available.add_metric([name], stats.f_bavail * stats.f_frsize)
            used.add_metric([name], (stats.f_blocks - stats.f_bfree) * stats.f_frsize)
        return [size, available, used]

    def _stat(self, name: str, folder: Path) -> os.statvfs_result | None:
        try:
            stats = self._statvfs(folder)
        except OSError as error:
            if name not in self._failing:
                log.warning("cannot read the usage of volume %s (%s): %s", name, folder, error)
            self._failing.add(name)
            return None
        self._failing.discard(name)
        return stats


class BusySeconds(Collector):
    """A counter of seconds spent between `begin()` and `end()`, summed over threads.

    Work still in progress counts up to the scrape, so a ten-minute job shows as steady busy time
    rather than one jump at its end: rate() of it is the average number of busy threads.
    """

    def __init__(self, name: str, documentation: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._name = name
        self._documentation = documentation
        self._clock = clock
        self._lock = threading.Lock()
        self._finished_seconds = 0.0
        # When each piece of work in progress began, by the token begin() handed out.
        self._started: dict[int, float] = {}
        self._next_token = 0

    def begin(self) -> int:
        with self._lock:
            token = self._next_token
            self._next_token += 1
            self._started[token] = self._clock()
        return token

    def end(self, token: int) -> None:
        with self._lock:
            started = self._started.pop(token, None)
            if started is not None:
                self._finished_seconds += self._clock() - started

    def seconds(self) -> float:
        with self._lock:
            now = self._clock()
            return self._finished_seconds + sum(now - started for started in self._started.values())

    def collect(self) -> Iterable[Metric]:
        # The family's name without _total: prometheus-client adds it to the sample.
        family = CounterMetricFamily(self._name.removesuffix("_total"), self._documentation)
        family.add_metric([], self.seconds())
        return [family]


class BoundedLabel:
    """Label values from codes a less trusted part reports (a sandboxed child's reason): an UPPER_SNAKE
    code is kept as is, up to `limit` distinct ones; anything else, or any code past the limit, is OTHER.
    So a misbehaving child cannot grow a metric's series without bound."""

    OTHER = "OTHER"
    _CODE = re.compile(r"^[A-Z][A-Z0-9_]{0,39}$")

    def __init__(self, known: Iterable[str] = (), limit: int = 50) -> None:
        self._lock = threading.Lock()
        self._seen = set(known)
        self._limit = max(limit, len(self._seen))

    def __call__(self, value: str) -> str:
        with self._lock:
            if value in self._seen:
                return value
            if not self._CODE.match(value) or len(self._seen) >= self._limit:
                return self.OTHER
            self._seen.add(value)
            return value
