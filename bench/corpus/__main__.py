"""python -m bench.corpus [--out DIR] [--kinds scans,charts,...] [--seed N] [--quick]"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .build import build, summary
from .common import SOURCE_DATE_EPOCH
from .families import FAMILIES

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / ".data" / "generated-corpus"


def main(argv: list[str] | None = None) -> int:
    names = [f.name for f in FAMILIES]
    parser = argparse.ArgumentParser(prog="python -m bench.corpus", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--kinds", default=",".join(names), help=f"comma-separated families: {','.join(names)}")
    parser.add_argument("--seed", type=int, default=0, help="the same seed builds the same documents")
    parser.add_argument("--quick", action="store_true", help="a small subset (about 20 files) for a smoke test")
    args = parser.parse_args(argv)
    chosen = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown kinds: {', '.join(unknown)} (known: {', '.join(names)})")
    os.environ.setdefault("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
    families = [f for f in FAMILIES if f.name in chosen]
    results = build(families, args.out, seed=args.seed, quick=args.quick)
    print(summary(results))
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
