"""Decompression-bomb caps and digital-signature detection, checked before any real work."""

from __future__ import annotations

import pikepdf
from pikepdf import Array, Dictionary, Name, Stream

from .decoded_size import decoded_size_exceeds, general_filters, max_expansion
from .errors import TOO_COMPLEX, EngineError
from .options import Limits


def _inflated_size_exceeds(raw: bytes, cap: int) -> bool:
    # Both ways the engine may inflate the stream: as zlib data, and as raw deflate (the lenient repair's second
    # try for streams whose header is missing).
    return decoded_size_exceeds(raw, [Name.FlateDecode], cap)


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
        _check_image_size(obj.stream_dict, limits.max_image_pixels)
        raw = _raw_if_it_may_exceed(obj, cap)
        if raw is None:
            continue
        if _decodes_beyond(obj.stream_dict, raw, cap):
            raise EngineError(TOO_COMPLEX, "The PDF contains a stream that decompresses to more than allowed.")
        total_decoded_budget -= len(raw)
    if total_decoded_budget < 0:
        raise EngineError(TOO_COMPLEX, "The PDF decompresses to more data than allowed.")


def _check_image_size(d: Dictionary, max_pixels: int) -> None:
    if d.get("/Subtype") != Name.Image:
        return
    size = image_size_in_pixels(d)
    if size is not None and size > max_pixels:
        raise EngineError(TOO_COMPLEX, "The PDF contains an image larger than the allowed size.")


def image_size_in_pixels(d: Dictionary) -> int | None:
    """An image's declared size for the pixel cap, counted in 8-bit pixels: a 1-bit image (a scan, a stencil
    mask) counts an eighth per pixel, as it decodes to an eighth of the bytes, so a 2400-dpi page of it is
    not refused. None when its dimensions are not numbers."""
    try:
        pixels = int(d.get("/Width", 0)) * int(d.get("/Height", 0))
        bits = 1 if d.get("/ImageMask") is True else int(d.get("/BitsPerComponent", 8))
    except (TypeError, ValueError, OverflowError):
        return None
    return pixels * min(max(bits, 1), 8) // 8


def _filters(d: Dictionary) -> list[object]:
    f = d.get("/Filter")
    return list(f) if isinstance(f, Array) else ([f] if f is not None else [])


def _raw_if_it_may_exceed(obj: Stream, cap: int) -> bytes | None:
    """The stream's raw bytes when its filters could expand them past ``cap`` (at their worst ratio); else None."""
    ratio = max_expansion(general_filters(_filters(obj.stream_dict)))
    if ratio <= 1:
        return None
    try:
        raw = obj.read_raw_bytes()
    except pikepdf.PdfError:
        return None
    return raw if len(raw) * ratio > cap else None


def _decodes_beyond(d: Dictionary, raw: bytes, cap: int) -> bool:
    """Whether the stream's general-purpose filters, whichever and in whatever order, decode it past ``cap``."""
    filters = _filters(d)
    return decoded_size_exceeds(raw, general_filters(filters), cap, _lzw_early_change(d, filters))


def _lzw_early_change(d: Dictionary, filters: list[object]) -> int:
    """/EarlyChange of the (first) LZW filter's parameters; 1, the default, when absent or not a number."""
    parms = d.get("/DecodeParms")
    parms_list = list(parms) if isinstance(parms, Array) else [parms] * len(filters)
    for name, each in zip(filters, parms_list, strict=False):
        if name in (Name.LZWDecode, Name.LZW) and isinstance(each, Dictionary):
            value = each.get("/EarlyChange", 1)
            return value if isinstance(value, int) else 1
    return 1


def _fields(acro: Dictionary) -> list[Dictionary]:
    out: list[Dictionary] = []
    fields = acro.get("/Fields")
    stack = list(fields) if isinstance(fields, Array) else []  # anything else lists no field
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
