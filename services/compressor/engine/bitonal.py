"""Bitonal images, a strip of rows at a time: detecting 8-bit scans that are effectively black and white,
thresholding them to 1 bit, reducing 1-bit images by an integer factor, and small gray previews of 1-bit images
for the per-image quality gate. Packed 1-bit rows follow PDF: MSB first, rows padded to whole bytes; a set bit
is white (DeviceGray, no /Decode) unless the caller says otherwise."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image

from .codecs import Buffer

# Pixels worked on at a time (the unpacked strip and its temporaries are a few bytes per pixel).
STRIP_PIXELS = 2 << 20
# "Near black or white": luminance at most DARK or at least LIGHT, and (colour) channels within CHROMA of each other.
DARK, LIGHT, CHROMA = 80, 176, 40
# An image is effectively bitonal when at least this share of a spread sample of its pixels is near black or white.
MIN_EXTREME_SHARE = 0.97
_SAMPLE_ROWS = 256


def _luma(rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(luminance uint8-range int32, channel spread or None) of 8-bit rows (r, w * n)."""
    if n == 1:
        return rows.astype(np.int32), None
    px = rows.reshape(rows.shape[0], -1, n).astype(np.int32)
    luma = (px[..., 0] * 299 + px[..., 1] * 587 + px[..., 2] * 114) // 1000
    return luma, px.max(axis=2) - px.min(axis=2)


def effectively_bitonal(samples: Buffer, w: int, h: int, n: int) -> bool:
    """Nearly every pixel of an 8-bit gray (n=1) or RGB (n=3) image is near black or near white, judged on an
    evenly spread sample of rows."""
    rows = np.frombuffer(samples, dtype=np.uint8, count=w * h * n).reshape(h, w * n)
    picked = rows[:: max(1, h // _SAMPLE_ROWS)]
    luma, spread = _luma(picked, n)
    extreme = (luma <= DARK) | (luma >= LIGHT)
    if spread is not None:
        extreme &= spread <= CHROMA
    return bool(extreme.mean() >= MIN_EXTREME_SHARE)


def _rows_per_strip(w: int, factor: int) -> int:
    return max(factor, STRIP_PIXELS // max(1, w) // factor * factor)


def ink_of_gray(samples: Buffer, w: int, h: int, n: int, factor: int) -> Iterator[np.ndarray]:
    """Ink (True: darker than mid-gray) of an 8-bit image, in strips whose row count is a multiple of ``factor``."""
    rows = np.frombuffer(samples, dtype=np.uint8, count=w * h * n).reshape(h, w * n)
    step = _rows_per_strip(w, factor)
    for r0 in range(0, h, step):
        yield _luma(rows[r0 : r0 + step], n)[0] < 128


def ink_of_bits(packed: Buffer, w: int, h: int, factor: int, ink_bit: int = 0) -> Iterator[np.ndarray]:
    """Ink (True where the sample is ``ink_bit``) of packed 1-bit rows, in strips as ``ink_of_gray``."""
    stride = (w + 7) // 8
    rows = np.frombuffer(packed, dtype=np.uint8, count=stride * h).reshape(h, stride)
    step = _rows_per_strip(w, factor)
    for r0 in range(0, h, step):
        bits = np.unpackbits(rows[r0 : r0 + step], axis=1, count=w)
        yield bits == ink_bit


def reduced_size(w: int, h: int, factor: int) -> tuple[int, int]:
    return -(-w // factor), -(-h // factor)


def _reduce(ink: np.ndarray, factor: int) -> np.ndarray:
    """Share of ink per factor x factor block (edges padded with paper)."""
    if factor == 1:
        return ink.astype(np.float32)
    r, w = ink.shape
    rw, rh = reduced_size(w, r, factor)
    padded = np.zeros((rh * factor, rw * factor), dtype=np.uint8)
    padded[:r, :w] = ink
    return padded.reshape(rh, factor, rw, factor).sum(axis=(1, 3), dtype=np.uint16) / np.float32(factor * factor)


def pack(ink_strips: Iterator[np.ndarray], factor: int, ink_bit: int = 0) -> bytes:
    """Packed 1-bit rows of the image reduced by ``factor`` (a block is ink when at least half of it is),
    ink written as ``ink_bit``."""
    out = []
    for ink in ink_strips:
        dark = _reduce(ink, factor) >= 0.5
        out.append(np.packbits(dark if ink_bit else ~dark, axis=1).tobytes())
    return b"".join(out)


def preview(ink_strips: Iterator[np.ndarray], factor: int) -> Image.Image:
    """A gray image (ink black, paper white) reduced by ``factor`` by averaging: what the quality gate compares."""
    bands = [np.round(255 * (1 - _reduce(ink, factor))).astype(np.uint8) for ink in ink_strips]
    return Image.fromarray(np.concatenate(bands))


def preview_factor(w: int, h: int, max_side: int = 1200) -> int:
    return max(1, -(-max(w, h) // max_side))
