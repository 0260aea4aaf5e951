"""Every upload option through Envoy (REST), checked on the downloaded PDF itself, not on the echoed option.

Inputs are built here, small: a colourful photo stored losslessly (600x450 px shown at 2x1.5 in, so
300 dpi) and a dozen uncompressed text pages with metadata. Each is compressible enough that the
engine never falls back to the original bytes, which would hide whether an option was applied.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pikepdf
import pypdfium2 as pdfium
import pytest
from PIL import Image

from devtools.stack.stack import Stack
from services.compressor.tests.builders import image_pdf, photo, signed_pdf, text_pdf
from tests.e2e_client import RestClient
from tests.plugins.stack import API_KEYS

pytestmark = pytest.mark.integration

PHOTO_DPI = 300.0
TITLE, AUTHOR = "Quarterly figures", "Alice Author"


@pytest.fixture(scope="module")
def acme(stack: Stack) -> RestClient:
    return RestClient(stack.url, API_KEYS["acme"])


@pytest.fixture(scope="module")
def photo_pdf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("inputs") / "photo.pdf"
    return image_pdf(path, photo(600, 450, seed=1), display_pt=(144, 108)).read_bytes()


@pytest.fixture(scope="module")
def text_doc(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Twelve uncompressed text pages with an Info dictionary and XMP metadata."""
    path = text_pdf(tmp_path_factory.mktemp("inputs") / "text.pdf", pages=12)
    with pikepdf.open(path, allow_overwriting_input=True) as pdf:
        with pdf.open_metadata(set_pikepdf_as_editor=False) as meta:
            meta["dc:title"] = TITLE
            meta["dc:creator"] = [AUTHOR]
        pdf.docinfo["/Title"] = TITLE
        pdf.docinfo["/Author"] = AUTHOR
        pdf.save(path, compress_streams=False, object_stream_mode=pikepdf.ObjectStreamMode.disable)
    return path.read_bytes()


def _compress(client: RestClient, source: bytes, **options: str | int) -> tuple[dict[str, Any], bytes]:
    """Upload with `options`, wait for success; the job and the downloaded result."""
    job = client.create(source, filename="input.pdf", **options)
    done = client.wait(job["id"])
    assert done["state"] == "JOB_STATE_SUCCEEDED", done
    assert not done["report"]["kept_original"], done["report"]  # else the options were never applied
    result = client.result(job["id"])
    with pikepdf.open(io.BytesIO(result)) as pdf, pikepdf.open(io.BytesIO(source)) as original:
        assert len(pdf.pages) == len(original.pages)
    return done, result


@pytest.fixture(scope="module")
def photo_default(acme: RestClient, photo_pdf: bytes) -> tuple[dict[str, Any], bytes]:
    """The photo at the default level with no option set: the control for the photo options."""
    return _compress(acme, photo_pdf)


@pytest.fixture(scope="module")
def text_default(acme: RestClient, text_doc: bytes) -> tuple[dict[str, Any], bytes]:
    """The text document with no option set: the control for the structural options."""
    return _compress(acme, text_doc)


# --- what the downloaded PDF holds ----------------------------------------------------------------


def _matrix(values: Any) -> np.ndarray:
    """A PDF matrix [a b c d e f] as 3x3, row-vector convention (as `cm` and /Matrix are applied)."""
    a, b, c, d, e, f = (float(x) for x in values)
    return np.array([[a, b, 0], [c, d, 0], [e, f, 1]])


def _drawn_images(pdf: pikepdf.Pdf) -> Iterator[tuple[pikepdf.Object, float, float]]:
    """(image XObject, displayed width, displayed height in points) for every image drawn on every page,
    following the current transformation matrix through q/Q/cm and into form XObjects."""

    def walk(
        instructions: Any, resources: pikepdf.Object, ctm: np.ndarray, depth: int
    ) -> Iterator[tuple[pikepdf.Object, float, float]]:
        xobjects = resources.get("/XObject", pikepdf.Dictionary()) if resources is not None else pikepdf.Dictionary()
        saved: list[np.ndarray] = []
        for operands, operator in instructions:
            op = str(operator)
            if op == "q":
                saved.append(ctm)
            elif op == "Q":
                ctm = saved.pop()
            elif op == "cm":
                ctm = _matrix(operands) @ ctm
            elif op == "Do":
                xobject = xobjects[operands[0]]
                if xobject.get("/Subtype") == pikepdf.Name.Image:
                    yield xobject, math.hypot(ctm[0, 0], ctm[0, 1]), math.hypot(ctm[1, 0], ctm[1, 1])
                elif xobject.get("/Subtype") == pikepdf.Name.Form and depth < 8:
                    inner = _matrix(xobject.get("/Matrix", [1, 0, 0, 1, 0, 0])) @ ctm
                    yield from walk(
                        pikepdf.parse_content_stream(xobject), xobject.get("/Resources", resources), inner, depth + 1
                    )

    for page in pdf.pages:
        yield from walk(pikepdf.parse_content_stream(page), page.obj.get("/Resources"), np.identity(3), 0)


def _resolutions(data: bytes) -> list[tuple[float, float]]:
    """(lower, higher) effective resolution in dpi of every drawn image: its pixels over its displayed size."""
    with pikepdf.open(io.BytesIO(data)) as pdf:
        found = []
        for image, width, height in _drawn_images(pdf):
            x_dpi, y_dpi = int(image.Width) / (width / 72), int(image.Height) / (height / 72)
            found.append((min(x_dpi, y_dpi), max(x_dpi, y_dpi)))
        return found


def _colour_spaces(data: bytes) -> list[str]:
    with pikepdf.open(io.BytesIO(data)) as pdf:
        spaces = []
        for image, _, _ in _drawn_images(pdf):
            space = image.get("/ColorSpace")
            if isinstance(space, pikepdf.Array) and space[0] == pikepdf.Name.ICCBased:
                space = pikepdf.Name(f"/ICCBased{int(space[1].N)}")  # ICCBased with N=1 is gray too
            spaces.append(str(space))
        return spaces


def _max_chroma(data: bytes) -> float:
    """The largest difference between a pixel's channels over every rendered page (0: pure gray)."""
    document = pdfium.PdfDocument(data)
    try:
        worst = 0.0
        for index in range(len(document)):
            pixels = np.asarray(document[index].render(scale=1).to_pil().convert("RGB"), dtype=np.int16)
            worst = max(worst, float((pixels.max(axis=2) - pixels.min(axis=2)).max()))
        return worst
    finally:
        document.close()


def _jpeg_quantization(data: bytes) -> int:
    """The sum of the luminance quantization table of the first JPEG image (larger: lower quality)."""
    with pikepdf.open(io.BytesIO(data)) as pdf:
        for image, _, _ in _drawn_images(pdf):
            if image.get("/Filter") == pikepdf.Name.DCTDecode:
                jpeg = Image.open(io.BytesIO(image.read_raw_bytes()))
                return sum(jpeg.quantization[0])  # type: ignore[attr-defined]
    raise AssertionError("no JPEG image in the output")


# --- the options -----------------------------------------------------------------------------------


def test_grayscale_output_has_no_colour(
    acme: RestClient, photo_pdf: bytes, photo_default: tuple[dict[str, Any], bytes]
) -> None:
    assert _colour_spaces(photo_pdf) == ["/DeviceRGB"]
    assert _max_chroma(photo_default[1]) > 50  # without the option the photo stays in colour
    _, result = _compress(acme, photo_pdf, grayscale="true")
    assert _colour_spaces(result) == ["/DeviceGray"]
    assert _max_chroma(result) <= 2


def test_max_image_dpi_caps_the_displayed_resolution(acme: RestClient, photo_pdf: bytes) -> None:
    cap = 100
    assert _resolutions(photo_pdf) == [(pytest.approx(PHOTO_DPI), pytest.approx(PHOTO_DPI))]
    # The low level alone resamples only above 300 dpi: whatever is lower here is the cap's doing.
    _, result = _compress(acme, photo_pdf, level="low", max_image_dpi=cap)
    resolutions = _resolutions(result)
    assert resolutions, "the image is gone"
    assert all(highest <= cap * 1.01 for _, highest in resolutions), resolutions  # one pixel of rounding
    assert all(lowest >= cap * 0.5 for lowest, _ in resolutions), resolutions  # resampled, not thrown away


def test_lower_image_quality_gives_a_smaller_file(acme: RestClient, photo_pdf: bytes) -> None:
    _, low = _compress(acme, photo_pdf, image_quality=20)
    _, high = _compress(acme, photo_pdf, image_quality=95)
    assert len(low) < len(high)
    # The JPEG in each file really was encoded at its quality: coarser quantization at the low one.
    assert _jpeg_quantization(low) > _jpeg_quantization(high)
    for result in (low, high):
        assert _max_chroma(result) > 50  # still the colour photo


def test_remove_metadata_drops_xmp_and_document_info(
    acme: RestClient, text_doc: bytes, text_default: tuple[dict[str, Any], bytes]
) -> None:
    def metadata(data: bytes) -> tuple[bool, str | None, str | None]:
        with pikepdf.open(io.BytesIO(data)) as pdf:
            info = pdf.trailer.get("/Info")
            fields = (str(info[key]) if info is not None and key in info else None for key in ("/Author", "/Title"))
            return ("/Metadata" in pdf.Root, *fields)  # type: ignore[return-value]

    assert metadata(text_doc) == (True, AUTHOR, TITLE)
    assert metadata(text_default[1]) == (True, AUTHOR, TITLE)  # kept unless asked
    _, result = _compress(acme, text_doc, remove_metadata="true")
    assert metadata(result) == (False, None, None)
    assert TITLE.encode() not in result
    assert AUTHOR.encode() not in result


def test_linearize_gives_a_fast_web_view_file(
    acme: RestClient, text_doc: bytes, text_default: tuple[dict[str, Any], bytes]
) -> None:
    def linearized(data: bytes) -> bool:
        with pikepdf.open(io.BytesIO(data)) as pdf:
            return bool(pdf.is_linearized)

    assert not linearized(text_doc)
    assert not linearized(text_default[1])
    _, result = _compress(acme, text_doc, linearize="true")
    assert linearized(result)


def test_reachable_target_size_is_met(
    acme: RestClient, photo_pdf: bytes, photo_default: tuple[dict[str, Any], bytes]
) -> None:
    # Half of what the default level gives: only the stronger settings tried for a target reach it.
    target = len(photo_default[1]) // 2
    done, result = _compress(acme, photo_pdf, target_size_bytes=target)
    assert len(result) <= target
    assert done["report"]["target_met"] is True
    assert done["report"]["target_size_bytes"] == target
    assert _colour_spaces(result) == ["/DeviceRGB"]


def test_unreachable_target_keeps_the_smallest_verified_result(
    acme: RestClient, photo_pdf: bytes, photo_default: tuple[dict[str, Any], bytes]
) -> None:
    done, result = _compress(acme, photo_pdf, target_size_bytes=1000)
    assert done["report"]["target_met"] is False
    assert len(result) < len(photo_default[1]) // 2  # it still went as far as it could


def test_signed_pdf_comes_back_as_it_is_unless_allow_signature_break(acme: RestClient, tmp_path: Path) -> None:
    source = signed_pdf(tmp_path / "signed.pdf").read_bytes()
    kept = acme.wait(acme.create(source, filename="signed.pdf")["id"])
    assert kept["state"] == "JOB_STATE_SUCCEEDED", kept
    assert (kept["kept_original"], kept["kept_original_reason"]) == (True, "SIGNED_PDF"), kept
    assert kept["report"]["kept_original_reason"] == "SIGNED_PDF"
    assert acme.result(kept["id"]) == source  # the signature still verifies: not one byte changed

    done, result = _compress(acme, source, allow_signature_break="true")
    assert int(done["output_size_bytes"]) == len(result) < len(source)
    with pikepdf.open(io.BytesIO(result)) as pdf:
        assert "Hello page 0" in pdf.pages[0].Contents.read_bytes().decode("latin-1")
