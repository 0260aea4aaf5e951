"""Image encoders: Flate with the best PNG predictor per row, optimised JPEG, CCITT Group 4.

Large images are worked on in strips of rows (bounded memory per step): PNG filtering and deflating stream, and
CCITT G4 is encoded strip by strip and joined bit-exactly (see ``ccitt_g4``)."""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterable, Iterator

import numpy as np
from PIL import Image

# zlib at its best ratio (level 9, largest window and memory).
_ZLEVEL = 9
# Rows are PNG-filtered this many sample bytes at a time (the filters' int16 temporaries are ~25x this).
_FILTER_STRIP_BYTES = 1 << 20
# CCITT strips: pixels per strip (Pillow holds a 1-bit image as one byte per pixel).
_G4_STRIP_PIXELS = 8 << 20
# End of facsimile block: two EOL codes (T.6).
_EOFB = np.unpackbits(np.frombuffer(b"\x00\x10\x01", dtype=np.uint8))

Buffer = bytes | bytearray | memoryview


def deflate(data: Buffer) -> bytes:
    return deflate_chunks([data])


def deflate_chunks(chunks: Iterable[Buffer]) -> bytes:
    """Deflate the concatenation of ``chunks`` at the best level without joining them first."""
    c = zlib.compressobj(_ZLEVEL, zlib.DEFLATED, 15, 9)
    out = [c.compress(chunk) for chunk in chunks]
    out.append(c.flush())
    return b"".join(out)


def _filter_strip(rows: np.ndarray, prev: np.ndarray | None, bpp: int) -> np.ndarray:
    """PNG-filter ``rows`` (uint8 (n, stride)) given the row above them (None: the image's first row); each row
    gets the filter with the least sum of absolute (signed) values. -> uint8 (n, stride + 1), filter byte first."""
    x = rows.astype(np.int16)
    b = np.empty_like(x)
    b[0] = 0 if prev is None else prev
    b[1:] = x[:-1]
    a = np.zeros_like(x)
    a[:, bpp:] = x[:, :-bpp]
    c = np.zeros_like(x)
    c[:, bpp:] = b[:, :-bpp]
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
    del p, pa, pb, pc
    filtered = np.stack([(f & 0xFF).astype(np.uint8) for f in (x, x - a, x - b, x - ((a + b) >> 1), x - paeth)])
    cost = np.abs(filtered.view(np.int8).astype(np.int32)).sum(axis=2)  # (5, n)
    choice = cost.argmin(axis=0)
    out = np.empty((x.shape[0], x.shape[1] + 1), dtype=np.uint8)
    out[:, 0] = choice
    out[:, 1:] = filtered[choice, np.arange(x.shape[0])]
    return out


def _rows(samples: Buffer, stride: int, height: int) -> np.ndarray:
    return np.frombuffer(samples, dtype=np.uint8, count=stride * height).reshape(height, stride)


def _filtered_strips(rows: np.ndarray, bpp: int, strip_bytes: int = _FILTER_STRIP_BYTES) -> Iterator[np.ndarray]:
    """The PNG-filtered image, strip by strip."""
    height, stride = rows.shape
    step = max(1, strip_bytes // stride)
    for r0 in range(0, height, step):
        yield _filter_strip(rows[r0 : r0 + step], rows[r0 - 1] if r0 else None, bpp)


def png_filter(
    samples: Buffer, width: int, height: int, colors: int, bpc: int, strip_bytes: int = _FILTER_STRIP_BYTES
) -> bytes | None:
    """PNG-filter raw image rows (PDF /Predictor 15: a filter-type byte per row, chosen per row by the usual
    minimum-sum-of-absolute-differences heuristic), ``strip_bytes`` of samples at a time."""
    stride = (width * colors * bpc + 7) // 8
    if len(samples) < stride * height or height == 0 or stride == 0:
        return None
    rows = _rows(samples, stride, height)
    return b"".join(s.tobytes() for s in _filtered_strips(rows, max(1, colors * bpc // 8), strip_bytes))


_TRIAL_BYTES = 256 << 10


def flate_best(samples: Buffer, width: int, height: int, colors: int, bpc: int) -> tuple[bytes, dict[str, int] | None]:
    """The smaller of plain Flate and Flate with PNG predictors. -> (data, DecodeParms or None).
    Large images: the choice is made on an evenly spread sample of rows (fast zlib level), then only the winner is
    compressed at the best level, strip by strip."""
    parms = {"/Predictor": 15, "/Colors": colors, "/BitsPerComponent": bpc, "/Columns": width}
    stride = (width * colors * bpc + 7) // 8
    bpp = max(1, colors * bpc // 8)
    if len(samples) < stride * height or height == 0 or stride == 0:
        return deflate(samples), None
    rows = _rows(samples, stride, height)
    if stride * height <= _TRIAL_BYTES:
        plain, pred = deflate(rows.data), deflate_chunks(s.data for s in _filtered_strips(rows, bpp))
        return (pred, parms) if len(pred) < len(plain) else (plain, None)
    picked = range(0, height, max(1, height // 64))
    # Neighbouring rows matter to the predictor (its "up" filter), so each sample row is filtered against its own
    # row above.
    pred_sample = b"".join(_filter_strip(rows[r : r + 1], rows[r - 1] if r else None, bpp).tobytes() for r in picked)
    raw_sample = b"".join(rows[r].tobytes() for r in picked)
    if len(zlib.compress(pred_sample, 6)) < len(zlib.compress(raw_sample, 6)):
        return deflate_chunks(s.data for s in _filtered_strips(rows, bpp)), parms
    strip_rows = max(1, _FILTER_STRIP_BYTES // stride)
    return deflate_chunks(rows[r : r + strip_rows].data for r in range(0, height, strip_rows)), None


def jpeg(img: Image.Image, quality: int) -> bytes:
    """Optimised progressive JPEG (Huffman tables optimised; progressive is ~5% smaller at the same quality)."""
    buf = io.BytesIO()
    subsampling = 0 if quality >= 90 else 2  # 4:4:4 only where chroma detail is worth paying for
    img.save(buf, "JPEG", quality=quality, optimize=True, progressive=True, subsampling=subsampling)
    return buf.getvalue()


def _g4_one_strip(rows: Buffer, width: int, height: int) -> bytes | None:
    """CCITT G4 data of packed 1-bit rows, encoded as one image by libtiff (through Pillow)."""
    img = Image.frombytes("1", (width, height), rows)
    buf = io.BytesIO()
    try:
        img.save(buf, "TIFF", compression="group4", tiffinfo={278: height})  # 278: RowsPerStrip = one strip
    except (OSError, KeyError, ValueError):
        return None
    del img
    tif = Image.open(io.BytesIO(buf.getvalue()))
    tags = getattr(tif, "tag_v2", {})
    offsets = tags.get(273)
    counts = tags.get(279)
    if not offsets or not counts or len(offsets) != 1:
        return None
    raw = buf.getvalue()
    return raw[offsets[0] : offsets[0] + counts[0]]


def _code_bits(data: bytes | None) -> np.ndarray | None:
    """The code bits of one G4 encoding without its end-of-block and padding (uint8 0/1), or None."""
    if data is None:
        return None
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    ones = np.flatnonzero(bits)
    if ones.size == 0:
        return None
    bits = bits[: ones[-1] + 1]  # the padding after the EOFB is zeros; the EOFB ends with a 1
    if bits.size < _EOFB.size or not np.array_equal(bits[-_EOFB.size :], _EOFB):
        return None
    return bits[: -_EOFB.size]


def ccitt_g4(samples: Buffer, width: int, height: int, strip_pixels: int = _G4_STRIP_PIXELS) -> bytes | None:
    """1-bit rows (MSB first, rows padded to bytes; PDF convention) -> CCITT G4 data for /CCITTFaxDecode with
    /K -1 /BlackIs1 true (the decoded bits equal the input bits). None when libtiff is unavailable or the encoder
    splits the image into several strips.

    Large images are encoded in strips. G4 codes each row against the row above (the first against an imaginary
    white row), so a strip is encoded together with the row above it, and the codes of that one row (encoded
    alone, they are the same bits) are cut off: the rest continues the previous strip's codes exactly."""
    stride = (width + 7) // 8
    if len(samples) < stride * height or width <= 0 or height <= 0:
        return None
    view = memoryview(samples)[: stride * height]
    step = max(1, strip_pixels // width)
    if height <= step:
        return _g4_one_strip(view, width, height)
    packer = _BitPacker()
    for r0 in range(0, height, step):
        r1 = min(height, r0 + step)
        if r0 == 0:
            body = _code_bits(_g4_one_strip(view[: r1 * stride], width, r1))
        else:
            above = view[(r0 - 1) * stride : r0 * stride]
            lead = _code_bits(_g4_one_strip(above, width, 1))
            whole = _code_bits(_g4_one_strip(view[(r0 - 1) * stride : r1 * stride], width, r1 - r0 + 1))
            if lead is None or whole is None or not np.array_equal(whole[: lead.size], lead):
                return None
            body = whole[lead.size :]
        if body is None:
            return None
        packer.add(body)
    packer.add(_EOFB)
    return packer.finish()


class _BitPacker:
    """Bits (uint8 0/1 arrays) appended end to end and packed MSB first; only a partial byte is carried over."""

    def __init__(self) -> None:
        self._out: list[bytes] = []
        self._carry = np.zeros(0, dtype=np.uint8)

    def add(self, bits: np.ndarray) -> None:
        joined = np.concatenate([self._carry, bits])
        whole = joined.size // 8 * 8
        self._out.append(np.packbits(joined[:whole]).tobytes())
        self._carry = joined[whole:]

    def finish(self) -> bytes:
        return b"".join([*self._out, np.packbits(self._carry).tobytes()])
