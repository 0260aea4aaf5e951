"""Image techniques, levels and the never-bigger rule, on synthetic PDFs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pikepdf
import pypdfium2 as pdfium
import pytest
from pikepdf import Name

from services.compressor.engine import LEVEL_NAMES, CompressOptions, compress
from services.compressor.engine.verify import render

from .builders import bitonal_pdf, first_image, image_pdf, minimal_pdf, photo, text_pdf


@pytest.fixture(scope="module")
def hires_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 1200 px shown 2 inches wide: 600 dpi, far above every lossy level's threshold.
    return image_pdf(tmp_path_factory.mktemp("photo") / "photo.pdf", photo(1200, 900), display_pt=(144, 108))


def test_medium_downsamples_by_displayed_resolution(hires_photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.pdf"
    report = compress(hires_photo, out, CompressOptions(level="medium"))
    assert report.verification.passed
    assert not report.kept_original
    assert report.output_size_bytes < report.input_size_bytes / 4
    img = first_image(out)
    # Medium resamples to 150 dpi at most and, searching, to its floor of 110 dpi at least: 2 inches -> 220-300 px.
    assert 218 <= img.width <= 320
    assert img.filter == Name.DCTDecode
    assert any(t.name == "downsample-jpeg" and t.saved_bytes > 0 for t in report.techniques)
    assert report.bytes_by_kind_after["images"] < report.bytes_by_kind_before["images"]
    assert report.verification.text_recall == 1.0


def test_levels_order_by_size(hires_photo: Path, tmp_path: Path) -> None:
    sizes = {}
    for level in ("low", "medium", "high", "maximum"):
        sizes[level] = compress(hires_photo, tmp_path / f"{level}.pdf", CompressOptions(level=level)).output_size_bytes
    assert sizes["maximum"] < sizes["high"] < sizes["medium"] < sizes["low"]


def test_lossless_keeps_pixels_and_renders_identical(hires_photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.pdf"
    report = compress(hires_photo, out, CompressOptions(level="lossless"))
    # identical_renders is None only when no verification ran to its end (original kept, or page counts differ).
    assert not report.kept_original
    assert report.verification.passed
    assert report.verification.pages_compared == [1]
    assert report.verification.identical_renders is True
    assert report.output_size_bytes < report.input_size_bytes
    # The renders the verifier compared, independently: the page does draw the picture, and identically.
    pages = []
    for path in (hires_photo, out):
        doc = pdfium.PdfDocument(str(path))
        try:
            pages.append(render(doc, 0))
        finally:
            doc.close()
    assert pages[0] is not None
    assert pages[1] is not None
    assert pages[0].std() > 20  # a photograph, not a blank page
    assert np.array_equal(pages[0], pages[1])
    before = first_image(hires_photo)
    after = first_image(out)
    assert after.width == 1200
    assert after.pixels == before.pixels


def test_image_quality_overrides_level(hires_photo: Path, tmp_path: Path) -> None:
    lo = compress(hires_photo, tmp_path / "q30.pdf", CompressOptions(level="medium", image_quality=30))
    hi = compress(hires_photo, tmp_path / "q90.pdf", CompressOptions(level="medium", image_quality=90))
    assert lo.output_size_bytes < hi.output_size_bytes


def test_max_image_dpi_caps_resolution(hires_photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.pdf"
    compress(hires_photo, out, CompressOptions(level="low", max_image_dpi=100))
    assert first_image(out).width <= 205  # 2 inches at 100 dpi, allowing rounding


def test_bitonal_stays_bitonal_as_ccitt_g4(tmp_path: Path) -> None:
    src = bitonal_pdf(tmp_path / "scan.pdf")
    out = tmp_path / "out.pdf"
    report = compress(src, out, CompressOptions(level="maximum"))
    assert report.verification.passed
    img = first_image(out)
    assert img.bpc == 1
    assert img.filter == Name.CCITTFaxDecode
    # Shown far above maximum's 1-bit resolution (150 dpi): reduced by an integer factor, still 1-bit.
    assert img.width == 600
    assert "downsample-bitonal" in {t.name for t in report.techniques}
    assert report.output_size_bytes < report.input_size_bytes


def test_soft_mask_is_kept_and_lossless(tmp_path: Path) -> None:
    alpha = np.tile(np.linspace(0, 255, 800, dtype=np.uint8), (600, 1))
    src = image_pdf(tmp_path / "alpha.pdf", photo(800, 600), display_pt=(144, 108), smask=alpha)
    out = tmp_path / "out.pdf"
    report = compress(src, out, CompressOptions(level="medium"))
    assert report.verification.passed
    img = first_image(out)
    assert img.smask_filter == Name.FlateDecode  # masks are never JPEG-encoded


def test_cmyk_photo_reencoded_with_inverting_decode(tmp_path: Path) -> None:
    rgb = photo(900, 600).astype(np.int16)
    k = 255 - rgb.max(axis=2)
    cmyk = np.stack([255 - rgb[..., 0] - k, 255 - rgb[..., 1] - k, 255 - rgb[..., 2] - k, k], axis=-1)
    src = image_pdf(
        tmp_path / "cmyk.pdf", np.clip(cmyk, 0, 255).astype(np.uint8), colorspace=Name.DeviceCMYK, display_pt=(144, 96)
    )
    out = tmp_path / "out.pdf"
    report = compress(src, out, CompressOptions(level="medium"))
    assert report.verification.passed, report.candidates
    img = first_image(out)
    if img.filter == Name.DCTDecode:
        assert img.decode == [1, 0] * 4
    assert report.verification.chroma_diff_max is not None


def test_grayscale_option(hires_photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.pdf"
    report = compress(hires_photo, out, CompressOptions(level="medium", grayscale=True))
    assert report.verification.passed
    assert first_image(out).colorspace == Name.DeviceGray


@pytest.mark.parametrize("level", LEVEL_NAMES)
def test_never_bigger_keeps_original_bytes(tmp_path: Path, level: str) -> None:
    src = minimal_pdf(tmp_path / "in.pdf")  # smaller than any qpdf rewrite of it
    out = tmp_path / "out.pdf"
    report = compress(src, out, CompressOptions(level=level))
    # Every candidate passed verification but none was smaller: the reason is NOT_SMALLER, not a failure.
    assert report.candidates
    assert all(c["passed"] for c in report.candidates), report.candidates
    assert all(c["size"] > report.input_size_bytes for c in report.candidates), report.candidates
    assert report.kept_original is True
    assert report.kept_original_reason == "NOT_SMALLER"
    assert report.output_size_bytes == report.input_size_bytes
    assert out.read_bytes() == src.read_bytes()


def test_target_size(hires_photo: Path, tmp_path: Path) -> None:
    medium = compress(hires_photo, tmp_path / "m.pdf", CompressOptions(level="medium")).output_size_bytes
    # Medium's search already reaches its floors on this picture; the higher levels' floors go 30% further.
    report = compress(
        hires_photo, tmp_path / "t.pdf", CompressOptions(level="medium", target_size_bytes=int(medium * 0.7))
    )
    assert report.target_met is True
    assert report.output_size_bytes <= medium * 0.7
    impossible = compress(hires_photo, tmp_path / "i.pdf", CompressOptions(level="medium", target_size_bytes=100))
    assert impossible.target_met is False
    assert impossible.output_size_bytes < impossible.input_size_bytes  # the closest result is still returned


def test_remove_metadata(tmp_path: Path) -> None:
    src = text_pdf(tmp_path / "in.pdf")
    with pikepdf.open(src, allow_overwriting_input=True) as pdf:
        with pdf.open_metadata() as meta:
            meta["dc:title"] = "A title"
        pdf.docinfo["/Author"] = "Someone"
        pdf.save(src)
    out = tmp_path / "out.pdf"
    compress(src, out, CompressOptions(level="medium", remove_metadata=True))
    with pikepdf.open(out) as pdf:
        assert "/Metadata" not in pdf.Root
        assert "/Author" not in pdf.docinfo


def test_progress_reports_monotonic_percentages(hires_photo: Path, tmp_path: Path) -> None:
    seen: list[int] = []
    compress(hires_photo, tmp_path / "out.pdf", CompressOptions(), progress=seen.append)
    assert seen[0] == 0
    assert seen[-1] == 100
    assert seen == sorted(seen), seen  # never goes back
    assert len(set(seen)) >= 4, seen  # open, candidate building, verification, done: not just 0 and 100


def test_linearize_option(hires_photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.pdf"
    report = compress(hires_photo, out, CompressOptions(level="medium", linearize=True))
    assert report.verification.passed
    with pikepdf.open(out) as pdf:
        assert pdf.is_linearized
