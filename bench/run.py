"""Benchmark: every engine level and the usual tools over a corpus, every output scored the same way.

    python -m bench.run [--corpus ../shared/corpus] [--out bench/results.md] [--tools engine,gs-ebook,...]

Tools are skipped when not installed (Ghostscript `gs`, `qpdf`, `ocrmypdf`, PyMuPDF from requirements-bench.in).
Each tool runs as its own process per file (the engine through its CLI), timed by wall clock, with its peak
resident memory sampled from /proc. `best-other` is, per file, the smallest verified result of every other tool
(`best-other-lossless`: of the lossless ones). Exit status 1 when an engine run reaches the memory budget.
Every output is scored by the engine's own verification (pages with three readers, geometry, renders by SSIM and
colour, text, form fields, links, outlines) at one gate for all tools: SSIM >= 0.97 at 100 dpi, block chroma
difference <= 10, chroma ratio 0.80..1.25. A failed, missing or larger output counts as ratio 1.0 in the verified
geometric mean: the user keeps the original. An output of a signed input fails (`signature`) unless the input's
bytes are its beginning: any other rewrite invalidates the signature.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from libs.compression import LEVEL_NAMES

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"
LEVELS = LEVEL_NAMES
TOOL_TIMEOUT = 600.0


@dataclass
class Tool:
    name: str
    kind: str  # engine | gs | qpdf | ocrmypdf | pymupdf
    arg: str = ""

    @property
    def lossless(self) -> bool:
        return self.kind == "qpdf" or (self.kind == "pymupdf" and self.arg == "lossless")

    def available(self) -> bool:
        if self.kind == "pymupdf":
            return importlib.util.find_spec("pymupdf") is not None
        exe = {"engine": sys.executable, "gs": "gs", "qpdf": "qpdf", "ocrmypdf": "ocrmypdf"}[self.kind]
        return shutil.which(exe) is not None or Path(exe).exists()

    def argv(self, src: Path, out: Path, password: str | None) -> list[str]:
        if self.kind == "engine":
            argv = [
                sys.executable,
                "-m",
                "services.compressor.cli",
                "compress",
                str(src),
                "-o",
                str(out),
                "--level",
                self.arg,
                "--in-process",
            ]  # human output: a failure prints "pdfsmaller: REASON: message" on stderr, shown in the table
            return argv + (["--password", password] if password else [])
        if self.kind == "gs":
            argv = [
                "gs",
                "-q",
                "-dNOPAUSE",
                "-dBATCH",
                "-dSAFER",
                "-sDEVICE=pdfwrite",
                f"-dPDFSETTINGS=/{self.arg}",
                f"-sOutputFile={out}",
            ]
            return argv + ([f"-sPDFPassword={password}"] if password else []) + [str(src)]
        if self.kind == "qpdf":
            # qpdf's best lossless settings.
            argv = [
                "qpdf",
                "--object-streams=generate",
                "--compress-streams=y",
                "--recompress-flate",
                "--compression-level=9",
                "--decode-level=generalized",
            ]
            return argv + ([f"--password={password}"] if password else []) + [str(src), str(out)]
        if self.kind == "pymupdf":
            return [sys.executable, "-m", "bench.pymupdf_tool", self.arg, str(src), str(out)] + (
                [password] if password else []
            )
        return ["ocrmypdf", "--skip-text", "--optimize", "3", "--output-type", "pdf", "--quiet", str(src), str(out)]


ALL_TOOLS = [Tool(f"engine-{lv}", "engine", lv) for lv in LEVELS] + [
    Tool("gs-printer", "gs", "printer"),
    Tool("gs-ebook", "gs", "ebook"),
    Tool("gs-screen", "gs", "screen"),
    Tool("qpdf", "qpdf"),
    Tool("ocrmypdf-O3", "ocrmypdf"),
    Tool("pymupdf-lossless", "pymupdf", "lossless"),
    Tool("pymupdf-ebook", "pymupdf", "ebook"),
]
# The engine's memory budget: the peak resident memory of one file, libraries included (issue 12's target).
PEAK_MEMORY_BUDGET = 512 << 20


@dataclass
class Result:
    tool: str
    file: str
    in_bytes: int
    out_bytes: int | None = None
    seconds: float = 0.0
    peak_rss: int = 0
    error: str = ""
    verdict: str = "FAIL"
    failures: list[str] = field(default_factory=list)
    ssim_min: float | None = None
    identical: bool | None = None
    kept_original: bool = False

    @property
    def raw_ratio(self) -> float:
        return self.out_bytes / self.in_bytes if self.out_bytes else 1.0

    @property
    def verified_ratio(self) -> float:
        if self.verdict == "PASS" and self.out_bytes and self.out_bytes < self.in_bytes:
            return self.out_bytes / self.in_bytes
        return 1.0


def _hwm(pid: int) -> int:
    """Peak resident memory (VmHWM) of a live process and its direct children, bytes; 0 once gone."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total = max(total, int(line.split()[1]) * 1024)
        except OSError:
            continue
    return total


def _run(argv: list[str], cwd: Path) -> tuple[int, float, int, str]:
    """-> (exit code, wall seconds, peak resident memory in bytes, stderr tail).

    Memory is sampled from /proc (VmHWM, the per-process high-water mark, which exec resets) every 2 ms: wait4()'s
    ru_maxrss would include the benchmark's own memory inherited by the forked child before exec."""
    t0 = time.monotonic()
    peak = 0
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        deadline = t0 + TOOL_TIMEOUT
        while proc.poll() is None:
            peak = max(peak, _hwm(proc.pid))
            if time.monotonic() > deadline:
                os.killpg(proc.pid, 9)
                proc.wait()
                break
            time.sleep(0.002)
        seconds = time.monotonic() - t0
        err.seek(0)
        tail = err.read()[-400:].decode("utf-8", "replace")
    return proc.returncode, seconds, peak, tail


def _passwords(corpus: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    manifest = corpus / "MANIFEST.tsv"
    if manifest.exists():
        for line in manifest.read_text().splitlines()[1:]:
            cols = line.split("\t")
            m = re.search(r'user password "([^"]+)"', line)
            if m and cols:
                out[cols[0]] = m.group(1)
    return out


class Scorer:
    """The engine's verification with one gate for every tool."""

    def __init__(self) -> None:
        from services.compressor.engine.opening import count_pages_pdfium, count_pages_pikepdf, count_pages_pypdf
        from services.compressor.engine.verify import Gate

        self.gate = Gate(ssim_min=0.97, chroma_diff_max=10.0, chroma_ratio=(0.80, 1.25))
        self._counts = (count_pages_pikepdf, count_pages_pdfium, count_pages_pypdf)

    def reference(self, src: Path, password: str | None) -> Any:
        from services.compressor.engine.verify import Reference

        pages = max((c(src, password) or 0) for c in self._counts)
        if pages == 0:
            return None
        try:
            return Reference(src, password, pages)
        except Exception:  # noqa: BLE001 - an input no reader opens cannot be verified
            return None

    @staticmethod
    def signed(src: Path, password: str | None) -> bool:
        """Whether the input carries a digital signature (or certification) a rewrite would invalidate."""
        import pikepdf

        from services.compressor.engine.safety import is_signed

        try:
            with pikepdf.open(src, password=password or "") as pdf:
                return is_signed(pdf)
        except pikepdf.PdfError:
            return False

    def score(self, ref: Any, out: Path, password: str | None, r: Result, *, signed_input: bytes | None = None) -> None:
        """Verify ``out`` against ``ref``. ``signed_input``: the bytes of a signed input, whose signature survives
        only when they are the output's beginning (unchanged, or extended by an incremental update); any other
        output fails ``signature``, whatever it looks like."""
        from services.compressor.engine.verify import choose_pages, verify

        if ref is None:
            r.failures = ["input-unreadable"]
            return
        if not out.exists() or out.stat().st_size == 0:
            r.failures = ["no-output"]
            return
        if signed_input is not None and not out.read_bytes().startswith(signed_input):
            r.failures = ["signature"]
            return
        try:
            outcome = verify(ref, out, self.gate, choose_pages(ref.pages, {}), password=password)
        except Exception as exc:  # noqa: BLE001 - an output that cannot be verified fails
            r.failures = [f"error:{type(exc).__name__}"]
            return
        v = outcome.verification
        r.verdict = "PASS" if v.passed else "FAIL"
        r.failures = list(v.failures)
        r.ssim_min = v.ssim_min
        r.identical = v.identical_renders


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(max(v, 1e-9)) for v in values) / len(values)) if values else float("nan")


def run(corpus: Path, tools: list[Tool], workdir: Path) -> list[Result]:
    files = sorted(p for p in corpus.glob("*.pdf"))
    passwords = _passwords(corpus)
    scorer = Scorer()
    results: list[Result] = []
    for src in files:
        pw = passwords.get(src.name)
        ref = scorer.reference(src, pw)
        signed_input = src.read_bytes() if scorer.signed(src, pw) else None
        for tool in tools:
            out = workdir / tool.name / src.name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.unlink(missing_ok=True)
            r = Result(tool.name, src.name, src.stat().st_size)
            rc, r.seconds, r.peak_rss, tail = _run(tool.argv(src, out, pw), ROOT)
            if rc != 0 and tool.kind == "engine":
                m = re.search(r"pdfsmaller: ([A-Z][A-Z_]+):", tail)
                r.error = m.group(1) if m else f"exit {rc}"
                out.unlink(missing_ok=True)
            elif rc != 0 and not out.exists():
                r.error = f"exit {rc}"
            if out.exists() and out.stat().st_size > 0:
                r.out_bytes = out.stat().st_size
                r.kept_original = out.read_bytes() == src.read_bytes()
            scorer.score(ref, out, pw, r, signed_input=signed_input)
            results.append(r)
            print(
                f"{tool.name:12s} {src.name[:44]:44s} {r.raw_ratio:7.4f} {r.verified_ratio:7.4f} {r.verdict} "
                f"{','.join(r.failures)} {r.error} {r.seconds:.2f}s {r.peak_rss >> 20}MiB",
                flush=True,
            )
        if ref is not None:
            ref.close()
    return results


def summarize(results: list[Result], tools: list[Tool]) -> list[dict[str, Any]]:
    rows = []
    for tool in tools:
        rs = [r for r in results if r.tool == tool.name]
        if not rs:
            continue
        rows.append(
            {
                "tool": tool.name,
                "files": len(rs),
                "raw": geomean([r.raw_ratio for r in rs]),
                "verified": geomean([r.verified_ratio for r in rs]),
                "pass": sum(r.verdict == "PASS" for r in rs),
                # A byte-identical copy of the input (the engine keeping the original) is not a failed output.
                "fail": sum(r.verdict != "PASS" and r.out_bytes is not None and not r.kept_original for r in rs),
                "bigger": sum(1 for r in rs if r.out_bytes is not None and r.out_bytes > r.in_bytes),
                "no_output": sum(r.out_bytes is None for r in rs),
                "kept": sum(r.kept_original for r in rs),
                "identical": sum(bool(r.identical) or (r.verdict == "PASS" and r.ssim_min == 1.0) for r in rs),
                "seconds": sum(r.seconds for r in rs),
                "peak_mib": max(r.peak_rss for r in rs) / (1 << 20),
            }
        )
    return rows


def best_of(results: list[Result], tools: list[str], name: str) -> list[Result]:
    """A virtual tool: per file, the smallest verified result of ``tools`` (what a user trying them all keeps)."""
    best: dict[str, Result] = {}
    for r in results:
        if r.tool in tools and (r.file not in best or r.verified_ratio < best[r.file].verified_ratio):
            best[r.file] = r
    return [
        Result(
            name,
            f,
            r.in_bytes,
            r.out_bytes,
            r.seconds,
            r.peak_rss,
            r.error,
            r.verdict,
            r.failures,
            r.ssim_min,
            r.identical,
        )
        for f, r in sorted(best.items())
    ]


def over_budget(results: list[Result]) -> list[Result]:
    """Engine runs whose peak resident memory reached the budget."""
    return [r for r in results if r.tool.startswith("engine-") and r.peak_rss >= PEAK_MEMORY_BUDGET]


def failed_readable(results: list[Result], tool: str) -> list[Result]:
    """Runs of ``tool`` that gave no output for an input the scorer's readers open."""
    return [r for r in results if r.tool == tool and r.out_bytes is None and "input-unreadable" not in r.failures]


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def target_lines(results: list[Result], rows: list[dict[str, Any]]) -> list[str]:
    by = {row["tool"]: row for row in rows}
    lines = ["", "## Targets", ""]
    if "engine-medium" in by:
        m = by["engine-medium"]
        if "best-other" in by:
            o = by["best-other"]["verified"]
            lines.append(
                f"- medium verified geomean {m['verified']:.4f} below the per-file best of every other tool "
                f"{o:.4f}: {_met(m['verified'] < o)}"
            )
        if "gs-ebook" in by:
            g = by["gs-ebook"]
            lines.append(
                f"- medium verified geomean {m['verified']:.4f} at least 20% below gs /ebook "
                f"{g['verified']:.4f} (<= {0.8 * g['verified']:.4f}): {_met(m['verified'] <= 0.8 * g['verified'])}"
            )
            lines.append(
                f"- medium total time {m['seconds']:.1f} s below gs /ebook {g['seconds']:.1f} s: "
                f"{_met(m['seconds'] < g['seconds'])}"
            )
        failed = failed_readable(results, "engine-medium")
        lines.append(
            f"- medium failed jobs for inputs that open: {len(failed)}"
            + (f" ({', '.join(f'{r.file}: {r.error}' for r in failed)})" if failed else "")
            + f"; outputs larger than input: {m['bigger']}; outputs failing verification: {m['fail']}"
        )
    heavy = over_budget(results)
    peak = max((r.peak_rss for r in results if r.tool.startswith("engine-")), default=0)
    lines.append(
        f"- engine peak memory under {PEAK_MEMORY_BUDGET >> 20} MiB on every file (largest {peak >> 20} MiB): "
        + _met(not heavy)
        + (f" ({', '.join(f'{r.tool} {r.file} {r.peak_rss >> 20} MiB' for r in heavy)})" if heavy else "")
    )
    lines.append(
        "- engine high and maximum trade visual quality below this 0.97 gate by design (their own gates: SSIM "
        "0.93 and 0.905, the usual 'screen' threshold being 0.90); their failures here are that trade, not errors."
    )
    if "engine-lossless" in by:
        lo = by["engine-lossless"]
        for other in ("qpdf", "pymupdf-lossless", "best-other-lossless"):
            if other in by:
                o = by[other]["verified"]
                ok = _met(lo["verified"] < o)
                lines.append(f"- lossless verified geomean {lo['verified']:.4f} below {other} {o:.4f}: {ok}")
        lines.append(f"- lossless renders identical on {lo['identical']}/{lo['files']} files")
    return lines


def write_markdown(path: Path, corpus: Path, results: list[Result], rows: list[dict[str, Any]], meta: str) -> None:
    lines = [
        "# Benchmark results",
        "",
        f"Corpus: `{corpus}` ({len({r.file for r in results})} PDFs). {meta}",
        "",
        "Every output is scored by the engine's verification with one gate for all tools: page count (pikepdf, "
        "pdfium, pypdf), page geometry, re-opening, renders at 100 dpi (every page up to 12, else 12 spread pages) by "
        "SSIM >= 0.97 and CIELAB block colour (difference <= 10, chroma ratio 0.80-1.25), text recall >= 0.99, form "
        "fields, links and outlines kept. *Verified* counts a failed, missing or larger output as ratio 1.0 (the "
        "user keeps the original). Geometric means over all files; lower is better.",
        "",
        "| tool | verified geomean | raw geomean | pass | fail | bigger | no output | kept original | total time (s) "
        "| peak memory (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['tool']} | {row['verified']:.4f} | {row['raw']:.4f} | {row['pass']}/{row['files']} | "
            f"{row['fail']} | {row['bigger']} | {row['no_output']} | {row['kept']} | {row['seconds']:.1f} | "
            f"{row['peak_mib']:.0f} |"
        )
    lines += target_lines(results, rows)
    lines += [
        "",
        "## Per file",
        "",
        "Verified ratio; `F:codes (raw ratio)` = failed verification; `E:` = no output (the engine's reason code, or "
        "the tool's exit status); `= (kept)` = the engine returned the input's bytes.",
        "",
    ]
    names = [row["tool"] for row in rows]
    lines.append("| file | " + " | ".join(names) + " |")
    lines.append("|---" * (len(names) + 1) + "|")
    cell: dict[tuple[str, str], str] = {}
    for r in results:
        if r.out_bytes is None:
            txt = f"E:{r.error or ','.join(r.failures)}"
        elif r.kept_original:
            txt = "1.000 = (kept)"
        elif r.verdict != "PASS":
            txt = f"F:{','.join(r.failures)} ({r.raw_ratio:.3f})"
        else:
            txt = f"{r.verified_ratio:.3f}" + (" =" if r.kept_original else "")
        cell[(r.file, r.tool)] = txt
    for f in sorted({r.file for r in results}):
        lines.append(f"| {f} | " + " | ".join(cell.get((f, n), "") for n in names) + " |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=Path(os.environ.get("BENCH_CORPUS", DEFAULT_CORPUS)))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results.md")
    ap.add_argument("--json", type=Path, help="also write every result as JSON")
    ap.add_argument("--tools", help="comma-separated subset of: " + ",".join(t.name for t in ALL_TOOLS))
    ap.add_argument("--workdir", type=Path, help="keep outputs here (default: a temporary directory)")
    args = ap.parse_args(argv)
    if not args.corpus.is_dir():
        print(f"corpus not found: {args.corpus}", file=sys.stderr)
        return 2
    wanted = set(args.tools.split(",")) if args.tools else None
    tools = [t for t in ALL_TOOLS if wanted is None or t.name in wanted]
    skipped = [t.name for t in tools if not t.available()]
    tools = [t for t in tools if t.available()]
    for name in skipped:
        print(f"skipping {name}: not installed", file=sys.stderr)
    versions = []
    for exe, flag in (("gs", "--version"), ("qpdf", "--version"), ("ocrmypdf", "--version")):
        if shutil.which(exe):
            out = subprocess.run([exe, flag], capture_output=True, text=True, check=False).stdout.splitlines()
            versions.append(f"{exe} {out[0].split()[-1] if out else '?'}")
    meta = f"Tools: {', '.join(versions) or 'engine only'}; {os.cpu_count()} CPUs; sequential runs."
    if skipped:
        meta += f" Skipped (not installed): {', '.join(skipped)}."
    work = args.workdir or Path(tempfile.mkdtemp(prefix="pdfsmaller-bench-"))
    try:
        results = run(args.corpus, tools, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    others = [t.name for t in tools if t.kind != "engine"]
    virtual = [Tool("best-other", "virtual"), Tool("best-other-lossless", "virtual")]
    results += best_of(results, others, "best-other") if others else []
    lossless = [t.name for t in tools if t.lossless]
    results += best_of(results, lossless, "best-other-lossless") if lossless else []
    rows = summarize(results, tools + virtual)
    write_markdown(args.out, args.corpus, results, rows, meta)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    for row in rows:
        print(
            f"{row['tool']:14s} verified {row['verified']:.4f} raw {row['raw']:.4f} "
            f"pass {row['pass']}/{row['files']} bigger {row['bigger']} time {row['seconds']:.1f}s "
            f"peak {row['peak_mib']:.0f}MiB"
        )
    heavy = over_budget(results)
    for r in heavy:
        print(f"over the memory budget: {r.tool} {r.file} {r.peak_rss >> 20} MiB", file=sys.stderr)
    return 1 if heavy else 0


if __name__ == "__main__":
    sys.exit(main())
