"""The command line every generator of deploy/monitoring shares: write the committed files, or with
`--check` exit 1 naming those that differ from what the source renders."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from pathlib import Path


def main(
    module: str, description: str | None, outputs: Callable[[], Mapping[Path, str]], argv: list[str] | None
) -> int:
    command = f"python -m {module}"
    parser = argparse.ArgumentParser(prog=command, description=description)
    parser.add_argument("--check", action="store_true", help="exit 1 when a committed file differs")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        elif not path.exists() or path.read_text() != text:
            stale.append(str(path))
    if stale:
        print(f"stale (run {command}): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0
