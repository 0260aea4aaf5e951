"""Signed and certified documents, laid out as signing tools write them: a signature dictionary whose /Contents
placeholder and /ByteRange cover the whole file (the signature bytes are a dummy: only the structure matters),
certification (DocMDP), an update after signing, usage rights (/Perms /UR3), and an unsigned signature field."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pikepdf
from pikepdf import Array, Dictionary, Name

from .common import Case, Context, Family
from .damaged import PAGES, base_document

_PLACEHOLDER = 10**9  # ByteRange numbers are written this wide, then patched in place
_SIG_BYTES = 4096


def _signature(pdf: pikepdf.Pdf, *, certify: bool) -> pikepdf.Object:
    sig = Dictionary(
        Type=Name.Sig,
        Filter=Name("/Adobe.PPKLite"),
        SubFilter=Name("/adbe.pkcs7.detached"),
        ByteRange=Array([0, _PLACEHOLDER, _PLACEHOLDER, _PLACEHOLDER]),
        Contents=pikepdf.String(b"\x00" * _SIG_BYTES),
        M=pikepdf.String("D:20240101000000Z"),
        Name=pikepdf.String("Corpus Signer"),
    )
    if certify:
        params = Dictionary(Type=Name.TransformParams, P=2, V=Name("/1.2"))
        sig.Reference = Array([Dictionary(Type=Name.SigRef, TransformMethod=Name.DocMDP, TransformParams=params)])
    return pdf.make_indirect(sig)


def _sign_field(pdf: pikepdf.Pdf, value: pikepdf.Object | None, name: str) -> pikepdf.Object:
    """A signature field on page 1 (its /V is the signature, or absent for an unsigned field)."""
    page = pdf.pages[0].obj
    widget = Dictionary(
        Type=Name.Annot,
        Subtype=Name.Widget,
        FT=Name.Sig,
        T=pikepdf.String(name),
        Rect=Array([400, 40, 560, 80]),
        F=132,
        P=page,
    )
    if value is not None:
        widget.V = value
    field = pdf.make_indirect(widget)
    page.Annots = Array([*page.get("/Annots", Array()), field])
    pdf.Root.AcroForm = Dictionary(Fields=Array([field]), SigFlags=3 if value is not None else 0)
    return field


def _patch_byte_ranges(path: Path) -> None:
    """Point each /ByteRange around its /Contents hex string, as a signer does before hashing (the n-th
    placeholder range goes with the n-th placeholder contents: the writer keeps each dictionary's keys together)."""
    data = bytearray(path.read_bytes())
    contents = list(re.finditer(rb"/Contents <0{%d}>" % (_SIG_BYTES * 2), data))
    ranges = list(re.finditer(rb"/ByteRange \[ 0 %d %d %d \]" % ((_PLACEHOLDER,) * 3), data))
    if not contents or len(contents) != len(ranges):
        raise ValueError("the signature placeholders were not written as expected")
    for content, byte_range in zip(contents, ranges, strict=True):
        start, end = content.start() + len(b"/Contents "), content.end()
        numbers = b"0 %d %d %d" % (start, end, len(data) - end)
        width = len(byte_range.group()) - len(b"/ByteRange [  ]")
        data[byte_range.start() : byte_range.end()] = b"/ByteRange [ " + numbers.ljust(width) + b" ]"
    path.write_bytes(bytes(data))


def signed(path: Path, rng: np.random.Generator, *, certify: bool = False, usage_rights: bool = False) -> Path:
    base_document(path, rng)
    with pikepdf.open(path, allow_overwriting_input=True) as pdf:
        sig = _signature(pdf, certify=certify)
        _sign_field(pdf, sig, "Signature1")
        if certify:
            pdf.Root.Perms = Dictionary(DocMDP=sig)
        if usage_rights:
            pdf.Root.Perms = Dictionary(UR3=_signature(pdf, certify=False))
        pdf.save(path, deterministic_id=True, object_stream_mode=pikepdf.ObjectStreamMode.disable)
    _patch_byte_ranges(path)
    return path


def updated_after_signing(path: Path, rng: np.random.Generator) -> Path:
    """A signed file with an incremental update appended (a note on page 2), the signed bytes untouched."""
    signed(path, rng)
    data = path.read_bytes()
    prev = int(re.findall(rb"startxref\s+(\d+)", data)[-1])
    size = int(re.findall(rb"/Size (\d+)", data)[-1])
    root = re.findall(rb"/Root (\d+ 0 R)", data)[-1]
    body = b"\n%d 0 obj\n<< /Type /Annot /Subtype /Text /Rect [20 20 40 40] /Contents (reviewed) >>\nendobj\n" % size
    xref = len(data) + len(body)
    tail = b"xref\n%d 1\n%010d 00000 n \ntrailer\n<< /Size %d /Root %s /Prev %d >>\nstartxref\n%d\n%%%%EOF\n" % (
        size,
        len(data) + 1,
        size + 1,
        root,
        prev,
        xref,
    )
    path.write_bytes(data + body + tail)
    return path


def unsigned_field(path: Path, rng: np.random.Generator) -> Path:
    base_document(path, rng)
    with pikepdf.open(path, allow_overwriting_input=True) as pdf:
        _sign_field(pdf, None, "SignHere")
        pdf.save(path, deterministic_id=True)
    return path


def build(ctx: Context) -> list[Case]:
    builders = {
        "signed": lambda p, r: signed(p, r),
        "certified-docmdp": lambda p, r: signed(p, r, certify=True),
        "usage-rights-ur3": lambda p, r: signed(p, r, usage_rights=True),
        "updated-after-signing": updated_after_signing,
        "unsigned-signature-field": unsigned_field,
    }
    names = ["signed", "certified-docmdp"] if ctx.quick else list(builders)
    cases = []
    for name in names:
        path = builders[name](ctx.path("signed", name), ctx.rng("signed", name))
        cases.append(Case("signed", name, path, PAGES, PAGES))
    return cases


FAMILY = Family("signed", "signed, certified (DocMDP), usage-rights and unsigned-field documents", build)
