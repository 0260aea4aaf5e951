"""Reading the process's cgroup: v2, v1, a hybrid machine, a cgroup namespace, limits and their absence."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from libs import cgroup
from libs.metrics import ContainerResources


def _files(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def _v2_machine(tmp_path: Path, *, memory_max: str, cpu_max: str, parent_max: str = "max") -> Path:
    root = tmp_path / "sys"
    _files(root, {"cgroup.controllers": "cpu memory pids\n"})
    _files(root / "kubepods", {"memory.max": parent_max})
    _files(
        root / "kubepods" / "pod1",
        {
            "memory.current": "300000000\n",
            "memory.stat": "anon 200000000\nfile 100000000\ninactive_file 50000000\nactive_file 50000000\n",
            "memory.max": memory_max,
            "cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
            "cpu.max": cpu_max,
        },
    )
    (tmp_path / "cgroup").write_text("0::/kubepods/pod1\n")
    return root


def test_v2_working_set_and_limits(tmp_path: Path) -> None:
    root = _v2_machine(tmp_path, memory_max="536870912\n", cpu_max="200000 100000\n")
    group = cgroup.find(tmp_path / "cgroup", root)
    assert group is not None
    assert group.memory() == (250_000_000, 536_870_912)  # current less inactive file cache
    assert group.cpu() == (2.5, 2.0)


def test_v2_unlimited_has_no_limits(tmp_path: Path) -> None:
    group = cgroup.find(tmp_path / "cgroup", _v2_machine(tmp_path, memory_max="max\n", cpu_max="max 100000\n"))
    assert group is not None
    assert group.memory() == (250_000_000, None)
    assert group.cpu() == (2.5, None)


def test_v2_a_parents_tighter_limit_counts(tmp_path: Path) -> None:
    root = _v2_machine(tmp_path, memory_max="max\n", cpu_max="max 100000\n", parent_max="400000000\n")
    group = cgroup.find(tmp_path / "cgroup", root)
    assert group is not None
    assert group.memory() == (250_000_000, 400_000_000)


def test_v2_in_a_cgroup_namespace_the_mount_is_the_process_own(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    _files(
        root,
        {
            "cgroup.controllers": "cpu memory\n",
            "memory.current": "1000\n",
            "memory.stat": "inactive_file 200\n",
            "memory.max": "4096\n",
            "cpu.stat": "usage_usec 1000000\n",
            "cpu.max": "50000 100000\n",
        },
    )
    (tmp_path / "cgroup").write_text("0::/\n")
    group = cgroup.find(tmp_path / "cgroup", root)
    assert group is not None
    assert group.memory() == (800, 4096)
    assert group.cpu() == (1.0, 0.5)


def _v1_machine(tmp_path: Path, *, limit: str, quota: str) -> Path:
    """Separate cpu and cpuacct hierarchies beside a v2 mount holding no controllers (this machine's kind)."""
    root = tmp_path / "sys"
    _files(root / "unified", {"cgroup.procs": ""})
    _files(
        root / "memory" / "ci" / "job",
        {
            "memory.usage_in_bytes": "104857600\n",
            "memory.stat": "cache 10\ninactive_file 1\nhierarchical_memory_limit 9223372036854771712\n"
            "total_inactive_file 4857600\n",
            "memory.limit_in_bytes": limit,
        },
    )
    _files(root / "cpuacct", {"cpuacct.usage": "3000000000\n"})
    _files(root / "cpu", {"cpu.cfs_quota_us": quota, "cpu.cfs_period_us": "100000\n"})
    (tmp_path / "cgroup").write_text("9:name=systemd:/\n4:memory:/ci/job\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n")
    return root


def test_v1_with_limits(tmp_path: Path) -> None:
    group = cgroup.find(tmp_path / "cgroup", _v1_machine(tmp_path, limit="209715200\n", quota="150000\n"))
    assert group is not None
    assert group.memory() == (100_000_000, 209_715_200)
    assert group.cpu() == (3.0, 1.5)


def test_v1_unlimited(tmp_path: Path) -> None:
    group = cgroup.find(tmp_path / "cgroup", _v1_machine(tmp_path, limit="9223372036854771712\n", quota="-1\n"))
    assert group is not None
    assert group.memory() == (100_000_000, None)
    assert group.cpu() == (3.0, None)


def test_no_cgroup_filesystem(tmp_path: Path) -> None:
    assert cgroup.find(tmp_path / "missing", tmp_path) is None
    (tmp_path / "cgroup").write_text("garbage\n")
    assert cgroup.find(tmp_path / "cgroup", tmp_path) is None


def _scrape(collector: ContainerResources) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(collector)
    lines = generate_latest(registry).decode().splitlines()
    return {line.split()[0]: float(line.split()[1]) for line in lines if not line.startswith("#")}


def test_the_collector_reports_limits_only_when_there_are_some(tmp_path: Path) -> None:
    limited = cgroup.find(tmp_path / "cgroup", _v2_machine(tmp_path, memory_max="1000000000", cpu_max="100000 100000"))
    assert _scrape(ContainerResources(limited)) == {
        "pdfsmaller_container_memory_working_set_bytes": 250_000_000,
        "pdfsmaller_container_memory_limit_bytes": 1_000_000_000,
        "pdfsmaller_container_cpu_usage_seconds_total": 2.5,
        "pdfsmaller_container_cpu_limit_cores": 1.0,
    }
    (tmp_path / "sys" / "kubepods" / "pod1" / "memory.max").write_text("max")
    (tmp_path / "sys" / "kubepods" / "pod1" / "cpu.max").write_text("max 100000")
    assert set(_scrape(ContainerResources(limited))) == {
        "pdfsmaller_container_memory_working_set_bytes",
        "pdfsmaller_container_cpu_usage_seconds_total",
    }


def test_a_failing_read_leaves_that_part_out(tmp_path: Path) -> None:
    group = cgroup.find(tmp_path / "cgroup", _v2_machine(tmp_path, memory_max="max", cpu_max="max"))
    (tmp_path / "sys" / "kubepods" / "pod1" / "memory.current").unlink()
    assert set(_scrape(ContainerResources(group))) == {"pdfsmaller_container_cpu_usage_seconds_total"}
    assert _scrape(ContainerResources(None)) == {}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="cgroups are Linux's")
def test_this_machine_has_a_readable_cgroup() -> None:
    """Every Linux CI machine and container has one; the figures must be plausible."""
    group = cgroup.find()
    assert group is not None
    working_set, limit = group.memory()
    used, cores = group.cpu()
    assert working_set > 0
    assert limit is None or limit > working_set
    assert used > 0
    assert cores is None or cores > 0


def _make_v1_group(controller: str, name: str) -> Path | None:
    folder = cgroup.CGROUP_ROOT / controller / name
    try:
        folder.mkdir()
    except OSError:
        return None
    return folder


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="cgroups are Linux's")
def test_a_real_kernel_limit_is_read_back_by_a_process_inside_it(tmp_path: Path) -> None:
    """A child process put into a fresh cgroup v1 memory + cpu group with limits reports exactly them.
    Needs a writable cgroup v1 hierarchy (root, as make test runs in CI); skipped elsewhere."""
    name = f"pdfsmaller-test-{os.getpid()}"
    memory = _make_v1_group("memory", name)
    cpu = _make_v1_group("cpu", name)
    try:
        if memory is None or cpu is None:
            pytest.skip("no writable cgroup v1 memory and cpu hierarchies here")
        (memory / "memory.limit_in_bytes").write_text(str(256 * 1024**2))
        (cpu / "cpu.cfs_period_us").write_text("100000")
        (cpu / "cpu.cfs_quota_us").write_text("50000")
        script = "from libs import cgroup; g = cgroup.find(); print(g.memory()[1], g.cpu()[1], g.memory()[0])"

        def enter_groups() -> None:  # runs in the child before exec
            for group in (memory, cpu):
                (group / "cgroup.procs").write_text(str(os.getpid()))

        result = subprocess.run(
            [sys.executable, "-c", script],
            preexec_fn=enter_groups,  # nothing else runs threads in that child
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        limit, cores, working_set = result.stdout.split()
        assert int(limit) == 256 * 1024**2
        assert float(cores) == 0.5
        assert 0 < int(working_set) < 256 * 1024**2
    finally:
        for group in (memory, cpu):
            if group is not None:
                group.rmdir()
