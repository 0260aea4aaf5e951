"""The PDF structure report: is it a PDF, is it encrypted, what active content it carries.

`inspect_pdf()` opens the file with pikepdf (qpdf) and walks every object's
dictionary, never decoding stream data, looking for JavaScript (/JS,
/S /JavaScript, the /JavaScript name tree, /AA additional actions, a JavaScript
/OpenAction), /Launch actions, embedded files, signature fields and form fields.
It reports the file as damaged when qpdf had to repair it (warnings) or an
object could not be read.

qpdf is C++ parsing untrusted input, so the service runs it through
`inspect_pdf_isolated()`: a fresh child interpreter with an address-space limit
and a wall-clock timeout. A file that crashes, exhausts or outlasts the child
is reported as not a usable PDF (`is_pdf=False, damaged=True`).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pikepdf

log = logging.getLogger(__name__)

# The PDF spec lets the header appear anywhere in the first 1024 bytes.
HEADER_WINDOW = 1024
# Bounds the walk over hostile files with millions of tiny objects.
MAX_NODES = 3_000_000
# Decoded attachment bytes written out for clamd; a larger total is a bomb, not a document.
MAX_ATTACHMENT_BYTES = 256 * 1024 * 1024
_MAX_DEPTH = 64


@dataclass
class PdfReport:
    is_pdf: bool = False
    encrypted: bool = False
    page_count: int = 0
    has_javascript: bool = False
    has_launch_action: bool = False
    has_embedded_files: bool = False
    has_signature: bool = False
    has_forms: bool = False
    damaged: bool = False


def has_pdf_header(path: Path) -> bool:
    with path.open("rb") as handle:
        return b"%PDF-" in handle.read(HEADER_WINDOW)


def inspect_pdf(path: Path, attachments_dir: Path | None = None) -> PdfReport:
    """The structure report; with `attachments_dir`, every embedded file is also written there decoded.

    clamd does not unpack every attachment itself (it skips Flate streams of some
    subtypes), so the scanner hands it the decoded bytes of each one.
    """
    report = PdfReport()
    if not has_pdf_header(path):
        return report
    try:
        pdf = pikepdf.open(path)
    except pikepdf.PasswordError:
        # Parses far enough to know it needs a user password: a PDF we cannot look inside.
        report.is_pdf = True
        report.encrypted = True
        return report
    except (pikepdf.PdfError, ValueError, RuntimeError):
        return report
    with pdf:
        report.is_pdf = True
        try:
            report.page_count = len(pdf.pages)
        except (pikepdf.PdfError, ValueError, RuntimeError):
            report.damaged = True
        _inspect_catalog(pdf, report)
        _walk_objects(pdf, report)
        if attachments_dir is not None and report.has_embedded_files:
            _extract_attachments(pdf, attachments_dir, report)
        if pdf.get_warnings():
            report.damaged = True
    return report


def _inspect_catalog(pdf: pikepdf.Pdf, report: PdfReport) -> None:
    try:
        root = pdf.Root
        names = root.get("/Names")
        if isinstance(names, pikepdf.Dictionary):
            if "/JavaScript" in names:
                report.has_javascript = True
            if "/EmbeddedFiles" in names:
                report.has_embedded_files = True
        form = root.get("/AcroForm")
        if isinstance(form, pikepdf.Dictionary):
            fields = form.get("/Fields")
            if (isinstance(fields, pikepdf.Array) and len(fields) > 0) or "/XFA" in form:
                report.has_forms = True
    except (pikepdf.PdfError, ValueError, RuntimeError):
        report.damaged = True


class _Walk:
    def __init__(self, report: PdfReport) -> None:
        self.report = report
        self.nodes = 0

    def visit(self, obj: Any, depth: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES or depth > _MAX_DEPTH:
            return
        if isinstance(obj, pikepdf.Stream):
            self.visit_dictionary(obj.stream_dict, depth)
        elif isinstance(obj, pikepdf.Dictionary):
            self.visit_dictionary(obj, depth)
        elif isinstance(obj, pikepdf.Array):
            for item in obj:
                # Scalars come back as Python values; indirect objects are visited on their own.
                if isinstance(item, pikepdf.Object) and not item.is_indirect:
                    self.visit(item, depth + 1)

    def visit_dictionary(self, obj: pikepdf.Dictionary, depth: int) -> None:
        report = self.report
        keys = set(obj.keys())
        kind = obj.get("/S")
        if "/JS" in keys or kind == pikepdf.Name.JavaScript:
            report.has_javascript = True
        if "/AA" in keys:
            report.has_javascript = True
        if kind == pikepdf.Name.Launch:
            report.has_launch_action = True
        type_ = obj.get("/Type")
        if type_ == pikepdf.Name.EmbeddedFile or "/EF" in keys or obj.get("/Subtype") == pikepdf.Name.FileAttachment:
            report.has_embedded_files = True
        if obj.get("/FT") == pikepdf.Name.Sig or type_ == pikepdf.Name.Sig:
            report.has_signature = True
        for key in keys:
            value = obj.get(key)
            if isinstance(value, pikepdf.Object) and not value.is_indirect:
                self.visit(value, depth + 1)


def _embedded_file_streams(pdf: pikepdf.Pdf) -> list[pikepdf.Stream]:
    """Streams typed /EmbeddedFile, and those a file specification's /EF names (/Type is optional there)."""
    found: dict[tuple[int, int], pikepdf.Stream] = {}
    for obj in pdf.objects:
        try:
            if isinstance(obj, pikepdf.Stream) and obj.stream_dict.get("/Type") == pikepdf.Name.EmbeddedFile:
                found[obj.objgen] = obj
            elif isinstance(obj, pikepdf.Dictionary) and isinstance(obj.get("/EF"), pikepdf.Dictionary):
                for value in obj.EF.values():
                    if isinstance(value, pikepdf.Stream):
                        found[value.objgen] = value
        except (pikepdf.PdfError, ValueError, RuntimeError):
            continue
    return list(found.values())


def _extract_attachments(pdf: pikepdf.Pdf, out_dir: Path, report: PdfReport) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    total = 0
    for number, stream in enumerate(_embedded_file_streams(pdf)):
        try:
            data = stream.read_bytes()
        except (pikepdf.PdfError, ValueError, RuntimeError):
            # Undecodable: clamd still saw the raw bytes in the whole-file scan.
            report.damaged = True
            continue
        total += len(data)
        if total > MAX_ATTACHMENT_BYTES:
            raise AttachmentsTooLargeError(f"attachments decode to more than {MAX_ATTACHMENT_BYTES} bytes")
        (out_dir / f"attachment-{number:05d}.bin").write_bytes(data)


class AttachmentsTooLargeError(Exception):
    """Decoded attachments exceed MAX_ATTACHMENT_BYTES: they cannot all be scanned."""


def _walk_objects(pdf: pikepdf.Pdf, report: PdfReport) -> None:
    walk = _Walk(report)
    for obj in pdf.objects:
        try:
            walk.visit(obj, 0)
        except (pikepdf.PdfError, ValueError, RuntimeError):
            report.damaged = True
        if walk.nodes > MAX_NODES:
            log.warning("structure walk stopped after %d nodes", MAX_NODES)
            return


def inspect_pdf_isolated(
    path: Path,
    attachments_dir: Path | None = None,
    *,
    timeout: float = 60.0,
    memory_bytes: int = 1024 * 1024 * 1024,
) -> PdfReport:
    """`inspect_pdf` in a child interpreter with a memory limit and a timeout.

    Raises AttachmentsTooLargeError when the attachments could not all be written out.
    """
    command = [sys.executable, "-m", "services.scanner.pdf_checks", str(path), str(memory_bytes)]
    if attachments_dir is not None:
        command.append(str(attachments_dir))
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False, env=_child_env())
    except subprocess.TimeoutExpired:
        log.warning("PDF structure check timed out after %.0f s", timeout)
        return PdfReport(is_pdf=False, damaged=True)
    if done.returncode == _EXIT_ATTACHMENTS_TOO_LARGE:
        raise AttachmentsTooLargeError("attachments decode to more than the scanner will unpack")
    if done.returncode != 0:
        log.warning(
            "PDF structure check failed (exit %d): %s", done.returncode, done.stderr[-2000:].decode(errors="replace")
        )
        return PdfReport(is_pdf=False, damaged=True)
    return PdfReport(**json.loads(done.stdout))


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The child must import this package the same way the parent did.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")]))
    return env


_EXIT_ATTACHMENTS_TOO_LARGE = 3


def _main(argv: list[str]) -> int:
    path, memory_bytes = Path(argv[0]), int(argv[1])
    attachments_dir = Path(argv[2]) if len(argv) > 2 else None
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    try:
        sys.stdout.write(json.dumps(asdict(inspect_pdf(path, attachments_dir))))
    except AttachmentsTooLargeError:
        return _EXIT_ATTACHMENTS_TOO_LARGE
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
