"""Benchmark: worker throughput on a stream of small jobs, 1 and 2 workers, with and without warm spares.

    python -m bench.throughput [--jobs 60] [--rounds 2] [--out bench/throughput_results.md]

Each job of a small PDF spends a fixed part starting its engine child (a fresh interpreter that imports numpy,
pikepdf, pypdfium2, PIL and the pipeline) and tearing it down. The jobs go through the isolated engine the worker
calls (`compress_isolated_json`, as `services/compressor/app.py` wires it: with an `engine_spares` pool of one
spare per worker thread, or without), from 1 or 2 worker threads pulling from one queue, on at most 2 cores
(sched_setaffinity). Storage and the jobs service are left out: they add waiting, not CPU, which only gives the
spares more idle time to load in. Every (workers, spares) case runs `--rounds` times, interleaved, and the best
round counts (the machine may be shared; the load average is printed with the figures). Target (issue 12):
2 workers >= 1.8x one worker.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import queue
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from libs.spares import SparePool
from services.compressor.engine import CompressOptions, compress_isolated_json
from services.compressor.engine.isolation import engine_spares
from services.compressor.tests import builders

TARGET_SPEEDUP = 1.8
CORES = 2


@dataclass(frozen=True)
class Case:
    workers: int
    spares: bool

    @property
    def name(self) -> str:
        return f"{self.workers} worker{'s' if self.workers > 1 else ''}, {'warm spares' if self.spares else 'no spare'}"


@dataclass(frozen=True)
class Round:
    case: Case
    seconds: float
    child_cpu_seconds: float  # CPU of the engine children (import, job, exit) over the round
    warm: int  # jobs that ran in a spare
    failed: int

    def jobs_per_second(self, jobs: int) -> float:
        return jobs / self.seconds


def small_pdfs(folder: Path, count: int) -> list[Path]:
    """Small, distinct PDFs: text pages and little photos (each a few KB to ~200 KB)."""
    made = []
    for n in range(count):
        path = folder / f"small-{n:03d}.pdf"
        if n % 2 == 0:
            made.append(builders.text_pdf(path, pages=1 + n % 3))
        else:
            made.append(builders.image_pdf(path, builders.photo(320 + 8 * (n % 5), 240, seed=n)))
    return made


def run_round(case: Case, pdfs: list[Path], out_dir: Path) -> Round:
    """All `pdfs` through `case.workers` threads; the clock starts once every spare is up and loading."""
    pool = engine_spares(case.workers) if case.spares else None
    engine: Callable[..., dict[str, Any]] = functools.partial(compress_isolated_json, spares=pool)
    if pool is not None:
        pool.start()
        _wait_for_spares(pool)
    todo: queue.SimpleQueue[Path] = queue.SimpleQueue()
    for pdf in pdfs:
        todo.put(pdf)
    failures: list[str] = []
    threads = [
        threading.Thread(target=_work, args=(engine, todo, out_dir, failures), name=f"worker-{n}")
        for n in range(case.workers)
    ]
    cpu_before = _children_cpu()
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.monotonic() - started
    warm = pool.warm_taken if pool is not None else 0
    if pool is not None:
        pool.close()
    return Round(case, seconds, _children_cpu() - cpu_before, warm, len(failures))


def _wait_for_spares(pool: SparePool) -> None:
    deadline = time.monotonic() + 60
    while len(pool.waiting_pids()) < pool.size and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(3.0)  # let them finish importing: a worker's first job finds its spare ready, as in service


def _work(engine: Callable[..., dict[str, Any]], todo: queue.SimpleQueue[Path], out: Path, failures: list[str]) -> None:
    """One worker thread: compress until the queue is empty (bounded by the queue's length)."""
    while True:
        try:
            pdf = todo.get_nowait()
        except queue.Empty:
            return
        try:
            engine(pdf, out / f"{threading.current_thread().name}-{pdf.name}", CompressOptions())
        except Exception as error:  # noqa: BLE001 - counted and shown: a failed job is a finding, not a crash
            failures.append(f"{pdf.name}: {error}")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def report(rounds: list[Round], jobs: int, load_before: tuple[float, ...], load_after: tuple[float, ...]) -> str:
    best = {case: min((r for r in rounds if r.case == case), key=lambda r: r.seconds) for case in _cases()}
    rate = {case: best[case].jobs_per_second(jobs) for case in best}
    lines = [
        f"# Worker throughput on small jobs ({jobs} small PDFs, level medium)",
        "",
        f"`python -m bench.throughput --jobs {jobs}` on {platform.platform()}, Python {platform.python_version()},"
        f" {len(os.sched_getaffinity(0))} cores allowed; load average before {_load(load_before)}, after"
        f" {_load(load_after)} (the machine is shared: other processes take CPU from every case alike).",
        "",
        "| case | best round (s) | jobs/s | rounds (s) | child CPU per job (s) | jobs in a spare | failed |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in _cases():
        mine = [r for r in rounds if r.case == case]
        b = best[case]
        lines.append(
            f"| {case.name} | {b.seconds:.1f} | {rate[case]:.2f} | {', '.join(f'{r.seconds:.1f}' for r in mine)} |"
            f" {statistics.mean(r.child_cpu_seconds for r in mine) / jobs:.2f} | {b.warm} | {b.failed} |"
        )
    one, two = Case(1, False), Case(2, False)
    one_warm, two_warm = Case(1, True), Case(2, True)
    pair_speedup = rate[two_warm] / rate[one_warm]
    lines += [
        "",
        "| speed-up | figure |",
        "|---|---|",
        f"| 2 workers / 1 worker, no spare | {rate[two] / rate[one]:.2f}x |",
        f"| 2 workers / 1 worker, warm spares (the target: {TARGET_SPEEDUP}x, like with like) |"
        f" {pair_speedup:.2f}x: {'met' if pair_speedup >= TARGET_SPEEDUP else 'NOT met'} |",
        f"| 2 workers with spares / 1 worker without | {rate[two_warm] / rate[one]:.2f}x |",
        f"| warm spares / no spare, 1 worker | {rate[one_warm] / rate[one]:.2f}x |",
        f"| warm spares / no spare, 2 workers | {rate[two_warm] / rate[two]:.2f}x |",
    ]
    return "\n".join(lines) + "\n"


def _cases() -> list[Case]:
    return [Case(workers, spares) for workers in (1, 2) for spares in (False, True)]


def _load(load: tuple[float, ...]) -> str:
    return " / ".join(f"{value:.2f}" for value in load)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    allowed = sorted(os.sched_getaffinity(0))[:CORES]
    os.sched_setaffinity(0, allowed)  # the children inherit it
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        folder = Path(tmp)
        pdfs = small_pdfs(folder, args.jobs)
        load_before = os.getloadavg()
        rounds = []
        for n in range(args.rounds):
            for case in _cases():
                done = run_round(case, pdfs, folder)
                print(f"round {n + 1}: {case.name}: {done.seconds:.1f} s", file=sys.stderr, flush=True)
                rounds.append(done)
        text = report(rounds, args.jobs, load_before, os.getloadavg())
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
