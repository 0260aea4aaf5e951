"""Unused fonts and XObjects: resource entries no content stream names are dropped (lossless).

Producers often give every page one resource dictionary naming every font and image of the document, or leave
entries for things no longer drawn; the objects they point to (embedded fonts, images) then stay in the file.
qpdf's own pruning (``Page.remove_unreferenced_resources``) gives each page a private copy of a shared dictionary,
which makes a document with one shared dictionary larger, so this is the engine's own: a name is kept when any
content stream using the dictionary (or the /Font or /XObject dictionary inside it, which may be shared too)
names it, and a dictionary is left whole when one of its users cannot be read, or it is also the interactive
form's default resources. Only /Font (named by ``Tf``) and /XObject (named by ``Do``) are pruned, as qpdf does;
the users followed are pages, the forms they draw, Type 3 glyphs, tiling patterns and annotation appearances.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import pikepdf
from pikepdf import Dictionary, Name, Stream

from .placements import resources_node

log = logging.getLogger(__name__)

_KINDS = {"Tf": "/Font", "Do": "/XObject"}
# Forms inside forms, Type 3 glyphs drawing forms...: deeper nesting is left as it is.
_MAX_DEPTH = 12
# Content streams parsed in all; a document with more is left as it is (each stream is parsed once per resource
# dictionary it is drawn with).
_MAX_VISITS = 50_000

_Key = tuple[int, int, str]


@dataclass
class _Entries:
    """One /Font or /XObject dictionary and what its users name in it."""

    holder: pikepdf.Object
    used: set[str] = field(default_factory=set)
    unknown: bool = False  # a user could not be read: keep everything


def _holder_key(holder: pikepdf.Object, resources: pikepdf.Object, owner: pikepdf.Object, kind: str) -> _Key | None:
    """What identifies a /Font or /XObject dictionary: itself when indirect, else the indirect object it sits in
    (the resource dictionary, or the page, form, font or pattern holding that). None: no indirect object holds it,
    so it is used only where it is written, and it is left as it is."""
    for obj, tag in ((holder, ""), (resources, kind), (owner, kind + "@owner")):
        if obj.is_indirect:
            return (obj.objgen[0], obj.objgen[1], tag)
    return None


class _Usage:
    def __init__(self, pdf: pikepdf.Pdf) -> None:
        self.pdf = pdf
        self.entries: dict[_Key, _Entries] = {}
        self.visited: set[tuple[tuple[int, int], tuple[_Key | None, ...]]] = set()
        self.visits = 0
        self.protected = _default_resources(pdf)

    def _entries(self, resources: pikepdf.Object, owner: pikepdf.Object) -> dict[str, tuple[_Key, _Entries]]:
        out = {}
        for kind in _KINDS.values():
            holder = resources.get(kind)
            if not isinstance(holder, Dictionary):
                continue
            key = _holder_key(holder, resources, owner, kind)
            if key is None:
                continue
            found = self.entries.get(key)
            if found is None:
                found = self.entries[key] = _Entries(holder)
            out[kind] = (key, found)
        return out

    def visit(
        self, content: pikepdf.Object, resources: pikepdf.Object | None, owner: pikepdf.Object, depth: int
    ) -> None:
        """Record what ``content`` (a page, or a content stream drawn with ``resources``, which ``owner`` holds)
        names, then follow the forms, Type 3 glyphs and patterns drawn with them."""
        if not isinstance(resources, Dictionary):
            return
        entries = self._entries(resources, owner)
        memo = (content.objgen, tuple(key for key, _ in entries.values()))
        if memo in self.visited:
            return
        self.visited.add(memo)
        self.visits += 1
        if depth > _MAX_DEPTH or self.visits > _MAX_VISITS:
            self._give_up(entries)
            return
        try:
            named = _names(self.pdf, content)
        except (_Unreadable, pikepdf.PdfError, ValueError, TypeError):
            self._give_up(entries)
            return
        for kind, names in named.items():
            if kind in entries:
                entries[kind][1].used |= names
        self._follow(resources, owner, named, depth)

    def _follow(self, resources: Dictionary, owner: pikepdf.Object, named: dict[str, set[str]], depth: int) -> None:
        xobjects, fonts = resources.get("/XObject"), resources.get("/Font")
        for name in named["/XObject"]:
            xo = xobjects.get(name) if isinstance(xobjects, Dictionary) else None
            if isinstance(xo, Stream) and xo.stream_dict.get("/Subtype") == Name.Form:
                self._visit_own(xo, xo, resources, owner, depth + 1)
        for name in named["/Font"]:
            font = fonts.get(name) if isinstance(fonts, Dictionary) else None
            if isinstance(font, Dictionary) and font.get("/Subtype") == Name.Type3:
                procs = font.get("/CharProcs")
                if isinstance(procs, Dictionary):
                    for _, glyph in procs.items():
                        if isinstance(glyph, Stream):
                            self._visit_own(glyph, font, resources, owner, depth + 1)
        patterns = resources.get("/Pattern")
        if isinstance(patterns, Dictionary):
            for _, pattern in patterns.items():
                if isinstance(pattern, Stream) and pattern.stream_dict.get("/PatternType") == 1:
                    self._visit_own(pattern, pattern, resources, owner, depth + 1)

    def _visit_own(
        self,
        content: Stream,
        holder: pikepdf.Object,
        inherited: Dictionary,
        inherited_owner: pikepdf.Object,
        depth: int,
    ) -> None:
        """Visit ``content`` with ``holder``'s own /Resources, or else with the resources it is drawn with."""
        own = holder.stream_dict.get("/Resources") if isinstance(holder, Stream) else holder.get("/Resources")
        if isinstance(own, Dictionary):
            self.visit(content, own, holder, depth)
        else:
            self.visit(content, inherited, inherited_owner, depth)

    @staticmethod
    def _give_up(entries: dict[str, tuple[_Key, _Entries]]) -> None:
        for _, e in entries.values():
            e.unknown = True


class _Unreadable(Exception):
    pass


def _names(pdf: pikepdf.Pdf, content: pikepdf.Object) -> dict[str, set[str]]:
    """The font and XObject names ``content`` (a page: all its content streams as one) uses: ``Tf`` and ``Do``
    operands. Raises _Unreadable when qpdf had to guess anywhere in it (a reader may guess otherwise)."""
    named: dict[str, set[str]] = {"/Font": set(), "/XObject": set()}
    before = len(pdf.get_warnings())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        instructions = pikepdf.parse_content_stream(content, "Tf Do")
    if caught or len(pdf.get_warnings()) != before:
        raise _Unreadable
    for instruction in instructions:
        if not isinstance(instruction, pikepdf.ContentStreamInstruction):
            continue
        kind, operands = _KINDS.get(str(instruction.operator)), instruction.operands
        if kind is not None and operands and isinstance(operands[0], Name):
            named[kind].add(str(operands[0]))
    return named


def _default_resources(pdf: pikepdf.Pdf) -> set[tuple[int, int]]:
    """The interactive form's default resources (/AcroForm /DR) and its font dictionary: never pruned (field
    appearances yet to be generated name fonts from them)."""
    acro = pdf.Root.get("/AcroForm")
    dr = acro.get("/DR") if isinstance(acro, Dictionary) else None
    if not isinstance(dr, Dictionary):
        return set()
    out = {dr.objgen} if dr.is_indirect else set()
    for kind in _KINDS.values():
        sub = dr.get(kind)
        if isinstance(sub, Dictionary) and sub.is_indirect:
            out.add(sub.objgen)
    return out


def _appearances(annot: pikepdf.Object) -> list[Stream]:
    ap = annot.get("/AP") if isinstance(annot, Dictionary) else None
    if not isinstance(ap, Dictionary):
        return []
    out = []
    for _, value in ap.items():
        if isinstance(value, Stream):
            out.append(value)
        elif isinstance(value, Dictionary):  # appearance states (/On, /Off, ...)
            out.extend(v for _, v in value.items() if isinstance(v, Stream))
    return out


def prune_unused_resources(pdf: pikepdf.Pdf) -> int:
    """Drop /Font and /XObject entries no content stream names; the number of entries dropped."""
    usage = _Usage(pdf)
    for page in pdf.pages:
        node = resources_node(page.obj)
        resources = node.get("/Resources") if node is not None else None
        if node is None or not isinstance(resources, Dictionary):
            continue
        usage.visit(page.obj, resources, node, 0)
        for annot in page.obj.get("/Annots", pikepdf.Array()):
            for appearance in _appearances(annot):
                usage._visit_own(appearance, appearance, resources, node, 1)
    dropped = 0
    for key, entries in usage.entries.items():
        holder = entries.holder
        if entries.unknown or key[:2] in usage.protected:
            continue
        for name in [k for k in holder.keys() if k not in entries.used]:  # noqa: SIM118 - a copy: deleting
            del holder[name]
            dropped += 1
    if dropped:
        log.debug("dropped %d unused font/XObject resource entries", dropped)
    return dropped
