"""The verification primitives: SSIM, colour comparison, page choice."""

from __future__ import annotations

import numpy as np

from services.compressor.engine.ssim import chroma_compare, luminance, page_ssim, ssim
from services.compressor.engine.verify import choose_pages


def _page(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)


def test_ssim_identical_is_one_and_noise_lowers_it() -> None:
    a = luminance(_page())
    assert ssim(a, a) == 1.0
    noisy = np.clip(a + np.random.default_rng(1).normal(0, 25, a.shape), 0, 255)
    assert 0.0 < ssim(a, noisy) < 0.9


def test_page_ssim_equals_full_computation_on_local_change() -> None:
    a = _page()
    b = a.copy()
    b[40:60, 30:50] = 255 - b[40:60, 30:50]
    assert abs(page_ssim(a, b) - ssim(luminance(a), luminance(b))) < 1e-5
    assert page_ssim(a, a) == 1.0


def test_chroma_compare_detects_colour_shift() -> None:
    red = np.zeros((64, 64, 3), dtype=np.uint8)
    red[..., 0] = 200
    grey = np.full((64, 64, 3), 70, dtype=np.uint8)
    diff, ratio = chroma_compare(red, red)
    assert diff == 0.0
    assert ratio == 1.0
    diff, ratio = chroma_compare(red, grey)
    assert diff > 50
    assert ratio is not None
    assert ratio < 0.2


def test_choose_pages_all_when_short_and_sample_when_long() -> None:
    assert choose_pages(5, {}) == [0, 1, 2, 3, 4]
    long = choose_pages(500, {250: 10_000, 251: 5, 7: 999})
    assert len(long) <= 24
    assert {0, 499, 250, 251, 7} <= set(long)
