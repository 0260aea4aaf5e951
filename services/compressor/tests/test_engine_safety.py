"""Encryption, signatures, damaged files, bomb caps and the child-process limits."""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import numpy as np
import pikepdf
import pytest
from pikepdf import Name

from services.compressor.engine import CompressOptions, EngineError, Limits, compress, compress_isolated
from services.compressor.engine.safety import check_bombs

from .builders import DATA, certified_pdf, image_pdf, photo, signed_pdf, text_pdf


def _reason(fn, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(EngineError) as err:
        fn(*args, **kwargs)
    return err.value.reason


def test_user_password_required(tmp_path: Path) -> None:
    src = DATA / "samplefiles__libreoffice-writer-password.pdf"
    assert _reason(compress, src, tmp_path / "o.pdf", CompressOptions()) == "ENCRYPTED_PDF"
    assert _reason(compress, src, tmp_path / "o.pdf", CompressOptions(password="wrong")) == "ENCRYPTED_PDF"


def test_user_password_opens_and_output_stays_encrypted(tmp_path: Path) -> None:
    out = tmp_path / "o.pdf"
    report = compress(
        DATA / "samplefiles__libreoffice-writer-password.pdf", out, CompressOptions(password="openpassword")
    )
    assert report.verification.passed
    with pytest.raises(pikepdf.PasswordError):
        pikepdf.open(out)
    with pikepdf.open(out, password="openpassword") as pdf:
        assert len(pdf.pages) == 1
    assert report.options["password"] is True  # recorded as "given", never the password itself


def test_owner_password_only_is_processed(tmp_path: Path) -> None:
    out = tmp_path / "o.pdf"
    report = compress(DATA / "pypdf__r4-owner-password.pdf", out, CompressOptions())
    assert report.verification.passed
    with pikepdf.open(out) as pdf:
        assert pdf.is_encrypted  # permissions kept


@pytest.mark.parametrize("build", [signed_pdf, certified_pdf], ids=["signed", "certified"])
def test_signed_pdf_is_returned_as_it_is_unless_allowed(tmp_path: Path, build) -> None:  # type: ignore[no-untyped-def]
    """A definite, valid answer: the original bytes (the signature still verifies), kept_original SIGNED_PDF."""
    src = build(tmp_path / "signed.pdf")
    out = tmp_path / "o.pdf"
    report = compress(src, out, CompressOptions())
    assert out.read_bytes() == src.read_bytes()
    assert (report.kept_original, report.kept_original_reason) == (True, "SIGNED_PDF")
    assert "signature" in (report.kept_original_detail or "")
    assert report.pages == 1
    assert report.candidates == []
    assert report.bytes_by_kind_before == report.bytes_by_kind_after
    assert report.bytes_by_kind_before

    broken = compress(src, out, CompressOptions(allow_signature_break=True))
    assert broken.output_size_bytes < broken.input_size_bytes
    assert not broken.kept_original


def test_form_fields_survive(tmp_path: Path) -> None:
    out = tmp_path / "o.pdf"
    report = compress(DATA / "pypdf__libreoffice-form.pdf", out, CompressOptions(level="maximum"))
    v = report.verification
    assert v.passed
    assert v.fields_in == v.fields_out > 0


def test_damaged_file_is_repaired(tmp_path: Path) -> None:
    out = tmp_path / "o.pdf"
    report = compress(DATA / "pdfminer__patchelf.pdf", out, CompressOptions())
    assert report.repaired
    assert report.verification.passed
    assert report.output_size_bytes < report.input_size_bytes


def test_truncated_beyond_repair_is_malformed(tmp_path: Path) -> None:
    src = text_pdf(tmp_path / "full.pdf", pages=3, compress=True)
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(src.read_bytes()[:200])
    assert _reason(compress, cut, tmp_path / "o.pdf", CompressOptions()) == "MALFORMED_PDF"


def test_not_a_pdf(tmp_path: Path) -> None:
    src = tmp_path / "x.pdf"
    src.write_bytes(b"PK\x03\x04 a zip file, not a pdf" * 20)
    assert _reason(compress, src, tmp_path / "o.pdf", CompressOptions()) == "NOT_A_PDF"


def test_image_pixel_cap(tmp_path: Path) -> None:
    src = image_pdf(tmp_path / "big.pdf", photo(400, 300))
    with pikepdf.open(src, allow_overwriting_input=True) as pdf:
        for img in pdf.pages[0].get_images().values():
            img.Width, img.Height = 100_000, 100_000  # declared size is what the cap judges
        pdf.save(src)
    reason = _reason(compress, src, tmp_path / "o.pdf", CompressOptions(), limits=Limits(max_image_pixels=10**8))
    assert reason == "TOO_COMPLEX"


def test_pixel_cap_counts_a_1_bit_page_at_an_eighth(tmp_path: Path) -> None:
    """A 2400-dpi letter scan in 1 bit (538 million pixels, 67 MB decoded) is a document, not a bomb; the same
    size in 8 bits is refused."""
    src = image_pdf(tmp_path / "scan.pdf", photo(64, 48))
    with pikepdf.open(src, allow_overwriting_input=True) as pdf:
        for img in pdf.pages[0].get_images().values():
            img.Width, img.Height, img.BitsPerComponent, img.ColorSpace = 20_400, 26_400, 1, Name.DeviceGray
        pdf.save(src)
    with pikepdf.open(src) as pdf:
        check_bombs(pdf, Limits())  # within the cap
        with pikepdf.open(src) as again:
            for img in again.pages[0].get_images().values():
                img.BitsPerComponent = 8
            with pytest.raises(EngineError) as refused:
                check_bombs(again, Limits())
    assert refused.value.reason == "TOO_COMPLEX"


def test_decompression_bomb_cap(tmp_path: Path) -> None:
    src = text_pdf(tmp_path / "bomb.pdf", pages=1)
    with pikepdf.open(src, allow_overwriting_input=True) as pdf:
        bomb = pikepdf.Stream(pdf, zlib.compress(b"\0" * (64 << 20), 9))
        bomb.stream_dict.Filter = Name.FlateDecode
        pdf.Root.Junk = pdf.make_indirect(bomb)
        pdf.save(src)
    limits = Limits(max_decoded_stream_bytes=16 << 20)
    assert _reason(compress, src, tmp_path / "o.pdf", CompressOptions(), limits=limits) == "TOO_COMPLEX"


def test_isolated_wall_timeout(tmp_path: Path) -> None:
    src = text_pdf(tmp_path / "in.pdf")
    limits = Limits(wall_seconds=0.05)
    assert _reason(compress_isolated, src, tmp_path / "o.pdf", CompressOptions(), limits=limits) == "TIMEOUT"


def test_isolated_memory_limit(tmp_path: Path) -> None:
    src = image_pdf(tmp_path / "in.pdf", photo(600, 400))
    limits = Limits(memory_bytes=64 << 20)  # far below what the PDF libraries need to load
    reason = _reason(compress_isolated, src, tmp_path / "o.pdf", CompressOptions(), limits=limits)
    assert reason == "OUT_OF_MEMORY"


def test_isolated_success_matches_in_process(tmp_path: Path) -> None:
    src = DATA / "pypdf__jpeg.pdf"
    a = compress(src, tmp_path / "a.pdf", CompressOptions())
    b = compress_isolated(src, tmp_path / "b.pdf", CompressOptions())
    assert a.output_size_bytes == b.output_size_bytes
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()
    assert b.verification.passed


def test_output_written_atomically_over_existing_file(tmp_path: Path) -> None:
    out = tmp_path / "o.pdf"
    out.write_bytes(b"old")
    shutil.copy(DATA / "pypdf__jpeg.pdf", tmp_path / "in.pdf")
    compress(tmp_path / "in.pdf", out, CompressOptions())
    assert out.read_bytes()[:5] == b"%PDF-"
    assert not list(tmp_path.glob(".pdfsmaller-*"))


def test_invalid_options() -> None:
    with pytest.raises(EngineError) as err:
        CompressOptions(level="extreme").validate()
    assert err.value.reason == "INVALID_OPTIONS"
    with pytest.raises(EngineError):
        CompressOptions(image_quality=0).validate()


def test_photo_helper_is_photographic() -> None:
    assert len(np.unique(photo(64, 64).reshape(-1, 3), axis=0)) > 1000
