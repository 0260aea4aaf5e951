"""Memory and CPU of the control group this process runs in, and its limits (cgroup v1 and v2).

In Kubernetes the cgroup is the container; under systemd, the unit. Its figures include child
processes (the compressor's engine, the scanner's check child), which the process collector's
`process_*` do not, and they are what the kernel's OOM killer and the CPU throttle go by.

Which files are read: with cgroup v2, `memory.current`, `memory.stat` (inactive_file),
`memory.max`, `cpu.stat` (usage_usec) and `cpu.max` of the process's cgroup; with v1, the
`memory` and `cpuacct`/`cpu` hierarchies' `memory.usage_in_bytes`, `memory.stat`,
`memory.limit_in_bytes`, `cpuacct.usage` and `cpu.cfs_quota_us`/`cpu.cfs_period_us`. A machine
may mix both (v1 controllers beside a v2 mount): each controller is read where it is mounted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROC_SELF_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")
# v1 reports "no limit" as the largest page-aligned signed 64-bit value; anything past 2^62 is that.
_V1_UNLIMITED = 1 << 62
# /proc/self/cgroup has one line per hierarchy: a dozen or so; never read more than this.
_MAX_LINES = 64
_MAX_DEPTH = 32


@dataclass(frozen=True)
class Cgroup:
    """Where this process's memory and CPU figures live; `version` 1 or 2 for each."""

    memory_dir: Path
    memory_version: int
    cpu_dir: Path
    cpu_version: int
    # v1's CPU quota lives in the `cpu` hierarchy, the usage in `cpuacct` (often the same folder).
    cpu_quota_dir: Path
    # v2: the folders up to the mount root, whose own limits may be tighter.
    memory_parents: tuple[Path, ...] = ()

    def memory(self) -> tuple[int, int | None]:
        """Working set (usage less inactive file cache, as the kubelet counts it) and the limit in bytes
        (None: unlimited). Raises OSError or ValueError when a file is missing or unreadable."""
        return self._memory_v2() if self.memory_version == 2 else self._memory_v1()

    def cpu(self) -> tuple[float, float | None]:
        """CPU seconds used and the quota in cores (None: unlimited). Raises like memory()."""
        return self._cpu_v2() if self.cpu_version == 2 else self._cpu_v1()

    def _memory_v2(self) -> tuple[int, int | None]:
        current = int(_text(self.memory_dir / "memory.current"))
        inactive = _stat(self.memory_dir / "memory.stat").get("inactive_file", 0)
        limits = [_v2_limit(folder / "memory.max") for folder in (self.memory_dir, *self.memory_parents)]
        known = [limit for limit in limits if limit is not None]
        return max(0, current - inactive), min(known) if known else None

    def _memory_v1(self) -> tuple[int, int | None]:
        usage = int(_text(self.memory_dir / "memory.usage_in_bytes"))
        stat = _stat(self.memory_dir / "memory.stat")
        inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
        # hierarchical_memory_limit: the tightest limit of this cgroup and its parents.
        own_limit = int(_text(self.memory_dir / "memory.limit_in_bytes"))
        limit = min(own_limit, stat.get("hierarchical_memory_limit", own_limit))
        return max(0, usage - inactive), limit if limit < _V1_UNLIMITED else None

    def _cpu_v2(self) -> tuple[float, float | None]:
        usage = _stat(self.cpu_dir / "cpu.stat")["usage_usec"] / 1e6
        quota_file = self.cpu_quota_dir / "cpu.max"
        if not quota_file.exists():  # the root cgroup has none
            return usage, None
        quota, _, period = _text(quota_file).partition(" ")
        return usage, None if quota == "max" else int(quota) / int(period or "100000")

    def _cpu_v1(self) -> tuple[float, float | None]:
        usage = int(_text(self.cpu_dir / "cpuacct.usage")) / 1e9
        quota = int(_text(self.cpu_quota_dir / "cpu.cfs_quota_us"))
        period = int(_text(self.cpu_quota_dir / "cpu.cfs_period_us"))
        return usage, None if quota <= 0 or period <= 0 else quota / period


def find(proc_cgroup: Path = PROC_SELF_CGROUP, root: Path = CGROUP_ROOT) -> Cgroup | None:
    """This process's cgroup, or None when the machine has none readable (not Linux, no cgroupfs)."""
    try:
        lines = proc_cgroup.read_text().splitlines()[:_MAX_LINES]
    except OSError:
        return None
    # hierarchy-id:controllers:path; v2's line is "0::/path".
    paths: dict[str, tuple[str, str]] = {}
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for controller in controllers.split(",") if controllers else ["unified"]:
            paths[controller] = (controllers, path)
    memory = _v1_dir(root, paths, "memory")
    cpuacct = _v1_dir(root, paths, "cpuacct")
    cpu_quota = _v1_dir(root, paths, "cpu")
    unified = _v2_dir(root, paths)
    parents: tuple[Path, ...] = ()
    if memory is not None:
        memory_dir, memory_version = memory, 1
    elif unified is not None:
        memory_dir, memory_version, parents = unified, 2, _parents(unified, root)
    else:
        return None
    cpu_dir = cpuacct or unified or memory_dir
    return Cgroup(
        memory_dir=memory_dir,
        memory_version=memory_version,
        cpu_dir=cpu_dir,
        cpu_version=1 if cpuacct else 2,
        cpu_quota_dir=cpu_quota or cpu_dir,
        memory_parents=parents,
    )


def _v1_dir(root: Path, paths: dict[str, tuple[str, str]], controller: str) -> Path | None:
    if controller not in paths:
        return None
    controllers, path = paths[controller]
    for mount in (root / controllers, root / controller):
        if mount.is_dir():
            return _within(mount, path)
    return None


def _v2_dir(root: Path, paths: dict[str, tuple[str, str]]) -> Path | None:
    if "unified" not in paths or not (root / "cgroup.controllers").is_file():
        return None  # no v2 mount at the root (a hybrid machine's /sys/fs/cgroup/unified holds no controllers)
    return _within(root, paths["unified"][1])


def _within(mount: Path, path: str) -> Path:
    """The cgroup's folder; in a cgroup namespace (containers) the mount is already the process's own."""
    folder = mount / path.lstrip("/")
    return folder if folder.is_dir() else mount


def _parents(folder: Path, root: Path) -> tuple[Path, ...]:
    parents = []
    for parent in list(folder.parents)[:_MAX_DEPTH]:
        if not parent.is_relative_to(root) or parent == root:
            break
        parents.append(parent)
    return tuple(parents)


def _text(path: Path) -> str:
    return path.read_text().strip()


def _stat(path: Path) -> dict[str, int]:
    """A `key value` file such as memory.stat or cpu.stat."""
    values = {}
    for line in path.read_text().splitlines()[:256]:
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            values[key] = int(value)
    return values


def _v2_limit(path: Path) -> int | None:
    if not path.exists():
        return None
    text = _text(path)
    return None if text == "max" else int(text)
