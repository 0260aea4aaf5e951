"""Reading PDF font dictionaries: names, /Differences, the fonts of interactive forms, storing a font program."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import pikepdf
from pikepdf import Array, Dictionary, Name, Stream

from . import codecs

ObjId = tuple[int, int]


def name_text(obj: pikepdf.Object | None) -> str:
    # Names may hold any bytes (not UTF-8): go through the PDF syntax, e.g. "/ABCDEF+Name".
    return obj.unparse().decode("latin-1")[1:] if isinstance(obj, Name) else ""


def differences(font: Dictionary) -> dict[int, str]:
    """The glyph names a font's /Encoding /Differences gives to codes."""
    enc = font.get("/Encoding")
    out: dict[int, str] = {}
    if not (isinstance(enc, Dictionary) and isinstance(enc.get("/Differences"), Array)):
        return out
    code = 0
    for item in enc.Differences:
        if isinstance(item, int):
            code = item
        elif isinstance(item, Name):
            out[code] = name_text(item)
            code += 1
    return out


def form_fonts(pdf: pikepdf.Pdf) -> set[ObjId]:
    """The fonts of the interactive form's default resources (/AcroForm /DR /Font): filling a field may need any
    glyph of them."""
    acro = pdf.Root.get("/AcroForm")
    if not isinstance(acro, Dictionary):
        return set()
    dr = acro.get("/DR")
    fonts = dr.get("/Font") if isinstance(dr, Dictionary) else None
    if not isinstance(fonts, Dictionary):
        return set()
    return {f.objgen for _, f in fonts.items() if isinstance(f, Dictionary) and f.is_indirect}


def store_if_smaller(font_file: Stream, program: bytes | None, raw_len: int, length_key: str = "/Length1") -> int:
    """Replace a font file's program with ``program``, Flate-packed, if that is smaller; the bytes saved (0: kept).
    ``length_key``: the decoded-length entry the font file format has ("" for FontFile3, which has none)."""
    if program is None:
        return 0
    packed = codecs.deflate(program)
    if len(packed) >= raw_len:
        return 0
    font_file.write(packed, filter=Name.FlateDecode)
    if length_key:
        font_file.stream_dict[length_key] = len(program)
    return raw_len - len(packed)


def unicodes_of(code: int, diffs: dict[int, str]) -> set[int]:
    """The code itself, what it means in WinAnsi and MacRoman, and the character its /Differences name stands for."""
    from fontTools.agl import toUnicode

    uni: set[int] = {code}
    for codec in ("cp1252", "mac_roman"):
        with contextlib.suppress(UnicodeDecodeError, TypeError):
            uni.add(ord(bytes([code]).decode(codec)))
    if code in diffs:
        u = toUnicode(diffs[code])
        if len(u) == 1:
            uni.add(ord(u))
    return uni


def cids_shown(shown: Iterable[bytes]) -> set[int]:
    """The CIDs of strings shown with a two-byte Identity encoding."""
    return {(s[i] << 8) | s[i + 1] for s in shown for i in range(0, len(s) - 1, 2)}
