"""Coverage-guided fuzzing of the PDF structure check (atheris / libFuzzer).

The invariant: `inspect_pdf` on any bytes gives either a complete report or an
explicit incomplete verdict (or refuses oversized attachments); no exception
escapes, and an incomplete verdict never comes from an exception the walk did not
expect (that is a bug which refuses good files, like issue 7's non-UTF-8 names).

    python -m services.scanner.fuzz_structure [libFuzzer flags] [CORPUS_DIR ...]

Without a corpus folder the seeds go to a temporary one. Seeds: small PDFs built
here (each kind of active content, an odd key name) plus tests/data/*.pdf.
A finding prints the traceback and saves the input as `crash-<sha1>` under
`-artifact_prefix`; the process exits non-zero.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["services.scanner"]):
    from services.scanner import pdf_checks

from services.scanner.tests import pdfs

TEST_DATA = Path(__file__).resolve().parents[2] / "tests" / "data"
SEEDS: dict[str, Callable[[], bytes]] = {
    "plain": lambda: pdfs.plain(2),
    "launch": pdfs.with_launch_action,
    "javascript": pdfs.with_open_action_javascript,
    "javascript-names": pdfs.with_javascript_name_tree,
    "additional-action": pdfs.with_page_additional_action,
    "form-signature": pdfs.with_form_and_signature_field,
    "attachment": lambda: pdfs.with_embedded_file(b"attached " * 20, compress=True),
    "launch-odd-key": pdfs.launch_with_non_utf8_key,
}


class InvariantBroken(AssertionError):
    """The structure check gave an answer it must never give."""


def write_seeds(corpus: Path) -> int:
    """Write the seed files into `corpus` (kept if already there); returns how many there are."""
    corpus.mkdir(parents=True, exist_ok=True)
    for name, build in SEEDS.items():
        seed = corpus / f"seed-{name}.pdf"
        if not seed.exists():
            seed.write_bytes(build())
    for sample in sorted(TEST_DATA.glob("*.pdf")):
        if not (corpus / f"seed-{sample.name}").exists():
            shutil.copyfile(sample, corpus / f"seed-{sample.name}")
    return len(SEEDS) + len(list(TEST_DATA.glob("*.pdf")))


def check_invariant(report: pdf_checks.PdfReport) -> None:
    if report.incomplete:
        if not report.problem:
            raise InvariantBroken("an incomplete report must say why")
        if report.problem.startswith(pdf_checks.UNEXPECTED):
            raise InvariantBroken(f"the walk met an exception it does not handle: {report.problem}")
        return
    if not report.is_pdf and (report.encrypted or _any_content(report)):
        raise InvariantBroken(f"not a PDF, yet content was reported: {report}")


def _any_content(report: pdf_checks.PdfReport) -> bool:
    return any(
        (
            report.has_javascript,
            report.has_launch_action,
            report.has_embedded_files,
            report.has_signature,
            report.has_forms,
        )
    )


class Harness:
    def __init__(self, work_dir: Path) -> None:
        self.input_path = work_dir / "input.pdf"
        self.attachments = work_dir / "attachments"

    def test_one_input(self, data: bytes) -> None:
        self.input_path.write_bytes(data)
        shutil.rmtree(self.attachments, ignore_errors=True)
        try:
            report = pdf_checks.inspect_pdf(self.input_path, self.attachments)
        except pdf_checks.AttachmentsTooLargeError:
            return  # an explicit verdict: refused as too large to scan
        check_invariant(report)


def main(argv: list[str]) -> None:
    flags = [arg for arg in argv if arg.startswith("-")]
    corpora = [arg for arg in argv if not arg.startswith("-")]
    with tempfile.TemporaryDirectory(prefix="fuzz-structure-") as work:
        if not corpora:
            corpora = [str(Path(work) / "corpus")]
        write_seeds(Path(corpora[0]))
        harness = Harness(Path(work))
        atheris.Setup([sys.argv[0], *flags, *corpora], harness.test_one_input)
        atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv[1:])
