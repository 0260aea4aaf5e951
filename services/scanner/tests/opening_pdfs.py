"""PDFs for the compressor's opening verdict (scanner opening_failure, the gateway's refusals): encrypted
with a user password, owner-password only, damaged in ways the compressor repairs, and unreadable."""

from __future__ import annotations

import io
from typing import Any

import pikepdf

from services.scanner.tests import pdfs


def _saved(pdf: pikepdf.Pdf, **options: Any) -> bytes:
    out = io.BytesIO()
    pdf.save(out, **options)
    return out.getvalue()


def user_password() -> bytes:
    return _saved(pdfs.blank(2), encryption=pikepdf.Encryption(user="secret", owner="owner"))


def owner_password_only() -> bytes:
    """Opens without a password (printing, copying... restricted): not encrypted for anyone."""
    return _saved(pdfs.blank(2), encryption=pikepdf.Encryption(user="", owner="owner"))


def wrong_xref_offset() -> bytes:
    """Its startxref points nowhere: qpdf rebuilds the cross-reference table (damaged, repaired)."""
    data = pdfs.plain(2)
    return data[: data.rindex(b"startxref")] + b"startxref\n123456\n%%EOF\n"


def broken_xref_stream() -> bytes:
    """Objects in object streams, the cross-reference stream's /Type broken: qpdf cannot open it at all, PDFium
    rebuilds it, and the compressor works on PDFium's rebuild. "qpdf cannot open it" is not MALFORMED_PDF."""
    data = _saved(pdfs.blank(2), object_stream_mode=pikepdf.ObjectStreamMode.generate)
    assert data.count(b"/Type /XRef") == 1
    return data.replace(b"/Type /XRef", b"/Type /XReX")


def unreadable() -> bytes:
    return b"%PDF-1.7\n" + bytes(range(256)) * 20 + b"\n%%EOF\n"


def lost_page() -> bytes:
    """A page object lost beyond repair (its `obj` keyword damaged): the engine cannot rewrite the file without
    losing the page, yet PDFium draws it as it is, so its job returns it unchanged (DAMAGED_PDF), not refused."""
    with pikepdf.open(io.BytesIO(pdfs.plain(3))) as pdf:
        lost = pdf.pages[2].obj.objgen[0]
        data = _saved(pdf, object_stream_mode=pikepdf.ObjectStreamMode.disable)
    marker = f"\n{lost} 0 obj".encode()
    assert data.count(marker) == 1
    return data.replace(marker, f"\n{lost} 0 xbj".encode())
