"""Synthetic PDFs for the engine tests (built with pikepdf; no files outside the repository needed)."""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pikepdf
from pikepdf import Dictionary, Name
from PIL import Image

DATA = Path(__file__).resolve().parents[3] / "tests" / "data"


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photograph-like RGB image: smooth gradients plus texture (many distinct colours)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 128 + 100 * np.sin(x / 37.0) * np.cos(y / 53.0)
    g = 128 + 90 * np.cos((x + y) / 61.0)
    b = 128 + 80 * np.sin(y / 29.0)
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, 6, (height, width, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _font(pdf: pikepdf.Pdf) -> pikepdf.Object:
    return pdf.make_indirect(Dictionary(Type=Name.Font, Subtype=Name.Type1, BaseFont=Name.Helvetica))


def image_pdf(
    path: Path,
    pixels: np.ndarray,
    *,
    display_pt: tuple[float, float] = (288, 216),
    colorspace: pikepdf.Object = Name.DeviceRGB,
    smask: np.ndarray | None = None,
    text: str = "Caption under the picture",
) -> Path:
    """One page showing ``pixels`` (h, w[, c]) stored with plain Flate at ``display_pt`` (so its displayed
    resolution is width_px / (display_pt / 72))."""
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(display_pt[0] + 72, display_pt[1] + 144))
    h, w = pixels.shape[:2]
    img = pikepdf.Stream(pdf, zlib.compress(pixels.tobytes(), 6))
    img.stream_dict.update(
        {
            "/Type": Name.XObject,
            "/Subtype": Name.Image,
            "/Width": w,
            "/Height": h,
            "/BitsPerComponent": 8,
            "/ColorSpace": colorspace,
            "/Filter": Name.FlateDecode,
        }
    )
    if smask is not None:
        sm = pikepdf.Stream(pdf, zlib.compress(smask.tobytes(), 6))
        sm.stream_dict.update(
            {
                "/Type": Name.XObject,
                "/Subtype": Name.Image,
                "/Width": smask.shape[1],
                "/Height": smask.shape[0],
                "/BitsPerComponent": 8,
                "/ColorSpace": Name.DeviceGray,
                "/Filter": Name.FlateDecode,
            }
        )
        img.stream_dict["/SMask"] = pdf.make_indirect(sm)
    page.obj.Resources = Dictionary(XObject=Dictionary(Im0=pdf.make_indirect(img)), Font=Dictionary(F1=_font(pdf)))
    dw, dh = display_pt
    content = f"q {dw} 0 0 {dh} 36 108 cm /Im0 Do Q BT /F1 14 Tf 36 60 Td ({text}) Tj ET".encode()
    page.obj.Contents = pdf.make_stream(content)
    pdf.save(path)
    return path


def bitonal_pdf(path: Path, width: int = 1200, height: int = 900) -> Path:
    """A 1-bit 'scan' (text-like black strokes on white) stored as Flate."""
    rng = np.random.default_rng(3)
    bits = np.ones((height, width), dtype=bool)  # 1 = white in DeviceGray
    for _ in range(400):
        y, x = rng.integers(0, height - 12), rng.integers(0, width - 40)
        bits[y : y + rng.integers(2, 12), x : x + rng.integers(3, 40)] = False
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(288, 216))
    img = pikepdf.Stream(pdf, zlib.compress(np.packbits(bits, axis=1).tobytes(), 6))
    img.stream_dict.update(
        {
            "/Type": Name.XObject,
            "/Subtype": Name.Image,
            "/Width": width,
            "/Height": height,
            "/BitsPerComponent": 1,
            "/ColorSpace": Name.DeviceGray,
            "/Filter": Name.FlateDecode,
        }
    )
    page.obj.Resources = Dictionary(XObject=Dictionary(Im0=pdf.make_indirect(img)))
    page.obj.Contents = pdf.make_stream(b"q 288 0 0 216 0 0 cm /Im0 Do Q")
    pdf.save(path)
    return path


def text_pdf(path: Path, pages: int = 2, *, compress: bool = False) -> Path:
    pdf = pikepdf.new()
    font = _font(pdf)
    for i in range(pages):
        page = pdf.add_blank_page(page_size=(300, 200))
        page.obj.Resources = Dictionary(Font=Dictionary(F1=font))
        ops = b"".join(
            b"BT /F1 12 Tf 20 %d Td (Hello page %d line %d) Tj ET\n" % (180 - 15 * k, i, k) for k in range(10)
        )
        page.obj.Contents = pdf.make_stream(ops)
    if compress:
        pdf.save(path, compress_streams=True, object_stream_mode=pikepdf.ObjectStreamMode.generate)
    else:
        pdf.save(path, compress_streams=False, object_stream_mode=pikepdf.ObjectStreamMode.disable)
    return path


def signed_pdf(path: Path) -> Path:
    """A text PDF with a filled signature field (the signature bytes are a dummy; only the structure matters)."""
    text_pdf(path, pages=1)
    with pikepdf.open(path, allow_overwriting_input=True) as pdf:
        sig_value = pdf.make_indirect(
            Dictionary(
                Type=Name.Sig,
                Filter=Name("/Adobe.PPKLite"),
                SubFilter=Name("/adbe.pkcs7.detached"),
                ByteRange=pikepdf.Array([0, 10, 20, 10]),
                Contents=pikepdf.String(b"\x00" * 64),
            )
        )
        widget = pdf.make_indirect(
            Dictionary(
                Type=Name.Annot,
                Subtype=Name.Widget,
                FT=Name.Sig,
                T=pikepdf.String("Signature1"),
                V=sig_value,
                Rect=pikepdf.Array([0, 0, 0, 0]),
                F=132,
                P=pdf.pages[0].obj,
            )
        )
        pdf.pages[0].obj.Annots = pikepdf.Array([widget])
        pdf.Root.AcroForm = Dictionary(Fields=pikepdf.Array([widget]), SigFlags=3)
        pdf.save(path)
    return path


@dataclass
class ImageFacts:
    width: int
    bpc: int
    filter: pikepdf.Object | None
    colorspace: pikepdf.Object | None
    decode: list[float] | None
    smask_filter: pikepdf.Object | None
    pixels: bytes  # decoded samples as Pillow sees them


def first_image(path: Path, password: str = "") -> ImageFacts:
    """Facts about the first image XObject of the first page."""
    with pikepdf.open(path, password=password) as pdf:
        for obj in pdf.pages[0].get_images().values():
            assert isinstance(obj, pikepdf.Stream)
            sm = obj.get("/SMask")
            dec = obj.get("/Decode")
            return ImageFacts(
                width=int(obj.Width),
                bpc=int(obj.get("/BitsPerComponent", 0)),
                filter=obj.get("/Filter"),
                colorspace=obj.get("/ColorSpace"),
                decode=[float(x) for x in dec] if dec is not None else None,
                smask_filter=sm.get("/Filter") if sm is not None else None,
                pixels=pikepdf.PdfImage(obj).as_pil_image().tobytes(),
            )
    raise AssertionError("no image on page 1")


def minimal_pdf(path: Path) -> Path:
    """One page with one word, written by hand as tightly as PDF allows (classic xref table, no object streams,
    no /ID, a 30-byte content stream). Any rewrite by qpdf adds its binary comment, an xref stream and an /ID,
    so no candidate the engine builds can be smaller than this file."""
    content = b"BT/F1 12 Tf 9 9 Td(Hi)Tj ET"
    objects = [
        b"<</Type/Catalog/Pages 2 0 R>>",
        b"<</Type/Pages/Kids[3 0 R]/Count 1>>",
        b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 99 99]"
        b"/Resources<</Font<</F1<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>>>>>/Contents 4 0 R>>",
        b"<</Length %d>>stream\n%s\nendstream" % (len(content), content),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj%sendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer<</Size %d/Root 1 0 R>>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def interactive_pdf(path: Path) -> Path:
    """``text_pdf`` (2 pages) plus what the structure checks compare: on page 1 a link to page 2 and a URI link,
    on page 2 a filled text field (``name`` = ``Alice``), two outline items (``Introduction`` -> page 1,
    ``Details`` -> page 2) and one embedded file (``notes.txt``)."""
    text_pdf(path, pages=2)
    with pikepdf.open(path, allow_overwriting_input=True) as pdf:
        p1, p2 = pdf.pages[0].obj, pdf.pages[1].obj
        no_border = pikepdf.Array([0, 0, 0])
        goto = Dictionary(
            Type=Name.Annot,
            Subtype=Name.Link,
            Rect=pikepdf.Array([20, 20, 120, 40]),
            Border=no_border,
            Dest=pikepdf.Array([p2, Name.Fit]),
        )
        uri = Dictionary(
            Type=Name.Annot,
            Subtype=Name.Link,
            Rect=pikepdf.Array([150, 20, 250, 40]),
            Border=no_border,
            A=Dictionary(S=Name.URI, URI=pikepdf.String("https://example.com/")),
        )
        p1.Annots = pikepdf.Array([pdf.make_indirect(goto), pdf.make_indirect(uri)])
        da = pikepdf.String("/Helv 10 Tf 0 g")
        field = pdf.make_indirect(
            Dictionary(
                Type=Name.Annot,
                Subtype=Name.Widget,
                FT=Name.Tx,
                T=pikepdf.String("name"),
                V=pikepdf.String("Alice"),
                Rect=pikepdf.Array([20, 45, 180, 60]),
                DA=da,
                F=4,
                P=p2,
            )
        )
        p2.Annots = pikepdf.Array([field])
        pdf.Root.AcroForm = Dictionary(
            Fields=pikepdf.Array([field]), DR=Dictionary(Font=Dictionary(Helv=_font(pdf))), DA=da
        )
        with pdf.open_outline() as outline:
            outline.root.append(pikepdf.OutlineItem("Introduction", 0))
            outline.root.append(pikepdf.OutlineItem("Details", 1))
        pdf.attachments["notes.txt"] = pikepdf.AttachedFileSpec(pdf, b"attached notes\n", filename="notes.txt")
        pdf.save(path)
    return path


def truncated_download(path: Path, source: Path) -> Path:
    """``source`` cut short just before its cross-reference table, as an interrupted download leaves it: qpdf
    rebuilds the xref and reads every page, PDFium refuses the file (no trailer)."""
    data = source.read_bytes()
    cut = data.rfind(b"\nxref")
    if cut < 0:
        raise ValueError("the source has no classic xref table")
    path.write_bytes(data[:cut])
    return path


# -- Large scanned-like pages (memory and bitonal tests, bench/memory.py) ---------------------------------------

LETTER_PT = (612.0, 792.0)
# Scans are drawn at about this resolution and enlarged, so a 2400-dpi page costs what a 300-dpi one does to build.
_SCAN_BASE_PX = 2550
_BAND_ROWS = 1024


def _text_page(width: int, height: int, seed: int, base_px: int) -> np.ndarray:
    """Ink (True) of a page of text ``base_px`` wide at most: lines of word-like glyphs (stems, bars, bowls)."""
    rng = np.random.default_rng(seed)
    bw = min(width, base_px)
    bh = max(1, round(height * bw / width))
    ink = np.zeros((bh, bw), dtype=bool)
    margin, line_px, x_height = bw // 9, max(8, bw // 50), max(4, bw // 100)
    for top in range(margin, bh - margin - line_px, line_px):
        x = margin
        while x < bw - margin - 3 * x_height:
            for _ in range(int(rng.integers(2, 9))):  # one word
                g = int(rng.integers(x_height // 2, x_height + 1))
                stem = max(1, g // 5)
                ink[top : top + x_height, x : x + stem] = True
                ink[top + int(rng.integers(0, x_height - stem + 1)) :][:stem, x : x + g] = True
                if rng.random() < 0.4:  # ascender
                    ink[max(0, top - x_height // 2) : top, x : x + stem] = True
                x += g + stem + 1
            x += x_height
    return ink


def scan_bands(width: int, height: int, seed: int = 0, base_px: int = _SCAN_BASE_PX) -> Iterator[np.ndarray]:
    """A scanned text page as ink masks (rows, width) of at most ``_BAND_ROWS`` rows, top to bottom, drawn
    ``base_px`` wide and enlarged."""
    base = _text_page(width, height, seed, base_px)
    cols = np.arange(width) * base.shape[1] // width
    rows = np.arange(height) * base.shape[0] // height
    for r0 in range(0, height, _BAND_ROWS):
        yield base[rows[r0 : r0 + _BAND_ROWS]][:, cols]


def _scan_samples(ink: np.ndarray, style: str, rng: np.random.Generator) -> bytes:
    """One band of samples: ``bitonal`` 1-bit (1 = white), ``gray`` 8-bit or ``rgb`` 8-bit, both with scanner
    noise (paper 240-255, ink 0-15) so that they are "effectively bitonal" without being exactly two levels."""
    if style == "bitonal":
        return np.packbits(~ink, axis=1).tobytes()
    paper = rng.integers(240, 256, ink.shape, dtype=np.uint8)
    gray = np.where(ink, paper - np.uint8(240), paper)
    if style == "gray":
        return gray.tobytes()
    tint = rng.integers(0, 8, (*ink.shape, 3), dtype=np.uint8)
    return np.clip(gray[..., None].astype(np.int16) - tint, 0, 255).astype(np.uint8).tobytes()


def _flate_image(pdf: pikepdf.Pdf, chunks: Iterator[bytes], width: int, height: int, bpc: int, cs: Any) -> Any:
    z = zlib.compressobj(6)
    data = b"".join(z.compress(c) for c in chunks) + z.flush()
    img = pikepdf.Stream(pdf, data)
    img.stream_dict.update(
        {
            "/Type": Name.XObject,
            "/Subtype": Name.Image,
            "/Width": width,
            "/Height": height,
            "/BitsPerComponent": bpc,
            "/ColorSpace": cs,
            "/Filter": Name.FlateDecode,
        }
    )
    return pdf.make_indirect(img)


def full_page_image(pdf: pikepdf.Pdf, image: Any, page_pt: tuple[float, float]) -> None:
    """A page of ``page_pt`` showing ``image`` over all of it."""
    page = pdf.add_blank_page(page_size=page_pt)
    page.obj.Resources = Dictionary(XObject=Dictionary(Im0=image))
    page.obj.Contents = pdf.make_stream(b"q %g 0 0 %g 0 0 cm /Im0 Do Q" % page_pt)


def scan_pdf(
    path: Path, width: int, height: int, *, style: str = "bitonal", pages: int = 1, page_pt: tuple = LETTER_PT
) -> Path:
    """``pages`` scanned text pages (each its own image, Flate, shown over the whole page), in ``style``
    ``bitonal`` (1-bit), ``gray`` or ``rgb`` (8-bit, effectively bitonal). Built band by band; the text is drawn
    at 300 dpi of the page and enlarged."""
    bpc, cs = (1, Name.DeviceGray) if style == "bitonal" else (8, Name.DeviceRGB if style == "rgb" else Name.DeviceGray)
    pdf = pikepdf.new()
    for i in range(pages):
        rng = np.random.default_rng(i)
        base_px = round(page_pt[0] / 72 * 300)
        chunks = (_scan_samples(ink, style, rng) for ink in scan_bands(width, height, seed=i, base_px=base_px))
        full_page_image(pdf, _flate_image(pdf, chunks, width, height, bpc, cs), page_pt)
    pdf.save(path)
    return path


def photo_bands(width: int, height: int, seed: int = 0, channels: int = 3) -> Iterator[np.ndarray]:
    """``photo`` built band by band (uint8 (rows, width, channels)), for images too large to build at once."""
    rng = np.random.default_rng(seed)
    x = np.arange(width, dtype=np.float32)[None, :]
    for r0 in range(0, height, _BAND_ROWS):
        y = np.arange(r0, min(height, r0 + _BAND_ROWS), dtype=np.float32)[:, None]
        planes = [
            128 + 100 * np.sin(x / 37.0) * np.cos(y / 53.0),
            128 + 90 * np.cos((x + y + seed) / 61.0),
            128 + 80 * np.sin((y + x / 7.0) / 29.0),
            128 + 60 * np.cos((x - y) / 45.0),
        ][:channels]
        band = np.stack(planes, axis=-1) + rng.normal(0, 6, (y.shape[0], width, channels)).astype(np.float32)
        yield np.clip(band, 0, 255).astype(np.uint8)


def flate_photo_pdf(
    path: Path,
    width: int,
    height: int,
    *,
    channels: int = 3,
    bpc: int = 8,
    smask: bool = False,
    page_pt: tuple = LETTER_PT,
) -> Path:
    """One page showing a Flate photograph: ``channels`` 1 (gray), 3 (RGB) or 4 (CMYK), ``bpc`` 8 or 16, with
    an 8-bit soft mask (a vignette) when ``smask``."""
    cs = {1: Name.DeviceGray, 3: Name.DeviceRGB, 4: Name.DeviceCMYK}[channels]
    pdf = pikepdf.new()

    def samples() -> Iterator[bytes]:
        for band in photo_bands(width, height, channels=channels):
            yield (band.astype(">u2") * 257).tobytes() if bpc == 16 else band.tobytes()

    image = _flate_image(pdf, samples(), width, height, bpc, cs)
    if smask:
        ramp = np.clip(np.hypot(*np.ogrid[-1 : 1 : height * 1j, -1 : 1 : width * 1j]) * 300, 0, 255)
        image.SMask = _flate_image(
            pdf, iter([(255 - ramp).astype(np.uint8).tobytes()]), width, height, 8, Name.DeviceGray
        )
    full_page_image(pdf, image, page_pt)
    pdf.save(path)
    return path


def jpeg_xobject(pdf: pikepdf.Pdf, pixels: np.ndarray, quality: int) -> Any:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=quality)
    img = pikepdf.Stream(pdf, buf.getvalue())
    img.stream_dict.update(
        {
            "/Type": Name.XObject,
            "/Subtype": Name.Image,
            "/Width": pixels.shape[1],
            "/Height": pixels.shape[0],
            "/BitsPerComponent": 8,
            "/ColorSpace": Name.DeviceRGB,
            "/Filter": Name.DCTDecode,
        }
    )
    return pdf.make_indirect(img)


def jpeg_pages_pdf(
    path: Path,
    width: int,
    height: int,
    *,
    pages: int = 1,
    quality: int = 90,
    shared: bool = False,
    page_pt: tuple = LETTER_PT,
) -> Path:
    """``pages`` pages each showing a ``width`` x ``height`` JPEG photograph over the whole page: a different
    one per page, or one image placed on every page when ``shared``."""
    pdf = pikepdf.new()
    image = None
    for i in range(pages):
        if image is None or not shared:
            pixels = np.concatenate(list(photo_bands(width, height, seed=i)))
            image = jpeg_xobject(pdf, pixels, quality)
            del pixels
        full_page_image(pdf, image, page_pt)
    pdf.save(path)
    return path


def certified_pdf(path: Path) -> Path:
    """A text PDF certified by its author (/Perms /DocMDP; the signature bytes are a dummy)."""
    text_pdf(path, pages=1)
    with pikepdf.open(path, allow_overwriting_input=True) as pdf:
        sig = pdf.make_indirect(
            Dictionary(Type=Name.Sig, Filter=Name("/Adobe.PPKLite"), Contents=pikepdf.String(b"\x00" * 64))
        )
        pdf.Root.Perms = Dictionary(DocMDP=sig)
        pdf.save(path)
    return path


def lost_page_pdf(path: Path) -> Path:
    """A 3-page text PDF whose last page object is lost (its `obj` keyword damaged): qpdf finds 2 pages and no
    repair brings the third back, yet PDFium opens the file as it is and draws the other two."""
    full = text_pdf(path.with_name(path.stem + "-full.pdf"), pages=3)
    with pikepdf.open(full) as pdf:
        lost = pdf.pages[2].obj.objgen[0]
        pdf.save(path, object_stream_mode=pikepdf.ObjectStreamMode.disable)
    data = path.read_bytes()
    marker = f"\n{lost} 0 obj".encode()
    assert data.count(marker) == 1
    path.write_bytes(data.replace(marker, f"\n{lost} 0 xbj".encode()))
    return path


def nested_forms_pdf(path: Path) -> Path:
    """One page drawing a scaled form XObject that draws a second form (with its own /Matrix) that draws a small
    image, plus a form that draws itself (a loop the placement walk must cut)."""
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(200, 200))
    img = pikepdf.Stream(pdf, zlib.compress(photo(16, 12).tobytes()))
    img.stream_dict.update(
        {"/Type": Name.XObject, "/Subtype": Name.Image, "/Width": 16, "/Height": 12, "/BitsPerComponent": 8}
    )
    img.stream_dict.update({"/ColorSpace": Name.DeviceRGB, "/Filter": Name.FlateDecode})
    inner = pdf.make_stream(b"q 50 0 0 40 0 0 cm /Im0 Do Q")
    inner.stream_dict.update(
        {
            "/Type": Name.XObject,
            "/Subtype": Name.Form,
            "/BBox": pikepdf.Array([0, 0, 100, 100]),
            "/Matrix": pikepdf.Array([2, 0, 0, 2, 10, 10]),
            "/Resources": Dictionary(XObject=Dictionary(Im0=pdf.make_indirect(img))),
        }
    )
    loop = pdf.make_stream(b"/Self Do")
    loop.stream_dict.update({"/Type": Name.XObject, "/Subtype": Name.Form, "/BBox": pikepdf.Array([0, 0, 10, 10])})
    loop.stream_dict.Resources = Dictionary(XObject=Dictionary(Self=loop))
    outer = pdf.make_stream(b"q 0.5 0 0 0.5 0 0 cm /Inner Do Q /Loop Do")
    outer.stream_dict.update(
        {
            "/Type": Name.XObject,
            "/Subtype": Name.Form,
            "/BBox": pikepdf.Array([0, 0, 200, 200]),
            "/Resources": Dictionary(XObject=Dictionary(Inner=inner, Loop=loop)),
        }
    )
    page.obj.Resources = Dictionary(XObject=Dictionary(Outer=outer))
    page.obj.Contents = pdf.make_stream(b"q 1 0 0 1 20 20 cm /Outer Do Q")
    pdf.save(path)
    return path


def flate_bomb_pdf(path: Path, decoded_bytes: int, trailing: bytes = b"") -> Path:
    """``text_pdf`` (1 page) plus an unreferenced-by-pages Flate stream of ``decoded_bytes`` zeros, its zlib data
    followed by ``trailing`` (bytes after the zlib end, which once made the bomb check loop)."""
    text_pdf(path, pages=1)
    with pikepdf.open(path, allow_overwriting_input=True) as pdf:
        bomb = pikepdf.Stream(pdf, b"")
        bomb.write(zlib.compress(bytes(decoded_bytes), 9) + trailing, filter=Name.FlateDecode)
        pdf.Root.Junk = pdf.make_indirect(bomb)
        pdf.save(path)
    return path


def rights_pdf(path: Path, perms: str) -> Path:
    """``text_pdf`` (1 page) with a /Perms entry: ``DocMDP`` (a certified document) or ``UR3`` (Reader usage
    rights); the signature dictionary is a dummy, only the structure matters."""
    text_pdf(path, pages=1)
    with pikepdf.open(path, allow_overwriting_input=True) as pdf:
        sig = pdf.make_indirect(Dictionary(Type=Name.Sig, Filter=Name("/Adobe.PPKLite"), Contents=pikepdf.String("")))
        pdf.Root.Perms = Dictionary({f"/{perms}": sig})
        pdf.save(path)
    return path


def type3_pattern_pdf(path: Path) -> Path:
    """A page showing text in a Type 3 font (its glyph procedure shows text too) and filling with a tiling
    pattern whose cell shows Helvetica text: every kind of stream the font-usage scan reads."""
    pdf = pikepdf.new()
    page = pdf.add_blank_page(page_size=(200, 200))
    helv = _font(pdf)
    glyph = pdf.make_stream(b"500 0 0 0 500 500 d1 0 0 500 500 re f")
    t3 = pdf.make_indirect(
        Dictionary(
            Type=Name.Font,
            Subtype=Name.Type3,
            FontBBox=pikepdf.Array([0, 0, 500, 500]),
            FontMatrix=pikepdf.Array([0.001, 0, 0, 0.001, 0, 0]),
            CharProcs=Dictionary(square=glyph),
            Encoding=Dictionary(Type=Name.Encoding, Differences=pikepdf.Array([65, Name.square])),
            FirstChar=65,
            LastChar=65,
            Widths=pikepdf.Array([500]),
            Resources=Dictionary(Font=Dictionary(F1=helv)),
        )
    )
    cell = pdf.make_stream(b"BT /F1 6 Tf 0 2 Td (P) Tj ET")
    cell.stream_dict.update(
        {
            "/PatternType": 1,
            "/PaintType": 1,
            "/TilingType": 1,
            "/BBox": pikepdf.Array([0, 0, 10, 10]),
            "/XStep": 10,
            "/YStep": 10,
            "/Resources": Dictionary(Font=Dictionary(F1=helv)),
        }
    )
    page.obj.Resources = Dictionary(Font=Dictionary(T3=t3, F1=helv), Pattern=Dictionary(P0=cell))
    page.obj.Contents = pdf.make_stream(
        b"BT /T3 24 Tf 20 150 Td (AAA) Tj ET /Pattern cs /P0 scn 20 20 160 100 re f "
        b"BT /F1 12 Tf 20 130 Td [(Kern) -50 (ed)] TJ (next) ' 1 2 (quoted) \" ET"
    )
    pdf.save(path)
    return path


def pixel_bomb_pdf(path: Path) -> Path:
    """A small photo PDF whose image declares 100,000 x 100,000 pixels: the engine refuses it TOO_COMPLEX
    before decoding anything (a job that fails for a fact about the file, at once)."""
    image_pdf(path, photo(64, 48))
    with pikepdf.open(path, allow_overwriting_input=True) as pdf:
        for image in pdf.pages[0].get_images().values():
            image.Width, image.Height = 100_000, 100_000
        pdf.save(path)
    return path


def font_descriptor(pdf: pikepdf.Pdf, name: str, flags: int, **font_file: pikepdf.Object) -> pikepdf.Object:
    """An indirect FontDescriptor with fixed test metrics, embedding ``font_file`` (FontFile, FontFile2 or
    FontFile3 -> the program stream)."""
    descriptor = Dictionary(
        Type=Name.FontDescriptor,
        FontName=Name("/" + name),
        Flags=flags,
        FontBBox=[0, -200, 1000, 800],
        ItalicAngle=0,
        Ascent=800,
        Descent=-200,
        CapHeight=700,
        StemV=80,
    )
    for key, program in font_file.items():
        descriptor[f"/{key}"] = program
    return pdf.make_indirect(descriptor)
