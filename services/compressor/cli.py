"""`pdfsmaller compress`: run the compression engine locally, no servers needed.

    pdfsmaller compress IN.pdf -o OUT.pdf [--level medium] [--image-quality 70] [--json]

The `pdfsmaller` command itself is client/cli.py; it adds this subcommand where the engine is
installed. `python -m services.compressor.cli compress ...` runs it without the client.

Exit status: 0 on success (including "kept the original"), 1 when the engine fails (the reason code is printed),
2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from libs import compression
from services.compressor.engine import (
    CompressOptions,
    EngineError,
    Limits,
    Report,
    compress,
    compress_isolated,
)


def add_compress_command(sub: Any) -> None:
    """Add `compress` to the `pdfsmaller` argument parser's subcommands."""
    c = sub.add_parser("compress", help="compress one PDF on this machine (no server)")
    c.add_argument("input", type=Path)
    c.add_argument("-o", "--output", type=Path, required=True)
    compression.add_flags(c)
    c.add_argument("--password", help="password that opens the input")
    c.add_argument("--json", action="store_true", help="print the report as one JSON object")
    c.add_argument("--in-process", action="store_true", help="run in this process (no child process limits)")
    c.add_argument("--cpu-seconds", type=int, default=300, help="CPU-time limit of the child process")
    c.add_argument("--memory-mb", type=int, default=1024, help="memory limit of the child process")
    c.set_defaults(run=run_compress)


def _human(report: Report, out: Path) -> str:
    d = report.to_dict()
    v = d["verification"]
    lines = [
        f"{out}: {d['input_size_bytes']:,} -> {d['output_size_bytes']:,} bytes "
        f"(ratio {d['ratio']:.3f}, saved {d['saved_bytes']:,}) in {d['seconds']:.2f} s, level {d['level']}",
    ]
    if d["kept_original"]:
        lines.append(f"  kept the original: {d['kept_original_reason']} - {d['kept_original_detail']}")
    if d["techniques"]:
        lines.append("  techniques: " + ", ".join(f"{t['name']} {t['saved_bytes']:,}" for t in d["techniques"]))
    kinds = ("images", "fonts", "content", "other")
    before, after = d["bytes_by_kind_before"], d["bytes_by_kind_after"]
    if before:
        lines.append("  bytes by kind: " + ", ".join(f"{k} {before.get(k, 0):,}->{after.get(k, 0):,}" for k in kinds))
    if v["pages_compared"]:
        lines.append(
            f"  verified: {v['pages_in']} pages, {len(v['pages_compared'])} compared at {v['render_dpi']:.0f} dpi, "
            f"SSIM min {v['ssim_min']} (threshold {v['ssim_threshold']}), text recall {v['text_recall']}, "
            f"fields {v['fields_in']}->{v['fields_out']}, links {v['links_in']}->{v['links_out']}, "
            f"outlines {v['outlines_in']}->{v['outlines_out']}"
        )
    if d["target_size_bytes"] is not None:
        lines.append(f"  target {d['target_size_bytes']:,} bytes: {'met' if d['target_met'] else 'NOT met'}")
    lines.extend(f"  note: {w}" for w in d["warnings"])
    return "\n".join(lines)


def run_compress(args: argparse.Namespace) -> int:
    # A flag left out (or 0) is "not set", as in the API: the level decides.
    options = CompressOptions(**compression.engine_kwargs(compression.flag_values(args)), password=args.password)
    try:
        if not args.input.is_file():
            raise EngineError("IO_ERROR", "The input file does not exist.")
        if args.in_process:
            report = compress(args.input, args.output, options)
        else:
            limits = Limits(cpu_seconds=args.cpu_seconds, memory_bytes=args.memory_mb << 20)
            report = compress_isolated(args.input, args.output, options, limits=limits)
    except EngineError as exc:
        if args.json:
            print(json.dumps({"error": {"reason": exc.reason, "message": exc.message}}))
        else:
            print(f"pdfsmaller: {exc.reason}: {exc.message}", file=sys.stderr)
        return 1
    payload: dict[str, Any] = report.to_dict()
    print(json.dumps(payload) if args.json else _human(report, args.output))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pdfsmaller", description="Make PDF files smaller, verified.")
    add_compress_command(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
