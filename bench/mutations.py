"""Mutation run: seeded random damage to real PDFs, each mutant compressed at medium through the engine's isolated
entry point (the child process and limits the worker uses), outcomes tallied by reason code.

    python -m bench.mutations [-n 300] [--seed 7] [--source DIR_OR_PDF ...] [--jobs 2] [--cpu-seconds 300]
                              [--keep DIR] [--out bench/mutations_results.md]

Sources by default: the PDFs under ../shared/corpus (when present), tests/data/*.pdf and PDFs made by the engine
test builders. A crash (ENGINE_CRASHED, or an exception that is not an EngineError) or a hang (TIMEOUT) is a
finding: the run lists each one with the seed that rebuilds it, keeps the mutant with --keep, and exits 1.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"
TEST_DATA = ROOT / "tests" / "data"
CRASH_OUTCOMES = ("ENGINE_CRASHED",)
HANG_OUTCOMES = ("TIMEOUT",)

Mutator = Callable[[bytes, random.Random], bytes]


# -- mutators: each returns damaged bytes; all are pure functions of (data, rng) ---------------------------------


def flip_bytes(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 16)):
        out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    """A cut-short download: anything from just past the header to the last few bytes."""
    return data[: rng.randint(min(64, len(data) - 1), len(data) - 1)]


def delete_chunk(data: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(data))
    return data[:start] + data[start + rng.randint(1, 4096) :]


def duplicate_chunk(data: bytes, rng: random.Random) -> bytes:
    start = rng.randrange(len(data))
    chunk = data[start : start + rng.randint(1, 4096)]
    at = rng.randrange(len(data))
    return data[:at] + chunk + data[at:]


def trailing_junk(data: bytes, rng: random.Random) -> bytes:
    return data + rng.randbytes(rng.randint(1, 8192))


def xref_damage(data: bytes, rng: random.Random) -> bytes:
    """Wrong startxref offset, garbled xref entries, or no xref at all."""
    choice = rng.randrange(3)
    if choice == 0:
        return re.sub(rb"startxref\s+\d+", b"startxref\n%d" % rng.randrange(len(data) * 2), data)
    if choice == 1:
        out = bytearray(data)
        for m in list(re.finditer(rb"\d{10} \d{5} [nf]", data))[:200]:
            if rng.random() < 0.3:
                out[m.start() : m.start() + 10] = b"%010d" % rng.randrange(len(data) * 2)
        return bytes(out)
    return data.replace(b"startxref", b"startxrex").replace(b"xref", b"xrex")


def stream_length_lie(data: bytes, rng: random.Random) -> bytes:
    """/Length values that are too short, too long or absurd."""
    matches = list(re.finditer(rb"/Length (\d+)", data))
    if not matches:
        return flip_bytes(data, rng)
    out = data
    for m in rng.sample(matches, min(len(matches), rng.randint(1, 3))):
        n = int(m.group(1))
        lie = rng.choice((0, max(0, n - rng.randint(1, 64)), n + rng.randint(1, 4096), 10**12))
        out = out.replace(m.group(0), b"/Length %d" % lie, 1)
    return out


def stream_trailing_bytes(data: bytes, rng: random.Random) -> bytes:
    """Bytes between the end of a stream's data and `endstream` (after the end of its zlib data)."""
    ends = [m.start() for m in re.finditer(rb"\r?\nendstream", data)]
    if not ends:
        return trailing_junk(data, rng)
    at = rng.choice(ends)
    return data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:]


MUTATORS: dict[str, Mutator] = {
    "flip-bytes": flip_bytes,
    "truncate": truncate,
    "delete-chunk": delete_chunk,
    "duplicate-chunk": duplicate_chunk,
    "trailing-junk": trailing_junk,
    "xref-damage": xref_damage,
    "stream-length-lie": stream_length_lie,
    "stream-trailing-bytes": stream_trailing_bytes,
}


@dataclass(frozen=True)
class Mutant:
    index: int
    source: Path
    mutation: str
    seed: int

    def build(self) -> bytes:
        rng = random.Random(self.seed)
        return MUTATORS[self.mutation](self.source.read_bytes(), rng)


def plan(sources: list[Path], count: int, seed: int) -> list[Mutant]:
    """``count`` mutants spread round-robin over the sources, each mutation and its seed chosen from ``seed``."""
    rng = random.Random(seed)
    names = sorted(MUTATORS)
    return [Mutant(i, sources[i % len(sources)], rng.choice(names), rng.randrange(2**32)) for i in range(count)]


# -- sources ------------------------------------------------------------------------------------------------------


def builder_pdfs(folder: Path) -> list[Path]:
    """PDFs made by the engine test builders: images (with soft mask), bitonal scan, text, forms."""
    from services.compressor.tests import builders

    return [
        builders.image_pdf(
            folder / "builder-photo.pdf", builders.photo(320, 240), smask=builders.photo(80, 60)[..., 0]
        ),
        builders.bitonal_pdf(folder / "builder-bitonal.pdf", 600, 450),
        builders.text_pdf(folder / "builder-text.pdf", pages=3, compress=True),
        builders.text_pdf(folder / "builder-text-plain.pdf", pages=2),
        builders.interactive_pdf(folder / "builder-interactive.pdf"),
        builders.minimal_pdf(folder / "builder-minimal.pdf"),
    ]


def pdfs_in(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for p in paths:
        found.extend(sorted(p.glob("*.pdf")) if p.is_dir() else [p])
    return found


def default_sources(folder: Path) -> list[Path]:
    corpus = pdfs_in([DEFAULT_CORPUS]) if DEFAULT_CORPUS.is_dir() else []
    return corpus + pdfs_in([TEST_DATA]) + builder_pdfs(folder)


# -- running ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    mutant: Mutant
    outcome: str  # OK, KEPT_ORIGINAL:<reason>, an EngineError reason, or EXCEPTION:<type>
    seconds: float

    @property
    def is_crash(self) -> bool:
        return self.outcome in CRASH_OUTCOMES or self.outcome.startswith("EXCEPTION:")

    @property
    def is_hang(self) -> bool:
        return self.outcome in HANG_OUTCOMES


def run_one(mutant: Mutant, work: Path, cpu_seconds: int, memory_bytes: int) -> Result:
    from services.compressor.engine import CompressOptions, EngineError, Limits, compress_isolated

    src = work / f"m{mutant.index:04d}.pdf"
    src.write_bytes(mutant.build())
    out = work / f"m{mutant.index:04d}-out.pdf"
    t0 = time.monotonic()
    try:
        report = compress_isolated(
            src, out, CompressOptions(level="medium"), limits=Limits(cpu_seconds=cpu_seconds, memory_bytes=memory_bytes)
        )
        outcome = f"KEPT_ORIGINAL:{report.kept_original_reason}" if report.kept_original else "OK"
    except EngineError as exc:
        outcome = exc.reason
    except Exception as exc:  # noqa: BLE001 - exactly what the run is looking for
        outcome = f"EXCEPTION:{type(exc).__name__}"
    finally:
        out.unlink(missing_ok=True)
    return Result(mutant, outcome, time.monotonic() - t0)


def run(
    mutants: list[Mutant],
    work: Path,
    *,
    jobs: int = 1,
    cpu_seconds: int = 300,
    memory_bytes: int = 2 << 30,
    keep: Path | None = None,
) -> list[Result]:
    def one(m: Mutant) -> Result:
        r = run_one(m, work, cpu_seconds, memory_bytes)
        src = work / f"m{m.index:04d}.pdf"
        if keep is not None and (r.is_crash or r.is_hang):
            keep.mkdir(parents=True, exist_ok=True)
            src.replace(keep / f"{r.outcome.replace(':', '-')}-{m.source.stem}-{m.mutation}-{m.seed}.pdf")
        src.unlink(missing_ok=True)
        return r

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, mutants))


def table(results: list[Result], seconds: float) -> str:
    tally = Counter(r.outcome for r in results)
    crashes = sum(r.is_crash for r in results)
    hangs = sum(r.is_hang for r in results)
    lines = ["| outcome | mutants |", "|---|---|"]
    lines += [f"| {outcome} | {n} |" for outcome, n in sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))]
    lines += [
        "",
        f"mutants: {len(results)}, sources: {len({r.mutant.source for r in results})}, "
        f"crashes: {crashes}, timeouts: {hangs}, time: {seconds:.1f} s "
        f"(slowest mutant {max((r.seconds for r in results), default=0.0):.1f} s)",
    ]
    by_mutation: dict[str, Counter[str]] = {}
    for r in results:
        by_mutation.setdefault(r.mutant.mutation, Counter())[r.outcome] += 1
    lines += ["", "| mutation | outcomes |", "|---|---|"]
    for name in sorted(by_mutation):
        lines.append(f"| {name} | " + ", ".join(f"{o} {n}" for o, n in by_mutation[name].most_common()) + " |")
    findings = [r for r in results if r.is_crash or r.is_hang]
    if findings:
        lines += ["", "findings (source, mutation, seed -> outcome):"]
        lines += [f"- {r.mutant.source.name} {r.mutant.mutation} {r.mutant.seed} -> {r.outcome}" for r in findings]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--count", type=int, default=300, help="number of mutants")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--source", type=Path, action="append", help="PDF or folder of PDFs (repeatable)")
    ap.add_argument("--jobs", type=int, default=1, help="mutants compressed at once")
    ap.add_argument("--cpu-seconds", type=int, default=300, help="the child's CPU limit (worker default: 300)")
    ap.add_argument("--memory-mb", type=int, default=2048, help="the child's memory limit (worker default: 2048)")
    ap.add_argument("--keep", type=Path, help="folder to keep crashing or hanging mutants in")
    ap.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pdfsmaller-mutations-") as td:
        work = Path(td)
        sources = pdfs_in(args.source) if args.source else default_sources(work)
        mutants = plan(sources, args.count, args.seed)
        results = run(
            mutants,
            work,
            jobs=args.jobs,
            cpu_seconds=args.cpu_seconds,
            memory_bytes=args.memory_mb << 20,
            keep=args.keep,
        )
    text = table(results, time.monotonic() - t0)
    print(text)
    if args.out is not None:
        cmd = " ".join(["python -m bench.mutations", *(argv if argv is not None else sys.argv[1:])])
        args.out.write_text(f"# Mutation run\n\n`{cmd}`\n\n{text}\n")
    return 1 if any(r.is_crash or r.is_hang for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
