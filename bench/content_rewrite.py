"""Content-stream rewrite: bytes of content before and after, and time, on generated drawings and text documents
and on a corpus (measured only).

    python -m bench.content_rewrite [--corpus DIR] [--out bench/content_rewrite_results.md] [--verify]
                                    [--verify-also PDF ...]

Per file and level (lossless, lossy): stored bytes of every content stream (pages, forms, patterns, Type 3
glyphs) before and after ``structural.rewrite_content_streams``, and its time. With ``--verify`` each generated
file is also compressed through the engine with the rewrite added to the structural candidate, and the verdict
(renders pixel-identical at lossless) and output size recorded.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pikepdf
from pikepdf import Dictionary, Name

from services.compressor.engine import structural
from services.compressor.engine.analysis import bytes_by_kind

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus"


def _helvetica(pdf: pikepdf.Pdf) -> Dictionary:
    font = pdf.make_indirect(Dictionary(Type=Name.Font, Subtype=Name.Type1, BaseFont=Name.Helvetica))
    return Dictionary(Font=Dictionary(F1=font))


def cad_drawing(path: Path, paths: int = 6000, seed: int = 1) -> Path:
    """A CAD-style drawing: thousands of strokes with 6-decimal coordinates, every one in its own q/Q with its
    line width, cap, join and colour set again (as many CAD exporters write them)."""
    rng = random.Random(seed)
    out = [b"1 0 0 1 0 0 cm\n"]
    for _ in range(paths):
        x, y = rng.uniform(20, 1170), rng.uniform(20, 820)
        points = b" ".join(
            b"%.6f %.6f l" % (x + rng.uniform(-40, 40), y + rng.uniform(-40, 40)) for _ in range(rng.randint(1, 6))
        )
        colour = rng.choice([b"0.000000 0.000000 0.000000", b"1.000000 0.000000 0.000000"])
        out.append(b"q\n0.250000 w\n1 J\n1 j\n%s RG\n%.6f %.6f m %s S\nQ\n" % (colour, x, y, points))
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(1190, 842))
    pdf.pages[0].obj.Contents = pdf.make_stream(b"".join(out))
    pdf.save(path, compress_streams=True)
    return path


def text_document(path: Path, pages: int = 20, seed: int = 2) -> Path:
    """Text pages as some word processors write them: one text object per line placed with Tm, the font and
    colour set again on every line, the content split into several streams."""
    rng = random.Random(seed)
    words = [b"lorem", b"ipsum", b"dolor", b"sit", b"amet", b"consectetur", b"adipiscing", b"elit"]
    pdf = pikepdf.new()
    for _ in range(pages):
        pdf.add_blank_page(page_size=(595, 842))
        page = pdf.pages[-1]
        page.obj.Resources = _helvetica(pdf)
        lines = []
        for i in range(60):
            text = b" ".join(rng.choice(words) for _ in range(10))
            lines.append(
                b"BT\n/F1 10.000 Tf\n0.000 0.000 0.000 rg\n1.000 0.000 0.000 1.000 56.693 %.3f Tm\n(%s) Tj\nET\n"
                % (800 - 12.5 * i, text)
            )
        pieces = [pdf.make_stream(b"".join(lines[k : k + 20])) for k in range(0, 60, 20)]
        page.obj.Contents = pikepdf.Array(pieces)
    pdf.save(path, compress_streams=True)
    return path


def content_bytes(path: Path) -> int:
    with pikepdf.open(path) as pdf:
        return bytes_by_kind(pdf, path.stat().st_size)["content"]


def measure(path: Path, lossy: bool, work: Path) -> tuple[int, int, float]:
    """Content bytes before and after the rewrite (both written by the same final save), and its time."""
    before_path, after_path = work / "before.pdf", work / "after.pdf"
    with pikepdf.open(path) as pdf:
        structural.save(pdf, before_path)
    with pikepdf.open(path) as pdf:
        t = time.monotonic()
        structural.rewrite_content_streams(pdf, lossy=lossy)
        seconds = time.monotonic() - t
        structural.save(pdf, after_path)
    return content_bytes(before_path), content_bytes(after_path), seconds


def _with_rewrite(compress: Callable[..., object]) -> Callable[..., object]:
    """The engine's compress() with the content rewrite added to the structural candidate (what the pipeline
    change proposed in the report does)."""
    from services.compressor.engine import pipeline

    original = pipeline._Run._structural

    def patched(self: pipeline._Run, pdf: pikepdf.Pdf, profile: object) -> list[object]:
        saving = structural.content_saving(structural.rewrite_content_streams(pdf, lossy=profile.lossy))  # type: ignore[attr-defined]
        rest = original(self, pdf, profile)  # type: ignore[arg-type]
        return ([saving] if saving else []) + rest

    pipeline._Run._structural = patched  # type: ignore[method-assign,assignment]
    return compress


def verify_rows(files: list[Path], work: Path) -> list[str]:
    from services.compressor.engine import CompressOptions, compress

    rows = []
    for level in ("lossless", "medium"):
        for path in files:
            plain = compress(path, work / "plain.pdf", CompressOptions(level=level))
            rows.append((path, level, plain))
    run = _with_rewrite(compress)
    out = []
    for path, level, plain in rows:
        t = time.monotonic()
        rep = run(path, work / "new.pdf", CompressOptions(level=level))  # type: ignore[operator]
        seconds = time.monotonic() - t
        v = rep.verification  # type: ignore[attr-defined]
        out.append(
            f"| {path.name} | {level} | {plain.output_size_bytes} | {rep.output_size_bytes} | "  # type: ignore[attr-defined]
            f"{v.passed} | {v.identical_renders} | {plain.seconds:.2f} | {seconds:.2f} |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "content_rewrite_results.md")
    parser.add_argument("--verify", action="store_true")
    parser.add_argument("--verify-also", type=Path, nargs="*", default=[], help="more PDFs to verify")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as td:
        work = Path(td)
        generated = [cad_drawing(work / "gen-cad.pdf"), text_document(work / "gen-text.pdf")]
        corpus = sorted(args.corpus.glob("*.pdf")) if args.corpus.is_dir() else []
        lines = ["| file | level | content before | content after | ratio | seconds |", "|---|---|---|---|---|---|"]
        totals = {False: [0, 0, 0.0], True: [0, 0, 0.0]}
        for path in generated + corpus:
            for lossy in (False, True):
                try:
                    before, after, seconds = measure(path, lossy, work)
                except (pikepdf.PdfError, pikepdf.PasswordError) as exc:
                    lines.append(f"| {path.name} | {'lossy' if lossy else 'lossless'} | unreadable: {exc} | | | |")
                    break
                if path in corpus:
                    t = totals[lossy]
                    t[0], t[1], t[2] = t[0] + before, t[1] + after, t[2] + seconds
                ratio = after / before if before else 1.0
                level = "lossy" if lossy else "lossless"
                lines.append(f"| {path.name} | {level} | {before} | {after} | {ratio:.3f} | {seconds:.2f} |")
        for lossy, (b, a, s) in totals.items():
            lines.append(
                f"| corpus total | {'lossy' if lossy else 'lossless'} | {b} | {a} | {a / b if b else 1:.3f} | {s:.2f} |"
            )
        if args.verify:
            lines += ["", "| file | level | engine bytes | with rewrite | passed | identical | s | s with |"]
            lines += ["|---|---|---|---|---|---|---|---|", *verify_rows(generated + list(args.verify_also), work)]
    args.out.write_text("# Content-stream rewrite\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
