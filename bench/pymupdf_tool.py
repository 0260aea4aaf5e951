"""PyMuPDF as a benchmark tool, one process per file like the others.

    python -m bench.pymupdf_tool {lossless|ebook} IN.pdf OUT.pdf [PASSWORD]

`lossless`: PyMuPDF's best lossless settings (garbage collection with duplicate merging, clean content,
deflate of every stream at the highest effort, object streams). `ebook`: the same after its image rewriter
at Ghostscript /ebook's resolutions (colour and gray above 225 dpi to 150, JPEG quality 75).
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    import pymupdf

    mode, src, out = argv[:3]
    doc = pymupdf.open(src)
    if doc.needs_pass and not doc.authenticate(argv[3] if len(argv) > 3 else ""):
        print("password needed", file=sys.stderr)
        return 2
    if mode == "ebook":
        doc.rewrite_images(dpi_threshold=225, dpi_target=150, quality=75)
    doc.save(
        out,
        garbage=4,
        clean=True,
        deflate=True,
        deflate_images=True,
        deflate_fonts=True,
        use_objstms=1,
        compression_effort=100,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
