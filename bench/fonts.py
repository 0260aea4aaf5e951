"""Font technique figures: for every PDF with Type 1 or CFF fonts, the font program bytes before and after the
font technique alone (``optimize_fonts``), and the verified result of a whole ``medium`` run.

    python -m bench.fonts [DIR ...] [--glob 'latex__*.pdf'] [--no-compress]

Prints a Markdown table; ``bench/fonts_results.md`` holds the committed figures."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pikepdf
from pikepdf import Dictionary, Name, Stream

from services.compressor.engine import CompressOptions, EngineError, compress
from services.compressor.engine.fonts import optimize_fonts

_FONT_FILES = ("/FontFile", "/FontFile2", "/FontFile3")


def font_bytes(pdf: pikepdf.Pdf) -> dict[str, int]:
    """Stored bytes of the embedded font programs, by kind (Type 1, TrueType, CFF)."""
    kinds = {"/FontFile": "type1", "/FontFile2": "truetype", "/FontFile3": "cff"}
    out = dict.fromkeys(kinds.values(), 0)
    seen: set[tuple[int, int]] = set()
    for obj in pdf.objects:
        if isinstance(obj, Stream) or not isinstance(obj, Dictionary) or obj.get("/Type") != Name.FontDescriptor:
            continue
        for key in _FONT_FILES:
            ff = obj.get(key)
            if isinstance(ff, Stream) and ff.objgen not in seen:
                seen.add(ff.objgen)
                out[kinds[key]] += len(ff.read_raw_bytes())
    return out


def measure(path: Path, run_compress: bool) -> list[str]:
    with pikepdf.open(path) as pdf:
        before = font_bytes(pdf)
        if not before["type1"] and not before["cff"]:
            return []
        start, cpu_start = time.monotonic(), time.process_time()
        result = optimize_fonts(pdf)
        seconds, cpu = time.monotonic() - start, time.process_time() - cpu_start
        after = font_bytes(pdf)
    row = [
        path.name,
        f"{before['type1']} / {before['cff']}",
        f"{sum(before.values())} -> {sum(after.values())}",
        f"{sum(after.values()) / max(sum(before.values()), 1):.3f}",
        result.describe(),
        f"{seconds:.2f} s",
        f"{cpu:.2f} s",
    ]
    return row + (_compress(path) if run_compress else [])


def _compress(path: Path) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            report = compress(path, Path(tmp) / "out.pdf", CompressOptions(level="medium"))
        except EngineError as exc:
            return [exc.reason, "", ""]
    v = report.verification
    ssim = "identical" if v.ssim_min is None else f"{v.ssim_min:.4f}"
    return [f"{report.ratio:.3f}", "passed" if v.passed else ",".join(v.failures), ssim]


def _import_font_libraries() -> None:
    """What a warm engine child has imported already (fontTools' CFF and TrueType code: about 0.6 s CPU)."""
    import fontTools.ttLib.tables._g_l_y_f  # noqa: F401

    import services.compressor.engine.cfffonts  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dirs", nargs="*", default=["../shared/corpus"])
    parser.add_argument("--glob", default="*.pdf")
    parser.add_argument("--no-compress", action="store_true")
    parser.add_argument("--warm", action="store_true", help="import the font libraries before timing (a warm worker)")
    args = parser.parse_args(argv)
    if args.warm:
        _import_font_libraries()
    # CPU time next to wall time: on shared cores the wall clock mostly measures the other processes.
    header = ["file", "Type 1 / CFF bytes", "font bytes", "ratio", "fonts technique", "time", "CPU"]
    if not args.no_compress:
        header += ["medium ratio", "verification", "SSIM min"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for d in args.dirs:
        for path in sorted(Path(d).glob(args.glob)):
            try:
                row = measure(path, not args.no_compress)
            except (pikepdf.PdfError, pikepdf.PasswordError):
                continue  # unreadable here: the engine's own repair is out of scope for this table
            if row:
                print("| " + " | ".join(row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
