"""Synthetic PDFs for the engine tests (built with pikepdf; no files outside the repository needed)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pikepdf
from pikepdf import Dictionary, Name

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


def pixel_bomb_pdf(path: Path) -> Path:
    """A small photo PDF whose image declares 100,000 x 100,000 pixels: the engine refuses it TOO_COMPLEX
    before decoding anything (a job that fails for a fact about the file, at once)."""
    image_pdf(path, photo(64, 48))
    with pikepdf.open(path, allow_overwriting_input=True) as pdf:
        for image in pdf.pages[0].get_images().values():
            image.Width, image.Height = 100_000, 100_000
        pdf.save(path)
    return path
