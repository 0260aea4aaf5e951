"""The engine's outputs on a corpus as sha256 lists, to prove a refactoring changed no output byte.

    python -m bench.output_hashes [--corpus ../shared/corpus] [--levels lossless,medium,maximum] > after.txt
    diff before.txt after.txt        # empty: every output is byte-identical

One line per level and file: the sha256 of the output, or `error:REASON` when the engine refused the file.
An output that is still encrypted (an owner-password-only input stays encrypted) carries random salts and
initialisation vectors, so its bytes differ from run to run; such a line hashes the output decrypted and
re-saved with a fixed /ID instead, and says `decrypted:`.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

import pikepdf

from services.compressor.engine import LEVEL_NAMES, CompressOptions, EngineError, compress_isolated

DEFAULT_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"


def output_hash(source: Path, level: str, work: Path) -> str:
    output = work / "out.pdf"
    output.unlink(missing_ok=True)
    try:
        compress_isolated(source, output, CompressOptions(level=level))
    except EngineError as error:
        return f"error:{error.reason}"
    with pikepdf.open(output) as pdf:
        if not pdf.is_encrypted:
            return hashlib.sha256(output.read_bytes()).hexdigest()
        normalized = work / "normalized.pdf"
        pdf.save(normalized, static_id=True, qdf=True, encryption=False)
    return "decrypted:" + hashlib.sha256(normalized.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.output_hashes", description=__doc__)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--levels", default="lossless,medium,maximum")
    args = parser.parse_args(argv)
    levels = args.levels.split(",")
    unknown = set(levels) - set(LEVEL_NAMES)
    if unknown:
        parser.error(f"unknown levels: {', '.join(sorted(unknown))}")
    sources = sorted(args.corpus.glob("*.pdf"))
    if not sources:
        parser.error(f"no PDFs in {args.corpus}")
    with tempfile.TemporaryDirectory(prefix="pdfsmaller-hashes-") as work:
        for level in levels:
            for source in sources:
                print(level, source.name, output_hash(source, level, Path(work)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
