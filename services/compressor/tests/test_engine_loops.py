"""Every loop over untrusted bytes makes progress or stops: one test per loop class (each ran forever, or raised,
before its fix)."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import pikepdf
import pytest
from pikepdf import Name

from services.compressor.engine import CompressOptions, EngineError, Limits, compress, compress_isolated
from services.compressor.engine.safety import _inflated_size_exceeds
from services.compressor.engine.structural import _lenient_inflate
from services.compressor.engine.verify import choose_pages

from .builders import image_pdf, photo, text_pdf

# A hang must fail the test, not the suite: the loops below end in milliseconds once fixed.
pytestmark = pytest.mark.timeout(60)

_BIG = bytes(range(256)) * 8192  # 2 MiB: more than one 1 MiB inflate step


def _with_stream(src: Path, raw: bytes, **entries: object) -> Path:
    """``src`` plus one stream stored exactly as ``raw`` (with its dictionary ``entries``)."""
    with pikepdf.open(src, allow_overwriting_input=True) as pdf:
        s = pikepdf.Stream(pdf, b"")
        s.write(raw, filter=Name.FlateDecode)
        for k, v in entries.items():
            s.stream_dict[f"/{k}"] = v
        pdf.Root.Extra = pdf.make_indirect(s)
        pdf.save(src)
    return src


# -- the decompression-bomb check (safety.py) ------------------------------------------------------------------


@pytest.mark.parametrize("trailing", [b"J", b"\x00" * 7, b"\r\nendstream junk"])
def test_bomb_check_ends_on_bytes_after_the_zlib_data(trailing: bytes) -> None:
    raw = zlib.compress(_BIG) + trailing
    assert _inflated_size_exceeds(raw, 64 << 20) is False
    assert _inflated_size_exceeds(raw, 1 << 20) is True


def test_bomb_check_stops_at_damaged_zlib_data() -> None:
    good = zlib.compress(_BIG)
    damaged = good[: len(good) // 2] + bytes(64) + good[len(good) // 2 + 64 :]
    assert _inflated_size_exceeds(damaged, 64 << 20) is False


def test_bomb_check_counts_raw_deflate_data() -> None:
    """A stream without its zlib header is still inflated by the lenient repair (raw deflate): counted too."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = c.compress(bytes(16 << 20)) + c.flush()
    assert _inflated_size_exceeds(raw, 1 << 20) is True


def test_scanned_page_with_bytes_after_its_image_data_compresses(tmp_path: Path) -> None:
    """The real case: a scan whose image stream has a byte after the end of its zlib data (raw size far above the
    cap / 1032, so the bomb check inflates it) ran until the CPU limit: TIMEOUT."""
    src = image_pdf(tmp_path / "scan.pdf", photo(1000, 700))
    with pikepdf.open(src, allow_overwriting_input=True) as pdf:
        img = next(iter(pdf.pages[0].get_images().values()))
        img.write(img.read_raw_bytes() + b"\n", filter=Name.FlateDecode)
        pdf.save(src)
    limits = Limits(cpu_seconds=20, max_decoded_stream_bytes=8 << 20)
    report = compress_isolated(src, tmp_path / "o.pdf", CompressOptions(), limits=limits)
    assert report.output_size_bytes <= report.input_size_bytes


def test_damaged_large_flate_stream_is_not_a_crash(tmp_path: Path) -> None:
    good = zlib.compress(random.Random(5).randbytes(2 << 20))  # incompressible: raw size above cap / 1032
    damaged = good[: len(good) // 2] + bytes(64) + good[len(good) // 2 + 64 :]
    src = _with_stream(text_pdf(tmp_path / "in.pdf", pages=1), damaged)
    report = compress(src, tmp_path / "o.pdf", CompressOptions(), limits=Limits(max_decoded_stream_bytes=4 << 20))
    assert report.output_size_bytes <= report.input_size_bytes


def test_raw_deflate_bomb_is_too_complex(tmp_path: Path) -> None:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    src = _with_stream(text_pdf(tmp_path / "in.pdf", pages=1), c.compress(bytes(32 << 20)) + c.flush())
    with pytest.raises(EngineError) as err:
        compress(src, tmp_path / "o.pdf", CompressOptions(), limits=Limits(max_decoded_stream_bytes=4 << 20))
    assert err.value.reason == "TOO_COMPLEX"


# -- the lenient inflate of damaged streams (structural.py) ----------------------------------------------------


def test_lenient_inflate_is_bounded_and_ends_after_the_zlib_data() -> None:
    raw = zlib.compress(_BIG) + b"trailing"
    assert _lenient_inflate(raw, 64 << 20) == _BIG
    bomb = zlib.compress(bytes(16 << 20))
    assert len(_lenient_inflate(bomb, 1 << 20)) <= 2 << 20  # stops within one step of the cap


# -- page choice (verify.py) -----------------------------------------------------------------------------------


@pytest.mark.parametrize("pages", [7919, 15838, 13, 100])
def test_choose_pages_fills_its_budget_for_every_page_count(pages: int) -> None:
    chosen = choose_pages(pages, {})
    assert len(chosen) == 12
    assert len(set(chosen)) == 12
    assert all(0 <= p < pages for p in chosen)


# -- palettes (images.py) --------------------------------------------------------------------------------------


def test_indexed_image_with_absurd_hival_is_left_alone(tmp_path: Path) -> None:
    src = image_pdf(tmp_path / "pal.pdf", photo(200, 150)[..., 0].copy(), colorspace=Name.DeviceGray)
    with pikepdf.open(src, allow_overwriting_input=True) as pdf:
        img = next(iter(pdf.pages[0].get_images().values()))
        img.ColorSpace = pikepdf.Array([Name.Indexed, Name.DeviceRGB, 10**12, pikepdf.String(bytes(768))])
        pdf.save(src)
    report = compress(src, tmp_path / "o.pdf", CompressOptions(level="medium"))
    assert report.output_size_bytes <= report.input_size_bytes
