"""Image similarity: SSIM (Wang et al. 2004) and a CIELAB block-chroma comparison, numpy only."""

from __future__ import annotations

import numpy as np

_SIGMA = 1.5
_RADIUS = 5  # 11-tap window: the Gaussian truncated at 3.5 sigma, as in the reference implementation
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def _kernel() -> np.ndarray:
    x = np.arange(-_RADIUS, _RADIUS + 1, dtype=np.float64)
    k = np.exp(-(x * x) / (2 * _SIGMA * _SIGMA))
    return (k / k.sum()).astype(np.float32)


_K = _kernel()


def _blur_valid(img: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter, 'valid' region only (no padding artefacts at the borders). The window is
    symmetric, so mirrored taps are added first and multiplied once (6 multiplies instead of 11 per pass)."""
    h, w = img.shape
    n = 2 * _RADIUS + 1
    wv, hv = w - n + 1, h - n + 1
    rows = np.multiply(img[:, _RADIUS : _RADIUS + wv], _K[_RADIUS])
    tmp = np.empty_like(rows)
    for i in range(_RADIUS):
        np.add(img[:, i : i + wv], img[:, n - 1 - i : n - 1 - i + wv], out=tmp)
        tmp *= _K[i]
        rows += tmp
    out = np.multiply(rows[_RADIUS : _RADIUS + hv], _K[_RADIUS])
    tmp2 = np.empty_like(out)
    for i in range(_RADIUS):
        np.add(rows[i : i + hv], rows[n - 1 - i : n - 1 - i + hv], out=tmp2)
        tmp2 *= _K[i]
        out += tmp2
    return out


def _ssim_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    mx, my = _blur_valid(x), _blur_valid(y)
    sxx = _blur_valid(x * x) - mx * mx
    syy = _blur_valid(y * y) - my * my
    sxy = _blur_valid(x * y) - mx * my
    num = (2 * mx * my + _C1) * (2 * sxy + _C2)
    den = (mx * mx + my * my + _C1) * (sxx + syy + _C2)
    return num / den


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two gray images (values 0..255), Gaussian window sigma 1.5, K1=0.01, K2=0.03."""
    if a.shape != b.shape:
        raise ValueError("images differ in size")
    if min(a.shape) < 2 * _RADIUS + 1:
        # Too small for the window: fall back to 1 - normalised mean absolute difference.
        return float(1.0 - np.abs(a.astype(np.float32) - b.astype(np.float32)).mean() / 255.0)
    return float(_ssim_map(a.astype(np.float32), b.astype(np.float32)).mean())


def ssim_in_strips(a: np.ndarray, b: np.ndarray, rows: int = 256) -> float:
    """``ssim`` computed ``rows`` window rows at a time (each strip overlapping the next by the window): the same
    mean, with the intermediate maps of one strip in memory instead of the whole image's (a dozen float arrays of
    its size: over 400 MB for a 3000 x 3000 image)."""
    if a.shape != b.shape:
        raise ValueError("images differ in size")
    h, w = a.shape
    n = 2 * _RADIUS + 1
    if h < n or w < n:
        return ssim(a, b)
    total, count = 0.0, 0
    for y in range(0, h - n + 1, rows):
        y1 = min(h, y + rows + n - 1)
        smap = _ssim_map(a[y:y1].astype(np.float32), b[y:y1].astype(np.float32))
        total += float(smap.sum(dtype=np.float64))
        count += smap.size
    return total / count


def page_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of the luminance of two RGB renders of a page, computed only where they differ.

    A window over identical pixels has SSIM exactly 1, so the page mean is 1 minus the summed deficit of the
    windows that touch the differing region (its bounding box plus the window radius), divided by the number of
    windows of the whole page. Same value as the full computation; most of a page is usually unchanged."""
    if a.shape != b.shape:
        raise ValueError("images differ in size")
    h, w = a.shape[:2]
    n = 2 * _RADIUS + 1
    if h < n or w < n:
        return ssim(luminance(a), luminance(b))
    diff = np.any(a != b, axis=2)
    rows = np.flatnonzero(diff.any(axis=1))
    if rows.size == 0:
        return 1.0
    cols = np.flatnonzero(diff.any(axis=0))
    pad = 2 * _RADIUS
    y0, y1 = max(0, int(rows[0]) - pad), min(h, int(rows[-1]) + pad + 1)
    x0, x1 = max(0, int(cols[0]) - pad), min(w, int(cols[-1]) + pad + 1)
    if y1 - y0 < n:
        y0, y1 = (0, n) if y0 + n > h else (y0, y0 + n)
    if x1 - x0 < n:
        x0, x1 = (0, n) if x0 + n > w else (x0, x0 + n)
    smap = _ssim_map(luminance(a[y0:y1, x0:x1]), luminance(b[y0:y1, x0:x1]))
    deficit = float((1.0 - smap).sum(dtype=np.float64))
    return 1.0 - deficit / ((h - n + 1) * (w - n + 1))


def luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an RGB uint8 image, float32."""
    f = rgb.astype(np.float32)
    return f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114


BLOCK = 16  # px; 4 mm at 100 dpi
COLOURED_CHROMA = 8.0
MIN_COLOURED_BLOCKS = 4


def _block_means(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[0] // BLOCK * BLOCK, rgb.shape[1] // BLOCK * BLOCK
    if h == 0 or w == 0:
        return rgb.reshape(-1, 3).astype(np.float64).mean(axis=0).reshape(1, 1, 3)
    # Two contiguous reductions (rows of blocks, then columns) are much faster than one 5-D mean.
    x = rgb[:h, :w].reshape(h // BLOCK, BLOCK, w * 3).sum(axis=1, dtype=np.uint32)
    x = x.reshape(h // BLOCK, w // BLOCK, BLOCK, 3).sum(axis=2, dtype=np.uint32)
    return x.astype(np.float64) / (BLOCK * BLOCK)


def _lab(rgb: np.ndarray) -> np.ndarray:
    c = rgb / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
    )
    xyz = lin @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    eps = (6 / 29) ** 3
    f = np.where(xyz > eps, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def chroma_compare(a: np.ndarray, b: np.ndarray) -> tuple[float, float | None]:
    """(largest chroma difference of any 16x16 block in CIELAB a*b*, ratio of summed chroma over the blocks that
    are coloured in ``a`` or None when too few are)."""
    la, lb = _lab(_block_means(a)), _lab(_block_means(b))
    diff = np.hypot(la[..., 1] - lb[..., 1], la[..., 2] - lb[..., 2])
    ca = np.hypot(la[..., 1], la[..., 2])
    cb = np.hypot(lb[..., 1], lb[..., 2])
    coloured = ca > COLOURED_CHROMA
    ratio = float(cb[coloured].sum() / ca[coloured].sum()) if coloured.sum() >= MIN_COLOURED_BLOCKS else None
    return float(diff.max()), ratio
