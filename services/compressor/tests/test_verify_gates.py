"""The verifier rejects what each gate guards against, and accepts the same file when it is not broken.

Every test builds an original, a control (the original re-saved, or a change the gate must tolerate) and a
deliberately broken candidate, and calls the verifier directly with the gate the engine builds for a level
(``pipeline._gate`` over ``options.LEVELS``), so the production thresholds are the ones exercised."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pikepdf
import pytest
from pikepdf import Name

from services.compressor.engine import LEVEL_NAMES, LEVELS, CompressOptions, Verification
from services.compressor.engine.pipeline import _gate as production_gate
from services.compressor.engine.verify import Gate, Reference, choose_pages, verify

from .builders import image_pdf, interactive_pdf, photo, text_pdf

Change = Callable[[pikepdf.Pdf], None]
LOSSY = [name for name in LEVEL_NAMES if LEVELS[name].lossy]
# Structure checks do not depend on the level; they run at the most permissive visual gate, so a visual
# failure cannot be what rejects the candidate.
LOOSEST = "maximum"


def gate(level: str) -> Gate:
    return production_gate(LEVELS[level], CompressOptions(level=level))


def verified(original: Path, candidate: Path, level: str, *, deep_syntax: bool = False) -> Verification:
    with pikepdf.open(original) as pdf:
        n = len(pdf.pages)
    ref = Reference(original, None, n)
    try:
        return verify(ref, candidate, gate(level), choose_pages(n, {}), deep_syntax=deep_syntax).verification
    finally:
        ref.close()


def rewrite(src: Path, dst: Path, change: Change | None = None) -> Path:
    """``src`` re-saved, after ``change`` when given: control and broken candidate differ only by ``change``."""
    with pikepdf.open(src) as pdf:
        if change is not None:
            change(pdf)
        pdf.save(dst)
    return dst


def assert_passes(original: Path, candidate: Path, level: str, *, deep_syntax: bool = False) -> Verification:
    v = verified(original, candidate, level, deep_syntax=deep_syntax)
    assert v.failures == []
    assert v.passed is True
    return v


def assert_rejected(
    original: Path, candidate: Path, level: str, failure: str, *, deep_syntax: bool = False
) -> Verification:
    v = verified(original, candidate, level, deep_syntax=deep_syntax)
    assert failure in v.failures
    assert v.passed is False
    return v


def check_gate(original: Path, tmp_path: Path, change: Change, failure: str, level: str = LOOSEST) -> Verification:
    assert_passes(original, rewrite(original, tmp_path / "control.pdf"), level)
    return assert_rejected(original, rewrite(original, tmp_path / "broken.pdf", change), level, failure)


def set_image(pixels: np.ndarray) -> Change:
    """Replace the samples of ``image_pdf``'s image (same size, same encoding)."""

    def change(pdf: pikepdf.Pdf) -> None:
        pdf.pages[0].Resources.XObject.Im0.write(zlib.compress(pixels.tobytes(), 6), filter=Name.FlateDecode)

    return change


def luma(rgb: np.ndarray) -> np.ndarray:
    f = rgb.astype(np.float64)
    return (f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114)[..., None]


def to_u8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def interactive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return interactive_pdf(tmp_path_factory.mktemp("interactive") / "in.pdf")


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    pixels = photo(300, 225, seed=1)
    return image_pdf(tmp_path_factory.mktemp("picture") / "in.pdf", pixels), pixels


# Structure.


def test_text_gate_rejects_lost_words(tmp_path: Path) -> None:
    original = text_pdf(tmp_path / "in.pdf", pages=2)  # 100 words

    def drop_two_words(pdf: pikepdf.Pdf) -> None:
        contents = pdf.pages[0].Contents
        data = contents.read_bytes()
        assert b"(Hello page 0 line 9) Tj" in data
        contents.write(data.replace(b"(Hello page 0 line 9) Tj", b"(Hello page 0) Tj"))

    v = check_gate(original, tmp_path, drop_two_words, "text")
    assert v.text_words_in == 100
    assert v.text_recall == 0.98


def _drop_first_link(pdf: pikepdf.Pdf) -> None:
    del pdf.pages[0].Annots[0]


def _retarget_first_link(pdf: pikepdf.Pdf) -> None:
    pdf.pages[0].Annots[0].Dest = pikepdf.Array([pdf.pages[0].obj, Name.Fit])


@pytest.mark.parametrize("change", [_drop_first_link, _retarget_first_link], ids=["dropped", "retargeted"])
def test_links_gate_rejects_lost_link(interactive: Path, tmp_path: Path, change: Change) -> None:
    v = check_gate(interactive, tmp_path, change, "links")
    assert v.links_in == 2


def _drop_last_outline_item(pdf: pikepdf.Pdf) -> None:
    with pdf.open_outline() as outline:
        outline.root.pop()


def _retarget_outline_item(pdf: pikepdf.Pdf) -> None:
    with pdf.open_outline() as outline:
        outline.root[1] = pikepdf.OutlineItem("Details", 0)


@pytest.mark.parametrize("change", [_drop_last_outline_item, _retarget_outline_item], ids=["dropped", "retargeted"])
def test_outlines_gate_rejects_lost_outline_item(interactive: Path, tmp_path: Path, change: Change) -> None:
    v = check_gate(interactive, tmp_path, change, "outlines")
    assert v.outlines_in == 2


def test_fields_gate_rejects_changed_value(interactive: Path, tmp_path: Path) -> None:
    def change_value(pdf: pikepdf.Pdf) -> None:
        pdf.Root.AcroForm.Fields[0].V = pikepdf.String("Bob")

    v = check_gate(interactive, tmp_path, change_value, "fields")
    assert v.fields_in == v.fields_out == 1


def test_attachments_gate_rejects_dropped_embedded_file(interactive: Path, tmp_path: Path) -> None:
    def drop_attachment(pdf: pikepdf.Pdf) -> None:
        del pdf.attachments["notes.txt"]

    check_gate(interactive, tmp_path, drop_attachment, "attachments")


def _drop_page(pdf: pikepdf.Pdf) -> None:
    del pdf.pages[1]


def _add_page(pdf: pikepdf.Pdf) -> None:
    pdf.pages.append(pdf.pages[0])


@pytest.mark.parametrize("change", [_drop_page, _add_page], ids=["dropped", "added"])
def test_pages_gate_rejects_page_count_change(tmp_path: Path, change: Change) -> None:
    original = text_pdf(tmp_path / "in.pdf", pages=2)
    v = check_gate(original, tmp_path, change, "pages")
    assert v.pages_in == 2
    assert v.pages_out != 2


def test_geometry_gate_rejects_changed_page_size(tmp_path: Path) -> None:
    original = text_pdf(tmp_path / "in.pdf", pages=2)  # 300 x 200 pt

    def widen(pdf: pikepdf.Pdf) -> None:
        pdf.pages[1].MediaBox = pikepdf.Array([0, 0, 305, 200])

    check_gate(original, tmp_path, widen, "geometry")


# Opens.


def _not_a_pdf(control: Path, dst: Path) -> Path:
    dst.write_bytes(b"this is not a PDF at all\n" * 20)
    return dst


def _damaged_xref(control: Path, dst: Path) -> Path:
    data = control.read_bytes()
    at = data.rindex(b"startxref")
    dst.write_bytes(data[:at] + b"startxref\n17\n%%EOF\n")  # readers reconstruct the xref, with warnings
    return dst


def _damaged_stream(control: Path, dst: Path) -> Path:
    """Page 1's Flate data cut short and followed by garbage: decoding it raises."""

    def damage(pdf: pikepdf.Pdf) -> None:
        contents = pdf.pages[0].Contents
        contents.write(zlib.compress(contents.read_bytes())[:40] + b"\x00garbage", filter=Name.FlateDecode)

    return rewrite(control, dst, damage)


def _truncated_stream(control: Path, dst: Path) -> Path:
    """Page 1's Flate data cut short: qpdf decodes what is there and reports the rest only as a warning."""

    def truncate(pdf: pikepdf.Pdf) -> None:
        contents = pdf.pages[0].Contents
        contents.write(zlib.compress(contents.read_bytes())[:40], filter=Name.FlateDecode)

    return rewrite(control, dst, truncate)


@pytest.mark.parametrize(
    "damage",
    [_not_a_pdf, _damaged_xref, _damaged_stream, _truncated_stream],
    ids=["not-a-pdf", "damaged-xref", "damaged-stream", "truncated-stream"],
)
def test_opens_gate_rejects_corrupted_candidate(tmp_path: Path, damage: Callable[[Path, Path], Path]) -> None:
    original = text_pdf(tmp_path / "in.pdf", pages=2)
    control = rewrite(original, tmp_path / "control.pdf")
    assert_passes(original, control, LOOSEST)
    assert_rejected(original, damage(control, tmp_path / "broken.pdf"), LOOSEST, "opens")


def test_opens_gate_rejects_truncated_embedded_file(interactive: Path, tmp_path: Path) -> None:
    """A damaged stream no other check reads: half of an attachment's Flate data (the attachment still exists,
    pages, text and renders are unchanged)."""
    payload = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()

    def truncate_attachment(pdf: pikepdf.Pdf) -> None:
        pdf.attachments["notes.txt"].obj.EF.F.write(zlib.compress(payload)[:1000], filter=Name.FlateDecode)

    v = check_gate(interactive, tmp_path, truncate_attachment, "opens")
    assert v.failures == ["opens"]


def test_opens_gate_deep_syntax_rejects_overflowing_number(tmp_path: Path) -> None:
    """What ``qpdf --check`` rejects but renders the same: checked when damaged streams were re-encoded."""
    original = text_pdf(tmp_path / "in.pdf", pages=2)

    def overflow(pdf: pikepdf.Pdf) -> None:
        contents = pdf.pages[0].Contents
        contents.write(b"99999999999999999999999 w\n" + contents.read_bytes())

    control = rewrite(original, tmp_path / "control.pdf")
    broken = rewrite(original, tmp_path / "broken.pdf", overflow)
    assert_passes(original, control, LOOSEST, deep_syntax=True)
    assert_passes(original, broken, LOOSEST, deep_syntax=False)  # renders, text and structure are the same
    assert_rejected(original, broken, LOOSEST, "opens", deep_syntax=True)


# Visual.


@pytest.mark.parametrize("level", LEVEL_NAMES)
def test_ssim_gate_rejects_visibly_changed_image(picture: tuple[Path, np.ndarray], tmp_path: Path, level: str) -> None:
    original, pixels = picture
    mirrored = np.ascontiguousarray(pixels[:, ::-1])
    v = check_gate(original, tmp_path, set_image(mirrored), "ssim", level)
    assert v.ssim_min is not None
    assert v.ssim_min < gate(level).ssim_min


@pytest.mark.parametrize("level", LOSSY)
def test_ssim_gate_accepts_faint_noise(picture: tuple[Path, np.ndarray], tmp_path: Path, level: str) -> None:
    """Control for the threshold: a different but visually equivalent image passes every lossy gate."""
    original, pixels = picture
    noisy = to_u8(pixels + np.random.default_rng(7).normal(0, 1, pixels.shape))
    v = assert_passes(original, rewrite(original, tmp_path / "noisy.pdf", set_image(noisy)), level)
    assert v.identical_renders is False
    assert v.ssim_min is not None
    assert v.ssim_min < 1.0


@pytest.fixture(scope="module")
def muted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A photograph at 30% saturation: its luma-preserving variants below need no clipping."""
    base = photo(300, 225, seed=1)
    pixels = to_u8(luma(base) + 0.3 * (base - luma(base)))
    return image_pdf(tmp_path_factory.mktemp("muted") / "in.pdf", pixels), pixels


def _complementary(pixels: np.ndarray) -> np.ndarray:
    """Every colour replaced by its complement of the same luma (2Y - RGB): hue turned 180 degrees, chroma
    magnitude kept, so the chroma ratio stays near 1 and only the block chroma difference catches it."""
    return to_u8(2 * luma(pixels) - pixels)


def _half_saturation(pixels: np.ndarray) -> np.ndarray:
    """Chroma halved at the same luma: at ``maximum`` the block difference stays under the gate's 19 and only
    the chroma ratio (0.62 .. 1.58) catches it."""
    return to_u8(luma(pixels) + 0.5 * (pixels - luma(pixels)))


@pytest.mark.parametrize("recolour", [_complementary, _half_saturation], ids=["hue", "saturation"])
@pytest.mark.parametrize("level", LEVEL_NAMES)
def test_color_gate_rejects_colour_shift_at_same_luminance(
    muted: tuple[Path, np.ndarray], tmp_path: Path, level: str, recolour: Callable[[np.ndarray], np.ndarray]
) -> None:
    original, pixels = muted
    v = check_gate(original, tmp_path, set_image(recolour(pixels)), "color", level)
    assert "ssim" not in v.failures  # luminance is (nearly) unchanged: the luminance SSIM does not see it
    assert v.ssim_min is not None
    assert v.ssim_min >= gate(level).ssim_min


def test_identical_gate_rejects_any_render_difference_at_lossless(
    picture: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    original, pixels = picture
    one_bit = pixels.copy()
    one_bit[100, 150, 0] ^= 1  # one sample, one least significant bit
    v = check_gate(original, tmp_path, set_image(one_bit), "identical", "lossless")
    assert v.identical_renders is False
    assert "ssim" not in v.failures
    assert "color" not in v.failures
    # Only the lossless gate asks for identical renders: the same candidate passes every lossy level.
    for level in LOSSY:
        assert_passes(original, tmp_path / "broken.pdf", level)
