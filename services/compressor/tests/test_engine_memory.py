"""Memory (issue 12): large images are worked on in strips, 1-bit images stay packed, the engine child's peak stays
under 512 MiB, and an image one technique runs out of memory on is kept as it is. Bitonal scans: effectively
bitonal 8-bit scans become CCITT G4 1-bit images, and 1-bit images displayed far above the level's resolution are
reduced, at lossy levels. The heavy cases (2400 dpi, 40 photo pages, ...) are in bench/memory.py."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pikepdf
import pytest
from pikepdf import Name
from PIL import Image

from services.compressor.engine import CompressOptions, compress, images
from services.compressor.engine.bitonal import effectively_bitonal
from services.compressor.engine.codecs import ccitt_g4, png_filter
from services.compressor.engine.opening import count_pages_pypdf

from .builders import full_page_image, jpeg_xobject, photo, scan_pdf

ROOT = Path(__file__).resolve().parents[3]
PEAK_LIMIT_KIB = 512 * 1024

# One job through compress_isolated in a fresh interpreter: its children are the engine child alone, so their
# ru_maxrss is that child's peak resident memory (libraries included).
_MEASURE = """
import json, resource, sys
from pathlib import Path
from services.compressor.engine import CompressOptions
from services.compressor.engine.isolation import compress_isolated
report = compress_isolated(Path(sys.argv[1]), Path(sys.argv[2]), CompressOptions(level=sys.argv[3]))
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"peak_kib": peak, "report": report.to_dict()}))
"""


def _isolated_peak(src: Path, out: Path, level: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(src), str(out), level], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    return int(result["peak_kib"]), result["report"]


def _techniques(report: dict[str, Any]) -> set[str]:
    return {t["name"] for t in report["techniques"]}


def test_1200dpi_bitonal_letter_page_stays_under_512_mib(tmp_path: Path) -> None:
    # 10200 x 13200 1-bit: 17 MB packed, 135 MB as Pillow's one-byte-per-pixel "1" image, several times that as
    # whole-image PNG-filter temporaries (the old path peaked at 660 MiB).
    src = scan_pdf(tmp_path / "scan.pdf", 10200, 13200)
    peak, report = _isolated_peak(src, tmp_path / "out.pdf", "lossless")
    assert peak < PEAK_LIMIT_KIB, f"peak {peak / 1024:.0f} MiB"
    assert report["verification"]["passed"]
    assert not report["kept_original"]
    assert "bitonal-ccitt-g4" in _techniques(report) or "lossless-flate" in _techniques(report)


def test_8000x6000_jpeg_is_decoded_at_reduced_scale(tmp_path: Path) -> None:
    # 144 MB decoded at full size (over the per-image budget); libjpeg's draft mode decodes it at 1/4 for medium's
    # 150 dpi on a letter page.
    pixels = np.asarray(Image.fromarray(photo(400, 300)).resize((8000, 6000), Image.Resampling.BILINEAR))
    pdf = pikepdf.new()
    full_page_image(pdf, jpeg_xobject(pdf, pixels, 85), (612.0, 792.0))
    del pixels
    src = tmp_path / "big-jpeg.pdf"
    pdf.save(src)
    peak, report = _isolated_peak(src, tmp_path / "out.pdf", "medium")
    assert peak < PEAK_LIMIT_KIB, f"peak {peak / 1024:.0f} MiB"
    assert report["verification"]["passed"]
    assert not report["kept_original"]
    assert "downsample-jpeg" in _techniques(report)
    assert report["output_size_bytes"] < report["input_size_bytes"] / 10


def _two_image_pdf(path: Path) -> Path:
    """Two 600x450 Flate photographs shown at 600 dpi on one page."""
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(300, 200))
    xobjects = {}
    for i in range(2):
        img = pikepdf.Stream(pdf, photo(600, 450, seed=i).tobytes())
        img.stream_dict.update(
            {
                "/Type": Name.XObject,
                "/Subtype": Name.Image,
                "/Width": 600,
                "/Height": 450,
                "/BitsPerComponent": 8,
                "/ColorSpace": Name.DeviceRGB,
            }
        )
        xobjects[f"/Im{i}"] = pdf.make_indirect(img)
    page.obj.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(xobjects))
    page.obj.Contents = pdf.make_stream(b"q 72 0 0 54 10 10 cm /Im0 Do Q q 72 0 0 54 100 10 cm /Im1 Do Q")
    pdf.save(path, compress_streams=False)
    return path


def test_an_image_that_runs_out_of_memory_is_kept_and_the_job_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _two_image_pdf(tmp_path / "two.pdf")
    real = images.codecs.flate_best
    seed0 = photo(600, 450, seed=0).tobytes()

    def flate_best_out_of_memory_on_the_first(samples: Any, *args: Any) -> Any:
        if bytes(samples) == seed0:
            raise MemoryError
        return real(samples, *args)

    monkeypatch.setattr(images.codecs, "flate_best", flate_best_out_of_memory_on_the_first)
    report = compress(src, tmp_path / "out.pdf", CompressOptions(level="medium"))
    assert report.verification.passed
    assert not report.kept_original
    with pikepdf.open(tmp_path / "out.pdf") as out:
        xobjects = out.pages[0].Resources.XObject
        # Kept as it was (the final rewrite deflates what was stored unfiltered, as for every stream).
        assert xobjects.Im0.Filter == Name.FlateDecode
        assert xobjects.Im0.get("/DecodeParms") is None
        assert bytes(xobjects.Im0.read_bytes()) == seed0
        assert xobjects.Im1.Filter == Name.DCTDecode  # the next image was still compressed


# -- strips: the same bytes as a whole-image pass -----------------------------------------------------------------


def test_png_filter_in_strips_equals_one_pass() -> None:
    rng = np.random.default_rng(5)
    samples = rng.integers(0, 256, 301 * 3 * 97, dtype=np.uint8).tobytes()
    whole = png_filter(samples, 301, 97, 3, 8, strip_bytes=1 << 30)
    assert whole is not None
    assert png_filter(samples, 301, 97, 3, 8, strip_bytes=1000) == whole


def _decode_g4(data: bytes, w: int, h: int) -> bytes:
    """CCITT G4 data -> packed rows, decoded by libtiff (through Pillow) from a minimal TIFF around it."""
    tags = [(256, 4, w), (257, 4, h), (258, 3, 1), (259, 3, 4), (262, 3, 1), (273, 4, 8), (278, 4, h)]
    tags += [(279, 4, len(data))]
    ifd = len(tags).to_bytes(2, "little") + b"".join(
        t.to_bytes(2, "little") + k.to_bytes(2, "little") + (1).to_bytes(4, "little") + v.to_bytes(4, "little")
        for t, k, v in tags
    )
    offset = 8 + len(data)
    tif = b"II*\x00" + offset.to_bytes(4, "little") + data + ifd + b"\x00\x00\x00\x00"
    img = Image.open(io.BytesIO(tif))
    return img.tobytes()


def test_ccitt_g4_in_strips_decodes_to_the_same_bits() -> None:
    rng = np.random.default_rng(9)
    w, h = 1000, 700
    ink = np.zeros((h, w), dtype=bool)
    for _ in range(300):
        y, x = rng.integers(0, h - 20), rng.integers(0, w - 30)
        ink[y : y + rng.integers(1, 20), x : x + rng.integers(1, 30)] = True
    ink ^= rng.random((h, w)) < 0.01  # no all-white rows to hide a wrong join
    packed = np.packbits(~ink, axis=1).tobytes()
    whole = ccitt_g4(packed, w, h, strip_pixels=1 << 30)
    strips = ccitt_g4(packed, w, h, strip_pixels=w * 37)
    assert whole is not None
    assert strips is not None
    assert strips == whole
    assert _decode_g4(strips, w, h) == packed


# -- bitonal scans ------------------------------------------------------------------------------------------------


def test_effectively_bitonal_tells_scans_from_photographs() -> None:
    gray_photo = np.asarray(Image.fromarray(photo(400, 300)).convert("L"))
    assert not effectively_bitonal(gray_photo.tobytes(), 400, 300, 1)
    assert not effectively_bitonal(photo(400, 300).tobytes(), 400, 300, 3)
    rng = np.random.default_rng(2)
    scan = np.where(rng.random((300, 400)) < 0.1, rng.integers(0, 24, (300, 400)), rng.integers(232, 256, (300, 400)))
    assert effectively_bitonal(scan.astype(np.uint8).tobytes(), 400, 300, 1)


def _only_image(path: Path) -> dict[str, Any]:
    with pikepdf.open(path) as pdf:
        img = next(iter(pdf.pages[0].get_images().values()))
        return {k: img.get(k) for k in ("/Width", "/BitsPerComponent", "/Filter", "/ColorSpace")}


@pytest.mark.parametrize("style", ["gray", "rgb"])
def test_effectively_bitonal_scan_becomes_ccitt_g4_at_medium(tmp_path: Path, style: str) -> None:
    # 300 dpi on a half-letter page: kept at 300 dpi (medium's bitonal resolution), thresholded to 1 bit.
    src = scan_pdf(tmp_path / "scan.pdf", 1275, 1650, style=style, page_pt=(306.0, 396.0))
    report = compress(src, tmp_path / "out.pdf", CompressOptions(level="medium"))
    assert report.verification.passed
    assert not report.kept_original
    assert any(t.name == "gray-to-bitonal" for t in report.techniques)
    img = _only_image(tmp_path / "out.pdf")
    assert img["/BitsPerComponent"] == 1
    assert img["/Filter"] in (Name.CCITTFaxDecode, Name.FlateDecode)  # whichever is smaller
    assert img["/Width"] == 1275
    assert img["/ColorSpace"] == Name.DeviceGray
    assert report.output_size_bytes < report.input_size_bytes / 20


def test_lossless_keeps_an_effectively_bitonal_scan_gray(tmp_path: Path) -> None:
    src = scan_pdf(tmp_path / "scan.pdf", 1275, 1650, style="gray")
    report = compress(src, tmp_path / "out.pdf", CompressOptions(level="lossless"))
    assert report.verification.identical_renders is True
    assert _only_image(tmp_path / "out.pdf")["/BitsPerComponent"] == 8


def test_1bit_scan_far_above_the_level_resolution_is_reduced(tmp_path: Path) -> None:
    # 600 dpi on a half-letter page: medium keeps bitonal images at 300 dpi, so a factor of 2.
    src = scan_pdf(tmp_path / "scan.pdf", 2550, 3300, page_pt=(306.0, 396.0))
    report = compress(src, tmp_path / "out.pdf", CompressOptions(level="medium"))
    assert report.verification.passed
    assert not report.kept_original
    assert any(t.name == "downsample-bitonal" for t in report.techniques)
    img = _only_image(tmp_path / "out.pdf")
    assert img["/Width"] == 1275
    assert img["/BitsPerComponent"] == 1
    lossless = compress(src, tmp_path / "lossless.pdf", CompressOptions(level="lossless"))
    assert _only_image(tmp_path / "lossless.pdf")["/Width"] == 2550
    assert lossless.verification.identical_renders is True


def test_counting_pages_with_pypdf_does_not_copy_the_file(tmp_path: Path) -> None:
    """Given a path, pypdf read the whole file into memory, and the copy lived until the garbage collector ran:
    a file-sized peak at opening and again at each verification."""
    src = tmp_path / "big.pdf"
    with pikepdf.new() as pdf:
        pdf.add_blank_page()
        pdf.Root.Junk = pdf.make_stream(np.random.default_rng(1).bytes(24 << 20))  # incompressible, 24 MiB
        pdf.save(src)
    tracemalloc.start()
    try:
        assert count_pages_pypdf(src, None) == 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Before: 31 MiB for this 24 MiB file; reading only what it needs: 7 MiB.
    assert peak < src.stat().st_size // 2, f"{peak >> 20} MiB held while counting a {src.stat().st_size >> 20} MiB file"
