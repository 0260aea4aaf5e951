"""Entry point of the structure check's child process (see pdf_checks.inspect_pdf_isolated and libs/sandbox.py).
Not a public interface."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from libs import sandbox
from services.scanner.pdf_checks import ATTACHMENTS_TOO_LARGE, AttachmentsTooLargeError, inspect_pdf


def main() -> int:
    child = sandbox.enter_child()
    child.apply_limits()
    attachments_dir = child.job["attachments_dir"]
    try:
        report = inspect_pdf(Path(child.job["path"]), Path(attachments_dir) if attachments_dir is not None else None)
    except AttachmentsTooLargeError:
        child.send({"type": ATTACHMENTS_TOO_LARGE})
        return 0
    child.send({"type": "report", "report": asdict(report)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
