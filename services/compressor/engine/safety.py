"""Decompression-bomb caps and digital-signature detection, checked before any real work."""

from __future__ import annotations

import pikepdf
from pikepdf import Array, Dictionary, Name, Stream

from .errors import TOO_COMPLEX, EngineError
from .inflate import RAW_DEFLATE, ZLIB, inflated_size_exceeds
from .options import Limits

# Deflate cannot expand data by more than ~1032x; a stream whose raw size is below cap/1032 needs no check.
_MAX_DEFLATE_RATIO = 1032


def _inflated_size_exceeds(raw: bytes, cap: int) -> bool:
    # Both ways the engine may inflate the stream: as zlib data, and as raw deflate (the lenient repair's second
    # try for streams whose header is missing).
    return any(inflated_size_exceeds(raw, cap, wbits) for wbits in (ZLIB, RAW_DEFLATE))


def check_bombs(pdf: pikepdf.Pdf, limits: Limits) -> None:
    if len(pdf.pages) > limits.max_pages:
        raise EngineError(TOO_COMPLEX, "The PDF has more pages than allowed.")
    cap = limits.max_decoded_stream_bytes
    total_decoded_budget = 4 * cap
    count = 0
    for obj in pdf.objects:
        count += 1
        if count > limits.max_objects:
            raise EngineError(TOO_COMPLEX, "The PDF has more objects than allowed.")
        if not isinstance(obj, Stream):
            continue
        d = obj.stream_dict
        if d.get("/Subtype") == Name.Image:
            w, h = d.get("/Width", 0), d.get("/Height", 0)
            try:
                if int(w) * int(h) > limits.max_image_pixels:
                    raise EngineError(TOO_COMPLEX, "The PDF contains an image larger than the allowed size.")
            except (TypeError, ValueError):
                pass
        f = d.get("/Filter")
        filters = list(f) if isinstance(f, Array) else ([f] if f is not None else [])
        if Name.FlateDecode not in filters:
            continue
        try:
            raw = obj.read_raw_bytes()
        except pikepdf.PdfError:
            continue
        if len(raw) * _MAX_DEFLATE_RATIO <= cap:
            continue
        if filters[0] == Name.FlateDecode and _inflated_size_exceeds(raw, cap):
            raise EngineError(TOO_COMPLEX, "The PDF contains a stream that decompresses to more than allowed.")
        total_decoded_budget -= len(raw)
    if total_decoded_budget < 0:
        raise EngineError(TOO_COMPLEX, "The PDF decompresses to more data than allowed.")


def _fields(acro: Dictionary) -> list[Dictionary]:
    out: list[Dictionary] = []
    stack = list(acro.get("/Fields", Array()))
    seen: set[tuple[int, int]] = set()
    while stack and len(out) < 100_000:
        f = stack.pop()
        if not isinstance(f, Dictionary):
            continue
        if f.is_indirect:
            if f.objgen in seen:
                continue
            seen.add(f.objgen)
        out.append(f)
        kids = f.get("/Kids")
        if isinstance(kids, Array):
            stack.extend(kids)
    return out


def is_signed(pdf: pikepdf.Pdf) -> bool:
    """A signature field with a value, or certification (DocMDP) permissions: rewriting invalidates them."""
    root = pdf.Root
    perms = root.get("/Perms")
    if isinstance(perms, Dictionary) and "/DocMDP" in perms:
        return True  # a certified document
    acro = root.get("/AcroForm")
    if not isinstance(acro, Dictionary):
        return False
    return any(f.get("/FT") == Name.Sig and f.get("/V") is not None for f in _fields(acro))


def drop_usage_rights(pdf: pikepdf.Pdf) -> bool:
    """Remove Reader-extension usage rights (/Perms /UR, /UR3). They are an Adobe signature over the whole file
    that any rewrite invalidates; left in place, Adobe Reader warns that the document was changed. Without them
    the file is an ordinary (still fillable) form. Returns whether anything was removed."""
    perms = pdf.Root.get("/Perms")
    if not isinstance(perms, Dictionary):
        return False
    removed = False
    for key in ("/UR", "/UR3"):
        if key in perms:
            del perms[key]
            removed = True
    if removed and len(perms.keys()) == 0:
        del pdf.Root["/Perms"]
    return removed
