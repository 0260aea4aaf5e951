"""What makes bytes a PDF at first sight, defined once for the three places that look.

The gateway looks at the first chunk of an upload (refusing a disguised file before storing it), the
scanner before parsing a stored object (its report must hold for any caller, not only the gateway's), and
the engine before opening its input (the CLI runs it on any file, no servers in front).
"""

from __future__ import annotations

from pathlib import Path

PDF_HEADER = b"%PDF-"
# The PDF specification lets the header start anywhere in the first 1024 bytes.
HEADER_WINDOW = 1024


def has_pdf_header(head: bytes) -> bool:
    """Whether these first bytes of a file hold a PDF header where readers look for it."""
    return PDF_HEADER in head[:HEADER_WINDOW]


def file_has_pdf_header(path: Path) -> bool:
    with path.open("rb") as handle:
        return has_pdf_header(handle.read(HEADER_WINDOW))
