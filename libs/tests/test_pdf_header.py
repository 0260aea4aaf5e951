from pathlib import Path

import pytest

from libs.pdf_header import HEADER_WINDOW, file_has_pdf_header, has_pdf_header


@pytest.mark.parametrize(
    ("head", "is_pdf"),
    [
        (b"%PDF-1.7\n", True),
        (b"junk before it\n%PDF-2.0\n", True),
        (b"x" * (HEADER_WINDOW - 5) + b"%PDF-", True),  # the whole header inside the window
        (b"x" * (HEADER_WINDOW - 4) + b"%PDF-", False),  # cut by the window's end
        (b"x" * HEADER_WINDOW + b"%PDF-1.7", False),
        (b"%PDF", False),
        (b"", False),
    ],
)
def test_the_header_counts_only_inside_the_first_kib(head: bytes, is_pdf: bool) -> None:
    assert has_pdf_header(head) is is_pdf


def test_a_file_is_judged_by_its_first_bytes_only(tmp_path: Path) -> None:
    pdf, other = tmp_path / "a.pdf", tmp_path / "b.bin"
    pdf.write_bytes(b"%PDF-1.4\n" + b"\0" * 10_000)
    other.write_bytes(b"\0" * 10_000 + b"%PDF-1.4\n")
    assert file_has_pdf_header(pdf)
    assert not file_has_pdf_header(other)
