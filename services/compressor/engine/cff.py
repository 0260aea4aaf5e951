"""CFF font programs: Type 1 fonts converted to CFF (Type 2 charstrings), and CFF fonts subset. Glyph outlines
are carried over exactly (Type 1 subrs, flex and seac accented characters are resolved into plain Type 2
outlines), and so are the glyph names, the built-in encoding, FontMatrix and advance widths. Hints are not
carried over (see docs/engine.md). Every charstring interpretation is bounded: nesting depth, and a total
budget of charstring bytes interpreted per font (a subr calling subrs calling subrs could otherwise multiply
the work without end)."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

from fontTools.cffLib import (
    CFFFontSet,
    CharStrings,
    GlobalSubrsIndex,
    PrivateDict,
    TopDict,
    TopDictCompiler,
    TopDictIndex,
)
from fontTools.cffLib.specializer import commandsToProgram, specializeCommands
from fontTools.cffLib.width import optimizeWidths
from fontTools.encodings.StandardEncoding import StandardEncoding
from fontTools.misc.psCharStrings import SimpleT2Decompiler, T1CharString, T1OutlineExtractor, T2CharString
from fontTools.pens.recordingPen import RecordingPen
from fontTools.pens.transformPen import TransformPen
from fontTools.ttLib import TTFont

from .type1 import Type1Program

_MAX_DEPTH = 10  # subroutine nesting, the limit both charstring formats set
# Charstring bytes interpreted per font, over all glyphs and subroutine calls: linear in the font's size (a
# real font interprets its subrs a few times over; a hostile one fans calls out exponentially).
_BASE_WORK = 64 << 10
_WORK_PER_BYTE = 3
_FLEX_AND_HINT_REPLACEMENT = (0, 1, 2, 3)  # the only OtherSubrs whose meaning is fixed


class CharstringError(ValueError):
    pass


class _Budget:
    def __init__(self, limit: int) -> None:
        self.left = limit

    def spend(self, amount: int) -> None:
        self.left -= amount
        if self.left < 0:
            raise CharstringError("charstring work budget exceeded")


class _BoundedT1Extractor(T1OutlineExtractor):
    """fontTools' Type 1 outline extractor with bounded recursion and work, sbw, and seac drawn in place (base and
    accent from the font itself, never a seac inside a seac)."""

    def __init__(
        self, pen: Any, subrs: list[Any], glyphs: dict[str, Any], budget: _Budget, *, allow_seac: bool = True
    ) -> None:
        super().__init__(pen, subrs)
        self.glyphs = glyphs
        self.budget = budget
        self.allow_seac = allow_seac

    def execute(self, charString: Any, **kwargs: Any) -> None:  # noqa: N803 - fontTools' name
        if len(self.callingStack) >= _MAX_DEPTH:
            raise CharstringError("subrs nested too deep")
        self.budget.spend(len(charString.bytecode or b"") + 1)
        super().execute(charString, **kwargs)

    def op_callsubr(self, index: int) -> None:
        number = self.pop()
        if not isinstance(number, int) or not 0 <= number < len(self.subrs) or self.subrs[number] is None:
            raise CharstringError("call of a missing subr")
        self.execute(self.subrs[number])

    def op_callothersubr(self, index: int) -> None:
        if len(self.operandStack) < 2 or self.operandStack[-1] not in _FLEX_AND_HINT_REPLACEMENT:
            raise CharstringError("OtherSubr without a fixed meaning")
        super().op_callothersubr(index)

    def op_sbw(self, index: int) -> None:
        sbx, sby, wx, _wy = self.popall()
        self.width, self.sbx = wx, sbx
        self.currentPoint = sbx, sby

    def op_seac(self, index: int) -> None:
        asb, adx, ady, bchar, achar = self.popall()
        if not self.allow_seac:
            raise CharstringError("seac inside seac")
        self._component(bchar, (1, 0, 0, 1, 0, 0))
        self._component(achar, (1, 0, 0, 1, adx + self.sbx - asb, ady))  # placement as FreeType does it

    def _component(self, code: Any, transform: tuple[float, ...]) -> None:
        name = StandardEncoding[code] if isinstance(code, int) and 0 <= code < 256 else ".notdef"
        if name not in self.glyphs:
            raise CharstringError("seac component missing")
        pen = TransformPen(self.pen, transform)
        _BoundedT1Extractor(pen, self.subrs, self.glyphs, self.budget, allow_seac=False).execute(self.glyphs[name])


def type1_to_cff(program: Type1Program, keep: set[str] | None = None) -> bytes:
    """The font as a bare CFF font program (PDF /FontFile3 /Subtype /Type1C). With ``keep``, glyphs outside it
    are emptied (their names and codes stay)."""
    size = sum(len(cs) for cs in program.charstrings.values()) + sum(len(s or b"") for s in program.subrs)
    budget = _Budget(_BASE_WORK + _WORK_PER_BYTE * size)
    subrs = [T1CharString(s) if s is not None else None for s in program.subrs]
    glyphs = {name: T1CharString(cs, subrs=subrs) for name, cs in program.charstrings.items()}
    order = _glyph_order(program)
    outlines: dict[str, tuple[RecordingPen, float]] = {}
    for name in order:
        if name in glyphs and (keep is None or name in keep or name == ".notdef"):
            outlines[name] = _outline(glyphs[name], subrs, glyphs, budget)
    return _compile(_font_set(program, order, outlines))


def _glyph_order(program: Type1Program) -> list[str]:
    """.notdef, then the encoded glyphs in code order (so CFF's compact encoding formats hold the encoding exactly),
    then every other glyph."""
    encoded = list(dict.fromkeys(n for n in program.encoding if n != ".notdef" and n in program.charstrings))
    rest = [n for n in program.charstrings if n != ".notdef" and n not in set(encoded)]
    return [".notdef", *encoded, *rest]


def _outline(glyph: Any, subrs: list[Any], glyphs: dict[str, Any], budget: _Budget) -> tuple[RecordingPen, float]:
    pen = RecordingPen()
    extractor = _BoundedT1Extractor(pen, subrs, glyphs, budget)
    extractor.execute(glyph)
    return pen, extractor.width


def _font_set(program: Type1Program, order: list[str], outlines: dict[str, tuple[RecordingPen, float]]) -> Any:
    font_set = CFFFontSet()
    font_set.major, font_set.minor = 1, 0
    font_set.fontNames = [program.font_name]
    font_set.topDictIndex = TopDictIndex()
    global_subrs = GlobalSubrsIndex()
    font_set.GlobalSubrs = global_subrs
    private = PrivateDict()
    default_width, nominal_width = optimizeWidths([round(w) for _, w in outlines.values()] or [0])
    private.defaultWidthX, private.nominalWidthX = default_width, nominal_width
    top = TopDict()
    top.compilerClass = _ExactEncodingCompiler
    top.charset = order
    top.Private = private
    top.GlobalSubrs = global_subrs
    top.FontMatrix = list(program.font_matrix)
    top.FontBBox = list(program.font_bbox)
    top.Encoding = "StandardEncoding" if program.standard_encoding else list(program.encoding)
    charstrings = CharStrings(None, order, global_subrs, private, None, None)
    for name in order:
        pen, width = outlines.get(name, (None, default_width))
        # As it is: a fractional width (hsbw with div) stays fractional.
        t2: list[Any] = [width - nominal_width] if width != default_width else []
        t2 += _type2_program(pen) if pen is not None else ["endchar"]
        charstrings[name] = T2CharString(program=t2, private=private, globalSubrs=global_subrs)
    top.CharStrings = charstrings
    font_set.topDictIndex.append(top)
    return font_set


def _type2_program(pen: RecordingPen) -> list[Any]:
    """The outline as a Type 2 program: every point as it is (the specializer may not merge or drop segments)."""
    commands: list[tuple[str, list[float]]] = []
    x, y = 0.0, 0.0
    for op, points in pen.value:
        if op not in ("moveTo", "lineTo", "curveTo"):
            continue  # closePath/endPath: Type 2 contours are closed
        if op == "curveTo" and len(points) != 3:
            raise CharstringError("unexpected curve")
        args: list[float] = []
        for px, py in points:
            args += [px - x, py - y]
            x, y = px, py
        commands.append(({"moveTo": "rmoveto", "lineTo": "rlineto", "curveTo": "rrcurveto"}[op], args))
    commands = specializeCommands(commands, generalizeFirst=False, preserveTopology=True, maxstack=48)
    return [*commandsToProgram(commands), "endchar"]


class _ExactEncodingCompiler(TopDictCompiler):
    """fontTools writes a custom encoding without its supplement (a glyph at two codes keeps one, and a code 0
    is lost when read back): this writes format 0 for the leading glyphs and every other code as a supplement."""

    def getChildren(self, strings: Any) -> list[Any]:
        encoding = self.dictObj.Encoding
        if isinstance(encoding, str):
            return list(super().getChildren(strings))
        self.dictObj.Encoding = None  # fontTools' own encoding compiler is not run (it also fails past 255 glyphs)
        try:
            children = list(super().getChildren(strings))
        finally:
            self.dictObj.Encoding = encoding
        return [*children, _EncodingData(strings, self)]


class _EncodingData:
    def __init__(self, strings: Any, parent: Any) -> None:
        self.parent = parent
        self.data = _encoding_bytes(parent.dictObj.Encoding, parent.dictObj.charset, strings)

    def setPos(self, pos: int, end: int) -> None:
        self.parent.rawDict["Encoding"] = pos

    def getDataLength(self) -> int:
        return len(self.data)

    def toFile(self, file: Any) -> None:
        file.write(self.data)


def _encoding_bytes(encoding: list[str], charset: list[str], strings: Any) -> bytes:
    """A CFF custom encoding (format 0 with supplement) mapping exactly the codes ``encoding`` gives."""
    present = set(charset[1:])
    first_code: dict[str, int] = {}
    for code, name in enumerate(encoding):
        if name in present:
            first_code.setdefault(name, code)
    leading: list[int] = []
    for name in charset[1:256]:
        if name not in first_code:
            break
        leading.append(first_code[name])
    covered = {(code, charset[gid + 1]) for gid, code in enumerate(leading)}
    extra = [(c, n) for c, n in enumerate(encoding) if n in present and (c, n) not in covered]
    if len(extra) > 255:
        raise CharstringError("encoding too irregular for CFF")
    data = bytes([0x80 if extra else 0, len(leading), *leading])
    if extra:
        data += bytes([len(extra)]) + b"".join(bytes([c]) + strings.getSID(n).to_bytes(2, "big") for c, n in extra)
    return data


def _compile(font_set: Any) -> bytes:
    out = io.BytesIO()
    font_set.compile(out, TTFont(recalcBBoxes=False))
    return out.getvalue()


def builtin_encoding(data: bytes) -> tuple[str, ...]:
    """The built-in encoding of a name-keyed CFF font, read from the bytes as FreeType reads them (code 0 and
    supplements included, which fontTools' reader skips): 256 glyph names."""
    font_set = _decompile(data)
    top = font_set.topDictIndex[0]
    offset = top.rawDict.get("Encoding", 0)
    charset = top.charset
    if offset in (0, 1):
        names = StandardEncoding if offset == 0 else top.Encoding
        return tuple(n if n in set(charset) else ".notdef" for n in names)
    return _custom_encoding(data, offset, charset, font_set.strings)


def _custom_encoding(data: bytes, offset: int, charset: list[str], strings: Any) -> tuple[str, ...]:
    names = [".notdef"] * 256
    fmt, count = data[offset] & 0x7F, data[offset + 1]
    pos = offset + 2
    if fmt == 0:
        for gid in range(1, min(count + 1, len(charset))):
            names[data[pos + gid - 1]] = charset[gid]
        pos += count
    else:
        gid = 1
        for r in range(count):
            first, left = data[pos + 2 * r], data[pos + 2 * r + 1]
            for code in range(first, min(first + left + 1, 256)):
                if gid < len(charset):
                    names[code] = charset[gid]
                gid += 1
        pos += 2 * count
    if data[offset] & 0x80:
        for s in range(data[pos]):
            code, sid = data[pos + 1 + 3 * s], int.from_bytes(data[pos + 2 + 3 * s : pos + 4 + 3 * s], "big")
            names[code] = strings[sid]
    return tuple(names)


def _decompile(data: bytes) -> Any:
    font_set = CFFFontSet()
    font_set.decompile(io.BytesIO(data), TTFont(recalcBBoxes=False), isCFF2=False)
    if len(font_set.topDictIndex) != 1:
        raise CharstringError("not one font")
    return font_set


class CFFFont:
    """A parsed CFF font program to subset."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.font_set = _decompile(data)
        self.top = self.font_set.topDictIndex[0]
        self.cid_keyed = hasattr(self.top, "ROS")
        self.glyph_order: list[str] = list(self.top.charset)

    def glyph_of_cid(self) -> dict[int, str]:
        """CID -> glyph name (for a font that is not CID-keyed, CID = glyph id)."""
        if not self.cid_keyed:
            return dict(enumerate(self.glyph_order))
        return {int(n[3:]): n for n in self.glyph_order if n.startswith("cid") and n[3:].isdigit()}

    def encoding(self) -> tuple[str, ...]:
        return builtin_encoding(self.data) if not self.cid_keyed else (".notdef",) * 256

    def subset(self, keep: Iterable[str]) -> bytes:
        """Every glyph outside ``keep`` (and the seac components of what is kept) emptied; glyph ids, names, the
        encoding and the charset stay, so nothing in the PDF changes. Subroutines left unused are dropped."""
        budget = _Budget(_BASE_WORK + _WORK_PER_BYTE * len(self.data))
        charstrings = self.top.CharStrings
        wanted = {self.glyph_order[0], *keep} & set(self.glyph_order)
        wanted |= _seac_components(charstrings, wanted, budget)
        for name in self.glyph_order:
            if name not in wanted:
                charstrings[name].setProgram(["endchar"])
        _interpret_all(charstrings, budget)  # bounds the work fontTools' passes below repeat
        self.font_set.remove_unused_subroutines()
        if not self.cid_keyed and self.top.rawDict.get("Encoding", 0) > 1:
            self.top.Encoding = list(builtin_encoding(self.data))
            self.top.compilerClass = _ExactEncodingCompiler
        out = _compile(self.font_set)
        if not self.cid_keyed and builtin_encoding(out) != builtin_encoding(self.data):
            raise CharstringError("encoding not carried over")
        return out


class _BoundedT2Decompiler(SimpleT2Decompiler):
    """Runs a Type 2 charstring with its subroutines (bounded); collects the seac-like endchar components."""

    def __init__(self, local_subrs: Any, global_subrs: Any, private: Any, budget: _Budget) -> None:
        super().__init__(local_subrs, global_subrs, private)
        self.budget = budget
        self.components: set[int] = set()

    def execute(self, charString: Any, **kwargs: Any) -> None:  # noqa: N803 - fontTools' name
        if len(self.callingStack) >= _MAX_DEPTH:
            raise CharstringError("subrs nested too deep")
        self.budget.spend(len(charString.bytecode or b"") + len(charString.program or ()) + 1)
        super().execute(charString, **kwargs)

    def op_endchar(self, index: int) -> None:
        if len(self.operandStack) >= 4:
            self.components.update(c for c in self.operandStack[-2:] if isinstance(c, int) and 0 <= c < 256)


def _run(charstrings: Any, name: str, budget: _Budget) -> set[int]:
    cs, _ = charstrings.getItemAndSelector(name)
    private = cs.private
    decompiler = _BoundedT2Decompiler(getattr(private, "Subrs", []), cs.globalSubrs, private, budget)
    decompiler.execute(cs)
    return decompiler.components


def _seac_components(charstrings: Any, wanted: set[str], budget: _Budget) -> set[str]:
    codes: set[int] = set()
    for name in wanted:
        codes |= _run(charstrings, name, budget)
    return {StandardEncoding[c] for c in codes} & set(charstrings.keys())


def _interpret_all(charstrings: Any, budget: _Budget) -> None:
    for name in charstrings.keys():  # noqa: SIM118 - fontTools' CharStrings iterates by index
        _run(charstrings, name, budget)


GlyphChooser = Callable[[CFFFont], set[str]]


def subset_cff(data: bytes, keep: GlyphChooser) -> bytes:
    font = CFFFont(data)
    return font.subset(keep(font))
