"""Bytes by kind: where the size of a PDF goes (images, fonts, content streams, other)."""

from __future__ import annotations

from pathlib import Path

import pikepdf
from pikepdf import Array, Dictionary, Name, Stream

from .report import KINDS

_FONT_FILE_KEYS = ("/FontFile", "/FontFile2", "/FontFile3")


def _font_streams(pdf: pikepdf.Pdf) -> set[tuple[int, int]]:
    """Embedded font programs, CMaps and Type 3 glyph procedures."""
    found: set[tuple[int, int]] = set()
    for obj in pdf.objects:
        if not isinstance(obj, Dictionary) or isinstance(obj, Stream):
            continue
        t = obj.get("/Type")
        if t == Name.FontDescriptor:
            for k in _FONT_FILE_KEYS:
                s = obj.get(k)
                if isinstance(s, Stream) and s.is_indirect:
                    found.add(s.objgen)
        elif t == Name.Font:
            for k in ("/ToUnicode", "/Encoding"):
                s = obj.get(k)
                if isinstance(s, Stream) and s.is_indirect:
                    found.add(s.objgen)
            procs = obj.get("/CharProcs")
            if isinstance(procs, Dictionary):
                for _, s in procs.items():
                    if isinstance(s, Stream) and s.is_indirect:
                        found.add(s.objgen)
    return found


def _content_streams(pdf: pikepdf.Pdf) -> set[tuple[int, int]]:
    found: set[tuple[int, int]] = set()
    for page in pdf.pages:
        c = page.obj.get("/Contents")
        items = list(c) if isinstance(c, Array) else [c]
        for s in items:
            if isinstance(s, Stream) and s.is_indirect:
                found.add(s.objgen)
    return found


def bytes_by_kind(pdf: pikepdf.Pdf, file_size: int) -> dict[str, int]:
    """Raw (stored) stream bytes per kind; 'other' is the rest of the file (object syntax, xref, metadata,
    ICC profiles, annotations...), so the four kinds add up to the file size."""
    fonts = _font_streams(pdf)
    contents = _content_streams(pdf)
    out = dict.fromkeys(KINDS, 0)
    for obj in pdf.objects:
        if not isinstance(obj, Stream):
            continue
        try:
            n = len(obj.read_raw_bytes())
        except pikepdf.PdfError:
            continue
        d = obj.stream_dict
        st = d.get("/Subtype")
        if st == Name.Image:
            out["images"] += n
        elif obj.objgen in fonts:
            out["fonts"] += n
        elif obj.objgen in contents or (st == Name.Form and d.get("/Type", Name.XObject) == Name.XObject):
            out["content"] += n
    out["other"] = max(0, file_size - out["images"] - out["fonts"] - out["content"])
    return out


def bytes_by_kind_of_file(path: Path) -> dict[str, int]:
    with pikepdf.open(path) as pdf:
        return bytes_by_kind(pdf, path.stat().st_size)
