"""Bounded inflation of untrusted Flate data: every step consumes input or produces output, or the loop ends.

zlib stops producing output at the end of its data (bytes after it stay in ``unconsumed_tail``/``unused_data``
forever) and raises at damage; a loop that only waits for the input to run out never ends on the former.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

ZLIB = 15  # a zlib stream (header + deflate + checksum), what /FlateDecode means
RAW_DEFLATE = -15  # deflate without the zlib header: some writers omit it, lenient readers accept it
_OUT_STEP = 1 << 20


def inflate_steps(raw: bytes, wbits: int = ZLIB, in_step: int = 1 << 16, out_step: int = _OUT_STEP) -> Iterator[bytes]:
    """Decoded pieces of ``raw`` (each at most ``out_step`` bytes) until the end of the zlib data, the first
    damage, or a step that neither consumes input nor produces output. Input is fed ``in_step`` bytes at a time,
    so what was decoded before damage is kept (up to that last step)."""
    d = zlib.decompressobj(wbits)
    pos = 0
    pending = b""
    while not d.eof:
        if not pending and pos < len(raw):
            pending = raw[pos : pos + in_step]
            pos += len(pending)
        try:
            out = d.decompress(pending, out_step)  # empty input once raw is used up: what zlib still holds
        except zlib.error:
            return  # readers stop at the damage too
        consumed = len(pending) - len(d.unconsumed_tail)
        pending = d.unconsumed_tail
        if out:
            yield out
        elif consumed == 0:
            return  # neither input taken nor output given: the end of the input, or no progress possible


def inflated_size_exceeds(raw: bytes, cap: int, wbits: int = ZLIB) -> bool:
    """Whether ``raw`` inflates to more than ``cap`` bytes, without keeping the data."""
    total = 0
    for piece in inflate_steps(raw, wbits):
        total += len(piece)
        if total > cap:
            return True
    return False


def inflate_prefix(raw: bytes, limit: int, wbits: int = ZLIB, in_step: int = 1024) -> bytes:
    """What ``raw`` decodes to before its damage or its end, stopping once more than ``limit`` bytes are out."""
    pieces: list[bytes] = []
    total = 0
    for piece in inflate_steps(raw, wbits, in_step=in_step):
        pieces.append(piece)
        total += len(piece)
        if total > limit:
            break
    return b"".join(pieces)
