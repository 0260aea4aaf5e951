"""The PDF structure report: is it a PDF, is it encrypted, what active content it carries.

`inspect_pdf()` opens the file with pikepdf (qpdf) and walks every object's
dictionary, never decoding stream data, looking for JavaScript (/JS,
/S /JavaScript, the /JavaScript name tree, /AA additional actions, a JavaScript
/OpenAction), /Launch actions, embedded files, signature fields and form fields.
It reports the file as damaged when qpdf had to repair it (warnings).

Fails closed: a walk that cannot finish (an object it cannot read, the node or
depth budget, any exception, an attachment it cannot decode) gives a report with
`incomplete=True` and the reason in `problem`, never clean-looking flags that
merely reflect how far it got. The scanner then refuses the file or treats every
kind of active content as present (`IncompleteCheckPolicy`).

qpdf is C++ parsing untrusted input, so the service runs it through
`inspect_pdf_isolated()`: a fresh child interpreter with an address-space limit
and a wall-clock timeout. A child that crashes, exhausts or outlasts its limits
gives an incomplete report too.
"""

from __future__ import annotations

import enum
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pikepdf

from libs import sandbox
from libs.pdf_header import file_has_pdf_header

log = logging.getLogger(__name__)

# Bounds the walk over hostile files with millions of tiny objects.
MAX_NODES = 3_000_000
# Decoded attachment bytes written out for clamd; a larger total is a bomb, not a document.
MAX_ATTACHMENT_BYTES = 256 * 1024 * 1024
MAX_DEPTH = 64
# Prefix of `problem` when the walk met an exception qpdf does not raise for damaged data: a bug in
# this module (like the non-UTF-8 key names pikepdf refuses), which the fuzz harness reports.
UNEXPECTED = "unexpected error"
# What pikepdf raises for damaged or hostile data.
_PDF_ERRORS = (pikepdf.PdfError, ValueError, RuntimeError)
_PROBLEM_CHARS = 300
# The isolated check's result type when inspect_pdf raised AttachmentsTooLargeError.
ATTACHMENTS_TOO_LARGE = "attachments-too-large"
_NO_REPORT = "the check's process gave no readable report"


class IncompleteCheckPolicy(enum.Enum):
    """What the scanner does with a file whose structure check could not finish."""

    REFUSE = "refuse"  # fail the scan: INVALID_ARGUMENT / PDF_CHECK_INCOMPLETE
    ASSUME_PRESENT = "assume-present"  # accept it with every has_* flag set


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
    # The walk did not finish: the has_* flags above say nothing about the rest of the file.
    incomplete: bool = False
    # Why it did not finish, for the log (not sent on the wire).
    problem: str = ""

    def wire_fields(self) -> dict[str, Any]:
        """The fields of the scanner proto's PdfReport."""
        return {name: value for name, value in asdict(self).items() if name != "problem"}


def unfinished(problem: str, *, is_pdf: bool = False) -> PdfReport:
    """The report of a check that could not finish."""
    return PdfReport(is_pdf=is_pdf, damaged=True, incomplete=True, problem=problem[:_PROBLEM_CHARS])


def assume_active_content(report: PdfReport) -> PdfReport:
    """An incomplete report with every kind of content treated as present (what could not be checked)."""
    return replace(
        report,
        has_javascript=True,
        has_launch_action=True,
        has_embedded_files=True,
        has_signature=True,
        has_forms=True,
    )


class IncompleteCheck(Exception):
    """The walk cannot vouch for the whole file; the message says why."""


class AttachmentsTooLargeError(Exception):
    """Decoded attachments exceed MAX_ATTACHMENT_BYTES: they cannot all be scanned."""


def inspect_pdf(path: Path, attachments_dir: Path | None = None) -> PdfReport:
    """The structure report; with `attachments_dir`, every embedded file is also written there decoded.

    clamd does not unpack every attachment itself (it skips Flate streams of some
    subtypes), so the scanner hands it the decoded bytes of each one. Raises only
    AttachmentsTooLargeError; every other failure is an incomplete report.
    """
    if not file_has_pdf_header(path):
        return PdfReport()
    try:
        pdf = pikepdf.open(path)
    except pikepdf.PasswordError:
        # Parses far enough to know it needs a user password: a PDF we cannot look inside.
        return PdfReport(is_pdf=True, encrypted=True)
    except _PDF_ERRORS:
        # qpdf cannot parse it: a verdict, not a blind spot (the compressor opens its final input with qpdf too).
        return PdfReport()
    except Exception as error:  # noqa: BLE001 - untrusted bytes through a C++ binding: nothing may escape
        return unfinished(f"{UNEXPECTED} opening the file: {_describe(error)}")
    with pdf:
        return _inspect_open(pdf, attachments_dir)


def _inspect_open(pdf: pikepdf.Pdf, attachments_dir: Path | None) -> PdfReport:
    report = PdfReport(is_pdf=True)
    try:
        report.page_count = _page_count(pdf, report)
        _inspect_catalog(pdf, report)
        _walk_objects(pdf, report)
        if attachments_dir is not None and report.has_embedded_files:
            _extract_attachments(pdf, attachments_dir)
        report.damaged = report.damaged or bool(pdf.get_warnings())
    except AttachmentsTooLargeError:
        raise
    except IncompleteCheck as error:
        return unfinished(str(error), is_pdf=True)
    except _PDF_ERRORS as error:
        return unfinished(f"unreadable structure: {_describe(error)}", is_pdf=True)
    except Exception as error:  # noqa: BLE001 - a bug here must refuse the file, not wave it through
        return unfinished(f"{UNEXPECTED}: {_describe(error)}", is_pdf=True)
    return report


def _describe(error: BaseException) -> str:
    # ascii(): qpdf messages may quote the file's own bytes (surrogate escapes included).
    return f"{type(error).__name__}: {ascii(str(error))[1:-1]}"[:_PROBLEM_CHARS]


def _page_count(pdf: pikepdf.Pdf, report: PdfReport) -> int:
    """Pages; a broken page tree is damage, not a blind spot (the walk visits every object anyway)."""
    try:
        return len(pdf.pages)
    except _PDF_ERRORS:
        report.damaged = True
        return 0


def _inspect_catalog(pdf: pikepdf.Pdf, report: PdfReport) -> None:
    root = _entries(pdf.Root)
    names = root.get("/Names")
    if isinstance(names, pikepdf.Dictionary):
        name_trees = _entries(names)
        if "/JavaScript" in name_trees:
            report.has_javascript = True
        if "/EmbeddedFiles" in name_trees:
            report.has_embedded_files = True
    form = root.get("/AcroForm")
    if isinstance(form, pikepdf.Dictionary):
        form_entries = _entries(form)
        fields_ = form_entries.get("/Fields")
        if (isinstance(fields_, pikepdf.Array) and len(fields_) > 0) or "/XFA" in form_entries:
            report.has_forms = True


def _entries(obj: pikepdf.Object) -> dict[str, Any]:
    """A dictionary's (or stream dictionary's) entries by key.

    Through `items()`, never `get(key)`: a name whose bytes are not UTF-8 (`/X#ff`) comes back as a
    str with surrogate escapes, which pikepdf's `get` then refuses (TypeError).
    """
    source = obj.stream_dict if isinstance(obj, pikepdf.Stream) else obj
    return dict(source.items())


class _Walk:
    def __init__(self, report: PdfReport) -> None:
        self.report = report
        self.nodes = 0

    def visit(self, obj: Any, depth: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise IncompleteCheck(f"more than {MAX_NODES} objects: walk stopped")
        if depth > MAX_DEPTH:
            raise IncompleteCheck(f"objects nested deeper than {MAX_DEPTH}: walk stopped")
        if isinstance(obj, pikepdf.Stream | pikepdf.Dictionary):
            self.visit_dictionary(_entries(obj), depth)
        elif isinstance(obj, pikepdf.Array):
            for item in obj:
                self.visit_direct(item, depth + 1)

    def visit_direct(self, value: Any, depth: int) -> None:
        # Scalars come back as Python values; indirect objects are visited on their own.
        if isinstance(value, pikepdf.Object) and not value.is_indirect:
            self.visit(value, depth)

    def visit_dictionary(self, entries: dict[str, Any], depth: int) -> None:
        report = self.report
        kind = entries.get("/S")
        if "/JS" in entries or "/AA" in entries or kind == pikepdf.Name.JavaScript:
            report.has_javascript = True
        if kind == pikepdf.Name.Launch:
            report.has_launch_action = True
        type_ = entries.get("/Type")
        if (
            type_ == pikepdf.Name.EmbeddedFile
            or "/EF" in entries
            or entries.get("/Subtype") == pikepdf.Name.FileAttachment
        ):
            report.has_embedded_files = True
        if entries.get("/FT") == pikepdf.Name.Sig or type_ == pikepdf.Name.Sig:
            report.has_signature = True
        for value in entries.values():
            self.visit_direct(value, depth + 1)


def _walk_objects(pdf: pikepdf.Pdf, report: PdfReport) -> None:
    walk = _Walk(report)
    for obj in pdf.objects:
        try:
            walk.visit(obj, 0)
        except _PDF_ERRORS as error:
            objgen = getattr(obj, "objgen", ("?", "?"))
            raise IncompleteCheck(f"object {objgen[0]} {objgen[1]} unreadable: {_describe(error)}") from error


def _embedded_file_streams(pdf: pikepdf.Pdf) -> list[pikepdf.Stream]:
    """Streams typed /EmbeddedFile, and those a file specification's /EF names (/Type is optional there)."""
    found: dict[tuple[int, int], pikepdf.Stream] = {}
    for obj in pdf.objects:
        for stream in _embedded_streams_of(obj):
            found[stream.objgen] = stream
    return list(found.values())


def _embedded_streams_of(obj: pikepdf.Object) -> list[pikepdf.Stream]:
    if isinstance(obj, pikepdf.Stream) and _entries(obj).get("/Type") == pikepdf.Name.EmbeddedFile:
        return [obj]
    if not isinstance(obj, pikepdf.Dictionary):
        return []
    files = _entries(obj).get("/EF")
    if not isinstance(files, pikepdf.Dictionary):
        return []
    return [value for value in _entries(files).values() if isinstance(value, pikepdf.Stream)]


def _extract_attachments(pdf: pikepdf.Pdf, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    total = 0
    for number, stream in enumerate(_embedded_file_streams(pdf)):
        warnings_before = len(pdf.get_warnings())
        try:
            data = stream.read_bytes()
        except _PDF_ERRORS as error:
            raise IncompleteCheck(f"attachment {number} cannot be decoded: {_describe(error)}") from error
        # qpdf warns and hands back what it could (often nothing) for a truncated stream; a viewer may
        # recover more, so what clamd would see is not the attachment.
        if len(pdf.get_warnings()) > warnings_before:
            raise IncompleteCheck(f"attachment {number} decodes only partly")
        total += len(data)
        if total > MAX_ATTACHMENT_BYTES:
            raise AttachmentsTooLargeError(f"attachments decode to more than {MAX_ATTACHMENT_BYTES} bytes")
        (out_dir / f"attachment-{number:05d}.bin").write_bytes(data)


def inspect_pdf_isolated(
    path: Path,
    attachments_dir: Path | None = None,
    *,
    timeout: float = 60.0,
    memory_bytes: int = 1024 * 1024 * 1024,
) -> PdfReport:
    """`inspect_pdf` in a child interpreter (libs/sandbox.py) with a memory limit and a timeout.

    A child that does not finish gives an incomplete report. Raises
    AttachmentsTooLargeError when the attachments could not all be written out.
    """
    job = {"path": str(path), "attachments_dir": str(attachments_dir) if attachments_dir is not None else None}
    limits = sandbox.ChildLimits(wall_seconds=timeout, memory_bytes=memory_bytes)
    outcome = sandbox.run_child("services.scanner.check_child", job, limits, env=_child_env())
    return _report_from_outcome(outcome, timeout)


def _report_from_outcome(outcome: sandbox.Outcome, timeout: float) -> PdfReport:
    """The child's report; any way the child failed gives an incomplete one."""
    if outcome.ending is sandbox.Ending.WALL_TIMEOUT:
        return unfinished(f"the check timed out after {timeout:g} s")
    if outcome.ending is sandbox.Ending.UNREADABLE_OUTPUT:
        return unfinished(_NO_REPORT)
    if outcome.returncode != 0:
        code = outcome.returncode if outcome.returncode is not None else -1
        log.warning("PDF structure check failed (exit %d): %s", code, outcome.stderr_tail[-2000:])
        how = f"killed by signal {-code}" if code < 0 else f"exited {code}"
        return unfinished(f"the check's process {how} (memory limit or crash)")
    return _report_from_result(outcome.result)


def _report_from_result(result: dict[str, Any] | None) -> PdfReport:
    if result is None:
        return unfinished(_NO_REPORT)
    if result.get("type") == ATTACHMENTS_TOO_LARGE:
        raise AttachmentsTooLargeError("attachments decode to more than the scanner will unpack")
    try:
        return PdfReport(**result["report"])
    except (KeyError, TypeError):
        return unfinished(_NO_REPORT)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The child must import this package the same way the parent did.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")]))
    return env
