"""The engine in warm spares (isolation.engine_spares): the job runs in a child loaded before the call, a dead spare
costs the job nothing, and the limits still hold."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from libs.sandbox import StartedChild
from libs.spares import SparePool
from libs.tests.processes import running, wait_until
from services.compressor.engine import CompressOptions, EngineError, Limits, compress_isolated
from services.compressor.engine.isolation import engine_spares

from .builders import text_pdf


@pytest.fixture(scope="module")
def spares() -> Iterator[SparePool]:
    pool = engine_spares(2)
    pool.start()
    try:
        yield pool
    finally:
        pool.close()


def _full(pool: SparePool) -> list[int]:
    wait_until(lambda: len(pool.waiting_pids()) == pool.size)
    return pool.waiting_pids()


def test_the_job_runs_in_a_spare_started_before_the_call(spares: SparePool, tmp_path: Path) -> None:
    src = text_pdf(tmp_path / "in.pdf")
    waiting = _full(spares)
    taken_before = spares.warm_taken
    seen_at_first_progress: list[bool] = []

    def progress(_pct: int) -> None:  # the child is at work: the oldest spare is out of the pool and alive
        if not seen_at_first_progress:
            seen_at_first_progress.append(waiting[0] not in spares.waiting_pids() and running(waiting[0]))

    report = compress_isolated(src, tmp_path / "out.pdf", CompressOptions(), progress=progress, spares=spares)
    assert report.output_size_bytes <= report.input_size_bytes
    assert seen_at_first_progress == [True]
    assert spares.warm_taken == taken_before + 1
    assert not running(waiting[0])  # one job per child
    # Same bytes as a child started for the job: a spare changes when the child starts, nothing else.
    compress_isolated(src, tmp_path / "cold.pdf", CompressOptions())
    assert (tmp_path / "out.pdf").read_bytes() == (tmp_path / "cold.pdf").read_bytes()


def test_a_dead_spare_is_replaced_and_the_job_still_succeeds(spares: SparePool, tmp_path: Path) -> None:
    src = text_pdf(tmp_path / "in.pdf")
    killed = _full(spares)
    for pid in killed:
        os.kill(pid, signal.SIGKILL)  # as the OOM killer would, while they wait
    wait_until(lambda: not any(running(pid) for pid in killed))
    # The job succeeds in a fresh child: started by the pool's take, which drops dead spares, or, when a spare
    # was seen alive a moment before its death, by the rerun in isolation.py.
    report = compress_isolated(src, tmp_path / "out.pdf", CompressOptions(), spares=spares)
    assert report.output_size_bytes <= report.input_size_bytes
    # A dead spare seen alive stays in the pool until the next take drops it: after a second job, the pool
    # holds only live spares it started since.
    again = compress_isolated(src, tmp_path / "again.pdf", CompressOptions(), spares=spares)
    assert again.output_size_bytes <= again.input_size_bytes
    wait_until(lambda: len(spares.waiting_pids()) == spares.size and all(map(running, spares.waiting_pids())))
    assert not set(spares.waiting_pids()) & set(killed)


def test_a_spare_killed_as_it_is_taken_costs_the_job_nothing(
    spares: SparePool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool saw it alive, then it died before its first message: the job runs again in a fresh child."""
    src = text_pdf(tmp_path / "in.pdf")
    _full(spares)
    take = spares.take

    def take_and_kill() -> StartedChild:
        child = take()
        os.kill(child.pid, signal.SIGKILL)  # as the OOM killer would, a moment after the liveness check
        wait_until(lambda: not running(child.pid))
        return child

    monkeypatch.setattr(spares, "take", take_and_kill)
    report = compress_isolated(src, tmp_path / "out.pdf", CompressOptions(), spares=spares)
    assert report.output_size_bytes <= report.input_size_bytes


@pytest.fixture(scope="module")
def long_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Quick to build (0.2 s), about 3.5 CPU seconds to compress: reading 5000 pages with three parsers, and
    verifying them. (1500 pages took 1.4 s once content rewriting stopped after its sample on text: too close to
    the 1 s CPU limit below, which allows up to a second more for what the spare used before its job.)"""
    return text_pdf(tmp_path_factory.mktemp("spares") / "long.pdf", pages=5000)


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (Limits(memory_bytes=64 << 20), "OUT_OF_MEMORY"),  # below what the loaded libraries already map
        (Limits(cpu_seconds=1), "TIMEOUT"),  # the job alone needs several CPU seconds
        (Limits(wall_seconds=0.2), "TIMEOUT"),
    ],
)
def test_limits_still_apply_in_a_spare(
    spares: SparePool, long_pdf: Path, tmp_path: Path, limits: Limits, reason: str
) -> None:
    _full(spares)
    taken_before = spares.warm_taken
    with pytest.raises(EngineError) as failure:
        compress_isolated(long_pdf, tmp_path / "out.pdf", CompressOptions(), limits=limits, spares=spares)
    assert failure.value.reason == reason
    assert spares.warm_taken == taken_before + 1
