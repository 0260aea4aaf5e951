"""Benchmark: the engine child's peak memory on large-image PDFs (issue 12: under 512 MiB for every file).

    python -m bench.memory [--only NAME ...] [--levels medium,lossless] [--out bench/memory_results.md]

Builds each case (services/compressor/tests/builders.py: scans at 600-2400 dpi in 1-bit, effectively bitonal
gray and colour, Flate and JPEG photographs, 16-bit, CMYK, soft masks, one image on many pages), runs
``compress_isolated`` on it at each level with the default limits, each measurement from a fresh process, and
reads the child's peak resident memory (``getrusage(RUSAGE_CHILDREN).ru_maxrss``, libraries included). Prints
each case's peak, seconds and ratio (output / input); exit status 1 when any peak is 512 MiB or more or a job
failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from services.compressor.engine.errors import EngineError
from services.compressor.engine.isolation import compress_isolated
from services.compressor.engine.options import CompressOptions, Limits
from services.compressor.tests.builders import flate_photo_pdf, jpeg_pages_pdf, scan_pdf

ROOT = Path(__file__).resolve().parents[1]
PEAK_LIMIT_MIB = 512
LETTER_2400 = (20400, 26400)


@dataclass(frozen=True)
class Case:
    name: str
    what: str
    build: Callable[[Path], Path]
    # The default cap (Limits.max_image_pixels, 200 million) refuses a 2400-dpi letter page before any work;
    # such a case runs with the cap raised, to measure what the work itself costs.
    max_image_pixels: int | None = None


CASES = [
    Case(
        "bitonal-2400dpi-letter",
        "1-bit Flate scan, letter at 2400 dpi (20400 x 26400)",
        lambda p: scan_pdf(p, *LETTER_2400),
        max_image_pixels=LETTER_2400[0] * LETTER_2400[1],
    ),
    Case(
        "bitonal-2400dpi-half",
        "1-bit Flate scan, 2400 dpi, 4.5 x 7 in (10800 x 16800)",
        lambda p: scan_pdf(p, 10800, 16800, page_pt=(324, 504)),
    ),
    Case(
        "bitonal-1200dpi-4p", "4 pages of 1-bit Flate scans at 1200 dpi", lambda p: scan_pdf(p, 10200, 13200, pages=4)
    ),
    Case(
        "gray-bitonal-600dpi-3p",
        "3 pages of effectively bitonal 8-bit gray scans at 600 dpi",
        lambda p: scan_pdf(p, 5100, 6600, style="gray", pages=3),
    ),
    Case(
        "gray-bitonal-1200dpi",
        "effectively bitonal 8-bit gray scan at 1200 dpi (10200 x 13200)",
        lambda p: scan_pdf(p, 10200, 13200, style="gray"),
    ),
    Case(
        "rgb-bitonal-600dpi", "effectively bitonal RGB scan at 600 dpi", lambda p: scan_pdf(p, 5100, 6600, style="rgb")
    ),
    Case("rgb-photo-600dpi", "600-dpi colour Flate page (5100 x 6600 RGB)", lambda p: flate_photo_pdf(p, 5100, 6600)),
    Case("cmyk-photo", "CMYK Flate photograph, 5000 x 4000", lambda p: flate_photo_pdf(p, 5000, 4000, channels=4)),
    Case("rgb16-photo", "16-bit RGB Flate photograph, 4000 x 3000", lambda p: flate_photo_pdf(p, 4000, 3000, bpc=16)),
    Case(
        "smask-photo",
        "RGB Flate photograph 5000 x 4000 with a soft mask",
        lambda p: flate_photo_pdf(p, 5000, 4000, smask=True),
    ),
    Case("jpeg-12000x9000", "one 12000 x 9000 JPEG photograph", lambda p: jpeg_pages_pdf(p, 12000, 9000)),
    Case(
        "jpeg-40-pages",
        "40 pages, each a different 4000 x 3000 JPEG photograph",
        lambda p: jpeg_pages_pdf(p, 4000, 3000, pages=40),
    ),
    Case(
        "jpeg-shared-60-pages",
        "one 4000 x 3000 JPEG placed on 60 pages",
        lambda p: jpeg_pages_pdf(p, 4000, 3000, pages=60, shared=True),
    ),
]


@dataclass
class Measurement:
    case: str
    level: str
    peak_mib: float
    seconds: float
    ratio: float | None
    outcome: str  # "ok", "kept original (REASON)" or the failure's reason code


def measure(path: Path, level: str, max_image_pixels: int | None) -> Measurement:
    """One measurement in a fresh process (so ru_maxrss of its children is this child's alone)."""
    cmd = [sys.executable, "-m", "bench.memory", "--measure", str(path), level, str(max_image_pixels or 0)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measurement of {path.name} failed:\n{done.stderr[-3000:]}")
    return Measurement(**json.loads(done.stdout.splitlines()[-1]))


def _measure_here(path: Path, level: str, max_image_pixels: int) -> Measurement:
    limits = Limits(max_image_pixels=max_image_pixels) if max_image_pixels else Limits()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as td:
        t0 = time.monotonic()
        ratio: float | None = None
        try:
            report = compress_isolated(path, Path(td) / "out.pdf", CompressOptions(level=level), limits)
            ratio = round(report.output_size_bytes / report.input_size_bytes, 4)
            outcome = f"kept original ({report.kept_original_reason})" if report.kept_original else "ok"
        except EngineError as exc:
            outcome = exc.reason
        seconds = round(time.monotonic() - t0, 1)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return Measurement(path.stem, level, round(peak_kib / 1024, 1), seconds, ratio, outcome)


def _failed(m: Measurement) -> bool:
    return m.peak_mib >= PEAK_LIMIT_MIB or not (m.outcome == "ok" or m.outcome.startswith("kept original"))


def _table(cases: list[Case], results: list[Measurement], sizes: dict[str, int]) -> list[str]:
    what = {c.name: c.what for c in cases}
    lines = [
        "| case | input | level | peak (MiB) | seconds | ratio | outcome |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in results:
        ratio = "-" if m.ratio is None else f"{m.ratio:.4f}"
        flag = " **over**" if m.peak_mib >= PEAK_LIMIT_MIB else ""
        lines.append(
            f"| {m.case}: {what[m.case]} | {sizes[m.case] / 2**20:.1f} MiB | {m.level} | {m.peak_mib:.0f}{flag}"
            f" | {m.seconds:.1f} | {ratio} | {m.outcome} |"
        )
    return lines


def _write_results(out: Path, cases: list[Case], results: list[Measurement], sizes: dict[str, int]) -> None:
    cpu = platform.processor() or platform.machine()
    worst = max((m.peak_mib for m in results), default=0.0)
    text = [
        "# Engine memory on large-image PDFs",
        "",
        f"Machine: {cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}.",
        f"Load average (1/5/15 min) at the end: {'/'.join(f'{v:.2f}' for v in os.getloadavg())}.",
        "",
        "Produced by `python -m bench.memory`. Each row is one `compress_isolated` job with the default limits"
        " in a fresh",
        "process; *peak* is the engine child's resident high-water mark (`ru_maxrss`, libraries included). The"
        " target is",
        f"under {PEAK_LIMIT_MIB} MiB for every file. Worst peak: {worst:.0f} MiB.",
        "",
        *_table(cases, results, sizes),
        "",
    ]
    out.write_text("\n".join(text))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", help="case names (default: all)")
    ap.add_argument("--levels", default="medium,lossless")
    ap.add_argument("--out", type=Path, help="write the results table here (markdown)")
    ap.add_argument("--measure", nargs=3, metavar=("PDF", "LEVEL", "MAX_PIXELS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        m = _measure_here(Path(args.measure[0]), args.measure[1], int(args.measure[2]))
        print(json.dumps(m.__dict__))
        return 0
    cases = [c for c in CASES if not args.only or c.name in args.only]
    results: list[Measurement] = []
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-cases-") as td:
        for case in cases:
            path = case.build(Path(td) / f"{case.name}.pdf")
            sizes[case.name] = path.stat().st_size
            for level in args.levels.split(","):
                m = measure(path, level, case.max_image_pixels)
                results.append(m)
                print(
                    f"{m.case:28} {level:9} peak {m.peak_mib:7.1f} MiB {m.seconds:6.1f} s ratio {m.ratio} {m.outcome}",
                    flush=True,
                )
            path.unlink()
    if args.out:
        _write_results(args.out, cases, results, sizes)
    return 1 if any(_failed(m) for m in results) else 0


if __name__ == "__main__":
    sys.exit(main())
