"""The shared collectors: process figures on a service's registry, volume usage, busy time, bounded labels."""

import os
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from libs.metrics import BoundedLabel, BusySeconds, VolumeUsage, register_process_collectors


def test_process_figures_follow_the_process() -> None:
    registry = CollectorRegistry()
    register_process_collectors(registry)
    cpu_before = registry.get_sample_value("process_cpu_seconds_total") or 0.0
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # burn some CPU
        pass
    assert (registry.get_sample_value("process_cpu_seconds_total") or 0.0) >= cpu_before + 0.2
    assert (registry.get_sample_value("process_resident_memory_bytes") or 0) > 10 * 1024 * 1024
    assert (registry.get_sample_value("process_open_fds") or 0) > 0
    assert registry.get_sample_value("process_start_time_seconds") is not None
    assert any(metric.name == "python_info" for metric in registry.collect())


def test_volume_usage_is_the_filesystem_of_the_folder_as_df_sees_it(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    registry.register(VolumeUsage({"work": tmp_path}))
    stats = os.statvfs(tmp_path)
    labels = {"volume": "work"}
    assert registry.get_sample_value("pdfsmaller_volume_size_bytes", labels) == stats.f_blocks * stats.f_frsize
    used = registry.get_sample_value("pdfsmaller_volume_used_bytes", labels) or 0
    available = registry.get_sample_value("pdfsmaller_volume_available_bytes", labels) or 0
    assert used > 0
    # Other writers share the filesystem: compare with a margin of 64 MiB.
    assert abs(available - stats.f_bavail * stats.f_frsize) < 64 * 1024 * 1024
    assert abs(used - (stats.f_blocks - stats.f_bfree) * stats.f_frsize) < 64 * 1024 * 1024


def test_volume_usage_follows_what_is_written(tmp_path: Path) -> None:
    # A fake filesystem of 1000 blocks of 4 KiB, 100 reserved for root: its figures are read at each scrape.
    free_blocks = [600]

    def statvfs(_folder: Path) -> os.statvfs_result:
        free = free_blocks[0]
        return os.statvfs_result((4096, 4096, 1000, free, free - 100, 0, 0, 0, 0, 255))

    registry = CollectorRegistry()
    registry.register(VolumeUsage({"objects": tmp_path}, statvfs=statvfs))
    labels = {"volume": "objects"}
    assert registry.get_sample_value("pdfsmaller_volume_used_bytes", labels) == 400 * 4096
    assert registry.get_sample_value("pdfsmaller_volume_available_bytes", labels) == 500 * 4096
    free_blocks[0] = 200
    assert registry.get_sample_value("pdfsmaller_volume_used_bytes", labels) == 800 * 4096
    assert registry.get_sample_value("pdfsmaller_volume_available_bytes", labels) == 100 * 4096
    assert registry.get_sample_value("pdfsmaller_volume_size_bytes", labels) == 1000 * 4096


def test_a_volume_that_cannot_be_read_is_left_out_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    registry.register(VolumeUsage({"work": tmp_path / "missing", "objects": tmp_path}))
    for _ in range(3):
        assert registry.get_sample_value("pdfsmaller_volume_size_bytes", {"volume": "work"}) is None
        assert registry.get_sample_value("pdfsmaller_volume_size_bytes", {"volume": "objects"}) is not None
    assert sum("cannot read the usage of volume work" in record.getMessage() for record in caplog.records) == 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_busy_seconds_count_work_in_progress_and_never_go_back() -> None:
    clock = Clock()
    busy = BusySeconds("test_busy_seconds_total", "Busy time.", clock=clock)
    registry = CollectorRegistry()
    registry.register(busy)

    def value() -> float:
        return registry.get_sample_value("test_busy_seconds_total") or 0.0

    first = busy.begin()
    clock.now += 10
    assert value() == 10  # a job in hand counts before it ends
    second = busy.begin()
    clock.now += 5
    assert value() == 20  # two threads busy: 15 + 5
    busy.end(first)
    assert value() == 20
    clock.now += 1
    busy.end(second)
    busy.end(second)  # a second end changes nothing
    clock.now += 100
    assert value() == 21  # 15 + 6


def test_bounded_label_keeps_codes_and_turns_the_rest_into_other() -> None:
    label = BoundedLabel(["KNOWN"], limit=3)
    assert label("KNOWN") == "KNOWN"
    assert label("NEW_CODE") == "NEW_CODE"
    assert label("not a code") == "OTHER"
    assert label("A" * 41) == "OTHER"
    assert label("THIRD") == "THIRD"
    assert label("FOURTH") == "OTHER"  # past the limit
    assert label("NEW_CODE") == "NEW_CODE"  # seen before: still itself
