"""Content-stream rewriting: one content stream in, a shorter one that draws the same out.

Lossless at every level: numbers in their shortest form (``0.500`` -> ``.5``, ``-0.0`` -> ``0``), only the
whitespace that keeps tokens apart, state operators that set the value already in force dropped, empty ``q Q``
pairs and state set just before ``Q`` (or the stream's end) dropped, ``ET BT`` merged where the second text object
starts with ``Tm``. Lossy levels also round path coordinates to what the current transformation can show at 2400
dpi, and colour components to 4 decimals. Inline images and strings are written back byte-exact.

The tokenizer is this module's own (pikepdf's parser makes a Python object of every operand: several times
slower) and strict: a stream with anything another reader might read differently (a stray delimiter, a malformed
number, an operator inside an array, an inline image whose data end is not certain) is left as it is, and so is a
rewrite that does not tokenize back to the instructions intended.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

import pikepdf
from pikepdf import Dictionary

from .matrix import IDENTITY, Matrix, compose

INLINE_IMAGE = "BI"

# State operators whose whole effect is to set one parameter (text state included): setting the value already in
# force does nothing. "gs" is not one of them (an ExtGState sets several parameters; only an immediate repeat is
# dropped), nor are the colour operators (tracked below).
_SIMPLE_STATE = frozenset({"w", "J", "j", "M", "d", "ri", "i", "Tc", "Tw", "Tz", "TL", "Tf", "Tr", "Ts"})
_FILL_COLOUR = frozenset({"g", "rg", "k"})
_STROKE_COLOUR = frozenset({"G", "RG", "K"})
_COLOUR_OPERATORS = frozenset({"g", "rg", "k", "G", "RG", "K", "cs", "CS", "sc", "scn", "SC", "SCN"})
# Operators that only change the graphics state (restored by Q): nothing they set matters if nothing is drawn
# before the Q.
_PURE_STATE = _SIMPLE_STATE | _COLOUR_OPERATORS | {"gs", "cm"}
# What may stand between BT and its Tm for the text object to be merged with the one before.
_TEXT_SAFE = _PURE_STATE - {"cm"}
_TEXT_POSITIONING = frozenset({"Tm", "Td", "TD", "T*", "Tj", "TJ", "'", '"', "ET"})
# Line widths are not rounded: a width rounded to 0 would become the thinnest line a device draws.
_PATH_OPERATORS = frozenset({"m", "l", "c", "v", "y", "re"})
_COLOUR_VALUE_OPERATORS = frozenset({"g", "rg", "k", "G", "RG", "K", "sc", "scn", "SC", "SCN"})
_COLOUR_DECIMALS = 4
_DELIMITERS = frozenset(b"()<>[]{}/% \t\r\n\f\x00")
_MAX_DECIMALS = 10


@dataclass(frozen=True)
class Instruction:
    """An operator and its operand tokens (numbers canonical, so equal tokens mean equal values)."""

    operands: tuple[bytes, ...]
    operator: str
    raw: bytes = b""  # an inline image: its bytes from BI to EI, written as they are


@dataclass(frozen=True)
class Precision:
    """Lossy rounding of coordinates: the largest error allowed on the page, in points, and the page's scale of
    user space to points at the start of the stream (``/UserUnit``)."""

    tolerance_pt: float
    initial_scale: float = 1.0


@dataclass
class RewriteStats:
    operators_dropped: int = 0
    text_objects_merged: int = 0
    numbers_rounded: int = 0


# ---------------------------------------------------------------------------------------------------------------
# Tokens


class Unsupported(Exception):
    """The stream holds something this rewriter does not rewrite (inline images, damaged tokens...)."""


_SPECIAL = re.compile(rb"[()\\]")
_HEX = re.compile(rb"<[0-9A-Fa-f\x00\t\n\f\r ]*>")
_SPACE = re.compile(rb"(?:[\x00\t\n\f\r ]+|%[^\r\n]*)+")
_REGULAR = re.compile(rb"[^()<>\[\]{}/%\x00\t\n\f\r ]+")
_NAME = re.compile(rb"/[^()<>\[\]{}/%\x00\t\n\f\r ]*")
_NUMBER = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)")
_NUMBER_START = frozenset(b"+-.0123456789")
_STRAY_FIRST = frozenset(b")<>{}")
_OPERAND_FIRST = frozenset(b"+-.0123456789/(<>[]")
_OPERAND_KEYWORDS = frozenset({b"true", b"false", b"null"})
# Operators that start data this tokenizer does not read: an inline image's bytes.
_REFUSED_OPERATORS = frozenset({"BI", "ID", "EI"})


def _literal_end(data: bytes, pos: int) -> int:
    """The index after the literal string starting at ``pos`` (nested parentheses, backslash escapes)."""
    depth, i = 0, pos
    while True:
        m = _SPECIAL.search(data, i)
        if m is None:
            raise Unsupported("unterminated string")
        ch, i = data[m.start()], m.start() + 1
        if ch == 0x5C:  # backslash: the next byte is escaped
            i += 1
        elif ch == 0x28:
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return i


def canonical_number(token: bytes) -> bytes:
    """The shortest token with the same value: ``0.500`` -> ``.5``, ``-0.0`` -> ``0``, ``+007`` -> ``7``.
    Integers beyond 32 bits stay as written (some readers clamp them)."""
    sign = b"-" if token[:1] == b"-" else b""
    body = token.lstrip(b"+-")
    if b"." in body:
        whole, frac = body.split(b".", 1)
        whole, frac = whole.lstrip(b"0"), frac.rstrip(b"0")
        if len(whole) > 9:
            return token
        text = whole + (b"." + frac if frac else b"")
    else:
        if len(body.lstrip(b"0")) > 9:
            return token
        text = body.lstrip(b"0")
    if not text.strip(b"0."):
        return b"0"
    return sign + (text or b"0")


def _next_token(data: bytes, pos: int) -> tuple[bytes, int, int] | None:
    """(token, start, end) of the next token at or after ``pos`` (numbers canonical), None at the end."""
    m = _SPACE.match(data, pos)
    if m:
        pos = m.end()
    if pos >= len(data):
        return None
    ch = data[pos]
    if ch == 0x2F:  # /
        m = _NAME.match(data, pos)
        assert m is not None
        return m.group(), pos, m.end()
    if ch == 0x28:  # (
        end = _literal_end(data, pos)
        return data[pos:end], pos, end
    if data.startswith((b"<<", b">>"), pos):
        return data[pos : pos + 2], pos, pos + 2
    if ch == 0x3C:  # <
        m = _HEX.match(data, pos)
        if m is None:
            raise Unsupported("bad hex string")
        return m.group(), pos, m.end()
    if ch in (0x5B, 0x5D):  # [ ]
        return data[pos : pos + 1], pos, pos + 1
    m = _REGULAR.match(data, pos)
    if m is None:
        raise Unsupported(f"unexpected delimiter {ch:#x}")
    token = m.group()
    if token[0] in _NUMBER_START:
        if not _NUMBER.fullmatch(token):
            raise Unsupported("malformed number")
        token = canonical_number(token)
    return token, pos, m.end()


# One regular expression for all tokens (the common case, in C): white space and comments before each token are
# skipped; a literal string without nested parentheses is one token; anything else is a single byte (a stray
# delimiter, or the start of a string with nested parentheses, read apart).
_TOKEN = re.compile(
    rb"(?:[\x00\t\n\f\r ]+|%[^\r\n]*)*"
    rb"(/[^()<>\[\]{}/%\x00\t\n\f\r ]*|<<|>>|<[0-9A-Fa-f\x00\t\n\f\r ]*>|[\[\]]"
    rb"|\((?:[^()\\]|\\.)*\)|[^()<>\[\]{}/%\x00\t\n\f\r ]+|.|\Z)",
    re.DOTALL,
)


def tokenize(data: bytes) -> list[bytes]:
    """Every token of a content stream, numbers in canonical form, comments dropped; an inline image is one token,
    its bytes from BI to EI as they are. Raises Unsupported on what other readers might read differently (a
    stray delimiter, a malformed number, braces, an inline image whose end is not certain)."""
    out: list[bytes] = []
    canonical: dict[bytes, bytes] = {}
    tokens = _TOKEN.findall(data)
    if b"(" in tokens or b"BI" in tokens:
        pos = 0  # strings with nested parentheses, inline images: read apart, by position
        while pos < len(data):
            pos = _tokenize_from(data, pos, out, canonical)
        return out
    # The common case, inlined (this loop runs once per token of every content stream).
    number_start, stray, append = _NUMBER_START, _STRAY_FIRST, out.append
    for token in tokens:
        if not token:
            continue  # the end of the data (\Z matches there, after trailing white space too)
        first = token[0]
        if first in number_start:
            number = canonical.get(token)
            append(number if number is not None else _canonical_cached(token, canonical))
        elif first in stray and len(token) == 1 and token in b")<>{}":
            raise Unsupported(f"unexpected delimiter {first:#x}")
        else:
            append(token)
    return out


def _canonical_cached(token: bytes, canonical: dict[bytes, bytes]) -> bytes:
    if not _NUMBER.fullmatch(token):
        raise Unsupported("malformed number")
    number = canonical[token] = canonical_number(token)
    return number


def _append_token(token: bytes, out: list[bytes], canonical: dict[bytes, bytes]) -> None:
    if not token:
        return
    first = token[0]
    if first in _NUMBER_START:
        number = canonical.get(token)
        out.append(number if number is not None else _canonical_cached(token, canonical))
    elif first in _STRAY_FIRST and len(token) == 1 and token in b")<>{}":
        raise Unsupported(f"unexpected delimiter {first:#x}")
    else:
        out.append(token)


def _tokenize_from(data: bytes, pos: int, out: list[bytes], canonical: dict[bytes, bytes]) -> int:
    """Tokens from ``pos`` until the end, or until a string with nested parentheses or an inline image (read
    here, appended, and the index after it returned, so the caller resumes there)."""
    for m in _TOKEN.finditer(data, pos):
        token = m.group(1)
        if token == b"(":
            end = _literal_end(data, m.start(1))
            out.append(data[m.start(1) : end])
            return end
        if token == b"BI":
            end = inline_image_end(data, m.end(1))
            out.append(data[m.start(1) : end])
            return end
        _append_token(token, out, canonical)
    return len(data)


def is_number(token: bytes) -> bool:
    return token[0] in _NUMBER_START


def instructions_of(tokens: Sequence[bytes], max_instructions: int) -> list[Instruction]:
    """Tokens grouped into instructions. Raises Unsupported on an operator inside an array or dictionary, operands
    after the last operator, or more than ``max_instructions``."""
    out: list[Instruction] = []
    operands: list[bytes] = []
    depth = 0
    operand_first, keywords = _OPERAND_FIRST, _OPERAND_KEYWORDS
    for token in tokens:
        first = token[0]
        if first in operand_first or token in keywords:
            if token in (b"[", b"<<"):
                depth += 1
            elif token in (b"]", b">>"):
                depth -= 1
                if depth < 0:
                    raise Unsupported("unbalanced array or dictionary")
            operands.append(token)
            continue
        out.append(_instruction(token, operands, depth))
        operands = []
        if len(out) > max_instructions:
            raise Unsupported("too many instructions")
    if operands:
        raise Unsupported("operands after the last operator")
    return out


def _instruction(token: bytes, operands: list[bytes], depth: int) -> Instruction:
    if token.startswith(b"BI") and len(token) > 2:
        if depth or operands:
            raise Unsupported("inline image inside operands")
        return Instruction((), INLINE_IMAGE, token)
    operator = token.decode("latin-1")
    if depth or operator in _REFUSED_OPERATORS:
        raise Unsupported(f"operator {operator!r} not rewritten here")
    return Instruction(tuple(operands), operator)


def _join(tokens: Sequence[bytes], out: bytearray) -> None:
    """Append tokens with a separator only where two would otherwise merge into one."""
    for tok in tokens:
        if out and out[-1] not in _DELIMITERS and tok[0] not in _DELIMITERS:
            out += b" "
        out += tok


def serialise(instructions: Sequence[Instruction]) -> bytes:
    """Instructions as content-stream bytes: minimal whitespace, a newline where an operator needs a separator."""
    out = bytearray()
    for ins in instructions:
        operator = ins.raw or ins.operator.encode("latin-1")
        first = ins.operands[0] if ins.operands else operator
        if out and out[-1] not in _DELIMITERS and first[0] not in _DELIMITERS:
            out += b"\n"
        _join(ins.operands, out)
        _join((operator,), out)
    return bytes(out)


# ---------------------------------------------------------------------------------------------------------------
# Inline images: copied byte for byte, but only where where their data ends is certain.

_EI = re.compile(rb"EI(?![^()<>\[\]{}/%\x00\t\n\f\r ])")
_WHITE = b"\x00\t\n\f\r "
_COMPONENTS = {b"/G": 1, b"/DeviceGray": 1, b"/RGB": 3, b"/DeviceRGB": 3, b"/CMYK": 4, b"/DeviceCMYK": 4}
_INFLATE_CAP = 64 << 20


def _image_dictionary(data: bytes, pos: int) -> tuple[dict[bytes, list[bytes]], int]:
    """The inline image's keys and value tokens, and the index after its ID keyword."""
    entries: dict[bytes, list[bytes]] = {}
    key: bytes | None = None
    while (found := _next_token(data, pos)) is not None:
        token, _, pos = found
        if token == b"ID":
            return entries, pos
        if key is None:
            if not token.startswith(b"/"):
                raise Unsupported("inline image key expected")
            key, entries[token] = token, []
        else:
            entries[key].append(token)
            if token != b"[" and (entries[key][0] != b"[" or token == b"]"):
                key = None
    raise Unsupported("inline image without ID")


def _value(entries: dict[bytes, list[bytes]], *names: bytes) -> list[bytes] | None:
    for name in names:
        if name in entries:
            return [t for t in entries[name] if t not in (b"[", b"]")]
    return None


def _unfiltered_length(entries: dict[bytes, list[bytes]]) -> int:
    def number(*names: bytes) -> int:
        v = _value(entries, *names)
        if not v or len(v) != 1 or not v[0].isdigit():
            raise Unsupported("inline image size unknown")
        return int(v[0])

    mask = _value(entries, b"/IM", b"/ImageMask") == [b"true"]
    width, height = number(b"/W", b"/Width"), number(b"/H", b"/Height")
    if mask:
        components, bpc = 1, 1
    else:
        space = _value(entries, b"/CS", b"/ColorSpace") or [b""]
        indexed = space[0] in (b"/I", b"/Indexed")
        components = 1 if indexed else _COMPONENTS.get(space[0], 0) if len(space) == 1 else 0
        if not components:
            raise Unsupported("inline image colour space unknown here")
        bpc = number(b"/BPC", b"/BitsPerComponent")
    return (width * components * bpc + 7) // 8 * height


def _flate_length(data: bytes, start: int) -> int:
    d = zlib.decompressobj()
    produced = 0
    chunk = data[start:]
    try:
        while not d.eof and chunk:
            produced += len(d.decompress(chunk, 1 << 20))
            chunk = d.unconsumed_tail
            if produced > _INFLATE_CAP:
                raise Unsupported("inline image too large")
    except zlib.error:
        raise Unsupported("inline image data damaged") from None
    if not d.eof:
        raise Unsupported("inline image data cut short")
    return len(data) - start - len(d.unused_data)


def _data_length(entries: dict[bytes, list[bytes]], data: bytes, start: int) -> int:
    filters = _value(entries, b"/F", b"/Filter") or []
    if len(filters) > 1:
        raise Unsupported("inline image with several filters")
    name = filters[0] if filters else None
    if name is None:
        return _unfiltered_length(entries)
    if name in (b"/AHx", b"/ASCIIHexDecode"):
        end = data.find(b">", start)
        return end + 1 - start if end >= 0 else -1
    if name in (b"/A85", b"/ASCII85Decode"):
        end = data.find(b"~>", start)
        return end + 2 - start if end >= 0 else -1
    if name in (b"/Fl", b"/FlateDecode"):
        return _flate_length(data, start)
    raise Unsupported("inline image filter whose end is not known here")


def inline_image_end(data: bytes, pos: int) -> int:
    """The index after the EI of the inline image whose BI ends at ``pos``. Raises Unsupported unless the first
    EI after the data is right where the data ends (so every reader stops at the same EI)."""
    entries, pos = _image_dictionary(data, pos)
    if pos >= len(data) or data[pos] not in _WHITE:
        raise Unsupported("no white space after ID")
    start = pos + 1
    length = _data_length(entries, data, start)
    m = _EI.search(data, start)
    if length < 0 or m is None or m.start() < start + length or data[start + length : m.start()].strip(_WHITE):
        raise Unsupported("inline image end uncertain")
    return m.end()


# ---------------------------------------------------------------------------------------------------------------
# Lossy rounding


def _decimals_for(ctm: Matrix | None, precision: Precision) -> int | None:
    """Decimal places that keep a coordinate's rounding error (half a unit of the last place, scaled by the CTM's
    largest stretch, bounded by its Frobenius norm) under the tolerance. None: leave numbers alone."""
    if ctm is None:
        return None
    scale = math.sqrt(sum(x * x for x in ctm[:4])) * precision.initial_scale
    if not math.isfinite(scale) or scale <= 0:
        return None
    places = math.ceil(math.log10(scale / (2 * precision.tolerance_pt)))
    return min(_MAX_DECIMALS, max(0, places))


def _matrix(operands: tuple[bytes, ...]) -> Matrix | None:
    if len(operands) != 6 or not all(is_number(x) for x in operands):
        return None
    return tuple(float(x) for x in operands)  # type: ignore[return-value]


def round_number(token: bytes, places: int) -> bytes:
    """A canonical number token rounded to ``places`` decimals (half to even), in canonical form."""
    if b"." not in token:
        return token
    try:
        value = Decimal(token.decode("ascii")).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    except InvalidOperation:
        return token
    return canonical_number(format(value, "f").encode("ascii"))


def _round_operands(ins: Instruction, places: int, stats: RewriteStats) -> Instruction:
    new = []
    for x in ins.operands:
        r = round_number(x, places) if is_number(x) else x
        stats.numbers_rounded += r != x
        new.append(r)
    return Instruction(tuple(new), ins.operator)


def round_numbers(instructions: list[Instruction], precision: Precision, stats: RewriteStats) -> list[Instruction]:
    """Path coordinates to the CTM's precision; colour components to 4 decimals. ``cm``, line widths, text
    positioning, dash patterns, inline images and strings stay exact."""
    ctm: Matrix | None = IDENTITY
    stack: list[Matrix | None] = []
    out: list[Instruction] = []
    for ins in instructions:
        op = ins.operator
        if op == "q":
            stack.append(ctm)
        elif op == "Q":
            ctm = stack.pop() if stack else None  # an unmatched Q: what is in force is no longer known
        elif op == "cm":
            m = _matrix(ins.operands)
            ctm = None if m is None or ctm is None else compose(m, ctm)
        elif op in _PATH_OPERATORS:
            places = _decimals_for(ctm, precision)
            if places is not None:
                ins = _round_operands(ins, places, stats)
        elif op in _COLOUR_VALUE_OPERATORS:
            ins = _round_operands(ins, _COLOUR_DECIMALS, stats)
        out.append(ins)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Redundant operators


@dataclass
class _State:
    """Parameters known to be in force (absent: not known, e.g. inherited from the caller)."""

    values: dict[str, object] = field(default_factory=dict)

    def copy(self) -> _State:
        return _State(dict(self.values))


_INHERITED = "inherited"


def _colour_update(state: _State, ins: Instruction) -> tuple[str, object] | None:
    """The (parameter, value) a colour operator sets: a colour space and the colour in it."""
    op, value = ins.operator, ins.operands
    if op in _FILL_COLOUR or op in _STROKE_COLOUR:
        return ("fill" if op in _FILL_COLOUR else "stroke"), (op, value)
    key = "fill" if op in ("cs", "sc", "scn") else "stroke"
    if op in ("cs", "CS"):
        return key, (value, None)  # a new space: its initial colour
    current = state.values.get(key)
    space = current[0] if isinstance(current, tuple) else _INHERITED
    return key, (space, value)


def _state_update(state: _State, ins: Instruction) -> tuple[str, object] | None:
    op = ins.operator
    if op in _SIMPLE_STATE:
        return op, ins.operands
    if op in _COLOUR_OPERATORS:
        return _colour_update(state, ins)
    return None


def _side_effects(state: _State, ins: Instruction) -> None:
    """Parameters changed by operators that do more than set them: " sets word and character spacing, TD the
    leading."""
    op, operands = ins.operator, ins.operands
    if op == '"':
        if len(operands) == 3:
            state.values["Tw"], state.values["Tc"] = operands[0:1], operands[1:2]
        else:
            state.values.pop("Tw", None)
            state.values.pop("Tc", None)
    elif op == "TD":
        ty = operands[1] if len(operands) == 2 and is_number(operands[1]) else None
        if ty is not None:
            state.values["TL"] = (canonical_number(ty[1:] if ty[:1] == b"-" else b"-" + ty),)
        else:
            state.values.pop("TL", None)


def _is_identity(ins: Instruction) -> bool:
    m = _matrix(ins.operands)
    return m == IDENTITY


def _merge_text_possible(instructions: Sequence[Instruction], start: int, limit: int) -> bool:
    """Whether the text object opening at ``start`` (a BT) sets its text matrix with Tm before anything depends on
    it, with only text-safe state operators in between (at most ``limit`` looked at)."""
    for ins in instructions[start + 1 : start + 1 + limit]:
        if ins.operator == "Tm":
            return True
        if ins.operator in _TEXT_POSITIONING or ins.operator not in _TEXT_SAFE:
            return False
    return False


class _Simplifier:
    """One pass over the instructions, dropping what changes nothing."""

    def __init__(self, merge_text: bool, stats: RewriteStats) -> None:
        self.merge_text = merge_text
        self.stats = stats
        self.out: list[Instruction] = []
        self.state = _State()
        self.saved: list[tuple[_State, int]] = []  # state at each open q, and the q's index in out

    def run(self, instructions: Sequence[Instruction]) -> list[Instruction]:
        for index, ins in enumerate(instructions):
            self._step(instructions, index, ins)
        self._drop_dead_state(0)  # nothing is drawn after the stream's end (pieces of a page are joined first)
        return self.out

    def _step(self, instructions: Sequence[Instruction], index: int, ins: Instruction) -> None:
        op = ins.operator
        if op == "q":
            self.saved.append((self.state.copy(), len(self.out)))
        elif op == "Q":
            self._close_q(ins)
            return
        elif op == "BT" and self._merges(instructions, index):
            self.out.pop()  # the ET before
            self.stats.text_objects_merged += 1
            self.stats.operators_dropped += 2
            return
        elif self._redundant(ins):
            self.stats.operators_dropped += 1
            return
        self.out.append(ins)

    def _merges(self, instructions: Sequence[Instruction], index: int) -> bool:
        return (
            self.merge_text
            and bool(self.out)
            and self.out[-1].operator == "ET"
            and _merge_text_possible(instructions, index, 64)
        )

    def _redundant(self, ins: Instruction) -> bool:
        op = ins.operator
        if op == "cm" and _is_identity(ins):
            return True
        if op == "gs":
            last = self.out[-1] if self.out else None
            return last is not None and last.operator == "gs" and last.operands == ins.operands
        update = _state_update(self.state, ins)
        if update is None:
            _side_effects(self.state, ins)
            return False
        key, value = update
        if self.state.values.get(key) == value:
            return True
        self.state.values[key] = value
        return False

    def _close_q(self, ins: Instruction) -> None:
        if not self.saved:
            self.state = _State()  # an unmatched Q: the caller's state, unknown here
            self.out.append(ins)
            return
        state, q_index = self.saved.pop()
        self.state = state
        self._drop_dead_state(q_index + 1)
        if len(self.out) == q_index + 1:
            self.out.pop()  # q immediately followed by Q
            self.stats.operators_dropped += 2
            return
        self.out.append(ins)

    def _drop_dead_state(self, floor: int) -> None:
        """State set after the last drawing operator and before the Q (or the end) that restores it."""
        while len(self.out) > floor and self.out[-1].operator in _PURE_STATE:
            self.out.pop()
            self.stats.operators_dropped += 1


def simplify(instructions: Sequence[Instruction], *, merge_text: bool, stats: RewriteStats) -> list[Instruction]:
    """Drop operators that change nothing: values already in force, identity ``cm``, repeated ``gs``, empty
    ``q Q`` pairs, state set just before ``Q`` or the stream's end; merge ``ET BT`` where exact."""
    return _Simplifier(merge_text, stats).run(instructions)


def text_clipping_possible(instructions: Sequence[Instruction]) -> bool:
    """Whether any text render mode other than 0-3 (the clipping modes: ET clips to the text shown) appears."""
    for ins in instructions:
        if ins.operator == "Tr" and ins.operands not in ((b"0",), (b"1",), (b"2",), (b"3",)):
            return True
    return False


def rewrite(
    instructions: list[Instruction],
    *,
    merge_text: bool,
    precision: Precision | None,
    stats: RewriteStats,
) -> tuple[bytes, list[Instruction]]:
    """The rewritten stream's bytes and the instructions they stand for. ``merge_text`` is only safe where the text
    render mode starts at 0 (pages); it is turned off here when a clipping mode appears."""
    if precision is not None:
        instructions = round_numbers(instructions, precision, stats)
    merge = merge_text and not text_clipping_possible(instructions)
    kept = simplify(instructions, merge_text=merge, stats=stats)
    return serialise(kept), kept


def rewrite_data(
    data: bytes, *, merge_text: bool, precision: Precision | None, max_instructions: int, stats: RewriteStats
) -> bytes | None:
    """A content stream's rewrite, or None when it holds what is not rewritten here or the result would not
    tokenize back to the instructions intended."""
    try:
        instructions = instructions_of(tokenize(data), max_instructions)
        new, intended = rewrite(instructions, merge_text=merge_text, precision=precision, stats=stats)
        again = instructions_of(tokenize(new), max_instructions)
    except Unsupported:
        return None
    return new if again == intended else None


def is_knockout(owner: pikepdf.Object) -> bool:
    group = owner.get("/Group") if isinstance(owner, Dictionary | pikepdf.Stream) else None
    return isinstance(group, Dictionary) and bool(group.get("/K", False))
