"""Coverage-guided fuzzing of the engine's handling of untrusted bytes (atheris / libFuzzer).

Each input goes through what the pipeline does with an input before and while it builds candidates: opening
(`open_input`, and on a damaged file the as-is render proof), the bomb caps (`check_bombs`, with small
`Limits`), signature detection and usage-rights removal, image placements and font usage (the content-stream
walks), the bounded inflation of every Flate stream, the pruning of unused resources, and the content-stream
rewrite (content.py's tokenizer).

The invariant: every input ends in a result or an `EngineError` with a known reason code. The PDF libraries'
own errors on damaged data (what `pipeline._reading_input` maps to MALFORMED_PDF) count as "the file is
damaged", as in the pipeline; any other exception, a hang (`-timeout`) or a memory blow-up (`-rss_limit_mb`) is
a finding.

    python -m services.compressor.fuzz_engine [libFuzzer flags] [CORPUS_DIR ...]

Without a corpus folder the seeds go to a temporary one. Seeds: small PDFs from
services/compressor/tests/builders.py plus tests/data/*.pdf. A finding prints the traceback and saves the input
as `crash-<sha1>` (or `timeout-`, `oom-`) under `-artifact_prefix`; the process exits non-zero.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["services.compressor.engine"]):
    import pikepdf
    from pikepdf import Array, Name, Stream

    from services.compressor.engine import (
        fontusage,
        inflate,
        opening,
        pipeline,
        placements,
        resources,
        safety,
        structural,
    )
    from services.compressor.engine.errors import MALFORMED_PDF, REASONS, EngineError
    from services.compressor.engine.options import Limits

from services.compressor.tests import builders

TEST_DATA = Path(__file__).resolve().parents[2] / "tests" / "data"
# The engine's own caps, small: a bomb must be caught by them, not by libFuzzer's memory limit.
FUZZ_LIMITS = Limits(max_image_pixels=1 << 22, max_decoded_stream_bytes=1 << 20, max_pages=64, max_objects=20_000)

SEEDS: dict[str, Callable[[Path], Path]] = {
    "image": lambda p: builders.image_pdf(p, builders.photo(24, 16), display_pt=(72, 48)),
    "bitonal": lambda p: builders.bitonal_pdf(p, width=64, height=48),
    "text": lambda p: builders.text_pdf(p, pages=2),
    "text-object-streams": lambda p: builders.text_pdf(p, pages=2, compress=True),
    "minimal": builders.minimal_pdf,
    "forms": builders.interactive_pdf,
    "signed": builders.signed_pdf,
    "certified": lambda p: builders.rights_pdf(p, "DocMDP"),
    "usage-rights": lambda p: builders.rights_pdf(p, "UR3"),
    "nested-forms": builders.nested_forms_pdf,
    "type3-pattern": builders.type3_pattern_pdf,
    "bomb": lambda p: builders.flate_bomb_pdf(p, 2 << 20),
    "bomb-trailing-bytes": lambda p: builders.flate_bomb_pdf(p, 2 << 20, trailing=b"\r\nendstream junk"),
}


class InvariantBroken(AssertionError):
    """The engine gave an answer it must never give."""


def write_seeds(corpus: Path) -> int:
    """Write the seed files into `corpus` (kept if already there); returns how many there are."""
    corpus.mkdir(parents=True, exist_ok=True)
    for name, build in SEEDS.items():
        seed = corpus / f"seed-{name}.pdf"
        if not seed.exists():
            build(seed)
    samples = sorted(TEST_DATA.glob("*.pdf"))
    for sample in samples:
        if not (corpus / f"seed-{sample.name}").exists():
            shutil.copyfile(sample, corpus / f"seed-{sample.name}")
    return len(SEEDS) + len(samples)


def check_inflation(pdf: pikepdf.Pdf, limit: int) -> None:
    """Every Flate stream inflated both ways the engine may (zlib and raw deflate), bounded by `limit`."""
    for obj in pdf.objects:
        if not isinstance(obj, Stream) or not _is_flate(obj):
            continue
        try:
            raw = obj.read_raw_bytes()
        except pikepdf.PdfError:
            continue
        for wbits in (inflate.ZLIB, inflate.RAW_DEFLATE):
            data = inflate.inflate_prefix(raw, limit, wbits)
            if len(data) > limit + (1 << 20):
                raise InvariantBroken(f"inflate_prefix gave {len(data)} bytes for a limit of {limit}")
            inflate.inflated_size_exceeds(raw, limit, wbits)


def _is_flate(obj: Stream) -> bool:
    f = obj.stream_dict.get("/Filter")
    return Name.FlateDecode in (list(f) if isinstance(f, Array) else [f])


# What a candidate does with the opened input after the caps, in the pipeline's order; each can be skipped
# (`--skip=font-usage`) so a long run goes on past a finding that waits for its fix.
WALKS: dict[str, Callable[[pikepdf.Pdf, Limits], object]] = {
    "signatures": lambda pdf, limits: safety.is_signed(pdf),
    "usage-rights": lambda pdf, limits: safety.drop_usage_rights(pdf),
    "placements": lambda pdf, limits: placements.find_placements(pdf),
    "font-usage": lambda pdf, limits: fontusage.find_font_usage(pdf),
    "inflate": lambda pdf, limits: check_inflation(pdf, limits.max_decoded_stream_bytes),
    "unused-resources": lambda pdf, limits: resources.prune_unused_resources(pdf),
    # Last: it rewrites the streams the walks above read (content.py's own tokenizer, lossy rounding included).
    "content-rewrite": lambda pdf, limits: structural.rewrite_content_streams(pdf, lossy=True),
}


class Harness:
    def __init__(self, work_dir: Path, limits: Limits = FUZZ_LIMITS, skip: frozenset[str] = frozenset()) -> None:
        self.input_path = work_dir / "input.pdf"
        self.work = work_dir / "work"
        self.limits = limits
        self.skip = skip

    def test_one_input(self, data: bytes) -> None:
        self.input_path.write_bytes(data)
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir()
        try:
            self._run()
        except EngineError as exc:
            if exc.reason not in REASONS:
                raise InvariantBroken(f"unknown reason code {exc.reason!r}") from exc

    def _run(self) -> None:
        """What the pipeline does with the input: the damage contract of `_open_readable`, then the walks a
        candidate runs, under the same contract (damage found there drops the candidate, nothing else)."""
        try:
            with pipeline._reading_input():
                self._open_and_walk()
        except EngineError as exc:
            if exc.reason == MALFORMED_PDF:
                opening.readable_as_is(self.input_path, None, self.limits.max_pages)
            raise

    def _open_and_walk(self) -> None:
        opened = opening.open_input(self.input_path, None, self.work)
        with opened.pdf as pdf:
            safety.check_bombs(pdf, self.limits)  # the caps come first: nothing below runs on a bomb
            for name, walk in WALKS.items():
                if name not in self.skip:
                    walk(pdf, self.limits)


def parse_skip(argv: list[str]) -> frozenset[str]:
    """The walks named by `--skip=a,b` (ours; libFuzzer's own flags have one dash)."""
    names = {name for arg in argv if arg.startswith("--skip=") for name in arg.removeprefix("--skip=").split(",")}
    unknown = names - WALKS.keys()
    if unknown:
        raise SystemExit(f"--skip: unknown walk(s) {sorted(unknown)}; walks: {', '.join(WALKS)}")
    return frozenset(names)


def main(argv: list[str]) -> None:
    skip = parse_skip(argv)
    flags = [arg for arg in argv if arg.startswith("-") and not arg.startswith("--skip=")]
    corpora = [arg for arg in argv if not arg.startswith("-")]
    with tempfile.TemporaryDirectory(prefix="fuzz-engine-") as work:
        if not corpora:
            corpora = [str(Path(work) / "corpus")]
        write_seeds(Path(corpora[0]))
        harness = Harness(Path(work), skip=skip)
        atheris.Setup([sys.argv[0], *flags, *corpora], harness.test_one_input)
        atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv[1:])
