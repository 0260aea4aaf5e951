"""Small PDFs with specific structure, built with pikepdf for the scanner tests."""

from __future__ import annotations

import io
import zlib

import pikepdf

from devtools.servers.clamd import eicar_bytes


def _save(pdf: pikepdf.Pdf) -> bytes:
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def blank(pages: int = 1) -> pikepdf.Pdf:
    pdf = pikepdf.new()
    for _ in range(pages):
        pdf.add_blank_page(page_size=(200, 200))
    return pdf


def plain(pages: int = 2) -> bytes:
    return _save(blank(pages))


def with_open_action_javascript() -> bytes:
    pdf = blank()
    pdf.Root.OpenAction = pdf.make_indirect(
        pikepdf.Dictionary(Type=pikepdf.Name.Action, S=pikepdf.Name.JavaScript, JS=pikepdf.String("app.alert(1)"))
    )
    return _save(pdf)


def with_javascript_name_tree() -> bytes:
    pdf = blank()
    action = pdf.make_indirect(pikepdf.Dictionary(S=pikepdf.Name.JavaScript, JS=pikepdf.String("void 0")))
    pdf.Root.Names = pikepdf.Dictionary(
        JavaScript=pikepdf.Dictionary(Names=pikepdf.Array([pikepdf.String("a"), action]))
    )
    return _save(pdf)


def with_page_additional_action() -> bytes:
    pdf = blank()
    # A direct (not indirect) nested action: found only by walking into dictionaries.
    pdf.pages[0].obj.AA = pikepdf.Dictionary(O=pikepdf.Dictionary(S=pikepdf.Name.JavaScript, JS=pikepdf.String("x")))
    return _save(pdf)


def with_launch_action() -> bytes:
    pdf = blank()
    pdf.Root.OpenAction = pikepdf.Dictionary(S=pikepdf.Name.Launch, F=pikepdf.String("calc.exe"))
    return _save(pdf)


def with_form_and_signature_field() -> bytes:
    pdf = blank()
    text = pdf.make_indirect(pikepdf.Dictionary(FT=pikepdf.Name.Tx, T=pikepdf.String("name")))
    sig = pdf.make_indirect(pikepdf.Dictionary(FT=pikepdf.Name.Sig, T=pikepdf.String("signature")))
    pdf.Root.AcroForm = pikepdf.Dictionary(Fields=pikepdf.Array([text, sig]))
    return _save(pdf)


def with_embedded_file(data: bytes, *, compress: bool = False, subtype: str | None = None) -> bytes:
    """`data` attached as an embedded file (the usual way to smuggle a payload in a PDF)."""
    pdf = blank()
    stream = pikepdf.Stream(pdf, zlib.compress(data) if compress else data)
    stream.Type = pikepdf.Name.EmbeddedFile
    if subtype:
        stream.Subtype = pikepdf.Name(subtype)
    if compress:
        stream.Filter = pikepdf.Name.FlateDecode
    filespec = pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.Filespec,
            F=pikepdf.String("readme.txt"),
            EF=pikepdf.Dictionary(F=pdf.make_indirect(stream)),
        )
    )
    pdf.Root.Names = pikepdf.Dictionary(
        EmbeddedFiles=pikepdf.Dictionary(Names=pikepdf.Array([pikepdf.String("readme.txt"), filespec]))
    )
    out = io.BytesIO()
    # Keep the payload stream as written (no object streams, no recompression).
    pdf.save(out, compress_streams=False, object_stream_mode=pikepdf.ObjectStreamMode.disable)
    return out.getvalue()


def with_eicar_attachment() -> bytes:
    return with_embedded_file(eicar_bytes())


# A placeholder entry replaced in the saved bytes by a raw key pikepdf will not write itself.
_PLACEHOLDER_KEY = "/PdfsmallerPlaceholder"
_PLACEHOLDER = b"/PdfsmallerPlaceholder 1"


def with_raw_key(pdf: pikepdf.Pdf, where: pikepdf.Object, raw_key: bytes = b"/X#ff") -> bytes:
    """`pdf` saved with a `raw_key 1` entry in `where`, the key's bytes written as given.

    `/X#ff` is a name holding the byte 0xFF, which is not UTF-8. The placeholder is replaced
    in place and padded with spaces, so every xref offset stays right (qpdf need not repair).
    """
    where[_PLACEHOLDER_KEY] = 1
    out = io.BytesIO()
    pdf.save(out, compress_streams=False, object_stream_mode=pikepdf.ObjectStreamMode.disable)
    data = out.getvalue()
    raw = raw_key + b" 1"
    assert data.count(_PLACEHOLDER) == 1
    assert len(raw) <= len(_PLACEHOLDER)
    return data.replace(_PLACEHOLDER, raw.ljust(len(_PLACEHOLDER)))


def launch_with_non_utf8_key() -> bytes:
    """The bypass file shape of issue 7: a /Launch open action plus a key name that is not UTF-8."""
    pdf = blank()
    pdf.Root.OpenAction = pikepdf.Dictionary(S=pikepdf.Name.Launch, F=pikepdf.String("calc.exe"))
    return with_raw_key(pdf, pdf.Root)


def nested_too_deep(depth: int = 80) -> bytes:
    """A /Launch action under more nested direct dictionaries than the structure check walks."""
    pdf = blank()
    nested = pikepdf.Dictionary(S=pikepdf.Name.Launch, F=pikepdf.String("calc.exe"))
    for _ in range(depth):
        nested = pikepdf.Dictionary(Next=nested)
    pdf.Root.Deep = nested
    return _save(pdf)
