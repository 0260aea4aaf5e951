"""Reading an embedded Type 1 font program (a PDF /FontFile): the cleartext part, the eexec-encrypted private
part, the Subrs and the CharStrings. The program is never executed as PostScript (fontTools' interpreter runs
loops a hostile font controls); like FreeType, the conventional layout every Type 1 font uses is parsed, with
every loop bounded by the data or by a fixed cap. Anything unconventional raises ``Type1Error``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fontTools.encodings.StandardEncoding import StandardEncoding

MAX_GLYPHS = 65535  # what a CFF font can hold
_MAX_SUBRS = 65535
_EEXEC_KEY = 55665
_CHARSTRING_KEY = 4330
_NAME = rb"[^\s/\[\]{}()<>%]+"
_NUMBER = rb"-?\d+(?:\.\d*)?(?:[eE]-?\d+)?|-?\.\d+(?:[eE]-?\d+)?"
# Multiple-master and other unusual fonts are left alone.
_UNSUPPORTED = (b"/WeightVector", b"/BlendDesignPositions", b"/BlendAxisTypes", b"/CDevProc")
# An entry "dup 5 23 RD <23 bytes>"; between entries the NP/ND/put/def that end the previous one.
_SEPARATORS = rb"(?:\s|NP|ND|\|-|\||noaccess|readonly|executeonly|put|def)*"
_SUBR = re.compile(_SEPARATORS + rb"dup\s+(\d+)\s+(\d+)\s+(" + _NAME + rb")\s")
_CHARSTRING = re.compile(
    rb"(?:\s|dup|begin|NP|ND|\|-|\||noaccess|readonly|executeonly|put|def)*/("
    + _NAME
    + rb")\s+(\d+)\s+("
    + _NAME
    + rb")\s"
)


class Type1Error(ValueError):
    pass


@dataclass(frozen=True)
class Type1Program:
    font_name: str
    font_matrix: tuple[float, ...]
    font_bbox: tuple[float, ...]
    encoding: tuple[str, ...]  # 256 glyph names, ".notdef" where a code shows nothing
    standard_encoding: bool  # the font says /Encoding StandardEncoding
    charstrings: dict[str, bytes]  # decrypted Type 1 charstrings, in the font's order
    subrs: tuple[bytes | None, ...]  # decrypted; None where the font defines no entry


def parse_type1(data: bytes) -> Type1Program:
    """The parts of an embedded Type 1 font program a conversion to CFF needs."""
    if data[:2] == b"\x80\x01":
        data = _from_pfb(data)
    start = data.find(b"eexec")
    if start < 0:
        raise Type1Error("no eexec section")
    clear = data[:start]
    if not re.search(rb"/FontType\s+1\b", clear) or any(k in data for k in _UNSUPPORTED):
        raise Type1Error("not a plain Type 1 font")
    paint = re.search(rb"/PaintType\s+(\d+)", clear)
    if paint and int(paint.group(1)) != 0:
        raise Type1Error("stroked font")
    private = _decrypt_private(data[start + 5 :])
    len_iv = _len_iv(private)
    subrs, after_subrs = _subrs(private, len_iv)
    return Type1Program(
        font_name=_font_name(clear),
        font_matrix=_numbers(clear, rb"/FontMatrix\s*\[([^\]]*)\]", 6, (0.001, 0, 0, 0.001, 0, 0)),
        font_bbox=_numbers(clear, rb"/FontBBox\s*[\[{]([^\]}]*)[\]}]", 4, (0, 0, 0, 0)),
        encoding=_encoding(clear),
        standard_encoding=re.search(rb"/Encoding\s+StandardEncoding\s+def", clear) is not None,
        charstrings=_charstrings(private, after_subrs, len_iv),
        subrs=subrs,
    )


def _from_pfb(data: bytes) -> bytes:
    """The segments of a PFB file (some PDFs embed one as it is), joined."""
    out, pos = [], 0
    for _ in range(64):
        if data[pos : pos + 1] != b"\x80" or data[pos + 1 : pos + 2] not in (b"\x01", b"\x02"):
            break
        size = int.from_bytes(data[pos + 2 : pos + 6], "little")
        out.append(data[pos + 6 : pos + 6 + size])
        pos += 6 + size
    return b"".join(out)


def _decrypt_private(cipher: bytes) -> bytes:
    cipher = cipher.lstrip(b" \t\r\n")
    if re.match(rb"[0-9A-Fa-f]{4}", cipher):
        hex_part = re.match(rb"[0-9A-Fa-f\s]*", cipher)
        digits = re.sub(rb"\s", b"", hex_part.group(0) if hex_part else b"")
        cipher = bytes.fromhex(digits[: len(digits) // 2 * 2].decode("ascii"))
    return _decrypt(cipher, _EEXEC_KEY)[4:]


def _len_iv(private: bytes) -> int:
    m = re.search(rb"/lenIV\s+(-?\d+)", private)
    value = int(m.group(1)) if m else 4
    if value < -1 or value > 64:
        raise Type1Error("unusual lenIV")
    return value


def _decrypt_charstring(data: bytes, len_iv: int) -> bytes:
    if len_iv < 0:
        return data
    return _decrypt(data, _CHARSTRING_KEY)[len_iv:]


def _decrypt(cipher: bytes, key: int) -> bytes:
    """Type 1 decryption (Adobe Type 1 Font Format, 7.1): fontTools' eexec.decrypt in one tight loop, 4-5 times
    faster (every byte of a font is decrypted twice: the eexec part, then each charstring)."""
    r = key
    out = bytearray(len(cipher))
    for i, c in enumerate(cipher):
        out[i] = c ^ (r >> 8)
        r = ((c + r) * 52845 + 22719) & 0xFFFF
    return bytes(out)


def _font_name(clear: bytes) -> str:
    m = re.search(rb"/FontName\s*/(" + _NAME + rb")", clear)
    return m.group(1).decode("latin-1") if m else "Font"


def _numbers(clear: bytes, pattern: bytes, count: int, default: tuple[float, ...]) -> tuple[float, ...]:
    m = re.search(pattern, clear)
    if m is None:
        return default
    values = tuple(float(v) for v in re.findall(_NUMBER, m.group(1)))
    if len(values) != count:
        raise Type1Error("malformed array")
    return tuple(int(v) if v.is_integer() else v for v in values)


def _encoding(clear: bytes) -> tuple[str, ...]:
    """The built-in encoding: StandardEncoding, or the "dup code /name put" entries of a custom one."""
    m = re.search(rb"/Encoding\s+(\S+)", clear)
    if m is None or m.group(1) == b"StandardEncoding":
        return tuple(StandardEncoding)
    if not m.group(1).isdigit():
        raise Type1Error("named encoding other than StandardEncoding")
    end = re.compile(rb"(?<![\w./])def\b").search(clear, m.end())
    region = clear[m.end() : end.start() if end else len(clear)]
    names = [".notdef"] * 256
    for code, name in re.findall(rb"dup\s+(\d+)\s*/(" + _NAME + rb")\s+put", region):
        if int(code) < 256:
            names[int(code)] = name.decode("latin-1")
    return tuple(names)


def _subrs(private: bytes, len_iv: int) -> tuple[tuple[bytes | None, ...], int]:
    """The Subrs array and where it ends in the private part (0 when the font has none)."""
    m = re.search(rb"/Subrs\s+(\d+)\s+array", private)
    if m is None:
        return (), 0
    count = int(m.group(1))
    if count > _MAX_SUBRS:
        raise Type1Error("too many subrs")
    subrs: list[bytes | None] = [None] * count
    pos = m.end()
    for _ in range(count):
        entry = _SUBR.match(private, pos)
        if entry is None:
            break
        index, size = int(entry.group(1)), int(entry.group(2))
        data = private[entry.end() : entry.end() + size]
        if index >= count or len(data) != size:
            raise Type1Error("malformed subr")
        subrs[index] = _decrypt_charstring(data, len_iv)
        pos = entry.end() + size
    return tuple(subrs), pos


def _charstrings(private: bytes, start: int, len_iv: int) -> dict[str, bytes]:
    m = re.compile(rb"/CharStrings\s+(\d+)\s+dict").search(private, start)
    if m is None:
        raise Type1Error("no CharStrings")
    out: dict[str, bytes] = {}
    pos = m.end()
    for _ in range(MAX_GLYPHS):  # the declared size is only a hint (PostScript dictionaries grow)
        entry = _CHARSTRING.match(private, pos)
        if entry is None:
            break
        size = int(entry.group(2))
        data = private[entry.end() : entry.end() + size]
        if len(data) != size:
            raise Type1Error("malformed charstring")
        out.setdefault(entry.group(1).decode("latin-1"), _decrypt_charstring(data, len_iv))
        pos = entry.end() + size
    if not out:
        raise Type1Error("no glyphs")
    return out
