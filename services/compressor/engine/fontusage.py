"""Which character codes each font shows: every content stream that can show text is scanned (page contents,
every form XObject - including annotation appearances -, tiling patterns, Type 3 glyph procedures)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pikepdf
from pikepdf import Array, Dictionary, Name, Stream

from .placements import page_resources

log = logging.getLogger(__name__)

_TEXT_OPERATORS = "q Q Tf Tj TJ ' \""


@dataclass
class FontUsage:
    # font dictionary objgen -> every string shown with it (raw codes)
    shown: dict[tuple[int, int], set[bytes]] = field(default_factory=dict)
    # fonts whose use could not be established (text shown with an inherited font, unparsable stream...)
    unknown: set[tuple[int, int]] = field(default_factory=set)
    complete: bool = True  # False: some text-showing stream could not be attributed to a font at all


def _fonts_of(resources: pikepdf.Object | None) -> Dictionary | None:
    if not isinstance(resources, Dictionary):
        return None
    fonts = resources.get("/Font")
    return fonts if isinstance(fonts, Dictionary) else None


def _scan(owner: pikepdf.Object, resources: pikepdf.Object | None, usage: FontUsage) -> None:
    fonts = _fonts_of(resources)
    try:
        instructions = pikepdf.parse_content_stream(owner, _TEXT_OPERATORS)
    except (pikepdf.PdfError, TypeError, ValueError):
        usage.complete = False  # cannot tell what an unparsable stream shows
        return
    current: pikepdf.Object | None = None
    saved: list[pikepdf.Object | None] = []
    for ins in instructions:
        if not isinstance(ins, pikepdf.ContentStreamInstruction):
            continue
        op = _operator_name(ins.operator)
        operands = list(ins.operands)
        if op == "q":
            saved.append(current)
        elif op == "Q":
            current = saved.pop() if saved else None
        elif op == "Tf" and operands:
            name = operands[0]  # looked up as a Name object: its bytes need not be UTF-8
            current = fonts.get(name) if fonts is not None and isinstance(name, Name) else None
            if not isinstance(current, Dictionary):  # missing, or a damaged entry (a number, a name...)
                current = None
                usage.complete = False
        else:
            strings = _shown_strings(op, operands)
            if not strings:
                continue
            if current is None or not current.is_indirect:
                usage.complete = False  # text shown with a font set elsewhere (inherited state)
                continue
            usage.shown.setdefault(current.objgen, set()).update(strings)


def _operator_name(operator: pikepdf.Operator) -> str:
    try:
        return str(operator)
    except UnicodeDecodeError:
        return ""  # not UTF-8: not one of the (ASCII) text operators


def _shown_strings(op: str, operands: list[pikepdf.Object]) -> list[bytes]:
    """The strings a text-showing operator shows; an operand that is not a string shows nothing (and a number is
    never given to bytes(), which would allocate that many bytes)."""
    if op in ("Tj", "'") and operands:
        candidates = [operands[-1]]
    elif op == '"' and len(operands) == 3:
        candidates = [operands[2]]
    elif op == "TJ" and operands and isinstance(operands[0], Array):
        candidates = list(operands[0])
    else:
        return []
    return [bytes(x) for x in candidates if isinstance(x, pikepdf.String)]


def find_font_usage(pdf: pikepdf.Pdf) -> FontUsage:
    usage = FontUsage()
    for page in pdf.pages:
        if "/Contents" in page.obj:
            _scan(page.obj, page_resources(page.obj), usage)
    for obj in pdf.objects:
        if isinstance(obj, Stream):
            d = obj.stream_dict
            is_form = d.get("/Subtype") == Name.Form
            is_pattern = d.get("/PatternType") == 1
            if is_form or is_pattern:
                res = d.get("/Resources")
                if res is None:
                    usage.complete = False  # resources inherited from wherever it is used: cannot attribute
                    continue
                _scan(obj, res, usage)
        elif isinstance(obj, Dictionary) and obj.get("/Subtype") == Name.Type3:
            procs = obj.get("/CharProcs")
            if isinstance(procs, Dictionary):
                for _, proc in procs.items():
                    if isinstance(proc, Stream):
                        _scan(proc, obj.get("/Resources"), usage)
    return usage
