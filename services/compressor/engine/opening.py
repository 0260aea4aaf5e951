"""Opening the input safely: type check, password, repair, second-parser page count, signatures."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pikepdf

from libs.pdf_header import file_has_pdf_header

from .errors import ENCRYPTED_PDF, MALFORMED_PDF, NOT_A_PDF, EngineError

if TYPE_CHECKING:
    import pypdfium2 as pdfium

log = logging.getLogger(__name__)

# A PDF header may be preceded by junk; readers accept it within the first 1 KiB.


@dataclass
class OpenedPdf:
    pdf: pikepdf.Pdf
    pages: int  # the page count every reader must agree on (the largest any reader finds)
    reader_pages: dict[str, int | None] = field(default_factory=dict)
    repaired: bool = False
    warnings: list[str] = field(default_factory=list)
    encrypted: bool = False  # input was encrypted (owner-password-only or opened with the caller's password)


def check_header(path: Path) -> None:
    if not file_has_pdf_header(path):
        raise EngineError(NOT_A_PDF, "The file is not a PDF document.")


def count_pages_pdfium(path: Path, password: str | None) -> int | None:
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(str(path), password=password)
    except Exception:  # noqa: BLE001 - any failure just means "this reader finds nothing"
        return None
    try:
        return len(doc)
    finally:
        doc.close()


def count_pages_pypdf(path: Path, password: str | None) -> int | None:
    """Second, independent parser (pure Python): pikepdf/qpdf silently loses pages on some damaged files."""
    import pypdf

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        # From an open file, pypdf reads what it needs; given a path it reads the whole file into memory first,
        # and that copy lived until the garbage collector broke the reader's cycles (a file-sized peak).
        with warnings.catch_warnings(), open(path, "rb") as file:
            warnings.simplefilter("ignore")
            reader = pypdf.PdfReader(file, strict=False)
            if reader.is_encrypted:
                reader.decrypt(password or "")
            return len(reader.pages)
    except Exception:  # noqa: BLE001
        return None


def count_pages_pikepdf(path: Path, password: str | None) -> int | None:
    try:
        with pikepdf.open(path, password=password or "") as pdf:
            return len(pdf.pages)
    except Exception:  # noqa: BLE001
        return None


def complete_trailer(pdf: pikepdf.Pdf) -> pikepdf.Pdf:
    """A trailer qpdf rebuilt from a file cut before its trailer has no /Size; qpdf then writes an xref stream
    without one, which no reader (qpdf included) accepts. Any value will do: qpdf writes the real count."""
    if "/Size" not in pdf.trailer:
        pdf.trailer.Size = 0
    return pdf


def reopen(path: Path, password: str | None) -> pikepdf.Pdf:
    """Open the input again (for each candidate), repaired the same way as the first time."""
    return complete_trailer(pikepdf.open(path, password=password or "", attempt_recovery=True))


def _open_pikepdf(path: Path, password: str | None) -> pikepdf.Pdf:
    try:
        return complete_trailer(pikepdf.open(path, password=password or "", attempt_recovery=True))
    except pikepdf.PasswordError:
        msg = "The PDF is password-protected." if not password else "The password does not open this PDF."
        raise EngineError(ENCRYPTED_PDF, msg) from None
    except (pikepdf.PdfError, OSError, RuntimeError, ValueError) as exc:
        log.info("pikepdf cannot open input: %s", exc)
        raise EngineError(MALFORMED_PDF, "The PDF is damaged and could not be repaired.") from None


# Long side of the thumbnail each page is drawn at to prove it renders: enough to run the page's whole content
# stream and decode its images, small enough that a 20,000-page file costs seconds, not minutes.
_PROOF_RENDER_PIXELS = 64


@dataclass(frozen=True)
class AsIs:
    """How PDFium reads the input as it is: pages it finds, pages it loads and draws."""

    pages: int
    drawn: int


def readable_as_is(path: Path, password: str | None, max_pages: int) -> AsIs | None:
    """How PDFium reads the input as it is, when it opens it and draws at least one page; else None (unreadable).

    For an input damaged in a way the rewrite cannot repair safely: if a reader shows it as it is, the user is
    better served by the file returned unchanged than by a failed job."""
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(str(path), password=password)
    except Exception:  # noqa: BLE001 - any failure means "not readable as it is"
        return None
    try:
        pages = len(doc)
        drawn = sum(_draws(doc, index) for index in range(min(pages, max_pages)))
    finally:
        doc.close()
    return AsIs(pages, drawn) if drawn else None


def _draws(doc: pdfium.PdfDocument, index: int) -> bool:
    """Whether PDFium loads and draws the page (as a thumbnail: the whole content stream runs, images decode)."""
    try:
        page = doc[index]
    except Exception:  # noqa: BLE001
        return False
    try:
        width, height = page.get_size()
        page.render(scale=_PROOF_RENDER_PIXELS / max(width, height, 1.0)).close()
        return True
    except Exception:  # noqa: BLE001
        return False
    finally:
        page.close()


def _repair_with_pdfium(path: Path, password: str | None, dest: Path) -> bool:
    """Rewrite the input with pdfium's own recovery (it rebuilds page trees qpdf gives up on)."""
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(str(path), password=password)
        try:
            if len(doc) == 0:
                return False
            doc.save(str(dest))
        finally:
            doc.close()
        return True
    except Exception:  # noqa: BLE001
        return False


def open_input(path: Path, password: str | None, workdir: Path) -> OpenedPdf:
    check_header(path)
    counts = {
        "pikepdf": count_pages_pikepdf(path, password),
        "pdfium": count_pages_pdfium(path, password),
        "pypdf": count_pages_pypdf(path, password),
    }
    best = max((c for c in counts.values() if c), default=0)
    notes: list[str] = []
    source = path
    repaired = False
    if counts["pikepdf"] is None and best == 0:
        # Nobody reads a page: tell encrypted apart from damaged.
        _open_pikepdf(path, password)
        raise EngineError(MALFORMED_PDF, "The PDF is damaged: no page could be recovered.")
    if (counts["pikepdf"] or 0) < best:
        # qpdf lost pages (or the page tree) that another reader recovers: let pdfium rebuild the file first.
        fixed = workdir / "repaired.pdf"
        if counts["pdfium"] == best and _repair_with_pdfium(path, password, fixed):
            source = fixed
            repaired = True
            notes.append(f"page tree rebuilt by pdfium ({counts['pikepdf'] or 0} -> {best} pages)")
        else:
            raise EngineError(MALFORMED_PDF, "The PDF is damaged: some pages could not be recovered.")
    pdf = _open_pikepdf(source, password if source == path else None)
    if len(pdf.pages) != best:
        pdf.close()
        raise EngineError(MALFORMED_PDF, "The PDF is damaged: some pages could not be recovered.")
    qpdf_warnings = list(pdf.get_warnings()) if hasattr(pdf, "get_warnings") else []
    if qpdf_warnings:
        repaired = True
        notes.append(f"{len(qpdf_warnings)} structural problem(s) repaired while reading")
    return OpenedPdf(
        pdf=pdf,
        pages=best,
        reader_pages=counts,
        repaired=repaired,
        warnings=notes,
        encrypted=pdf.is_encrypted,
    )
