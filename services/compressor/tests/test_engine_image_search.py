"""Per-image search: each photograph gets the smallest resolution and JPEG quality that keeps its page's gate,
within the level's floors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pikepdf
import pytest
from PIL import Image, ImageFilter

from services.compressor.engine import CompressOptions, compress, pipeline
from services.compressor.engine.codecs import jpeg
from services.compressor.engine.images import QualitySearch, _quality_steps, _search_scales, _Seen
from services.compressor.engine.options import LEVELS
from services.compressor.engine.ssim import ssim, ssim_in_strips

from .builders import LETTER_PT, first_image, full_page_image, image_pdf, jpeg_xobject, photo


@pytest.fixture(scope="module")
def hires_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 1200 px shown 2 inches wide: 600 dpi.
    return image_pdf(tmp_path_factory.mktemp("photo") / "photo.pdf", photo(1200, 900), display_pt=(144, 108))


def _fixed_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The level's fixed resolution and quality, as before the search."""
    monkeypatch.setattr(pipeline, "_quality_search", lambda attempt, options: None)


def _jpeg_of_first_image(path: Path) -> Image.Image:
    with pikepdf.open(path) as pdf:
        for obj in pdf.pages[0].get_images().values():
            assert obj.Filter == pikepdf.Name.DCTDecode
            return Image.open(io.BytesIO(obj.read_raw_bytes()))
    raise AssertionError("no image")


def test_search_scales_go_from_the_level_down_to_the_floor() -> None:
    assert _search_scales(600.0, 0.25, 110.0, 900) == [0.25, pytest.approx(110.0 / 600.0)]  # 150 dpi, then 110
    assert _search_scales(600.0, 0.25, 145.0, 900) == [0.25]  # a floor within 5% of the level's: one search
    assert _search_scales(100.0, 1.0, 110.0, 900) == [1.0]  # already below the floor: only as it is
    assert _search_scales(600.0, 0.25, 110.0, 60) == [0.25]  # never below 16 px on the short side


def test_quality_steps_from_the_level_down_to_the_floor() -> None:
    assert _quality_steps(75, 40) == [75, 63, 51, 40]
    assert _quality_steps(40, 40) == [40]
    assert _quality_steps(30, 40) == [30]  # a floor above the level's quality is the level's quality


def test_search_is_smaller_than_the_fixed_settings_and_passes(
    hires_photo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    searched = compress(hires_photo, tmp_path / "searched.pdf", CompressOptions(level="medium"))
    with monkeypatch.context() as m:
        _fixed_settings(m)
        fixed = compress(hires_photo, tmp_path / "fixed.pdf", CompressOptions(level="medium"))
    assert searched.verification.passed
    assert fixed.verification.passed
    assert searched.output_size_bytes < 0.9 * fixed.output_size_bytes
    assert searched.verification.ssim_min is not None
    assert searched.verification.ssim_min >= LEVELS["medium"].ssim_min
    # Never below medium's floor of 110 dpi: 2 inches -> 220 px.
    assert 218 <= first_image(tmp_path / "searched.pdf").width <= 320


@pytest.mark.parametrize("level", ["high", "maximum"])
def test_search_never_goes_below_the_levels_floor(hires_photo: Path, tmp_path: Path, level: str) -> None:
    out = tmp_path / "out.pdf"
    report = compress(hires_photo, out, CompressOptions(level=level))
    assert report.verification.passed
    floor = LEVELS[level].search_floor_dpi
    assert floor is not None
    assert first_image(out).width >= 2 * floor - 2


def test_search_keeps_the_callers_jpeg_quality(hires_photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "q90.pdf"
    report = compress(hires_photo, out, CompressOptions(level="medium", image_quality=90))
    assert report.verification.passed
    got = _jpeg_of_first_image(out)
    want = Image.open(io.BytesIO(jpeg(Image.new("RGB", (64, 64)), 90)))
    assert got.quantization == want.quantization  # type: ignore[attr-defined]


def test_search_reencodes_existing_jpegs_smaller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A letter page of a 1275 x 1650 JPEG at quality 90: 150 dpi, at medium's resolution already. Softened: the
    # builders' photograph carries per-pixel noise that no JPEG keeps at a page's gate.
    pixels = np.asarray(Image.fromarray(photo(1275, 1650, seed=3)).filter(ImageFilter.GaussianBlur(1.2)))
    pdf = pikepdf.new()
    full_page_image(pdf, jpeg_xobject(pdf, pixels, 90), LETTER_PT)
    src = tmp_path / "jpeg.pdf"
    pdf.save(src)
    searched = compress(src, tmp_path / "searched.pdf", CompressOptions(level="medium"))
    with monkeypatch.context() as m:
        _fixed_settings(m)
        fixed = compress(src, tmp_path / "fixed.pdf", CompressOptions(level="medium"))
    assert searched.verification.passed
    assert searched.output_size_bytes < fixed.output_size_bytes
    assert searched.output_size_bytes < 0.7 * searched.input_size_bytes


def test_search_gate_checks_colour_as_the_page_gate_does() -> None:
    # A candidate whose luminance is the original's but whose colours are washed out: SSIM alone would take it.
    original = Image.fromarray(photo(320, 240, seed=5)).filter(ImageFilter.GaussianBlur(2))
    washed = Image.blend(original, original.convert("L").convert("RGB"), 0.6)
    data = jpeg(washed, 95)
    searches = {
        "luminance only": QualitySearch(100.0, 0.9, 110.0, 40),
        "with colour": QualitySearch(100.0, 0.9, 110.0, 40, chroma_diff_max=6.3, chroma_ratio=(0.87, 1.15)),
    }
    kept = {name: _Seen(original, (160, 120), search).keeps(data) for name, search in searches.items()}
    assert kept == {"luminance only": True, "with colour": False}
    assert _Seen(original, (160, 120), searches["with colour"]).keeps(jpeg(original, 95))


def test_ssim_in_strips_is_the_whole_images_ssim() -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 255, (700, 333)).astype(np.uint8)
    b = np.clip(a + rng.normal(0, 9, a.shape), 0, 255).astype(np.uint8)
    whole = ssim(a.astype(np.float32), b.astype(np.float32))
    assert ssim_in_strips(a, b) == pytest.approx(whole, abs=1e-6)
    assert ssim_in_strips(a, b, rows=7) == pytest.approx(whole, abs=1e-6)
