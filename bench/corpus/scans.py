"""Scanned-like pages: text and figure pages rendered to pixels, then stored the ways scanners and scan software
store them (1-bit Flate or CCITT G4, 8-bit gray that is effectively bitonal, gray photo-ish, JPEG and Flate
colour) at 150 to 2400 dpi, with noise, skew, letter/A4/legal pages, single and multi-page, some with an
invisible OCR text layer."""

from __future__ import annotations

import io
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pikepdf
from pikepdf import Dictionary, Name
from PIL import Image, ImageDraw, ImageFont, TiffImagePlugin

from .common import Case, Context, Family, sentence

PAGE_PT = {"letter": (612.0, 792.0), "a4": (595.28, 841.89), "legal": (612.0, 1008.0)}
BASE_DPI = 300  # pages are drawn at this resolution; higher ones are enlarged band by band (memory stays flat)
BAND_ROWS = 1024
FONT_FILES = ("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


@dataclass(frozen=True)
class ScanSpec:
    style: str  # bw-flate | bw-ccitt | gray-bitonal | gray-photo | gray-jpeg | rgb-jpeg | rgb-flate
    dpi: int
    size: str = "letter"
    pages: int = 1
    skew: float = 0.0  # degrees
    noise: float = 4.0  # standard deviation of the sensor noise (8-bit styles) or speck density (1-bit)
    ocr: bool = False  # an invisible text layer, as OCR software adds

    @property
    def name(self) -> str:
        extra = ("-skew" if self.skew else "") + ("-ocr" if self.ocr else "") + (f"-{self.pages}p" * (self.pages > 1))
        return f"{self.style}-{self.dpi}dpi-{self.size}{extra}"


def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for file in FONT_FILES:
        if Path(file).exists():
            return ImageFont.truetype(file, px)
    return ImageFont.load_default(px)


def _draw_text(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], rng: np.random.Generator) -> list[str]:
    """Lines of text filling ``box`` (left, top, right, bottom); returns the lines, for the OCR layer."""
    left, top, right, bottom = box
    font = _font(max(6, (bottom - top) // 48))
    line_px = int(font.size * 1.45) if isinstance(font, ImageFont.FreeTypeFont) else 14
    lines: list[str] = []
    for y in range(top, bottom - line_px, line_px):
        words: list[str] = []
        for word in sentence(rng, 30, 40).split():  # bounded: one sentence is longer than any line
            if draw.textlength(" ".join([*words, word]), font=font) > right - left:
                break
            words.append(word)
        draw.text((left, y), " ".join(words), fill=0, font=font)
        lines.append(" ".join(words))
    return lines


def _draw_figure(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], rng: np.random.Generator) -> None:
    """A framed line chart (a random walk) with tick marks, in dark ink or colour."""
    left, top, right, bottom = box
    draw.rectangle(box, outline=0, width=3)
    for k in range(1, 10):
        x = left + k * (right - left) // 10
        draw.line([(x, bottom), (x, bottom - 12)], fill=0, width=2)
    walk = np.cumsum(rng.normal(0, 1, 200))
    walk = (walk - walk.min()) / max(1e-9, float(np.ptp(walk)))
    xs = np.linspace(left + 10, right - 10, walk.size)
    ys = bottom - 10 - walk * (bottom - top - 20)
    colour = (180, 30, 40) if draw.mode == "RGB" else 0
    draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=colour, width=4)


def _photo(width: int, height: int, rng: np.random.Generator, channels: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = float(rng.uniform(0, 6))
    planes = [
        128 + 100 * np.sin(x / 41.0 + phase) * np.cos(y / 57.0),
        128 + 90 * np.cos((x + y) / 67.0 + phase),
        128 + 80 * np.sin(y / 31.0),
    ][:channels]
    img = np.stack(planes, axis=-1) + rng.normal(0, 8, (height, width, channels))
    return np.clip(img, 0, 255).astype(np.uint8).squeeze()


def render_page(spec: ScanSpec, rng: np.random.Generator) -> tuple[Image.Image, list[str]]:
    """The page at ``BASE_DPI`` (or the target dpi when lower): text, a figure, a photo for the photo styles."""
    w_pt, h_pt = PAGE_PT[spec.size]
    dpi = min(spec.dpi, BASE_DPI)
    w, h = round(w_pt / 72 * dpi), round(h_pt / 72 * dpi)
    colour = spec.style.startswith("rgb")
    page = Image.new("RGB" if colour else "L", (w, h), (255, 255, 255) if colour else 255)
    draw = ImageDraw.Draw(page)
    margin = w // 10
    lines = _draw_text(draw, (margin, margin, w - margin, h // 2), rng)
    figure = (margin, h // 2 + margin // 2, w - margin, h - margin * 2)
    if spec.style in ("gray-photo", "gray-jpeg") or colour:
        photo = _photo(figure[2] - figure[0], figure[3] - figure[1], rng, 3 if colour else 1)
        page.paste(Image.fromarray(photo), figure[:2])
        figure = (margin, h - margin * 2 + 10, w - margin, h - margin)
    _draw_figure(draw, figure, rng)
    if spec.skew:
        page = page.rotate(spec.skew, resample=Image.Resampling.BILINEAR, fillcolor=page.getpixel((0, 0)))
    return page, lines


def _size_px(spec: ScanSpec) -> tuple[int, int]:
    w_pt, h_pt = PAGE_PT[spec.size]
    return round(w_pt / 72 * spec.dpi), round(h_pt / 72 * spec.dpi)


def _bands(page: Image.Image, spec: ScanSpec) -> Iterator[np.ndarray]:
    """The page at the scan's resolution, ``BAND_ROWS`` rows at a time (enlarged by nearest neighbour)."""
    width, height = _size_px(spec)
    base = np.asarray(page)
    cols = np.arange(width) * base.shape[1] // width
    rows = np.arange(height) * base.shape[0] // height
    for r0 in range(0, height, BAND_ROWS):
        yield base[rows[r0 : r0 + BAND_ROWS]][:, cols]


def _ink_bands(page: Image.Image, spec: ScanSpec, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Ink (True) per band, with specks of dust and dropout at a density set by ``noise``."""
    for band in _bands(page.convert("L"), spec):
        ink = band < 128
        flips = rng.random(ink.shape, dtype=np.float32) < spec.noise * 2.5e-4
        yield ink ^ flips


def _noisy(band: np.ndarray, spec: ScanSpec, rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(0, spec.noise, band.shape).astype(np.float32)
    return np.clip(band.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def _image(pdf: pikepdf.Pdf, data: bytes, size: tuple[int, int], bpc: int, cs: Name, **extra: object) -> pikepdf.Object:
    stream = pikepdf.Stream(pdf, data)
    stream.stream_dict.update(
        {"/Type": Name.XObject, "/Subtype": Name.Image, "/Width": size[0], "/Height": size[1]}
        | {"/BitsPerComponent": bpc, "/ColorSpace": cs}
        | {f"/{k}": v for k, v in extra.items()}
    )
    return pdf.make_indirect(stream)


def _deflate(chunks: Iterator[bytes]) -> bytes:
    z = zlib.compressobj(6)
    return b"".join(z.compress(c) for c in chunks) + z.flush()


def _ccitt_g4(ink: np.ndarray) -> bytes:
    """CCITT Group 4 data of a 1-bit page, from libtiff through Pillow (one strip: the whole image). libtiff codes
    0 bits as white runs, so the ink goes in as 1s."""
    buf = io.BytesIO()
    Image.fromarray(ink).convert("1").save(buf, "TIFF", compression="group4", tiffinfo={278: ink.shape[0]})
    with warnings.catch_warnings():  # Pillow warns about pages above 89 Mpixel: ours are scans, not bombs
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        tiff = Image.open(io.BytesIO(buf.getvalue()))
    assert isinstance(tiff, TiffImagePlugin.TiffImageFile)
    offset, length = tiff.tag_v2[273][0], tiff.tag_v2[279][0]
    return buf.getvalue()[offset : offset + length]


def _jpeg(pixels: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def encode(pdf: pikepdf.Pdf, page: Image.Image, spec: ScanSpec, rng: np.random.Generator) -> pikepdf.Object:
    """The page's pixels as one image XObject stored in the scan's style."""
    size = _size_px(spec)
    gray, rgb = Name.DeviceGray, Name.DeviceRGB
    if spec.style == "bw-flate":
        data = _deflate(np.packbits(~ink, axis=1).tobytes() for ink in _ink_bands(page, spec, rng))
        return _image(pdf, data, size, 1, gray, Filter=Name.FlateDecode)
    if spec.style == "bw-ccitt":
        ink = np.concatenate(list(_ink_bands(page, spec, rng)))
        parms = Dictionary(K=-1, Columns=size[0], Rows=size[1], BlackIs1=False)
        return _image(pdf, _ccitt_g4(ink), size, 1, gray, Filter=Name.CCITTFaxDecode, DecodeParms=parms)
    if spec.style == "gray-bitonal":  # paper 236..255, ink 10..50: two tones that are not exactly two levels
        chunks = (
            np.where(ink, 50, 255) - rng.integers(0, 20, ink.shape, dtype=np.uint8)
            for ink in _ink_bands(page, spec, rng)
        )
        data = _deflate(c.astype(np.uint8).tobytes() for c in chunks)
        return _image(pdf, data, size, 8, gray, Filter=Name.FlateDecode)
    pixels = _noisy(np.concatenate(list(_bands(page, spec))), spec, rng)
    if spec.style in ("gray-jpeg", "rgb-jpeg"):
        cs = rgb if pixels.ndim == 3 else gray
        return _image(pdf, _jpeg(pixels, int(rng.integers(70, 93))), size, 8, cs, Filter=Name.DCTDecode)
    cs = rgb if pixels.ndim == 3 else gray  # gray-photo, rgb-flate
    return _image(pdf, zlib.compress(pixels.tobytes(), 6), size, 8, cs, Filter=Name.FlateDecode)


def _ocr_layer(lines: list[str], spec: ScanSpec) -> bytes:
    """Invisible text (render mode 3) where the lines are, as OCR software lays it over a scan."""
    w_pt, h_pt = PAGE_PT[spec.size]
    step = (h_pt / 2 - w_pt / 10) / max(1, len(lines))
    ops = [b"BT 3 Tr /F1 10 Tf"]
    for k, line in enumerate(lines):
        text = line.encode("latin-1", "replace").replace(b"\\", b"").replace(b"(", b"").replace(b")", b"")
        ops.append(b"1 0 0 1 %.2f %.2f Tm (%s) Tj" % (w_pt / 10, h_pt - w_pt / 10 - (k + 1) * step, text))
    ops.append(b"ET")
    return b"\n".join(ops)


def scan_pdf(path: Path, spec: ScanSpec, rng: np.random.Generator) -> Path:
    pdf = pikepdf.new()
    font = pdf.make_indirect(Dictionary(Type=Name.Font, Subtype=Name.Type1, BaseFont=Name.Helvetica))
    w_pt, h_pt = PAGE_PT[spec.size]
    for _ in range(spec.pages):
        page_image, lines = render_page(spec, rng)
        image = encode(pdf, page_image, spec, rng)
        del page_image
        page = pdf.add_blank_page(page_size=(w_pt, h_pt))
        page.obj.Resources = Dictionary(XObject=Dictionary(Im0=image), Font=Dictionary(F1=font))
        content = b"q %g 0 0 %g 0 0 cm /Im0 Do Q\n" % (w_pt, h_pt)
        page.obj.Contents = pdf.make_stream(content + (_ocr_layer(lines, spec) if spec.ocr else b""))
    pdf.save(path, deterministic_id=True)
    return path


def specs(quick: bool) -> list[ScanSpec]:
    if quick:
        return [
            ScanSpec("bw-ccitt", 150),
            ScanSpec("gray-bitonal", 100, "a4", skew=0.8),
            ScanSpec("rgb-jpeg", 100, "legal", pages=2),
        ]
    sizes = ("letter", "a4", "legal")
    one_bit = [ScanSpec("bw-flate", d, sizes[i % 3], skew=0.6 * (i % 2)) for i, d in enumerate((150, 300, 600, 1200))]
    one_bit += [ScanSpec("bw-flate", 2400, "letter"), ScanSpec("bw-flate", 2400, "a4", skew=0.4)]
    one_bit += [ScanSpec("bw-ccitt", d, sizes[i % 3], skew=0.5 * (i % 2)) for i, d in enumerate((150, 200, 300, 600))]
    one_bit += [ScanSpec("bw-ccitt", 1200, "letter"), ScanSpec("bw-ccitt", 300, "a4", ocr=True)]
    gray = [ScanSpec("gray-bitonal", d, sizes[i % 3], skew=0.7 * (i % 2)) for i, d in enumerate((150, 300, 600, 1200))]
    gray += [ScanSpec("gray-bitonal", 300, "letter", noise=12.0, ocr=True)]
    photo = [
        ScanSpec(s, d, sizes[(i + j) % 3], skew=0.5 * (j % 2))
        for i, s in enumerate(("gray-photo", "gray-jpeg", "rgb-jpeg", "rgb-flate"))
        for j, d in enumerate((150, 300, 600))
    ]
    photo += [ScanSpec("rgb-jpeg", 200, "letter", noise=10.0, ocr=True), ScanSpec("gray-jpeg", 400, "legal")]
    multi = [
        ScanSpec("bw-ccitt", 300, "letter", pages=12, skew=0.3),
        ScanSpec("bw-flate", 200, "a4", pages=20),
        ScanSpec("gray-bitonal", 300, "letter", pages=8, ocr=True),
        ScanSpec("gray-jpeg", 200, "a4", pages=6),
        ScanSpec("rgb-jpeg", 150, "letter", pages=10, skew=0.4),
        ScanSpec("rgb-flate", 150, "legal", pages=4),
        ScanSpec("bw-flate", 600, "letter", pages=5),
    ]
    return one_bit + gray + photo + multi


def build(ctx: Context) -> list[Case]:
    cases = []
    for spec in specs(ctx.quick):
        path = scan_pdf(ctx.path("scans", spec.name), spec, ctx.rng("scans", spec.name))
        cases.append(Case("scans", spec.name, path, spec.pages))
    return cases


FAMILY = Family("scans", "scanned-like pages, 150-2400 dpi, 1-bit/gray/colour, Flate/CCITT/JPEG", build)
