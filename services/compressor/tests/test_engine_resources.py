"""Unused fonts and XObjects are dropped from resource dictionaries, only where every user was read."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pikepdf
from pikepdf import Array, Dictionary, Name

from services.compressor.engine import CompressOptions, compress
from services.compressor.engine.resources import prune_unused_resources

from .builders import photo


def _font(pdf: pikepdf.Pdf, name: str) -> pikepdf.Object:
    return pdf.make_indirect(Dictionary(Type=Name.Font, Subtype=Name.Type1, BaseFont=Name("/" + name)))


def _image(pdf: pikepdf.Pdf, seed: int) -> pikepdf.Object:
    pixels = photo(64, 48, seed=seed)
    return pdf.make_stream(
        zlib.compress(pixels.tobytes()),
        Type=Name.XObject,
        Subtype=Name.Image,
        Width=64,
        Height=48,
        BitsPerComponent=8,
        ColorSpace=Name.DeviceRGB,
        Filter=Name.FlateDecode,
    )


def _shared_resources_pdf(pdf: pikepdf.Pdf, contents: list[bytes]) -> pikepdf.Object:
    """Pages sharing one resource dictionary that names fonts F0-F2 and images Im0-Im1."""
    res = pdf.make_indirect(
        Dictionary(
            Font=Dictionary({f"/F{i}": _font(pdf, f"Helvetica{i}") for i in range(3)}),
            XObject=Dictionary({f"/Im{i}": _image(pdf, i) for i in range(2)}),
        )
    )
    for content in contents:
        page = pdf.add_blank_page(page_size=(200, 200))
        page.obj.Resources = res
        page.obj.Contents = pdf.make_stream(content)
    return res


def test_names_no_page_uses_are_dropped_from_a_shared_dictionary() -> None:
    pdf = pikepdf.new()
    res = _shared_resources_pdf(
        pdf, [b"BT /F0 12 Tf 10 10 Td (a) Tj ET", b"q 64 0 0 48 10 10 cm /Im1 Do Q BT /F1 9 Tf (b) Tj ET"]
    )
    assert prune_unused_resources(pdf) == 2
    assert sorted(res.Font.keys()) == ["/F0", "/F1"]  # the union over both pages
    assert sorted(res.XObject.keys()) == ["/Im1"]
    assert pdf.pages[0].obj.Resources.objgen == pdf.pages[1].obj.Resources.objgen  # still shared, not copied


def test_a_form_without_resources_uses_its_pages() -> None:
    pdf = pikepdf.new()
    res = _shared_resources_pdf(pdf, [b"/Fm0 Do"])
    form = pdf.make_stream(b"BT /F2 12 Tf (in the form) Tj ET /Im0 Do", Type=Name.XObject, Subtype=Name.Form)
    form.BBox = Array([0, 0, 200, 200])
    res.XObject.Fm0 = form
    prune_unused_resources(pdf)
    assert sorted(res.Font.keys()) == ["/F2"]
    assert sorted(res.XObject.keys()) == ["/Fm0", "/Im0"]


def test_unreadable_content_leaves_the_dictionary_whole() -> None:
    pdf = pikepdf.new()
    # qpdf reads past the unterminated string and reports F1 only; a reader may recover otherwise.
    res = _shared_resources_pdf(pdf, [b"BT /F0 12 Tf (a) Tj ET", b"BT /F1 12 Tf (unterminated"])
    assert prune_unused_resources(pdf) == 0
    assert len(res.Font.keys()) == 3
    assert len(res.XObject.keys()) == 2


def test_annotation_appearances_are_users() -> None:
    pdf = pikepdf.new()
    res = _shared_resources_pdf(pdf, [b"BT /F0 12 Tf (a) Tj ET"])
    # An appearance without its own resources, drawing an image of the page's.
    appearance = pdf.make_stream(b"/Im1 Do", Type=Name.XObject, Subtype=Name.Form, BBox=Array([0, 0, 20, 20]))
    annot = Dictionary(Type=Name.Annot, Subtype=Name.Stamp, Rect=Array([0, 0, 20, 20]), AP=Dictionary(N=appearance))
    pdf.pages[0].obj.Annots = Array([pdf.make_indirect(annot)])
    prune_unused_resources(pdf)
    assert sorted(res.XObject.keys()) == ["/Im1"]
    assert sorted(res.Font.keys()) == ["/F0"]


def test_the_forms_default_resources_are_kept_whole() -> None:
    pdf = pikepdf.new()
    res = _shared_resources_pdf(pdf, [b"BT /F0 12 Tf (a) Tj ET"])
    # Field appearances yet to be generated name fonts from /DR, here the pages' own dictionary.
    pdf.Root.AcroForm = Dictionary(Fields=Array(), DR=res)
    assert prune_unused_resources(pdf) == 0
    assert len(res.Font.keys()) == 3


def test_lossless_output_drops_the_unused_objects_and_renders_identical(tmp_path: Path) -> None:
    pdf = pikepdf.new()
    _shared_resources_pdf(pdf, [b"BT /F0 12 Tf 10 10 Td (kept) Tj ET q 64 0 0 48 10 40 cm /Im0 Do Q"] * 3)
    src = tmp_path / "in.pdf"
    pdf.save(src)
    out = tmp_path / "out.pdf"
    report = compress(src, out, CompressOptions(level="lossless"))
    assert report.verification.passed
    assert report.verification.identical_renders is True
    assert any(t.name == "drop-unused-resources" for t in report.techniques)
    with pikepdf.open(out) as result:
        images = [o for o in result.objects if isinstance(o, pikepdf.Stream) and o.get("/Subtype") == Name.Image]
        fonts = [o for o in result.objects if isinstance(o, Dictionary) and o.get("/Type") == Name.Font]
        assert len(images) == 1
        assert len(fonts) == 1
        pixels = np.asarray(pikepdf.PdfImage(images[0]).as_pil_image())
        assert pixels.shape == (48, 64, 3)
