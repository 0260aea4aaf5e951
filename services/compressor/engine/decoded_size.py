"""How large a stream decodes through its general-purpose filters, found without trusting it: each filter is
decoded in bounded pieces, stopping once the cap is passed, at the first damage, or at the end of the data.

Flate is not the only filter that expands: LZW reaches about 3,600x, RunLength 64x, ASCII85's ``z`` 4x, and any
of them may come before Flate in a filter chain. Image codecs (DCT, JPX, CCITT, JBIG2) end the measure: what
they decode to is judged by the image pixel cap.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterator

from pikepdf import Name

from .inflate import RAW_DEFLATE, ZLIB, inflate_prefix, inflate_steps

_LZW_CLEAR, _LZW_END, _LZW_FIRST, _LZW_TABLE = 256, 257, 258, 4096
_NOT_HEX = re.compile(rb"[^0-9A-Fa-f]")
_WHITESPACE = b" \t\n\r\x0b\x0c\x00"


def _ascii_hex(data: bytes) -> Iterator[bytes]:
    digits = _NOT_HEX.sub(b"", data.split(b">", 1)[0])
    yield binascii.unhexlify(digits + b"0" * (len(digits) % 2))


def _ascii85(data: bytes) -> Iterator[bytes]:
    text = data.split(b"~>", 1)[0].removeprefix(b"<~")
    try:
        yield base64.a85decode(text, ignorechars=_WHITESPACE)
    except ValueError:
        return  # damaged: readers stop there too


def _run_length(data: bytes, limit: int) -> Iterator[bytes]:
    """Each step takes at least two bytes of input (or ends): bounded by the input."""
    at, total = 0, 0
    while at < len(data) and total <= limit:
        length = data[at]
        if length == 128:
            return  # end of data
        piece = data[at + 1 : at + 2 + length] if length < 128 else data[at + 1 : at + 2] * (257 - length)
        at += length + 2 if length < 128 else 2
        total += len(piece)
        yield piece


class _Lzw:
    """PDF LZW (9 to 12-bit codes, MSB first, /EarlyChange), decoded in pieces; one step per input byte."""

    def __init__(self, early_change: int) -> None:
        self.early = 1 if early_change else 0
        self.table: list[bytes] = [bytes([i]) for i in range(256)] + [b"", b""]
        self.width = 9
        self.previous: bytes | None = None

    def pieces(self, data: bytes, limit: int) -> Iterator[bytes]:
        buffer, bits, total = 0, 0, 0
        for byte in data:
            buffer, bits = (buffer << 8) | byte, bits + 8
            while bits >= self.width:
                bits -= self.width
                code = (buffer >> bits) & ((1 << self.width) - 1)
                buffer &= (1 << bits) - 1
                entry = self._entry(code)
                if entry is None:
                    return  # end of data or damage
                total += len(entry)
                yield entry
                if total > limit:
                    return

    def _entry(self, code: int) -> bytes | None:
        if code == _LZW_CLEAR:
            del self.table[_LZW_FIRST:]
            self.width, self.previous = 9, None
            return b""
        if code == _LZW_END or (self.previous is None and code >= _LZW_FIRST):
            return None
        if code < len(self.table):
            entry = self.table[code]
        elif code == len(self.table) and self.previous is not None:
            entry = self.previous + self.previous[:1]
        else:
            return None
        if self.previous is not None and len(self.table) < _LZW_TABLE:
            self.table.append(self.previous + entry[:1])
        self.previous = entry
        if len(self.table) + self.early >= 1 << self.width and self.width < 12:
            self.width += 1
        return entry


def _flate(data: bytes, _: int, __: int) -> Iterator[bytes]:
    return inflate_steps(data, ZLIB)


def _lzw(data: bytes, limit: int, early_change: int) -> Iterator[bytes]:
    return _Lzw(early_change).pieces(data, limit)


# (data, limit, LZW /EarlyChange) -> decoded pieces, stopping soon after ``limit`` bytes.
Decoder = Callable[[bytes, int, int], Iterator[bytes]]
# Each general-purpose filter (by its name and its abbreviation), with the most it can expand its input.
_DECODERS: dict[Name, tuple[Decoder, float]] = {
    Name.ASCIIHexDecode: (lambda data, _, __: _ascii_hex(data), 0.5),
    Name.AHx: (lambda data, _, __: _ascii_hex(data), 0.5),
    Name.ASCII85Decode: (lambda data, _, __: _ascii85(data), 4.0),
    Name.A85: (lambda data, _, __: _ascii85(data), 4.0),
    Name.RunLengthDecode: (lambda data, limit, _: _run_length(data, limit), 64.0),
    Name.RL: (lambda data, limit, _: _run_length(data, limit), 64.0),
    Name.LZWDecode: (_lzw, 3641.0),
    Name.LZW: (_lzw, 3641.0),
    Name.FlateDecode: (_flate, 1032.0),
    Name.Fl: (_flate, 1032.0),
}
_FLATE = (Name.FlateDecode, Name.Fl)


def general_filters(filters: list[object]) -> list[Name]:
    """The leading general-purpose filters of a chain (what qpdf decodes); the measure stops at any other."""
    chain: list[Name] = []
    for name in filters:
        if not isinstance(name, Name) or name not in _DECODERS:
            break
        chain.append(name)
    return chain


def max_expansion(chain: list[Name]) -> float:
    """The most ``chain`` can expand its input: what a stream's raw size is multiplied by, at worst."""
    ratio = 1.0
    for name in chain:
        ratio *= _DECODERS[name][1]
    return ratio


def decoded_size_exceeds(raw: bytes, chain: list[Name], cap: int, lzw_early_change: int = 1) -> bool:
    """Whether ``raw`` decodes through ``chain`` to more than ``cap`` bytes. Only the last filter's output is
    never kept; earlier stages keep at most about ``cap`` bytes. The last Flate is measured both as zlib and as raw
    deflate (the lenient repair inflates a stream without its zlib header as raw deflate)."""
    data = raw
    for index, name in enumerate(chain):
        last = index == len(chain) - 1
        if last and name in _FLATE:
            return any(_exceeds(inflate_steps(data, wbits), cap) for wbits in (ZLIB, RAW_DEFLATE))
        if last:
            return _exceeds(_DECODERS[name][0](data, cap, lzw_early_change), cap)
        if name in _FLATE:
            data = inflate_prefix(data, cap)  # small input steps: what came before damage is kept, as qpdf does
        else:
            data = _joined(_DECODERS[name][0](data, cap, lzw_early_change), cap)
        if len(data) > cap:
            return True
    return False


def _exceeds(pieces: Iterator[bytes], cap: int) -> bool:
    total = 0
    for piece in pieces:
        total += len(piece)
        if total > cap:
            return True
    return False


def _joined(pieces: Iterator[bytes], cap: int) -> bytes:
    kept: list[bytes] = []
    total = 0
    for piece in pieces:
        kept.append(piece)
        total += len(piece)
        if total > cap:
            break
    return b"".join(kept)
