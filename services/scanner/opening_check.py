"""Would the compressor refuse this file as soon as it opens it? Asked of the compressor's own opening code.

The structure check (pdf_checks) reads files with qpdf alone. When qpdf cannot open a file (it needs a
user password, or its structure does not parse), the job usually fails ENCRYPTED_PDF or MALFORMED_PDF,
but not always: the engine also reads the file with PDFium and pypdf, and PDFium rebuilds files qpdf
gives up on (a broken cross-reference stream, for one). So the verdict is the engine's `open_input` run
on the same bytes, without a password as every job runs, in a child process under limits (three parsers
of untrusted bytes). The job runs the same code on the same bytes, so it would fail with the same reason.
A file that opening finds damaged but PDFium draws as it is (`readable_as_is`) is not refused: its job
returns it unchanged (`DAMAGED_PDF`).

Run as `python -m services.scanner.opening_check` by `OpeningCheck` (libs/sandbox.py); not an interface.
"""

from __future__ import annotations

import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from libs import sandbox
from libs.sandbox import ChildLimits, Ending

# The reasons the engine's opening gives for a file (what the gateway refuses an upload with).
OPENING_REFUSALS = frozenset({"NOT_A_PDF", "ENCRYPTED_PDF", "MALFORMED_PDF"})
# Within the engine's own default limits (services/compressor/engine/options.py Limits: 1 GiB), and short:
# the scan answers within the gateway's deadline. A check that hits a limit refuses nothing.
DEFAULT_LIMITS = ChildLimits(wall_seconds=30.0, cpu_seconds=30, memory_bytes=1 << 30)
CHILD_MODULE = "services.scanner.opening_check"
# The child's working directory, so the module always imports.
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class OpeningCheck:
    """Callable: the engine's reason for refusing the file at opening, or "" when it opens the file (or the
    check could not tell: crashed, limits, an error the engine would not call a fact about the file)."""

    limits: ChildLimits = DEFAULT_LIMITS

    def __call__(self, path: Path) -> str:
        outcome = sandbox.run_child(CHILD_MODULE, {"path": str(path.resolve())}, self.limits, cwd=_PROJECT_ROOT)
        if outcome.ending is not Ending.FINISHED or outcome.result is None:
            return ""
        reason = outcome.result.get("reason", "")
        return reason if reason in OPENING_REFUSALS else ""


def _opening_reason(path: Path) -> str:
    """In the child: what the engine's opening says of the file, as the job would run it."""
    import pikepdf
    import pypdfium2 as pdfium

    from services.compressor.engine.errors import MALFORMED_PDF, EngineError
    from services.compressor.engine.opening import open_input, readable_as_is
    from services.compressor.engine.options import Limits

    # What the engine's pipeline turns into MALFORMED_PDF while it reads its input (pipeline._INPUT_DAMAGE).
    input_damage = (pikepdf.PdfError, pdfium.PdfiumError, zlib.error)
    with tempfile.TemporaryDirectory(prefix="pdfsmaller-opening-") as workdir:
        try:
            opened = open_input(path, None, Path(workdir))
        except EngineError as refusal:
            reason = refusal.reason
        except input_damage:
            reason = MALFORMED_PDF
        else:
            opened.pdf.close()
            return ""
    # A damaged file PDFium still draws as it is becomes a job that returns it unchanged (DAMAGED_PDF).
    if reason == MALFORMED_PDF and readable_as_is(path, None, Limits().max_pages) is not None:
        return ""
    return reason


def _load_libraries() -> None:
    """Everything the opening reads with, loaded before the limits apply (a low memory limit then fails on
    the file, not on importing code)."""
    import pikepdf  # noqa: F401
    import pypdf  # noqa: F401
    import pypdfium2  # noqa: F401

    import services.compressor.engine.opening  # noqa: F401


def main() -> int:
    child = sandbox.enter_child()
    _load_libraries()
    child.apply_limits()
    child.send({"type": "verdict", "reason": _opening_reason(Path(child.job["path"]))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
